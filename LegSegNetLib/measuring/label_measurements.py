"""Measurements of any label set (a model's own labels: muscles, muscle groups, fat depots, bones), CT or MR.

For each label K of the label set (column keys are the label keys of LegSegNetLib.tissues.label_set_from_names):

================================  ======  ==============================================================
summary key                       unit    meaning
================================  ======  ==============================================================
K_volume_cm3                      cm3     volume of K
K_mean_HU, K_sd_HU                HU      CT: mean and population standard deviation of K's voxels
K_mean_intensity, K_sd_intensity  1       MR (any non-CT image): the same in the image's own units
K_IMAT_volume_cm3                 cm3     muscle labels, CT: voxels of K with -190 <= HU <= -30 (fat
                                          attenuation, as Comp2Comp and TotalSegmentator's tissue tasks
                                          define adipose tissue): intramuscular fat of that muscle
                                          muscle labels, MR with fat and water images: voxels of K whose
                                          fat fraction exceeds the threshold (default 0.1)
K_IMAT_fraction                   1       that volume / K's volume
K_fat_fraction                    1       MR with fat and water images: mean voxel fat fraction
                                          fat / (fat + water) over K's voxels where fat + water > 0
slice_count, axial_extent_mm      1, mm   labelled slices and their extent, as for the four tissues
================================  ======  ==============================================================

Label rows (`tissue_rows`): side ("both"), tissue (key), name, label_value, voxel_count, volume_cm3 and the mean/SD
columns above; slice rows: slice_index, S_mm, side, tissue, area_cm2 per label and labelled slice.
Left and right legs are not told apart for these label sets: a model that separates them names its labels so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from LegSegNetLib.measuring.measurements import (
    ColumnInfo, Measurements, check_same_grid, mean_sd, ratio)
from LegSegNetLib.reading.layout import RADIOLOGICAL, SliceLayout, slice_layout
from LegSegNetLib.reading.volume import Volume
from LegSegNetLib.measuring.sites import measure_with_anatomy
from LegSegNetLib.settings import DEFAULT_IMAT_FAT_FRACTION, MeasurementSettings
from LegSegNetLib.tissues import MUSCLE, LabelSet

FAT_HU = (-190.0, -30.0)  # adipose tissue attenuation, inclusive
CT, MR = "CT", "MR"
# Per-label sums gathered slice by slice.
_COUNT, _SUM, _SQUARES, _IMAT, _FF_SUM, _FF_COUNT = range(6)


@dataclass(frozen=True)
class FatWater:
    """Dixon fat and water images on the labels' grid, and the fat fraction above which muscle counts as IMAT."""

    fat: Volume
    water: Volume
    imat_threshold: float = DEFAULT_IMAT_FAT_FRACTION

    def __post_init__(self):
        if not 0.0 < self.imat_threshold < 1.0:
            raise ValueError(f"the IMAT fat-fraction threshold must lie between 0 and 1, not {self.imat_threshold}")


def measure_labels(image: Volume, labels: Volume, label_set: LabelSet, modality: str = CT,
                   fat_water: Optional[FatWater] = None, layout: Optional[SliceLayout] = None,
                   measurement: MeasurementSettings = MeasurementSettings()) -> Measurements:
    """LegSegNet's four-tissue measurements with each leg's regions and sites (sites.measure_with_anatomy) for its
    tissues on CT; the per-label measurements of this module for any other label set or image."""
    if label_set.is_legsegnet_tissues and modality == CT and fat_water is None:
        return measure_with_anatomy(image, labels, layout, measurement)
    return compute_label_measurements(image, labels, label_set, modality, fat_water, layout)


def compute_label_measurements(image: Volume, labels: Volume, label_set: LabelSet, modality: str = CT,
                               fat_water: Optional[FatWater] = None,
                               layout: Optional[SliceLayout] = None) -> Measurements:
    """Measure every label of `label_set` that `labels` marks on `image` (same grid)."""
    check_same_grid(image, labels)
    if fat_water is not None:
        if modality == CT:
            raise ValueError("fat and water images are Dixon MRI: they cannot go with a CT model's labels")
        for volume in (fat_water.fat, fat_water.water):
            if volume.array.shape != labels.array.shape or not np.allclose(volume.ijk_to_ras, labels.ijk_to_ras,
                                                                            atol=1e-4):
                raise ValueError("the fat and water images must share the input image's voxel grid (shape, "
                                 "spacing, origin, directions): give the Dixon images of the same acquisition")
    layout = layout or slice_layout(labels, RADIOLOGICAL)
    views = [layout.display_view(volume.array) for volume in
             (labels, image, *((fat_water.fat, fat_water.water) if fat_water else ()))]
    _check_values(views[0], label_set)
    muscle = np.zeros(max(label_set.values) + 1, dtype=bool)
    muscle[[label.value for label in label_set.labels if label.kind == MUSCLE]] = True

    totals = np.zeros((len(muscle), 6))
    slice_rows, labelled = [], []
    pixel_cm2 = layout.pixel_area_mm2 / 100.0
    for index in range(len(views[0])):
        if not views[0][index].any():
            continue
        labelled.append(index)
        stats = _slice_stats(modality, muscle, fat_water, *(view[index] for view in views))
        totals += stats
        slice_rows += [{"slice_index": index, "S_mm": float(layout.positions_mm[index]), "side": "both",
                        "tissue": label.key, "area_cm2": float(stats[label.value, _COUNT] * pixel_cm2)}
                       for label in label_set.labels]
    slice_rows.sort(key=lambda row: row["S_mm"])
    summary, rows = _summary_and_rows(label_set, totals, labels.voxel_volume_mm3 / 1000.0, modality, fat_water)
    summary["slice_count"] = len(labelled)
    summary["axial_extent_mm"] = (labelled[-1] - labelled[0] + 1) * layout.spacing_slice_mm if labelled else 0.0
    return Measurements(summary, rows, slice_rows, summary_columns=summary_columns(label_set, modality, fat_water),
                        tissue_columns=tissue_columns(modality))


def summary_columns(label_set: LabelSet, modality: str = CT, fat_water: Optional[FatWater] = None) -> tuple:
    mean, sd, unit = _intensity_names(modality)
    columns = []
    for label in label_set.labels:
        columns += [ColumnInfo(f"{label.key}_volume_cm3", "cm3", f"{label.name} volume"),
                    ColumnInfo(f"{label.key}_{mean}", unit, f"{label.name} mean {'attenuation' if modality == CT else 'intensity'}"),
                    ColumnInfo(f"{label.key}_{sd}", unit, f"{label.name} standard deviation (population)")]
        if fat_water is not None:
            columns.append(ColumnInfo(f"{label.key}_fat_fraction", "1", f"{label.name} mean voxel fat fraction"))
        if label.kind == MUSCLE and (modality == CT or fat_water is not None):
            rule = (f"{FAT_HU[0]:g} <= HU <= {FAT_HU[1]:g}" if modality == CT
                    else f"fat fraction > {fat_water.imat_threshold:g}")
            columns += [ColumnInfo(f"{label.key}_IMAT_volume_cm3", "cm3", f"intramuscular fat in {label.name} ({rule})"),
                        ColumnInfo(f"{label.key}_IMAT_fraction", "1", f"that volume / {label.name} volume")]
    return tuple(columns) + (
        ColumnInfo("slice_count", "1", "number of axial slices holding any label"),
        ColumnInfo("axial_extent_mm", "mm", "length along the slice axis from the first to the last labelled slice"))


def tissue_columns(modality: str = CT) -> tuple:
    mean, sd, unit = _intensity_names(modality)
    return (ColumnInfo("side", "", "both (left and right are not told apart for a model's own labels)"),
            ColumnInfo("tissue", "", "label key, as dataset.json names it"),
            ColumnInfo("name", "", "label name"),
            ColumnInfo("label_value", "", "label value in the label map"),
            ColumnInfo("voxel_count", "1", "number of voxels"),
            ColumnInfo("volume_cm3", "cm3", "volume"),
            ColumnInfo(mean, unit, "mean"),
            ColumnInfo(sd, unit, "standard deviation (population)"))


def _intensity_names(modality: str) -> tuple:
    return ("mean_HU", "sd_HU", "HU") if modality == CT else ("mean_intensity", "sd_intensity", "1")


def _check_values(labels: np.ndarray, label_set: LabelSet) -> None:
    present = set(np.flatnonzero(np.bincount(labels.ravel().astype(np.intp)))) if labels.size else set()
    unknown = sorted(present - {0, *label_set.values})
    if unknown:
        raise ValueError(f"label values {unknown} are not among the model's labels {list(label_set.values)}")


def _slice_stats(modality, muscle, fat_water, labels_2d, image_2d, fat_2d=None, water_2d=None) -> np.ndarray:
    inside = labels_2d > 0
    values = labels_2d[inside].astype(np.intp)
    intensity = image_2d[inside].astype(np.float64)
    imat = np.zeros(len(values))
    ff_sum = ff_count = np.zeros(len(values))
    if modality == CT:
        imat = muscle[values] & (intensity >= FAT_HU[0]) & (intensity <= FAT_HU[1])
    elif fat_water is not None:
        fat, water = fat_2d[inside].astype(np.float64), water_2d[inside].astype(np.float64)
        total = fat + water
        ff_count = total > 0
        ff = np.divide(fat, total, out=np.zeros_like(fat), where=ff_count)
        ff_sum = ff
        imat = muscle[values] & ff_count & (ff > fat_water.imat_threshold)
    weights = (None, intensity, intensity * intensity, imat, ff_sum, ff_count)
    return np.stack([np.bincount(values, weight, minlength=len(muscle)) for weight in weights], axis=1)


def _summary_and_rows(label_set, totals, voxel_cm3, modality, fat_water) -> tuple:
    mean_key, sd_key, _ = _intensity_names(modality)
    summary, rows = {}, []
    for label in label_set.labels:
        stats = totals[label.value]
        mean, sd = mean_sd(stats)
        volume = float(stats[_COUNT] * voxel_cm3)
        rows.append({"side": "both", "tissue": label.key, "name": label.name, "label_value": label.value,
                     "voxel_count": int(stats[_COUNT]), "volume_cm3": volume, mean_key: mean, sd_key: sd})
        summary.update({f"{label.key}_volume_cm3": volume, f"{label.key}_{mean_key}": mean,
                        f"{label.key}_{sd_key}": sd})
        if fat_water is not None:
            summary[f"{label.key}_fat_fraction"] = ratio(stats[_FF_SUM], stats[_FF_COUNT])
        if label.kind == MUSCLE and (modality == CT or fat_water is not None):
            summary[f"{label.key}_IMAT_volume_cm3"] = float(stats[_IMAT] * voxel_cm3)
            summary[f"{label.key}_IMAT_fraction"] = ratio(stats[_IMAT], stats[_COUNT])
    return summary, rows

