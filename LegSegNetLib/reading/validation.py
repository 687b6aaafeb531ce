"""Checks that a volume is a CT in Hounsfield units that the engines can segment.

`validate_ct` raises `InputError` for volumes that cannot give a meaningful result (wrong shape, values
that are not numbers, intensities that cannot be HU) and returns warnings for merely suspicious ones.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from LegSegNetLib.reading.layout import SliceLayout, slice_layout
from LegSegNetLib.reading.volume import Volume

MIN_IN_PLANE_PIXELS = 16
# Leg CT nearly always shows the air around the body (about -1000 HU); without any voxel this dark the
# image is probably not CT in HU (for example MR, or CT rescaled to another range).
AIR_EXPECTED_BELOW_HU = -500.0
AIR_BAND_HU = (-1100.0, -900.0)  # air itself; values below -500 only elsewhere are padding (-2000, -3024 ...)
_AIR_MIN_SHARE = 0.001
# Where CT in Hounsfield units puts the two tissues every leg has: a histogram peak (a mode inside the band, not
# a slope running into it) in each. Unrescaled CT (stored values 0..4095), MR and noise put theirs elsewhere.
TISSUE_PEAK_BANDS_HU = {"fat": (-190.0, -30.0), "muscle": (-29.0, 150.0)}
_HISTOGRAM_RANGE_HU = (-500, 3000)  # the body: neither air nor padding
_HISTOGRAM_BIN_HU = 5
_PEAK_MARGIN_HU = 10  # a mode this close to a band's edge is a slope, not a peak
_PEAK_MIN_SHARE = 0.01  # of the body's voxels
_PEAK_MIN_PROMINENCE = 5.0  # times the median bin: noise spread evenly over all values has no peak
_HISTOGRAM_MAX_VOXELS = 4_000_000  # whole slices spread over the volume, enough for a stable histogram
# Spacing: beyond MAX_SPACING_MM the header is wrong (refused); outside the plausible ranges it is only doubtful.
MAX_SPACING_MM = 1000.0
PLAUSIBLE_PIXEL_MM = (0.1, 3.0)
PLAUSIBLE_SLICE_MM = (0.1, 20.0)
# A slice unlike both its neighbours, which agree with each other: damaged (cut off, shifted) or misplaced.
_OUTLIER_BODY_AREA_CHANGE = 0.25  # relative
_OUTLIER_CENTRE_SHIFT_MM = 15.0
_OUTLIER_HU_SHIFT = 60.0  # mean HU of the body, clipped to soft tissue (so bone and metal do not sway it)
_NEIGHBOURS_AGREE = 0.3  # the neighbours differ from each other by at most this fraction of the thresholds


class InputError(ValueError):
    """The input cannot be segmented as it is; the message says why and what to do."""


def validate_ct(volume: Volume, layout: Optional[SliceLayout] = None, hounsfield: bool = True) -> list[str]:
    """Raise InputError for a volume that cannot be segmented; return warnings (strings) for suspicious ones.
    `layout`: the volume's slice layout when the caller has it already; `hounsfield` False (an MR model's
    input) skips the checks of Hounsfield units."""
    check_voxel_array(volume)
    layout = layout or slice_layout(volume)
    warnings = _shape_warnings(volume, layout) + _spacing_warnings(layout)
    _check_finite(volume.array)
    return (warnings + (_intensity_warnings(volume.array) if hounsfield else [])
            + _outlier_slice_warnings(volume, layout))


def check_voxel_array(volume: Volume) -> None:
    """InputError unless the voxels form a 3D array of numbers (what a slice layout needs)."""
    array = volume.array
    if array.ndim != 3:
        raise InputError(f"the volume has {array.ndim} dimensions; a 3D CT volume is needed")
    if array.dtype.kind not in "iuf":
        raise InputError(f"voxel type {array.dtype} is not a number type; a CT in Hounsfield units is needed")


def _shape_warnings(volume: Volume, layout: SliceLayout) -> list[str]:
    rows, columns = volume.array.shape[layout.row_axis], volume.array.shape[layout.column_axis]
    if min(rows, columns) < MIN_IN_PLANE_PIXELS:
        raise InputError(
            f"the axial slices are only {rows} x {columns} pixels; at least {MIN_IN_PLANE_PIXELS} x "
            f"{MIN_IN_PLANE_PIXELS} are needed (is this an axial CT of the legs?)"
        )
    if volume.array.shape[layout.slice_axis] == 1:
        return ["the volume holds a single axial slice: volumes are its areas times its thickness "
                f"({layout.spacing_slice_mm:g} mm)"]
    return []


def _spacing_warnings(layout: SliceLayout) -> list[str]:
    pixel = (layout.spacing_row_mm, layout.spacing_column_mm)
    spacing = (*pixel, layout.spacing_slice_mm)
    if not all(0 < value <= MAX_SPACING_MM for value in spacing):
        raise InputError(f"the voxel spacing {' x '.join(f'{value:g}' for value in spacing)} mm is impossible for a "
                         "CT; the file's header is wrong: write it again with the true spacing")
    warnings = []
    if not all(PLAUSIBLE_PIXEL_MM[0] <= value <= PLAUSIBLE_PIXEL_MM[1] for value in pixel):
        warnings.append(f"the pixels are {pixel[0]:g} x {pixel[1]:g} mm, unusual for leg CT ({PLAUSIBLE_PIXEL_MM[0]:g}"
                        f" to {PLAUSIBLE_PIXEL_MM[1]:g} mm): areas and volumes scale with it, check the header")
    if not PLAUSIBLE_SLICE_MM[0] <= layout.spacing_slice_mm <= PLAUSIBLE_SLICE_MM[1]:
        warnings.append(f"the slices are {layout.spacing_slice_mm:g} mm apart, unusual for CT "
                        f"({PLAUSIBLE_SLICE_MM[0]:g} to {PLAUSIBLE_SLICE_MM[1]:g} mm): volumes are areas times this "
                        "spacing, check the header")
    return warnings


def _check_finite(array: np.ndarray) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        count = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{count} voxels are NaN or infinite; replace them (for example with -1000 HU) first")


def _intensity_warnings(array: np.ndarray) -> list[str]:
    """HU plausibility from the distribution: air below -500, a fat peak and a muscle peak where CT has them."""
    low, high = float(array.min()), float(array.max())
    not_hu = ("this is not CT in Hounsfield units — an MR image, or CT whose rescale slope/intercept were not "
              "applied (stored values such as 0..4095); convert it to HU first")
    if low >= 0:
        raise InputError(f"all values are >= 0 (range {low:g}..{high:g}), so there is no air at about -1000: {not_hu}")
    peaks = _tissue_peaks_hu(array)
    missing = [name for name, mode in peaks.items() if mode is None]
    if len(missing) == len(peaks):
        raise InputError(f"the intensities show neither a fat peak ({_band('fat')}) nor a muscle peak "
                         f"({_band('muscle')}) as leg CT does: {not_hu}")
    warnings = [f"the intensities show no {name} peak ({_band(name)} HU) as leg CT does: check that this is a CT in "
                "Hounsfield units (the model is for CT, not MR; stored values must be rescaled to HU)"
                for name in missing]
    if low > AIR_EXPECTED_BELOW_HU:
        warnings.append(f"no voxel is below {AIR_EXPECTED_BELOW_HU:g} (range {low:g}..{high:g}); leg CT in Hounsfield "
                        "units shows air at about -1000: check that this is a CT (the model is for CT, not MR)")
    elif not _shows_air(array):
        warnings.append(f"almost no voxel lies at air's {AIR_BAND_HU[0]:g}..{AIR_BAND_HU[1]:g} HU (the dark values are "
                        "padding at other values): check that this is a CT in Hounsfield units (the model is for CT, "
                        "not MR; stored values must be rescaled to HU)")
    return warnings


def _histogram_sample(array: np.ndarray) -> np.ndarray:
    """Whole planes spread over the volume (no aliasing with the row length), at most about
    _HISTOGRAM_MAX_VOXELS voxels."""
    step = max(1, int(np.ceil(array.size / _HISTOGRAM_MAX_VOXELS)))
    return array[::step] if array.shape[0] >= step else array


def _shows_air(array: np.ndarray) -> bool:
    sample = _histogram_sample(array)
    in_air = np.count_nonzero((sample >= AIR_BAND_HU[0]) & (sample <= AIR_BAND_HU[1]))
    return in_air >= _AIR_MIN_SHARE * sample.size


def _band(name: str) -> str:
    low, high = TISSUE_PEAK_BANDS_HU[name]
    return f"{low:g}..{high:g}"


def _tissue_peaks_hu(array: np.ndarray) -> dict:
    """The HU of the fat and muscle histogram peaks (None where a band holds no peak) among the body's voxels."""
    bins = np.arange(*_HISTOGRAM_RANGE_HU, _HISTOGRAM_BIN_HU) + 0.5
    counts, edges = np.histogram(_histogram_sample(array), bins=bins)
    kernel = np.exp(-0.5 * (np.arange(-4, 5) / 2.0) ** 2)
    smooth = np.convolve(counts, kernel / kernel.sum(), mode="same")  # noise must not make a mode of its own
    centres = (edges[:-1] + edges[1:]) / 2
    typical = np.median(smooth)
    peaks = {}
    for name, (low, high) in TISSUE_PEAK_BANDS_HU.items():
        inside = (centres >= low) & (centres <= high)
        top = int(np.argmax(smooth[inside]))
        mode = float(centres[inside][top])
        holds_enough = counts[inside].sum() >= _PEAK_MIN_SHARE * max(counts.sum(), 1)
        stands_out = smooth[inside][top] > _PEAK_MIN_PROMINENCE * typical
        inside_band = low + _PEAK_MARGIN_HU <= mode <= high - _PEAK_MARGIN_HU
        peaks[name] = mode if holds_enough and stands_out and inside_band else None
    return peaks


def _outlier_slice_warnings(volume: Volume, layout: SliceLayout) -> list[str]:
    """A slice whose body (voxels above -500 HU) is much smaller or larger, elsewhere, or brighter or darker than in
    both its neighbours while they agree with each other: a damaged slice (cut off, shifted, another rescale) or one
    from elsewhere. Such a slice is measured as it is, with a warning naming it."""
    slices = layout.display_view(volume.array)
    if len(slices) < 3:
        return []
    area, centre, level = _body_profile(slices, (layout.spacing_row_mm, layout.spacing_column_mm))
    warnings = []
    for index in range(1, len(slices) - 1):
        before, after = index - 1, index + 1
        reference = (area[before] + area[after]) / 2
        if reference < 100:  # too little body around it to compare
            continue
        differences = {
            "body area": (abs(area[index] - reference) / reference, abs(area[before] - area[after]) / reference,
                          _OUTLIER_BODY_AREA_CHANGE),
            "body centre": (float(np.linalg.norm(centre[index] - (centre[before] + centre[after]) / 2)),
                            float(np.linalg.norm(centre[before] - centre[after])), _OUTLIER_CENTRE_SHIFT_MM),
            "soft-tissue HU": (abs(level[index] - (level[before] + level[after]) / 2), abs(level[before] - level[after]),
                               _OUTLIER_HU_SHIFT),
        }
        odd = [name for name, (change, spread, limit) in differences.items()
               if change > limit and spread <= _NEIGHBOURS_AGREE * limit]
        if odd:
            warnings.append(f"slice {index} (S = {layout.positions_mm[index]:.1f} mm) differs from both its "
                            f"neighbours ({', '.join(odd)}): a damaged, shifted or misplaced slice? Check it; it is "
                            "measured as it is")
    return warnings


def _body_profile(slices: np.ndarray, pixel_mm: tuple) -> tuple:
    """Per slice: body area (pixels), body centre (mm) and soft-tissue level (mean HU of the body clipped to the fat
    and muscle bands), on every second pixel."""
    count = len(slices)
    low, high = TISSUE_PEAK_BANDS_HU["fat"][0], TISSUE_PEAK_BANDS_HU["muscle"][1]
    area, centre, level = np.zeros(count), np.zeros((count, 2)), np.zeros(count)
    for index, plane in enumerate(slices):
        plane = plane[::2, ::2]
        body = plane > AIR_EXPECTED_BELOW_HU
        area[index] = np.count_nonzero(body) * 4
        if area[index]:
            rows, columns = np.nonzero(body)
            centre[index] = (rows.mean() * 2 * pixel_mm[0], columns.mean() * 2 * pixel_mm[1])
            level[index] = float(np.clip(plane[body], low, high).mean())
    return area, centre, level
