"""Measurements against box phantoms whose volumes, areas and HU statistics follow from their construction."""

import math

import numpy as np
import pytest

from LegSegNetLib.measuring.measurements import (
    SLICE_COLUMNS, SUMMARY_COLUMNS, TISSUE_COLUMNS, compute_measurements,
)
from LegSegNetLib.reading.volume import Volume

SAT, SM, IMAT, BONE = 1, 2, 3, 4
SPACING_IJK = (0.8, 0.6, 2.5)  # columns, rows, slices (mm)
VOXEL_MM3 = 0.8 * 0.6 * 2.5
PIXEL_MM2 = 0.8 * 0.6
LPS_AXES = np.diag([-1.0, -1.0, 1.0])  # i towards patient left, j posterior, k superior: array = radiological display
ORIGIN_S = -50.0
LABELLED = range(1, 9)  # 8 labelled slices of 10; even count so alternating HU splits them half and half

# Boxes as (row0, row1, col0, col1), half-open. The patient's right leg is on the image left (low columns).
RIGHT_LEG = {"outer": (4, 36, 2, 26), "muscle": (8, 32, 6, 22), "bone": (12, 18, 10, 16), "imat": (26, 28, 8, 12)}
LEFT_LEG = {"outer": (6, 34, 36, 60), "muscle": (10, 30, 40, 56), "bone": (14, 20, 46, 52)}
# HU on even / odd slices: the mean is the midpoint and the population SD half the difference.
HU = {SAT: (-110, -90), SM: (10, 50), IMAT: (-60, -60), BONE: (600, 800)}


def area(box):
    row0, row1, col0, col1 = box
    return (row1 - row0) * (col1 - col0)


def leg_pixels(leg):
    """Pixel count of each tissue in one slice of a leg, from the box sizes."""
    imat = area(leg["imat"]) if "imat" in leg else 0
    return {SAT: area(leg["outer"]) - area(leg["muscle"]), SM: area(leg["muscle"]) - area(leg["bone"]) - imat,
            IMAT: imat, BONE: area(leg["bone"])}


def paint(labels_2d, leg):
    for value, box in ((SAT, leg["outer"]), (SM, leg["muscle"]), (BONE, leg["bone"]), (IMAT, leg.get("imat"))):
        if box:
            row0, row1, col0, col1 = box
            labels_2d[row0:row1, col0:col1] = value


def make_phantom(legs=(RIGHT_LEG, LEFT_LEG), bridge_slices=()):
    labels = np.zeros((10, 40, 64), np.uint8)
    for k in LABELLED:
        for leg in legs:
            paint(labels[k], leg)
        if k in bridge_slices:  # legs touching: a strip of SAT joining them
            labels[k, 20:22, 26:36] = SAT
    ct = np.full(labels.shape, -1000, np.int16)
    for value, (even, odd) in HU.items():
        for k in range(labels.shape[0]):
            ct[k][labels[k] == value] = even if k % 2 == 0 else odd
    geometry = dict(spacing_ijk=SPACING_IJK, origin_ras=(10.0, -20.0, ORIGIN_S), directions_ras=LPS_AXES)
    return Volume.from_spacing(ct, **geometry), Volume.from_spacing(labels, **geometry)


def expected_side(pixels, prefix=""):
    count = len(LABELLED)
    volume = {value: pixels[value] * count * VOXEL_MM3 / 1000 for value in pixels}
    expected = {}
    for value, key in ((SAT, "SAT"), (SM, "SM"), (IMAT, "IMAT"), (BONE, "Bone")):
        expected[f"{prefix}{key}_volume_cm3"] = volume[value]
        expected[f"{prefix}{key}_mean_HU"] = sum(HU[value]) / 2 if pixels[value] else math.nan
        expected[f"{prefix}{key}_sd_HU"] = abs(HU[value][1] - HU[value][0]) / 2 if pixels[value] else math.nan
    fat = volume[SAT] + volume[IMAT]
    expected[f"{prefix}Fat_volume_cm3"] = fat
    expected[f"{prefix}Fat_mean_HU"] = (pixels[SAT] * -100 + pixels[IMAT] * -60) / (pixels[SAT] + pixels[IMAT])
    expected[f"{prefix}IMAT_SAT_ratio"] = volume[IMAT] / volume[SAT]
    expected[f"{prefix}SM_Fat_ratio"] = volume[SM] / fat
    # SM is 10 HU (low attenuation) on half the slices and 50 HU (normal) on the other half.
    for band in ("low", "normal"):
        expected[f"{prefix}SM_{band}_attenuation_volume_cm3"] = volume[SM] / 2
        expected[f"{prefix}SM_{band}_attenuation_fraction"] = 0.5
    return expected


def sum_pixels(*legs):
    return {value: sum(leg_pixels(leg)[value] for leg in legs) for value in (SAT, SM, IMAT, BONE)}


def assert_summary(summary, expected):
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(summary[key]), key
        else:
            assert summary[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


def test_two_legs_match_the_construction():
    ct, labels = make_phantom()
    # The leg called RIGHT_LEG really lies towards the patient's right (RAS +x) of the other.
    centre_x = [labels.ras_of_index((5, (box[0] + box[1]) / 2, (box[2] + box[3]) / 2))[0, 0]
                for box in (RIGHT_LEG["outer"], LEFT_LEG["outer"])]
    assert centre_x[0] > centre_x[1]
    summary = compute_measurements(ct, labels).summary
    assert_summary(summary, expected_side(sum_pixels(RIGHT_LEG, LEFT_LEG)))
    assert_summary(summary, expected_side(leg_pixels(RIGHT_LEG), "right_"))
    assert_summary(summary, expected_side(leg_pixels(LEFT_LEG), "left_"))
    assert summary["left_IMAT_SAT_ratio"] == 0.0
    assert summary["slice_count"] == 8
    assert summary["separable_slice_count"] == 8
    assert summary["axial_extent_mm"] == pytest.approx(8 * 2.5)


def test_columns_are_described_and_complete():
    ct, labels = make_phantom()
    result = compute_measurements(ct, labels)
    assert list(result.summary) == [column.name for column in SUMMARY_COLUMNS]
    assert all(set(row) == {c.name for c in TISSUE_COLUMNS} for row in result.tissue_rows)
    assert all(set(row) == {c.name for c in SLICE_COLUMNS} for row in result.slice_rows)
    for table in (SUMMARY_COLUMNS, TISSUE_COLUMNS, SLICE_COLUMNS):
        assert len({column.name for column in table}) == len(table)
    assert all(column.description for column in SUMMARY_COLUMNS + TISSUE_COLUMNS + SLICE_COLUMNS)


def test_tissue_rows_agree_with_the_construction():
    ct, labels = make_phantom()
    rows = {(row["side"], row["tissue"]): row for row in compute_measurements(ct, labels).tissue_rows}
    right = leg_pixels(RIGHT_LEG)
    assert rows["right", "SM"]["voxel_count"] == right[SM] * 8
    assert rows["right", "SM"]["label_value"] == SM
    assert rows["right", "Bone"]["mean_HU"] == pytest.approx(700)
    assert rows["right", "Bone"]["sd_HU"] == pytest.approx(100)
    both_sat = sum_pixels(RIGHT_LEG, LEFT_LEG)[SAT] * 8 * VOXEL_MM3 / 1000
    assert rows["both", "SAT"]["volume_cm3"] == pytest.approx(both_sat)
    assert math.isnan(rows["left", "IMAT"]["mean_HU"])


def test_slice_areas_long_format_with_positions():
    ct, labels = make_phantom()
    rows = compute_measurements(ct, labels).slice_rows
    assert len(rows) == 8 * 3 * 4  # labelled slices x sides x tissues
    positions = sorted({row["S_mm"] for row in rows})
    np.testing.assert_allclose(positions, [ORIGIN_S + 2.5 * k for k in LABELLED])
    right_bone = [row for row in rows if row["side"] == "right" and row["tissue"] == "Bone"]
    assert [row["slice_index"] for row in right_bone] == list(LABELLED)
    assert all(row["area_cm2"] == pytest.approx(area(RIGHT_LEG["bone"]) * PIXEL_MM2 / 100) for row in right_bone)


@pytest.mark.parametrize("axis_order, flips", [
    ((0, 1, 2), (True, False, False)),
    ((0, 1, 2), (False, True, True)),
    ((0, 2, 1), (False, False, True)),
    ((1, 0, 2), (False, False, False)),
    ((2, 1, 0), (True, True, False)),
])
def test_storage_order_does_not_change_measurements(axis_order, flips):
    ct, labels = make_phantom()
    reference = compute_measurements(ct, labels)
    result = compute_measurements(ct.reoriented(axis_order, flips), labels.reoriented(axis_order, flips))
    assert_summary(result.summary, reference.summary)
    assert result.tissue_rows == reference.tissue_rows

    assert [(row["side"], row["tissue"]) for row in result.slice_rows] == [
        (row["side"], row["tissue"]) for row in reference.slice_rows]
    for key in ("S_mm", "area_cm2"):
        np.testing.assert_allclose([row[key] for row in result.slice_rows], [row[key] for row in reference.slice_rows])


def test_slightly_oblique_volume_gives_the_same_measurements():
    ct, labels = make_phantom()
    angle = np.deg2rad(7)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    oblique = dict(spacing_ijk=SPACING_IJK, origin_ras=(10.0, -20.0, ORIGIN_S), directions_ras=rotation @ LPS_AXES)
    result = compute_measurements(Volume.from_spacing(ct.array, **oblique),
                                  Volume.from_spacing(labels.array, **oblique))
    assert_summary(result.summary, compute_measurements(ct, labels).summary)


def test_touching_legs_are_reported_together_only():
    ct, labels = make_phantom(bridge_slices=(3, 4))
    summary = compute_measurements(ct, labels).summary
    bridge_pixels = 2 * 10
    assert summary["separable_slice_count"] == 6
    assert summary["SAT_volume_cm3"] == pytest.approx(
        (sum_pixels(RIGHT_LEG, LEFT_LEG)[SAT] * 8 + bridge_pixels * 2) * VOXEL_MM3 / 1000)
    assert summary["right_Bone_volume_cm3"] == pytest.approx(area(RIGHT_LEG["bone"]) * 6 * VOXEL_MM3 / 1000)
    assert summary["left_SAT_volume_cm3"] == pytest.approx(leg_pixels(LEFT_LEG)[SAT] * 6 * VOXEL_MM3 / 1000)


def test_one_leg_has_no_sides_and_island_joins_its_side():
    ct, labels = make_phantom(legs=(RIGHT_LEG,))
    summary = compute_measurements(ct, labels).summary
    assert summary["separable_slice_count"] == 0
    sided = [key for key in summary if key.startswith(("right_", "left_"))]
    assert len(sided) == 2 * 20 and all(math.isnan(summary[key]) for key in sided)  # not measured, not 0 cm3
    rows = compute_measurements(ct, labels).tissue_rows
    assert all(math.isnan(row["volume_cm3"]) for row in rows if row["side"] != "both")
    assert summary["SAT_volume_cm3"] == pytest.approx(leg_pixels(RIGHT_LEG)[SAT] * 8 * VOXEL_MM3 / 1000)

    ct, labels = make_phantom()
    labels.array[1:9, 38, 0] = SAT  # a 1-pixel island below the right leg, on the image left
    ct.array[1:9, 38, 0] = -100
    summary = compute_measurements(ct, labels).summary
    assert summary["right_SAT_volume_cm3"] == pytest.approx((leg_pixels(RIGHT_LEG)[SAT] + 1) * 8 * VOXEL_MM3 / 1000)
    assert summary["separable_slice_count"] == 8


def test_legs_one_above_the_other_are_not_split():
    """Two blobs whose column ranges overlap are not two legs side by side (for example a leg cut in two)."""
    labels = np.zeros((2, 40, 64), np.uint8)
    labels[:, 2:18, 10:40] = SM
    labels[:, 22:38, 20:50] = SM
    geometry = dict(spacing_ijk=SPACING_IJK, directions_ras=LPS_AXES)
    summary = compute_measurements(Volume.from_spacing(np.zeros_like(labels, np.int16), **geometry),
                                   Volume.from_spacing(labels, **geometry)).summary
    assert summary["separable_slice_count"] == 0


def test_empty_and_partial_labels_give_nan_not_errors():
    labels = np.zeros((3, 20, 20), np.uint8)
    ct, empty = Volume.from_spacing(np.zeros((3, 20, 20), np.int16)), Volume.from_spacing(labels)
    summary = compute_measurements(ct, empty).summary
    assert summary["SM_volume_cm3"] == 0.0 and summary["slice_count"] == 0 and summary["axial_extent_mm"] == 0.0
    assert math.isnan(summary["SM_mean_HU"]) and math.isnan(summary["SM_Fat_ratio"])
    labels[1, 5:10, 5:10] = SM  # muscle only: no fat
    summary = compute_measurements(ct, Volume.from_spacing(labels)).summary
    assert summary["SM_volume_cm3"] == pytest.approx(25 / 1000)
    assert math.isnan(summary["IMAT_SAT_ratio"]) and math.isnan(summary["SM_Fat_ratio"])
    assert math.isnan(summary["Fat_mean_HU"])


def test_mismatched_grids_and_bad_labels_are_refused():
    ct, labels = make_phantom()
    with pytest.raises(ValueError, match="same voxel grid"):
        compute_measurements(ct, Volume(labels.array, labels.ijk_to_ras + np.diag([0.1, 0, 0, 0])))
    bad = labels.array.copy()
    bad[0, 0, 0] = 9
    with pytest.raises(ValueError, match="label values"):
        compute_measurements(ct, labels.with_array(bad))


@pytest.mark.parametrize("region", ["calf", "thigh"])
def test_leg_phantom_measures_the_same_in_any_storage(region):
    """The two-leg phantom (realistic shapes, noise) stored LPS and PIR: identical measurements, two legs found."""
    phantom = pytest.importorskip("LegSegNetLib.synthetic.leg_phantom")
    results = []
    for orientation in ("LPS", "PIR"):
        ct, truth = phantom.make_leg_phantom(seed=3, region=region, shape=(6, 96, 96), orientation=orientation)
        results.append(compute_measurements(ct, truth).summary)
    assert_summary(results[1], results[0])
    assert results[0]["separable_slice_count"] == results[0]["slice_count"] == 6
    for key in ("SAT", "SM", "Bone"):
        both = results[0][f"{key}_volume_cm3"]
        assert both > 0
        assert results[0][f"right_{key}_volume_cm3"] + results[0][f"left_{key}_volume_cm3"] == pytest.approx(both)


def test_dice_overlap_of_two_masks():
    from LegSegNetLib.measuring.measurements import dice

    mask = np.zeros((4, 4), bool)
    mask[:2] = True  # 8 pixels
    reference = np.zeros((4, 4), bool)
    reference[1:3] = True  # 8 pixels, 4 shared
    assert dice(mask, reference) == pytest.approx(0.5)
    assert dice(mask, mask) == 1.0
    assert np.isnan(dice(np.zeros((2, 2), bool), np.zeros((2, 2), bool)))
