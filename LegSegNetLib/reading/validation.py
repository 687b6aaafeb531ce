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


class InputError(ValueError):
    """The input cannot be segmented as it is; the message says why and what to do."""


def validate_ct(volume: Volume, layout: Optional[SliceLayout] = None) -> list[str]:
    """Raise InputError for a volume that cannot be segmented; return warnings (strings) for suspicious ones.
    `layout`: the volume's slice layout when the caller has it already."""
    check_voxel_array(volume)
    warnings = _shape_warnings(volume, layout or slice_layout(volume))
    _check_finite(volume.array)
    return warnings + _intensity_warnings(volume.array)


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


def _check_finite(array: np.ndarray) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        count = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{count} voxels are NaN or infinite; replace them (for example with -1000 HU) first")


def _intensity_warnings(array: np.ndarray) -> list[str]:
    low, high = float(array.min()), float(array.max())
    if low >= 0:
        raise InputError(
            f"all values are >= 0 (range {low:g}..{high:g}): this is not CT in Hounsfield units, where air is "
            "about -1000 — an MR image, or CT whose rescale slope/intercept were not applied; convert it to HU first"
        )
    if low > AIR_EXPECTED_BELOW_HU:
        return [f"no voxel is below {AIR_EXPECTED_BELOW_HU:g} (range {low:g}..{high:g}); leg CT in Hounsfield units "
                "shows air at about -1000: check that this is a CT (the model is for CT, not MR)"]
    return []
