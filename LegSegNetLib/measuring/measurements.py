"""Body-composition measurements of a labelled leg CT, on the CT's own voxel grid with its original HU.

`compute_measurements(ct, labels)` returns a `Measurements` with three tables whose column names are
stable keys (units in the name) described by `SUMMARY_COLUMNS`, `TISSUE_COLUMNS` and `SLICE_COLUMNS`
(each a tuple of `ColumnInfo(name, unit, description)`):

============================  ======  =========================================================
summary key                   unit    meaning (T is SAT, SM, IMAT or Bone)
============================  ======  =========================================================
T_volume_cm3                  cm3     volume of tissue T
T_mean_HU, T_sd_HU            HU      mean and population standard deviation of T's voxels
Fat_volume_cm3                cm3     SAT + IMAT
Fat_mean_HU                   HU      mean HU over SAT and IMAT voxels together
IMAT_SAT_ratio                1       IMAT volume / SAT volume
SM_Fat_ratio                  1       SM volume / (SAT + IMAT) volume
SM_low_attenuation_volume_cm3 cm3     SM voxels with -29 <= HU < 30
SM_low_attenuation_fraction   1       that volume / SM volume
SM_normal_attenuation_...     cm3, 1  the same for SM voxels with 30 <= HU <= 150
right_<any key above>         ...     the patient's right leg alone  } over the slices where the
left_<any key above>          ...     the patient's left leg alone   } two legs are separable
slice_count                   1       number of slices holding any label
separable_slice_count         1       how many of them show two separable legs
axial_extent_mm               mm      from the first to the last labelled slice, slice thickness included
============================  ======  =========================================================

Tissue rows (`tissue_rows`): side, tissue, name, label_value, voxel_count, volume_cm3, mean_HU, sd_HU.
Slice rows (`slice_rows`, long format, from the most inferior labelled slice up): slice_index (array
index along the slice axis, as SliceRange counts), S_mm, side, tissue, area_cm2.

Left and right. In each labelled slice the labelled pixels are split into 4-connected components. The
legs are *separable* there when the second-largest component has at least a quarter of the largest's
area and the two occupy disjoint column ranges of the radiological display (patient's right on the image
left). A vertical line in the gap between them then splits the slice: everything on the image-left side
(small islands included) is the right leg, the rest the left leg. Where the legs touch, a single leg is
scanned, or the layout is otherwise unclear, the slice counts towards both legs together ("both") only.
So right_* and left_* cover exactly the same slices and compare fairly; compare separable_slice_count
with slice_count to see how much of the scan they cover. With no separable slice (one leg scanned, or
legs touching throughout) the legs were never told apart: every right_* and left_* value, and the
volume of each right/left tissue row, is NaN (not measured), never a misleading 0.

A ratio or mean whose denominator is zero is NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage

from LegSegNetLib.reading.layout import RADIOLOGICAL, SliceLayout, slice_layout
from LegSegNetLib.tissues import TISSUE_BY_KEY, TISSUES
from LegSegNetLib.reading.volume import Volume

SIDES = ("both", "right", "left")
SIDE_PREFIX = {"both": "", "right": "right_", "left": "left_"}
SIDE_SCOPE = {"both": "both legs", "right": "patient's right leg, separable slices only",
              "left": "patient's left leg, separable slices only"}  # what a side's columns cover, for descriptions

# Attenuation bands of skeletal muscle (HU); half-open at 30 so float HU leave no gap between them.
LOW_ATTENUATION_HU = (-29.0, 30.0)
NORMAL_ATTENUATION_HU = (30.0, 150.0)

# The second leg must have at least this share of the first leg's area for a slice to count as two legs.
MIN_SECOND_LEG_SHARE = 0.25

_LABEL_COUNT = max(tissue.value for tissue in TISSUES) + 1
# Per-label sums gathered slice by slice: voxel count, HU sum, HU^2 sum, low- and normal-attenuation counts.
_COUNT, _SUM, _SQUARES, _LOW, _NORMAL = range(5)


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    unit: str
    description: str


@dataclass(frozen=True)
class Measurements:
    summary: dict  # SUMMARY_COLUMNS names -> float (counts are int), in that order
    tissue_rows: list  # dicts keyed by TISSUE_COLUMNS names, side by side, tissue by tissue
    slice_rows: list  # dicts keyed by SLICE_COLUMNS names, inferior to superior
    summary_columns: Optional[tuple] = None  # a model's own labels (label_measurements); None: SUMMARY_COLUMNS
    tissue_columns: Optional[tuple] = None  # likewise; None: TISSUE_COLUMNS
    regions: dict = field(default_factory=dict)  # sites.REGION_COLUMNS names -> value (see measuring.sites)
    region_notes: dict = field(default_factory=dict)  # "<side> <region>" -> why it is partial or not measured
    site_rows: list = field(default_factory=list)  # dicts keyed by sites.site_columns() names

    @property
    def columns(self) -> tuple:
        """The ColumnInfo of every summary key, in order."""
        return self.summary_columns or SUMMARY_COLUMNS


def _side_summary_columns(side: str) -> list[ColumnInfo]:
    return summary_columns(SIDE_PREFIX[side], SIDE_SCOPE[side])


def summary_columns(prefix: str, where: str) -> list[ColumnInfo]:
    """The summary columns of one part of the scan (a side, or a side's region), named with `prefix`."""
    columns = []
    for tissue in TISSUES:
        columns += [
            ColumnInfo(f"{prefix}{tissue.key}_volume_cm3", "cm3", f"{tissue.name} volume ({where})"),
            ColumnInfo(f"{prefix}{tissue.key}_mean_HU", "HU", f"{tissue.name} mean attenuation ({where})"),
            ColumnInfo(f"{prefix}{tissue.key}_sd_HU", "HU", f"{tissue.name} attenuation standard deviation ({where})"),
        ]
    low, normal = LOW_ATTENUATION_HU, NORMAL_ATTENUATION_HU
    return columns + [
        ColumnInfo(f"{prefix}Fat_volume_cm3", "cm3", f"SAT + IMAT volume ({where})"),
        ColumnInfo(f"{prefix}Fat_mean_HU", "HU", f"mean attenuation of SAT and IMAT voxels together ({where})"),
        ColumnInfo(f"{prefix}IMAT_SAT_ratio", "1", f"IMAT volume / SAT volume ({where})"),
        ColumnInfo(f"{prefix}SM_Fat_ratio", "1", f"SM volume / (SAT + IMAT) volume ({where})"),
        ColumnInfo(f"{prefix}SM_low_attenuation_volume_cm3", "cm3",
                   f"volume of SM with {low[0]:g} <= HU < {low[1]:g} ({where})"),
        ColumnInfo(f"{prefix}SM_low_attenuation_fraction", "1", f"low-attenuation SM volume / SM volume ({where})"),
        ColumnInfo(f"{prefix}SM_normal_attenuation_volume_cm3", "cm3",
                   f"volume of SM with {normal[0]:g} <= HU <= {normal[1]:g} ({where})"),
        ColumnInfo(f"{prefix}SM_normal_attenuation_fraction", "1",
                   f"normal-attenuation SM volume / SM volume ({where})"),
    ]


SUMMARY_COLUMNS: tuple[ColumnInfo, ...] = tuple(
    [column for side in SIDES for column in _side_summary_columns(side)] + [
        ColumnInfo("slice_count", "1", "number of axial slices holding any label"),
        ColumnInfo("separable_slice_count", "1", "labelled slices in which the two legs are separable"),
        ColumnInfo("axial_extent_mm", "mm", "length along the slice axis from the first to the last labelled slice"),
    ]
)

_SIDE_COLUMN = ColumnInfo("side", "", "both, right or left (right/left: separable slices only)")
_TISSUE_COLUMN = ColumnInfo("tissue", "", "tissue key: SAT, SM, IMAT or Bone")

TISSUE_COLUMNS: tuple[ColumnInfo, ...] = (
    _SIDE_COLUMN,
    _TISSUE_COLUMN,
    ColumnInfo("name", "", "tissue name"),
    ColumnInfo("label_value", "", "label value in the label map"),
    ColumnInfo("voxel_count", "1", "number of voxels"),
    ColumnInfo("volume_cm3", "cm3", "volume"),
    ColumnInfo("mean_HU", "HU", "mean attenuation"),
    ColumnInfo("sd_HU", "HU", "attenuation standard deviation (population)"),
)

SLICE_POSITION_COLUMNS: tuple[ColumnInfo, ...] = (
    ColumnInfo("slice_index", "", "index of the slice along the volume's slice axis"),
    ColumnInfo("S_mm", "mm", "superior-inferior (RAS S) position of the slice centre"),
)

SLICE_COLUMNS: tuple[ColumnInfo, ...] = SLICE_POSITION_COLUMNS + (
    _SIDE_COLUMN,
    _TISSUE_COLUMN,
    ColumnInfo("area_cm2", "cm2", "cross-sectional area of the tissue in the slice"),
)


def compute_measurements(ct: Volume, labels: Volume, layout: Optional[SliceLayout] = None,
                         split_columns: Optional[dict] = None) -> Measurements:
    """Measure the tissues `labels` marks on `ct` (same grid; HU as stored in `ct`). `layout`: the volume's
    radiological slice layout, and `split_columns` the leg_split_columns of its labelled slices, when the caller
    has them already."""
    check_same_grid(ct, labels)
    layout = layout or slice_layout(labels, RADIOLOGICAL)
    hu_view = layout.display_view(ct.array)
    label_view = layout.display_view(_checked_labels(labels.array))
    positions = layout.positions_mm
    pixel_cm2 = layout.pixel_area_mm2 / 100.0

    totals = {side: np.zeros((_LABEL_COUNT, 5)) for side in SIDES}
    slice_rows = []
    if split_columns is None:
        split_columns = leg_split_columns(label_view, labelled_slices(label_view))
    labelled = sorted(split_columns)
    separable = 0
    for index in labelled:
        regions = _slice_regions(split_columns[index])
        separable += len(regions) > 1
        for side, columns in regions.items():
            stats = label_stats(label_view[index][:, columns], hu_view[index][:, columns])
            totals[side] += stats
            slice_rows += [
                {"slice_index": index, "S_mm": float(positions[index]), "side": side, "tissue": tissue.key,
                 "area_cm2": float(stats[tissue.value, _COUNT] * pixel_cm2)}
                for tissue in TISSUES
            ]
    slice_rows.sort(key=lambda row: row["S_mm"])  # stable: side and tissue order kept within a slice

    voxel_cm3 = labels.voxel_volume_mm3 / 1000.0
    summary = {}
    for side in SIDES:
        summary.update(summary_values(SIDE_PREFIX[side], totals[side], voxel_cm3))
    summary["slice_count"] = len(labelled)
    summary["separable_slice_count"] = int(separable)
    summary["axial_extent_mm"] = (labelled[-1] - labelled[0] + 1) * layout.spacing_slice_mm if labelled else 0.0
    tissue_rows = [_tissue_row(side, tissue, totals[side][tissue.value], voxel_cm3)
                   for side in SIDES for tissue in TISSUES]
    if not separable:
        _mark_sides_unmeasured(summary, tissue_rows)
    return Measurements(summary, tissue_rows, slice_rows)


def labelled_slices(labels_display: np.ndarray) -> list:
    """Indices of the slices holding any label (slice by slice: a display view may be a transposed one, which a
    reshape would copy whole)."""
    return [index for index in range(len(labels_display)) if labels_display[index].any()]


def dice(mask: np.ndarray, reference: np.ndarray) -> float:
    """Dice overlap of two boolean masks (NaN when both are empty), for agreement with a truth or another engine."""
    total = np.count_nonzero(mask) + np.count_nonzero(reference)
    return math.nan if total == 0 else 2 * np.count_nonzero(mask & reference) / total


def _mark_sides_unmeasured(summary: dict, tissue_rows: list) -> None:
    """No slice told the legs apart: their separate values are unknown, not zero."""
    sided = tuple(SIDE_PREFIX[side] for side in SIDES if side != "both")
    summary.update({key: math.nan for key in summary if key.startswith(sided)})
    for row in tissue_rows:
        if row["side"] != "both":
            row["volume_cm3"] = math.nan


def check_same_grid(ct: Volume, labels: Volume) -> None:
    if not ct.same_grid(labels):
        raise ValueError("the label map and the CT must share the same voxel grid (shape, spacing, origin, directions)")


def _checked_labels(array: np.ndarray) -> np.ndarray:
    fractional = array.dtype.kind == "f" and not np.array_equal(array, np.round(array))
    if array.size and (fractional or array.min() < 0 or array.max() >= _LABEL_COUNT):
        raise ValueError(f"label values must be whole numbers 0..{_LABEL_COUNT - 1} (see LegSegNetLib.tissues)")
    return array


def _slice_regions(split: Optional[int]) -> dict:
    """Column selections of each side present in a display-orientation slice split at `split` ("both" always)."""
    if split is None:
        return {"both": slice(None)}
    return {"both": slice(None), "right": slice(None, split), "left": slice(split, None)}


def leg_split_column(mask: np.ndarray) -> Optional[int]:
    """Column of a radiological-display slice mask that separates two legs (right leg: columns before it),
    or None when the slice does not show two separable legs (see the module notes)."""
    components, count = ndimage.label(mask)  # 4-connected, numbered in raster order
    if count < 2:
        return None
    sizes = np.bincount(components.ravel())[1:]
    largest, second = np.argsort(-sizes, kind="stable")[:2]  # equal sizes: the first in raster order first
    if sizes[second] < MIN_SECOND_LEG_SHARE * sizes[largest]:
        return None
    boxes = ndimage.find_objects(components)
    image_left, image_right = sorted(boxes[label][1] for label in (largest, second))  # column spans
    if image_left.stop > image_right.start:
        return None  # one above the other in the picture, not side by side
    return int((image_left.stop + image_right.start) // 2)


def leg_split_columns(labels_display: np.ndarray, indices) -> dict:
    """leg_split_column of each display slice of `indices` (slice index -> column or None)."""
    return {int(index): leg_split_column(labels_display[index] > 0) for index in indices}


def label_stats(labels_2d: np.ndarray, hu_2d: np.ndarray) -> np.ndarray:
    """Per-label voxel count, HU sum, HU^2 sum, low- and normal-attenuation counts: [labels, 5]."""
    inside = labels_2d > 0
    values = labels_2d[inside].astype(np.intp)
    hu = hu_2d[inside].astype(np.float64)
    low = (hu >= LOW_ATTENUATION_HU[0]) & (hu < LOW_ATTENUATION_HU[1])
    normal = (hu >= NORMAL_ATTENUATION_HU[0]) & (hu <= NORMAL_ATTENUATION_HU[1])
    weights = (None, hu, hu * hu, low, normal)
    return np.stack([np.bincount(values, weights, minlength=_LABEL_COUNT) for weights in weights], axis=1)


def ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else math.nan


def mean_sd(stats_row: np.ndarray) -> tuple[float, float]:
    count = stats_row[_COUNT]
    mean = ratio(stats_row[_SUM], count)
    variance = ratio(stats_row[_SQUARES], count) - mean * mean
    return mean, math.sqrt(max(variance, 0.0)) if count else math.nan


def summary_values(prefix: str, stats: np.ndarray, voxel_cm3: float) -> dict:
    """The summary_columns(prefix, ...) values of label_stats sums (summed over the slices of that part)."""
    summary = {}
    for tissue in TISSUES:
        row = _tissue_row("", tissue, stats[tissue.value], voxel_cm3)
        for measure in ("volume_cm3", "mean_HU", "sd_HU"):
            summary[f"{prefix}{tissue.key}_{measure}"] = row[measure]
    sat, sm, imat = (stats[TISSUE_BY_KEY[key].value] for key in ("SAT", "SM", "IMAT"))
    fat = sat + imat
    summary[f"{prefix}Fat_volume_cm3"] = float(fat[_COUNT] * voxel_cm3)
    summary[f"{prefix}Fat_mean_HU"] = ratio(fat[_SUM], fat[_COUNT])
    summary[f"{prefix}IMAT_SAT_ratio"] = ratio(imat[_COUNT], sat[_COUNT])
    summary[f"{prefix}SM_Fat_ratio"] = ratio(sm[_COUNT], fat[_COUNT])
    summary[f"{prefix}SM_low_attenuation_volume_cm3"] = float(sm[_LOW] * voxel_cm3)
    summary[f"{prefix}SM_low_attenuation_fraction"] = ratio(sm[_LOW], sm[_COUNT])
    summary[f"{prefix}SM_normal_attenuation_volume_cm3"] = float(sm[_NORMAL] * voxel_cm3)
    summary[f"{prefix}SM_normal_attenuation_fraction"] = ratio(sm[_NORMAL], sm[_COUNT])
    return summary


def _tissue_row(side: str, tissue, stats_row: np.ndarray, voxel_cm3: float) -> dict:
    mean, sd = mean_sd(stats_row)
    return {"side": side, "tissue": tissue.key, "name": tissue.name, "label_value": tissue.value,
            "voxel_count": int(stats_row[_COUNT]), "volume_cm3": float(stats_row[_COUNT] * voxel_cm3),
            "mean_HU": mean, "sd_HU": sd}
