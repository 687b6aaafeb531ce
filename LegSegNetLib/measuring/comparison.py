"""A predicted label map against a reference (say, a manual segmentation), case by case and over a cohort.

Per case and tissue: Dice, the 95th-percentile Hausdorff distance and the average symmetric surface distance in
mm (MONAI's metrics, on the voxel spacing; a one-slice case is measured in its plane), the volume in both and its
difference, and with a CT the mean HU in both. A tissue absent from both has no Dice (NaN, not 0: nothing to
overlap); a tissue absent from one side has Dice 0 and no surface distance; the row's note says which.

A reference on another voxel grid is resampled (nearest neighbour) onto the prediction's, but only when the two
grids' physical extents overlap: otherwise they cannot be of the same scan and GridMismatchError says so.

Over the cohort every measurement of measurements.compute_measurements that the label set and the inputs define
(both legs together; mean HU only with a CT) is compared pred against ref with measuring.agreement; with
LegSegNet's four tissues also each leg's region volumes and the areas (and with a CT the attenuation) at each
landmark site (measuring.sites), named `<site>_<side>_<measure>`, e.g. `mid_thigh_right_SM_area_cm2`, over the
cases where both sides measured the site.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import SimpleITK as sitk

from LegSegNetLib.measuring.agreement import agreement
from LegSegNetLib.measuring.measurements import SIDE_PREFIX, SUMMARY_COLUMNS, ColumnInfo, compute_measurements, dice
from LegSegNetLib.measuring.anatomy import LEGS, REGIONS
from LegSegNetLib.measuring.sites import REGION_COLUMNS, SITE_NAMES, measure_with_anatomy, site_columns
from LegSegNetLib.reading.label_files import DEFAULT_LABEL_SET, LabelSet
from LegSegNetLib.reading.volume import Volume
from LegSegNetLib.reading.volume_files import sitk_from_volume, volume_from_sitk
from LegSegNetLib.tissues import TISSUE_BY_KEY

VALIDATE_EXTRA = "pip install -c requirements/constraints.txt \"legsegnet-slicer[validate]\""
HAUSDORFF_PERCENTILE = 95


class MissingPackageError(RuntimeError):
    """An optional package the comparison needs is not installed."""


class GridMismatchError(ValueError):
    """Prediction and reference cannot be compared voxel by voxel: they do not cover the same space."""


def require_package(module: str, purpose: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingPackageError(f"{purpose} needs the Python package {module}: {VALIDATE_EXTRA}")


PER_CASE_COLUMNS = (
    ColumnInfo("case", "", "case name: the file name without its extensions"),
    ColumnInfo("prediction", "", "which prediction: pred (PRED) or against (--against)"),
    ColumnInfo("tissue", "", "tissue key"),
    ColumnInfo("dice", "1", "Dice overlap with the reference (empty: the tissue is in neither)"),
    ColumnInfo("hd95_mm", "mm", "95th percentile of the symmetric surface distances (MONAI)"),
    ColumnInfo("assd_mm", "mm", "average symmetric surface distance (MONAI)"),
    ColumnInfo("volume_pred_cm3", "cm3", "tissue volume in the prediction"),
    ColumnInfo("volume_ref_cm3", "cm3", "tissue volume in the reference"),
    ColumnInfo("volume_difference_cm3", "cm3", "prediction - reference volume"),
    ColumnInfo("mean_HU_pred", "HU", "mean attenuation of the tissue in the prediction (with --ct)"),
    ColumnInfo("mean_HU_ref", "HU", "mean attenuation of the tissue in the reference (with --ct)"),
    ColumnInfo("note", "", "why a value is missing or doubtful"),
)


@dataclass(frozen=True)
class Overlap:
    dice: float
    hd95_mm: float
    assd_mm: float
    note: str = ""


@dataclass
class CaseComparison:
    case: str
    rows: list  # one dict per tissue of the label set, keyed by PER_CASE_COLUMNS names
    pred_summary: dict  # measurements.compute_measurements summaries
    ref_summary: dict
    notes: list = field(default_factory=list)  # about the whole case (resampling, labels left out)


def overlap(mask: np.ndarray, reference: np.ndarray, spacing_kji) -> Overlap:
    """Dice, HD95 and ASSD (mm) of two boolean masks on one grid with voxel spacing (k, j, i) in mm."""
    in_mask, in_reference = bool(mask.any()), bool(reference.any())
    if not (in_mask and in_reference):
        where = "both" if not (in_mask or in_reference) else "the prediction" if not in_mask else "the reference"
        undefined = "Dice and surface distances undefined" if where == "both" else "surface distances undefined"
        return Overlap(float(dice(mask, reference)), math.nan, math.nan, f"absent from {where}: {undefined}")
    require_package("monai", "Surface distances (HD95, ASSD)")
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    # A slice (or line) of voxels has no neighbours across its thin axes: measure it in its own plane.
    kept = [axis for axis in range(3) if mask.shape[axis] > 1]
    shape = [mask.shape[axis] for axis in kept]
    spacing = [float(spacing_kji[axis]) for axis in kept]
    pred, ref = (torch.from_numpy(np.ascontiguousarray(m.reshape(shape)))[None, None] for m in (mask, reference))
    with warnings.catch_warnings():  # MONAI warns about its own internal use of a deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = compute_hausdorff_distance(pred, ref, include_background=True, percentile=HAUSDORFF_PERCENTILE,
                                          spacing=spacing)
        assd = compute_average_surface_distance(pred, ref, include_background=True, symmetric=True,
                                                spacing=spacing)
    return Overlap(float(dice(mask, reference)), float(hd95), float(assd))


def align_reference(reference: Volume, prediction: Volume) -> tuple:
    """The reference on the prediction's grid (nearest neighbour) and notes on what that changed."""
    if reference.same_grid(prediction):
        return reference, []
    if not _extents_overlap(reference, prediction):
        raise GridMismatchError(
            "the reference and the prediction cover different places in space (no overlap of their extents): "
            "check that they are of the same scan and keep their geometry (origin, spacing, directions)")
    resampled = sitk.Resample(sitk_from_volume(reference), sitk_from_volume(prediction.with_array(
        np.zeros(prediction.array.shape, np.uint8))), sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    notes = ["reference resampled (nearest neighbour) onto the prediction's voxel grid"]
    if not _labels_inside(reference, prediction):
        notes.append("part of the reference's labels lies outside the prediction's grid and is not compared")
    return volume_from_sitk(resampled), notes


def _corners_ras(volume: Volume) -> np.ndarray:
    """RAS positions of the 8 outer corners of the volume's voxels (half a voxel beyond the centres)."""
    k, j, i = volume.array.shape
    corners = np.array([[a, b, c] for a in (-0.5, k - 0.5) for b in (-0.5, j - 0.5) for c in (-0.5, i - 0.5)])
    return volume.ras_of_index(corners)


def _extents_overlap(a: Volume, b: Volume) -> bool:
    """Whether the boxes (in b's index space) of both volumes' extents intersect."""
    shape = np.array(b.array.shape)
    a_in_b = b.index_of_ras(_corners_ras(a))
    return bool(np.all(a_in_b.max(axis=0) > -0.5) and np.all(a_in_b.min(axis=0) < shape - 0.5))


def _labels_inside(reference: Volume, prediction: Volume) -> bool:
    """Whether the box around the reference's labelled voxels lies within the prediction's grid."""
    labelled = [np.flatnonzero(reference.array.any(axis=tuple(a for a in range(3) if a != axis)))
                for axis in range(3)]
    if any(len(indices) == 0 for indices in labelled):
        return True
    box = np.array([[a, b, c] for a in labelled[0][[0, -1]] for b in labelled[1][[0, -1]]
                    for c in labelled[2][[0, -1]]], dtype=float)
    inside = prediction.index_of_ras(reference.ras_of_index(box))
    return bool(np.all(inside > -0.5) and np.all(inside < np.array(prediction.array.shape) - 0.5))


def compare_case(case: str, prediction: Volume, reference: Volume, label_set: LabelSet = DEFAULT_LABEL_SET,
                 ct: Optional[Volume] = None, prediction_name: str = "pred", notes=()) -> CaseComparison:
    """Compare tissue labels (LegSegNetLib.tissues values, as label_files.read_label_map gives them); `notes`
    about the inputs (labels left out when reading) join the case's notes, which every row's note repeats."""
    reference, aligned = align_reference(reference, prediction)
    notes = [*notes, *aligned]
    if ct is not None and not ct.same_grid(prediction):
        raise GridMismatchError("the CT and the prediction are not on the same voxel grid: give the CT the "
                                "prediction was made from")
    hu = ct if ct is not None else prediction.with_array(np.zeros(prediction.array.shape, np.int16))
    measure = measure_with_anatomy if _full_tissue_set(label_set) else compute_measurements
    measured = [measure(hu, labels) for labels in (prediction, reference)]
    tissue_rows = [{row["tissue"]: row for row in m.tissue_rows if row["side"] == "both"} for m in measured]
    rows = []
    for key in label_set.keys:
        value = TISSUE_BY_KEY[key].value
        result = overlap(prediction.array == value, reference.array == value, prediction.spacing[::-1])
        pred_row, ref_row = (by_tissue[key] for by_tissue in tissue_rows)
        rows.append({
            "case": case, "prediction": prediction_name, "tissue": key, "dice": result.dice,
            "hd95_mm": result.hd95_mm, "assd_mm": result.assd_mm,
            "volume_pred_cm3": pred_row["volume_cm3"], "volume_ref_cm3": ref_row["volume_cm3"],
            "volume_difference_cm3": pred_row["volume_cm3"] - ref_row["volume_cm3"],
            "mean_HU_pred": pred_row["mean_HU"] if ct is not None else math.nan,
            "mean_HU_ref": ref_row["mean_HU"] if ct is not None else math.nan,
            "note": "; ".join(filter(None, [result.note, *notes])),
        })
    return CaseComparison(case, rows, *(_flat_summary(measurement) for measurement in measured), notes)


# Site measures compared over the cohort: areas always, attenuation only with a CT.
SITE_MEASURES = ("SM_area_cm2", "IMAT_area_cm2", "SM_mean_HU")
# Region measures compared over the cohort, per leg: the muscle's volume and (with a CT) attenuation.
REGION_MEASURES = ("SM_volume_cm3", "SM_mean_HU")


def _flat_summary(measurements) -> dict:
    """The summary, the region values and each measured site's values as one flat dict (`<site>_<side>_<measure>`;
    NaN where a side did not measure the site)."""
    sites = {f"{row['site']}_{row['side']}_{name}": row.get(name, math.nan) if row["measured"] else math.nan
             for row in measurements.site_rows for name in SITE_MEASURES}
    return {**measurements.summary, **measurements.regions, **sites}


def _full_tissue_set(label_set: LabelSet) -> bool:
    return set(label_set.keys) == set(TISSUE_BY_KEY)


def agreement_columns(label_set: LabelSet, with_ct: bool) -> tuple:
    """The measurements compared over the cohort: both legs' summary values the label set defines (all of them
    for the full tissue set; each tissue's own for a subset), attenuation ones only with a CT."""
    full_set = _full_tissue_set(label_set)
    own = {f"{key}_{measure}" for key in label_set.keys for measure in ("volume_cm3", "mean_HU", "sd_HU")}
    sided = tuple(prefix for prefix in SIDE_PREFIX.values() if prefix)
    summary = tuple(
        column for column in SUMMARY_COLUMNS
        if column.unit in ("cm3", "HU", "1") and not column.name.startswith(sided) and "slice_count" not in
        column.name and (full_set or column.name in own) and (with_ct or _independent_of_hu(column))
    )
    if not full_set:
        return summary
    per_leg = tuple(f"{side}_{region}_{name}" for side in LEGS for region in REGIONS for name in REGION_MEASURES)
    regions = tuple(column for column in REGION_COLUMNS
                    if column.name in per_leg and (with_ct or _independent_of_hu(column)))
    return summary + regions + _site_agreement_columns(with_ct)


def _site_agreement_columns(with_ct: bool) -> tuple:
    described = {column.name: column for column in site_columns()}
    return tuple(ColumnInfo(f"{site}_{side}_{name}", described[name].unit, f"{site}, {side} leg: "
                            f"{described[name].description}")
                 for site in SITE_NAMES for side in LEGS for name in SITE_MEASURES
                 if with_ct or _independent_of_hu(described[name]))


def _independent_of_hu(column: ColumnInfo) -> bool:
    return column.unit != "HU" and "attenuation" not in column.name


def cohort_agreement(cases: list, columns) -> list:
    """measuring.agreement.Agreement of each measurement column over the compared cases."""
    return [agreement(column.name, column.unit, [case.pred_summary[column.name] for case in cases],
                      [case.ref_summary[column.name] for case in cases]) for column in columns]
