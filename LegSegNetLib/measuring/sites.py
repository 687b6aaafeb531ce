"""Landmark sites and regions measured the way studies report them, per leg, from the bone anatomy (anatomy.py).

Sites (each per leg, measured on the one slice nearest to the site; S is RAS superior, mm):

- `mid_thigh`: halfway between the femur's proximal end (top of the femoral head) and its distal end (the
  condyles). The Health ABC mid-thigh slice (Goodpaster et al., J Appl Physiol 2000;89:104-110: muscle area,
  attenuation, IMAT and SAT) is taken at the femur's midpoint on a scout view; some protocols measure the femur
  from the greater trochanter instead of the head, which moves the midpoint by a few millimetres.
- `tibia_66`, `tibia_38`, `tibia_4`: 66, 38 and 4 % of the tibia's length above its distal end, the pQCT sites
  of the lower leg (66 %: muscle and fat area; 38 %: cortical bone; 4 %: trabecular bone; e.g. Stratec XCT
  2000L studies such as Jaworski et al., J Musculoskelet Neuronal Interact 2021;21:215-236). As in pQCT the
  tibia's length runs from the tip of the medial malleolus to the tibial plateau, and the percentage is
  measured from the distal articular surface (the plafond, the pQCT reference line).
- `max_calf`: the slice of the calf region with the largest muscle area of that leg (the calf's widest muscle
  cross-section, the usual single-slice calf measure); only when the whole calf is in the scan.
- user sites (`MeasurementSettings.user_sites`, `--site NAME=S_mm`): the slice nearest a given S position.

At each site and leg: muscle (SM) area, mean and SD HU, SM area in each HU band (`MeasurementSettings.
muscle_bands`, both ends included), IMAT, SAT and bone area, bone mean HU, and for the bone of a bone site (femur
at mid_thigh, tibia at the tibia sites) its cortical (HU >= `CORTICAL_HU`) and trabecular (the rest of that bone:
marrow and cancellous bone) area and mean HU. `CORTICAL_HU` follows the 710 mg/cm3 cortical threshold common in
pQCT; CT HU only approximate mineral density, so compare these values within one scanner and protocol. With the
patient's height: SM index (SM area / height^2, cm2/m2) and muscle gauge (SM index x SM mean HU; Weinberg et al.,
J Cachexia Sarcopenia Muscle 2018). Asymmetry: (right - left) / mean of the two, in %, for SM area and mean HU at
each site, and for SM volume and mean HU per region.

A site is `measured` = False, with the reason, when its bone ends are not both located (anatomy.py says why),
its slice lies outside the scan, the leg is not told apart in that slice, or the slice holds metal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from LegSegNetLib.measuring.anatomy import LEGS, REGIONS, Anatomy, LegAnatomy, find_anatomy
from LegSegNetLib.measuring.measurements import (
    SIDE_PREFIX, SIDES, ColumnInfo, Measurements, compute_measurements, label_stats, labelled_slices, leg_split_columns,
    summary_columns, summary_values,
)
from LegSegNetLib.reading.layout import RADIOLOGICAL, SliceLayout, slice_layout
from LegSegNetLib.reading.volume import Volume
from LegSegNetLib.settings import MeasurementSettings
from LegSegNetLib.tissues import TISSUE_BY_KEY

CORTICAL_HU = 710.0
SAT, SM, IMAT, BONE = (TISSUE_BY_KEY[key].value for key in ("SAT", "SM", "IMAT", "Bone"))


@dataclass(frozen=True)
class SiteDefinition:
    name: str
    description: str
    bone: str = ""  # the bone whose cortical and trabecular parts are measured there


SITES = (
    SiteDefinition("mid_thigh", "halfway between the femoral head's top and the condyles' bottom", "femur"),
    SiteDefinition("tibia_66", "66 % of tibia length above the plafond (pQCT muscle site)", "tibia"),
    SiteDefinition("tibia_38", "38 % of tibia length above the plafond (pQCT cortical bone site)", "tibia"),
    SiteDefinition("tibia_4", "4 % of tibia length above the plafond (pQCT trabecular bone site)", "tibia"),
    SiteDefinition("max_calf", "the calf slice with the largest muscle area"),
)
SITE_NAMES = tuple(site.name for site in SITES)
TIBIA_SHARES = {"tibia_66": 0.66, "tibia_38": 0.38, "tibia_4": 0.04}


def band_column(band) -> str:
    return f"SM_area_{band[0]:g}_{band[1]:g}HU_cm2"


def site_columns(bands=MeasurementSettings().muscle_bands) -> tuple:
    """The sites table's columns (without the command line's `input`), band columns from `bands`."""
    return (
        ColumnInfo("site", "", "; ".join(f"{site.name}: {site.description}" for site in SITES)
                   + "; any other name: a user site, the slice nearest to its S position"),
        ColumnInfo("side", "", "the patient's right or left leg"),
        ColumnInfo("S_mm", "mm", "the site's superior-inferior (RAS S) position"),
        ColumnInfo("slice_index", "", "index of the measured slice along the volume's slice axis"),
        ColumnInfo("slice_S_mm", "mm", "S position of the measured slice's centre"),
        ColumnInfo("measured", "", "whether the site was measured in this leg"),
        ColumnInfo("reason", "", "why not, or what to keep in mind"),
        ColumnInfo("SM_area_cm2", "cm2", "skeletal muscle area in the slice (this leg)"),
        ColumnInfo("SM_mean_HU", "HU", "skeletal muscle mean attenuation"),
        ColumnInfo("SM_sd_HU", "HU", "skeletal muscle attenuation standard deviation (population)"),
        *(ColumnInfo(band_column(band), "cm2", f"skeletal muscle area with {band[0]:g} <= HU <= {band[1]:g}")
          for band in bands),
        ColumnInfo("IMAT_area_cm2", "cm2", "intermuscular fat area"),
        ColumnInfo("SAT_area_cm2", "cm2", "subcutaneous fat area"),
        ColumnInfo("Bone_area_cm2", "cm2", "bone area (every bone of this leg in the slice)"),
        ColumnInfo("Bone_mean_HU", "HU", "bone mean attenuation"),
        ColumnInfo("Cortical_area_cm2", "cm2", f"the site's bone (femur or tibia): area with HU >= {CORTICAL_HU:g}"),
        ColumnInfo("Cortical_mean_HU", "HU", "mean attenuation of that cortical part"),
        ColumnInfo("Trabecular_area_cm2", "cm2", "the site's bone: the rest of its area (marrow, cancellous bone)"),
        ColumnInfo("Trabecular_mean_HU", "HU", "mean attenuation of that trabecular part"),
        ColumnInfo("height_m", "m", "the patient's height used for the indexes"),
        ColumnInfo("height_source", "", "DICOM PatientSize (0010,1020), the --height-m option, or empty"),
        ColumnInfo("SM_index_cm2_m2", "cm2/m2", "SM area / height^2"),
        ColumnInfo("SM_gauge", "cm2/m2*HU", "muscle gauge: SM index x SM mean HU"),
        ColumnInfo("SM_area_asymmetry_pct", "%", "(right - left) / mean of SM area at this site"),
        ColumnInfo("SM_mean_HU_asymmetry_pct", "%", "(right - left) / mean of SM mean HU at this site"),
    )


def _region_columns() -> tuple:
    columns = []
    for side in SIDES:
        for region in REGIONS:
            prefix = f"{SIDE_PREFIX[side]}{region}_"
            scope = f"{region}, " + ("both legs, where both have it" if side == "both" else f"patient's {side} leg")
            columns += summary_columns(prefix, scope)
            if side != "both":
                columns += [ColumnInfo(f"{prefix}length_mm", "mm", f"the {region}'s length along S ({scope})"),
                            ColumnInfo(f"{prefix}complete", "1",
                                       f"1: the whole {region} is in the scan; 0: only part of it ({scope})")]
    for region in ("", *REGIONS):
        prefix, scope = (f"{region}_", f"the {region}") if region else ("", "separable slices")
        columns += [ColumnInfo(f"{prefix}SM_volume_asymmetry_pct", "%", f"(right - left) / mean of SM volume ({scope})"),
                    ColumnInfo(f"{prefix}SM_mean_HU_asymmetry_pct", "%",
                               f"(right - left) / mean of SM mean HU ({scope})")]
    return tuple(columns)


REGION_COLUMNS: tuple = _region_columns()


def measure_with_anatomy(ct: Volume, labels: Volume, layout: Optional[SliceLayout] = None,
                         settings: MeasurementSettings = MeasurementSettings()) -> Measurements:
    """compute_measurements plus the regions and sites of each leg (see the module notes), with the height of
    height_for_indexes."""
    layout = layout or slice_layout(labels, RADIOLOGICAL)
    labels_display, hu_display = layout.display_view(labels.array), layout.display_view(ct.array)
    split_columns = leg_split_columns(labels_display, labelled_slices(labels_display))
    measurements = compute_measurements(ct, labels, layout, split_columns)
    anatomy = find_anatomy(labels_display, hu_display, layout, split_columns)
    regions, notes = _region_summary(anatomy, labels_display, hu_display, layout, measurements.summary)
    height = height_for_indexes(settings, ct)
    rows = measure_sites(anatomy, labels, labels_display, hu_display, layout, settings, height)
    return replace(measurements, regions=regions, region_notes=notes, site_rows=rows)


def height_for_indexes(settings: MeasurementSettings, ct: Volume) -> tuple:
    """(height in metres, its source) for the height-normalised indexes: the settings' height wins over the DICOM
    PatientSize the CT carries; (nan, "") without either."""
    if settings.height_m:
        return settings.height_m, "given"
    if ct.patient_height_m:
        return ct.patient_height_m, "DICOM PatientSize"
    return math.nan, ""


def measure_sites(anatomy: Anatomy, labels: Volume, labels_display, hu_display, layout: SliceLayout,
                  settings: MeasurementSettings, height=(math.nan, "")) -> list:
    """One row per site and leg (site_columns keys, plus `point_ras`: the centre of the leg's tissue in the
    measured slice, RAS mm, where measured), standard sites first, then the user's."""
    sites = [(site.name, site) for site in SITES] + [(name, position) for name, position in settings.user_sites]
    rows = []
    for name, definition in sites:
        pair = [_site_row(name, definition, anatomy.legs[side], anatomy, labels, labels_display, hu_display, layout,
                          settings, height) for side in LEGS]
        add_site_asymmetry(*pair)
        rows += pair
    return rows


def remeasure_site(ct: Volume, labels: Volume, name: str, side: str, s_mm: float,
                   settings: MeasurementSettings = MeasurementSettings(), height=(math.nan, "")) -> dict:
    """The row of one site moved to `s_mm` (a point dragged in Slicer): measured on the slice nearest to it."""
    layout = slice_layout(labels, RADIOLOGICAL)
    labels_display, hu_display = layout.display_view(labels.array), layout.display_view(ct.array)
    anatomy = find_anatomy(labels_display, hu_display, layout)
    return _site_row(name, float(s_mm), anatomy.legs[side], anatomy, labels, labels_display, hu_display, layout,
                     settings, height)


def _site_row(name, definition, leg: LegAnatomy, anatomy: Anatomy, labels: Volume, labels_display, hu_display, layout,
              settings: MeasurementSettings, height) -> dict:
    row = {column.name: math.nan for column in site_columns(settings.muscle_bands)}
    row.update(site=name, side=leg.side, measured=False, reason="", height_m=height[0],
               height_source=height[1])
    position, reason = _site_position(definition, leg, anatomy, labels_display, layout)
    row["S_mm"] = position
    if reason:
        row["reason"] = reason
        return row
    index = nearest_slice(anatomy.positions_mm, position)
    row.update(slice_index=index, slice_S_mm=float(anatomy.positions_mm[index]))
    reason = _slice_problem(position, index, leg, anatomy)
    if reason:
        row["reason"] = reason
        return row
    bone = definition.bone if isinstance(definition, SiteDefinition) else ""
    row.update(_slice_values(leg, index, labels_display, hu_display, layout, settings, bone))
    row["measured"] = True
    row["point_ras"] = _leg_centre_ras(leg, index, labels, labels_display, layout)
    if math.isfinite(height[0]):
        row["SM_index_cm2_m2"] = row["SM_area_cm2"] / height[0] ** 2
        row["SM_gauge"] = row["SM_index_cm2_m2"] * row["SM_mean_HU"]
    return row


def nearest_slice(positions: np.ndarray, s_mm: float) -> int:
    """The slice whose centre is nearest to S; of two equally near, the inferior one (so that every storage
    order picks the same slice)."""
    distance = np.abs(positions - s_mm)
    nearest = np.flatnonzero(distance <= distance.min() + 1e-6)
    return int(nearest[np.argmin(positions[nearest])])


def _site_position(definition, leg: LegAnatomy, anatomy: Anatomy, labels_display, layout) -> tuple:
    """(S in mm, '') or (NaN, why the site cannot be placed)."""
    if not isinstance(definition, SiteDefinition):
        return float(definition), ""
    if leg.reason:
        return math.nan, leg.reason
    marks = leg.landmarks
    if definition.name == "mid_thigh":
        return _between(marks, "femur_top", "femur_bottom", 0.5, "femur_bottom")
    if definition.name in TIBIA_SHARES:
        position, reason = _between(marks, "tibia_top", "tibia_bottom", TIBIA_SHARES[definition.name], "plafond")
        return position, reason
    calf = leg.regions.get("calf")
    if calf is None or not calf.complete:
        why = leg.region_reasons.get("calf") or "the calf is not in the scan"
        return math.nan, f"the whole calf is needed to find its largest muscle slice: {why}"
    areas = [np.count_nonzero(labels_display[index][:, leg.columns[index]] == SM) for index in calf.slices]
    return float(anatomy.positions_mm[calf.slices[int(np.argmax(areas))]]), ""


def _between(marks: dict, top: str, bottom: str, share: float, base: str) -> tuple:
    """`base` + `share` of the length from `bottom` to `top`, when all three landmarks are located."""
    missing = [marks[name].reason for name in (top, bottom, base) if marks[name].status != "found"]
    if missing:
        return math.nan, "; ".join(dict.fromkeys(missing))
    return marks[base].s_mm + share * (marks[top].s_mm - marks[bottom].s_mm), ""


def _slice_problem(position: float, index: int, leg: LegAnatomy, anatomy: Anatomy) -> str:
    positions = anatomy.positions_mm
    if abs(positions[index] - position) > anatomy.slice_mm / 2 + 1e-6:
        return f"S = {position:.1f} mm lies outside the scan (S {positions.min():.1f} to {positions.max():.1f} mm)"
    if leg.reason:
        return leg.reason
    if index not in leg.columns:
        return "the legs are not told apart in this slice"
    if index not in set(leg.slices.tolist()):
        return "this leg has no tissue in this slice"
    if index in leg.metal_slices:
        return "metal in this slice (an implant): its HU are not tissue values"
    return ""


def _slice_values(leg: LegAnatomy, index: int, labels_display, hu_display, layout, settings, bone: str) -> dict:
    columns = leg.columns[index]
    labels, hu = labels_display[index][:, columns], hu_display[index][:, columns].astype(np.float64)
    pixel_cm2 = layout.pixel_area_mm2 / 100.0
    muscle = hu[labels == SM]
    values = {f"{key}_area_cm2": float(np.count_nonzero(labels == value) * pixel_cm2)
              for key, value in (("SM", SM), ("IMAT", IMAT), ("SAT", SAT), ("Bone", BONE))}
    values["SM_mean_HU"], values["SM_sd_HU"] = _mean(muscle), float(muscle.std()) if muscle.size else math.nan
    for band in settings.muscle_bands:
        values[band_column(band)] = float(np.count_nonzero((muscle >= band[0]) & (muscle <= band[1])) * pixel_cm2)
    values["Bone_mean_HU"] = _mean(hu[labels == BONE])
    if bone:
        own = hu[leg.bone_mask(bone, index)]
        cortical = own >= CORTICAL_HU
        values.update(Cortical_area_cm2=float(np.count_nonzero(cortical) * pixel_cm2), Cortical_mean_HU=_mean(own[cortical]),
                      Trabecular_area_cm2=float(np.count_nonzero(~cortical) * pixel_cm2),
                      Trabecular_mean_HU=_mean(own[~cortical]))
    return values


def _leg_centre_ras(leg: LegAnatomy, index: int, labels: Volume, labels_display, layout) -> list:
    columns = leg.columns[index]
    rows, cols = np.nonzero(labels_display[index][:, columns])
    display = (index, float(rows.mean()), float(cols.mean()) + columns.start)
    return [float(value) for value in labels.ras_of_index([layout.array_index(display, labels.array.shape)])[0]]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def asymmetry_pct(right: float, left: float) -> float:
    """(right - left) / mean of the two, in %; NaN when either is missing or the mean is 0."""
    mean = (right + left) / 2
    return 100.0 * (right - left) / mean if math.isfinite(mean) and mean != 0 else math.nan


def add_site_asymmetry(right: dict, left: dict) -> None:
    """Set the asymmetry columns of one site's right and left rows from their muscle area and mean HU."""
    _add_asymmetry([right, left], ("SM_area_cm2", "SM_area_asymmetry_pct"), ("SM_mean_HU", "SM_mean_HU_asymmetry_pct"))


def _add_asymmetry(pair: list, *keys) -> None:
    right, left = pair
    for value_key, asymmetry_key in keys:
        value = asymmetry_pct(right[value_key], left[value_key])
        right[asymmetry_key] = left[asymmetry_key] = value


def _region_summary(anatomy: Anatomy, labels_display, hu_display, layout, summary: dict) -> tuple:
    voxel_cm3 = layout.pixel_area_mm2 * layout.spacing_slice_mm / 1000.0
    values, notes = {}, {}
    for region in REGIONS:
        totals = {}
        for side in LEGS:
            leg = anatomy.legs[side]
            found = leg.regions.get(region)
            if leg.region_reasons.get(region):
                notes[f"{side} {region}"] = leg.region_reasons[region]
            prefix = f"{SIDE_PREFIX[side]}{region}_"
            if found is None:
                continue
            totals[side] = sum(label_stats(labels_display[index][:, leg.columns[index]],
                                           hu_display[index][:, leg.columns[index]]) for index in found.slices)
            values.update(summary_values(prefix, totals[side], voxel_cm3))
            values[f"{prefix}length_mm"] = found.high_mm - found.low_mm
            values[f"{prefix}complete"] = int(found.complete)
        if len(totals) == 2:
            values.update(summary_values(f"{region}_", totals["right"] + totals["left"], voxel_cm3))
    for region in ("", *REGIONS):
        prefix = f"{region}_" if region else ""
        for measure in ("SM_volume_cm3", "SM_mean_HU"):
            source = values if region else summary
            values[f"{prefix}{measure.replace('_cm3', '')}_asymmetry_pct"] = asymmetry_pct(
                source.get(f"right_{prefix}{measure}", math.nan), source.get(f"left_{prefix}{measure}", math.nan))
    return {column.name: values.get(column.name, math.nan) for column in REGION_COLUMNS}, notes
