"""Texts and states the Slicer module's widget shows, and the engine choices it lists (pure Python)."""

from types import SimpleNamespace

import pytest

from LegSegNetLib.settings import MODEL_ENGINE, THRESHOLD_ENGINE, SegmentationSettings
from SlicerLegSegNetLib.model_logic import EngineChoice, engine_choices
from SlicerLegSegNetLib.status_texts import (
    download_progress_text, engine_status, format_duration, segmentation_done_text, segmentation_progress_text,
)


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LEGSEGNET_HOME", str(tmp_path))
    return tmp_path


def test_choices_list_registry_models_then_the_threshold_engine():
    choices = engine_choices()
    assert choices[0] == EngineChoice(MODEL_ENGINE, "legsegnet", choices[0].label)
    assert choices[-1].engine == THRESHOLD_ENGINE and not choices[-1].needs_model


def test_threshold_engine_is_always_ready():
    status = engine_status(EngineChoice(THRESHOLD_ENGINE, None, "thresholds"))
    assert status.ready and status.download_action is None and not status.removable


def test_missing_model_offers_download_and_offline_install(empty_home):
    status = engine_status(EngineChoice(MODEL_ENGINE, "legsegnet", "LegSegNet"))
    assert not status.ready and status.download_action == "Download" and not status.removable
    assert "Not installed" in status.text and ".zip" in status.text


def test_installed_model_is_ready_and_removable_then_a_damaged_one_offers_repair(empty_home, tmp_path):
    from model_factory import make_model_folder

    from LegSegNetLib.models.install import install_model_from

    folder = install_model_from(make_model_folder(tmp_path / "model", checkpoint_name="checkpoint_best.pth"))
    choice = EngineChoice(MODEL_ENGINE, "legsegnet", "LegSegNet")
    status = engine_status(choice)
    assert status.ready and status.removable and status.download_action is None
    assert "folds 0" in status.text

    (folder / "fold_0" / "checkpoint_best.pth").unlink()
    status = engine_status(choice)
    assert not status.ready and status.removable and status.download_action == "Repair"
    assert "checkpoint_best.pth" in status.text


def test_models_installed_under_their_own_name_are_offered(empty_home):
    (empty_home / "models" / "my-leg-model").mkdir(parents=True)
    names = [choice.model for choice in engine_choices()]
    assert "my-leg-model" in names and "legsegnet" in names


@pytest.mark.parametrize("seconds, text", [(0.2, "1 s"), (59, "59 s"), (61, "1 min 01 s"), (3725, "1 h 02 min")])
def test_durations(seconds, text):
    assert format_duration(seconds) == text


def test_segmentation_progress_estimates_time_left_from_the_pace_so_far():
    assert segmentation_progress_text(0, 350, 0.0) == "Slice 0 of 350"
    assert segmentation_progress_text(50, 350, 10.0) == "Slice 50 of 350, about 1 min 00 s left"
    assert segmentation_progress_text(350, 350, 70.0) == "Slice 350 of 350"
    assert "No slice" in segmentation_progress_text(0, 0, 0.0)


def test_done_text_shows_the_warnings_about_the_input():
    plain = segmentation_done_text(65.0)
    assert plain.startswith("Done in 1 min 05 s.") and "Warning" not in plain
    warned = segmentation_done_text(65.0, ("no voxel is below -500", "the volume holds a single axial slice"))
    assert "Warning: no voxel is below -500; the volume holds a single axial slice." in warned
    assert "Update measurements" in warned


def test_download_progress_shows_file_bytes_and_speed():
    progress = SimpleNamespace(file="fold_0/checkpoint_best.pth", file_index=3, file_count=3, file_done=0,
                               file_total=None, done=120_000_000, total=250_000_000, bytes_per_second=5_200_000)
    assert download_progress_text(progress) == "fold_0/checkpoint_best.pth (3/3): 120.0 of 250.0 MB, 5.2 MB/s"
    unknown_total = SimpleNamespace(**{**vars(progress), "total": None})
    assert "120.0 MB" in download_progress_text(unknown_total)


def test_a_choice_gives_settings_with_model_options_only_for_a_model():
    model = EngineChoice(MODEL_ENGINE, "legsegnet", "LegSegNet")
    assert model.settings(device="cuda:0", tta=True, folds="0, 2", range_mm=(10.0, -5.0)) == SegmentationSettings(
        engine="legsegnet", model="legsegnet", folds=(0, 2), tta=True, device="cuda:0", range_mm=(10.0, -5.0))
    assert model.settings().folds is None  # empty: every installed fold
    threshold = EngineChoice(THRESHOLD_ENGINE, None, "thresholds")
    assert threshold.settings(device="cpu", tta=True, folds="1") == SegmentationSettings(engine="threshold", device="cpu")
    with pytest.raises(ValueError, match="fold numbers"):
        model.settings(folds="zero")
    with pytest.raises(ValueError, match="unknown device"):
        model.settings(device="gpu")


def test_choice_keys_survive_a_refilled_list():
    keys = [choice.key for choice in engine_choices()]
    assert keys[-1] == "threshold:" and "legsegnet:legsegnet" in keys
    assert len(set(keys)) == len(keys)
