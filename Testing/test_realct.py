"""End to end on a real CT: the Visible Human Female lower legs (ankle to below the knee, 1 mm voxels).

No labels exist for this scan, so the threshold engine is checked against anatomy and physiology:
HU of each tissue, plausible proportions, both legs alike, two bones per leg along the calf.
"""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

import realct
from LegSegNetLib.segmenting.engines.threshold import ThresholdEngine
from LegSegNetLib.reading.volume_files import read_volume
from LegSegNetLib.measuring.measurements import compute_measurements
from LegSegNetLib.writing.overlay import write_overlay_png
from LegSegNetLib.segmenting.pipeline import segment_volume
from LegSegNetLib.reading.sample_data import CORRUPT_SLICE, corrupt_slice_index
from LegSegNetLib.tissues import TISSUE_BY_KEY, TISSUE_BY_VALUE


@pytest.fixture(scope="module")
def ct():
    return realct.visible_human_leg_ct()


@pytest.fixture(scope="module")
def labels(ct):
    return segment_volume(ct, ThresholdEngine())


@pytest.fixture(scope="module")
def summary(ct, labels):
    return compute_measurements(ct, labels).summary


def test_corrupt_slice_is_interpolated_from_its_neighbours(visible_human_dicom_dir, ct):
    raw = read_volume(visible_human_dicom_dir)
    index = corrupt_slice_index(raw, visible_human_dicom_dir / CORRUPT_SLICE)
    assert 0 < index < raw.array.shape[0] - 1
    body = raw.array[index - 1] > -300
    neighbours_mean = (raw.array[index - 1][body].mean() + raw.array[index + 1][body].mean()) / 2
    assert abs(raw.array[index][body].mean() - neighbours_mean) > 500, "the raw slice is the corrupt one"
    assert abs(ct.array[index][body].mean() - neighbours_mean) < 10
    untouched = [k for k in range(raw.array.shape[0]) if k != index]
    assert np.array_equal(ct.array[untouched], raw.array[untouched])


def test_tissue_hu_in_physiological_ranges(summary):
    mean = {key: summary[f"{key}_mean_HU"] for key in TISSUE_BY_KEY}
    # Muscle: normal-attenuation skeletal muscle is 30..150 HU; lower-leg muscle averages 40..60 HU.
    assert 30 <= mean["SM"] <= 80
    # Subcutaneous fat averages -90..-110 HU; edge voxels mixed with skin and septa pull it up a little.
    assert -120 <= mean["SAT"] <= -70
    # IMAT lies in thin streaks mixed with muscle, so its mean sits higher in the fat range than SAT's.
    assert mean["SAT"] < mean["IMAT"] <= -30
    # Bone: cortex (1000..1800 HU) with fatty or trabecular marrow (-100..400 HU) averages a few hundred.
    assert 300 <= mean["Bone"] <= 1200
    # Most muscle of a healthy adult leg is normal-attenuation (30..150 HU), not fatty low-attenuation.
    assert summary["SM_normal_attenuation_fraction"] >= 0.6


def test_tissue_volumes_plausible_for_two_lower_legs(summary):
    volume = {key: summary[f"{key}_volume_cm3"] for key in TISSUE_BY_KEY}
    total = sum(volume.values())
    # 35 cm of two adult lower legs: a few litres in all (each leg 1.5..4 l from ankle to knee).
    assert 3000 <= total <= 8000
    # Bone is about a tenth of the lower leg's cross-section (tibia and fibula, wider at the ends).
    assert 0.05 <= volume["Bone"] / total <= 0.25
    # Muscle is the largest tissue of a normal-weight to overweight leg; SAT a large share too.
    assert 0.3 <= volume["SM"] / total <= 0.7 and 0.15 <= volume["SAT"] / total <= 0.55
    # IMAT in calf muscle of older adults: about 1..15 % of muscle volume on CT.
    assert 0.01 <= volume["IMAT"] / volume["SM"] <= 0.15


def test_both_legs_alike(summary):
    assert summary["separable_slice_count"] >= 0.9 * summary["slice_count"]
    for key in TISSUE_BY_KEY:
        right, left = summary[f"right_{key}_volume_cm3"], summary[f"left_{key}_volume_cm3"]
        assert 0.85 <= right / left <= 1.15, f"{key}: right {right:.1f} vs left {left:.1f} cm3"


def test_two_legs_and_two_bones_per_leg_along_the_calf(ct, labels):
    calf = range(60, 280)  # mid-calf: well away from the ankle and knee joints
    for index in calf:
        legs, leg_count = ndimage.label(ndimage.binary_fill_holes(ct.array[index] > -400))
        sizes = np.bincount(legs.ravel())[1:]
        assert (sizes >= 400).sum() == 2, f"slice {index}"
        bones, _ = ndimage.label(labels.array[index] == TISSUE_BY_KEY["Bone"].value)
        bone_sizes = np.bincount(bones.ravel())[1:]
        assert (bone_sizes >= 20).sum() == 4, f"slice {index}: tibia and fibula on each side"
        assert bone_sizes[bone_sizes < 20].sum() < 10, f"slice {index}: no bone specks"


def test_overlay_picture_shows_the_four_tissues(ct, labels, tmp_path):
    path = write_overlay_png(ct, labels, tmp_path / "overlay.png")
    picture = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.dtype == np.uint8
    assert picture.shape[0] >= 256 and picture.shape[1] > 4 * picture.shape[0]  # four axial panels and a coronal
    for value, tissue in TISSUE_BY_VALUE.items():
        tint = np.array(tissue.color) * 255
        # A labelled pixel is a blend of grey and the tissue colour: its hue follows the colour.
        direction = tint / np.linalg.norm(tint)
        rgb = picture.reshape(-1, 3).astype(float)
        chroma = rgb - rgb.mean(axis=1, keepdims=True)
        target = direction - direction.mean()
        if np.linalg.norm(target) < 0.05:  # bone's colour is nearly grey: check bright pixels instead
            assert (rgb.min(axis=1) > 200).sum() > 200
            continue
        similarity = chroma @ target / (np.linalg.norm(chroma, axis=1) * np.linalg.norm(target) + 1e-9)
        assert (similarity > 0.98).sum() > 200, tissue.key


def test_sites_and_regions_say_what_the_lower_leg_scan_holds(ct, labels):
    """Ankle to just below the knee: tibia and fibula per leg with the fibular head and the tibial plateau in the
    scan; no femur or patella, so no thigh or knee and no mid-thigh; the labels join the talus to the tibia at the
    ankle, so the tibia's distal end (and every tibia site, and the whole calf for max_calf) is not located: each
    is reported with its reason, none is guessed."""
    from LegSegNetLib.measuring.sites import measure_with_anatomy

    measurements = measure_with_anatomy(ct, labels)
    for side in ("right", "left"):
        calf = measurements.regions[f"{side}_calf_SM_volume_cm3"]
        assert measurements.regions[f"{side}_calf_complete"] == 0 and 800 < calf < 1500
        assert np.isnan(measurements.regions[f"{side}_thigh_SM_volume_cm3"])
        assert "no femur" in measurements.region_notes[f"{side} thigh"]
    rows = {(row["site"], row["side"]): row for row in measurements.site_rows}
    assert all(not row["measured"] and row["reason"] for row in rows.values())
    assert rows[("mid_thigh", "right")]["reason"] == "no femur found in this leg"
    assert "tibia reaches the scan's inferior edge" in rows[("tibia_38", "left")]["reason"]
