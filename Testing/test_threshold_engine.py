"""The threshold engine against the leg phantom's exact truth, through the shared volume pipeline."""

import numpy as np
import pytest

from LegSegNetLib.segmenting.engines.threshold import Thresholds, ThresholdEngine
from LegSegNetLib.measuring.measurements import compute_measurements, dice
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom
from LegSegNetLib.segmenting.pipeline import segment_volume
from LegSegNetLib.tissues import TISSUE_BY_KEY

SHAPE = (24, 256, 256)
MIN_DICE = {"Bone": 0.95, "SM": 0.95, "SAT": 0.93, "IMAT": 0.75}
MAX_VOLUME_ERROR = {"Bone": 0.03, "SM": 0.03, "SAT": 0.03}  # IMAT: thin, partial volume lowers it (see docs)

CASES = [
    ("calf", 0, "LPS", None),
    ("calf", 1, "RAS", None),
    ("calf", 2, "PIR", None),
    ("calf", 3, "oblique", (4.0, 0.9, 1.3)),  # anisotropic pixels
    ("thigh", 0, "LPS", None),
    ("thigh", 1, "oblique", None),
    ("thigh", 2, "permuted", None),  # slices along the last array axis
]


def tissue_volumes_cm3(ct, labels):
    summary = compute_measurements(ct, labels).summary
    return {key: summary[f"{key}_volume_cm3"] for key in TISSUE_BY_KEY}


@pytest.mark.parametrize("region,seed,orientation,spacing", CASES)
def test_dice_and_volumes_against_phantom_truth(region, seed, orientation, spacing):
    ct, truth = make_leg_phantom(seed=seed, region=region, shape=SHAPE, spacing=spacing, orientation=orientation)
    labels = segment_volume(ct, ThresholdEngine())
    assert np.array_equal(labels.ijk_to_ras, ct.ijk_to_ras)
    measured, expected = tissue_volumes_cm3(ct, labels), tissue_volumes_cm3(ct, truth)
    for key, tissue in TISSUE_BY_KEY.items():
        score = dice(labels.array == tissue.value, truth.array == tissue.value)
        assert score >= MIN_DICE[key], f"{key} Dice {score:.3f}"
    for key, limit in MAX_VOLUME_ERROR.items():
        error = measured[key] / expected[key] - 1
        assert abs(error) <= limit, f"{key} volume {measured[key]:.1f} cm3 vs truth {expected[key]:.1f} cm3"


def test_noisier_blurrier_scan_degrades_gracefully():
    # 20 HU noise and a 0.8 mm PSF: wider partial-volume rims (muscle next to cortex above 150 HU,
    # thin fat streaks above -30 HU) cost a little Dice; nothing breaks.
    ct, truth = make_leg_phantom(seed=7, region="calf", shape=(12, 256, 256), noise=20.0, blur=0.8)
    labels = segment_volume(ct, ThresholdEngine())
    for key, tissue in TISSUE_BY_KEY.items():
        minimum = MIN_DICE[key] - 0.03
        assert dice(labels.array == tissue.value, truth.array == tissue.value) >= minimum, key


def test_same_labels_whatever_the_storage_orientation():
    reference_ct, _ = make_leg_phantom(seed=4, shape=(6, 192, 192))
    reference = segment_volume(reference_ct, ThresholdEngine())
    ct, _ = make_leg_phantom(seed=4, shape=(6, 192, 192), orientation="RAS")
    labels = segment_volume(ct, ThresholdEngine())
    # RAS storage = LPS storage with the i and j axes reversed.
    assert np.array_equal(labels.array[:, ::-1, ::-1], reference.array)


def test_nothing_labelled_outside_the_legs_table_and_cushion_ignored():
    ct, truth = make_leg_phantom(seed=5, region="thigh", shape=(8, 256, 256))
    labels = segment_volume(ct, ThresholdEngine()).array
    table = (ct.array > 150) & (truth.array == 0)
    assert table.sum() > 500, "the phantom has a table"
    assert not labels[table].any()
    outside_legs = truth.array == 0
    assert (labels[outside_legs] > 0).sum() < 0.01 * (truth.array > 0).sum()


def test_trabecular_ends_are_bone_marrow_included():
    ct, truth = make_leg_phantom(seed=6, region="calf", shape=(20, 256, 256))
    labels = segment_volume(ct, ThresholdEngine()).array
    knee_end = slice(-3, None)  # calf slabs flare into cancellous bone at their superior end
    assert dice(labels[knee_end] == 4, truth.array[knee_end] == 4) >= 0.95
    shaft = slice(8, 12)
    fatty_marrow = (truth.array[shaft] == 4) & (ct.array[shaft] < 0)
    assert fatty_marrow.sum() > 100
    assert (labels[shaft][fatty_marrow] == 4).mean() > 0.97


def test_thresholds_are_tunable_and_checked():
    ct, _ = make_leg_phantom(seed=0, shape=(4, 192, 192))
    default = segment_volume(ct, ThresholdEngine()).array
    strict = segment_volume(ct, ThresholdEngine(Thresholds(muscle_hu=(0.0, 150.0)))).array
    assert (strict == 2).sum() < (default == 2).sum()
    with pytest.raises(ValueError, match="increase"):
        Thresholds(fat_hu=(-190.0, 10.0))
    with pytest.raises(ValueError, match="body_min_hu"):
        Thresholds(body_min_hu=-100.0)


def test_empty_and_air_only_slices():
    engine = ThresholdEngine()
    air = np.full((2, 64, 64), -1000.0)
    assert not engine.segment_slices(air, (1.0, 1.0)).any()
    table_only = air.copy()
    table_only[:, 50:53, :] = 250.0  # a thin tabletop shell
    assert not engine.segment_slices(table_only, (1.0, 1.0)).any()
