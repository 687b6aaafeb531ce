"""The bundled bootstrap model: small, safe to load, and it segments phantoms and real CT slices it never saw."""

from __future__ import annotations

import numpy as np
import pytest

import realct
from LegSegNetLib.segmenting.engines.threshold import ThresholdEngine
from LegSegNetLib.segmenting.engines.nnunet.checkpoint import load_checkpoint
from LegSegNetLib.segmenting.engines.nnunet.engine import LegSegNetEngine
from LegSegNetLib.measuring.measurements import dice
from LegSegNetLib.reading.layout import SliceRange
from LegSegNetLib.segmenting.pipeline import segment_volume
from LegSegNetLib.resources import resources_dir
from LegSegNetLib.tissues import TISSUE_BY_KEY
from LegSegNetLib.training.phantom_dataset import phantom_dice
from LegSegNetLib.settings import SegmentationSettings

BOOTSTRAP = resources_dir() / "Models" / "legsegnet-bootstrap"
FILES = ("plans.json", "dataset.json", "legsegnet.json", "fold_0/checkpoint_final.pth", "MODEL_CARD.md")
# Unseen phantom Dice, measured (see MODEL_CARD.md) minus a margin for other CPUs' float arithmetic.
MINIMUM_DICE = {"SAT": 0.92, "SM": 0.95, "IMAT": 0.80, "Bone": 0.94}
# Visible Human slices kept out of its training data (MODEL_CARD.md); their reference is the threshold engine.
HELD_OUT_REAL_SLICES = SliceRange(150, 190)
MINIMUM_REAL_CT_DICE = {"SAT": 0.85, "SM": 0.90, "Bone": 0.75}


def test_bootstrap_model_is_complete_and_small_enough_for_the_repository():
    for name in FILES:
        assert (BOOTSTRAP / name).is_file(), name
    assert sum((BOOTSTRAP / name).stat().st_size for name in FILES) < 3_000_000
    checkpoint = load_checkpoint(BOOTSTRAP / "fold_0" / "checkpoint_final.pth")  # allow-listed loading only
    assert "optimizer_state" not in checkpoint
    assert "not for clinical use" in (BOOTSTRAP / "MODEL_CARD.md").read_text(encoding="utf-8").lower()


@pytest.fixture(scope="module")
def bootstrap_engine():
    return LegSegNetEngine.from_model_folder(BOOTSTRAP, SegmentationSettings(device="cpu"))


def test_bootstrap_model_segments_unseen_phantoms(bootstrap_engine):
    # Seeds far from the training seeds 0-47: one calf (even seed) and one thigh, 256 and 512 matrices.
    dice = phantom_dice(bootstrap_engine, seeds=(2000, 2001), slices=4)
    for tissue, minimum in MINIMUM_DICE.items():
        assert dice[tissue] >= minimum, (tissue, dice)


def test_bootstrap_model_presents_slices_radiologically(bootstrap_engine):
    assert bootstrap_engine.in_plane_orientation == "PL"
    assert np.array_equal(bootstrap_engine.model.label_values, (0, 1, 2, 3, 4))


def test_bootstrap_model_is_plausible_on_real_ct_slices_it_never_saw(bootstrap_engine):
    ct = realct.visible_human_leg_ct()
    labels = segment_volume(ct, bootstrap_engine, HELD_OUT_REAL_SLICES).array
    reference = segment_volume(ct, ThresholdEngine(), HELD_OUT_REAL_SLICES).array
    for key, minimum in MINIMUM_REAL_CT_DICE.items():
        value = TISSUE_BY_KEY[key].value
        overlap = dice(labels == value, reference == value)
        assert overlap >= minimum, (key, overlap)
    muscle_hu = ct.array[labels == TISSUE_BY_KEY["SM"].value].mean()
    assert 30 <= muscle_hu <= 80, muscle_hu  # healthy lower-leg muscle attenuation
