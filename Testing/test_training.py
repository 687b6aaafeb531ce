"""Training pairs export, the nnU-Net 2D trainer and the model folders it writes, on synthetic leg phantoms."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LegSegNetLib.cli import main
from LegSegNetLib.reading.volume_files import read_volume, write_volume
from LegSegNetLib.reading.layout import slice_layout
from LegSegNetLib.segmenting.engines.nnunet.checkpoint import load_checkpoint
from LegSegNetLib.segmenting.engines.nnunet.engine import LegSegNetEngine
from LegSegNetLib.segmenting.engines.nnunet.preprocessing import legsegnet_image
from LegSegNetLib.segmenting.engines.nnunet.model import load_model_folder
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom
from LegSegNetLib.reading.layout import SliceRange
from LegSegNetLib.segmenting.pipeline import segment_volume
from LegSegNetLib.training.export import ExportError, export_training_pairs
from LegSegNetLib.training.options import TrainingOptions
from LegSegNetLib.training.plans import features_per_stage, foreground_intensity_properties, legsegnet_plans
from LegSegNetLib.training.trainer import TrainingError, train
from LegSegNetLib.settings import SegmentationSettings

TINY = dict(width=0.125, batch_size=4, iterations_per_epoch=8, max_validation_slices=8)


def _phantom(seed=0, shape=(6, 128, 160), orientation="LPS"):
    return make_leg_phantom(seed=seed, region="calf", shape=shape, orientation=orientation)


def _png(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def phantom_dataset(tmp_path_factory):
    """Five small calf phantoms (five sources, so the folds split by scan) as an nnU-Net dataset."""
    folder = tmp_path_factory.mktemp("dataset")
    for seed in range(5):
        ct, truth = _phantom(seed)
        export_training_pairs(ct, truth, folder, name=f"calf{seed}")
    return folder


@pytest.fixture(scope="module")
def trained_model(phantom_dataset, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("model")
    metrics = train(phantom_dataset, out, TrainingOptions(epochs=3, **TINY))
    return out, metrics


# --- export -------------------------------------------------------------------------------------------------

def test_nnunet_export_appends_without_renumbering_or_overwriting(tmp_path):
    ct, truth = _phantom(0)
    first = export_training_pairs(ct, truth, tmp_path, name="first")
    before = {path.name: _digest(path) for path in first.files}
    second = export_training_pairs(ct, truth, tmp_path, slice_range=SliceRange(2, 4), name="second")

    assert sorted(path.name for path in (tmp_path / "labelsTr").iterdir()) == [f"case_{n:04d}.png" for n in range(8)]
    assert [path.name for path in second.files] == [
        "case_0006_0000.png", "case_0006.png", "case_0007_0000.png", "case_0007.png"]
    assert {path.name: _digest(path) for path in first.files} == before
    dataset_json = json.loads((tmp_path / "dataset.json").read_text())
    assert dataset_json["numTraining"] == 8
    assert dataset_json["labels"] == {"background": 0, "SAT": 1, "SM": 2, "IMAT": 3, "Bone": 4}
    sources = json.loads((tmp_path / "legsegnet_cases.json").read_text())
    assert sources["case_0007"] == {"source": "second", "slice": 3}
    # The appended slices are the same slices as first exported.
    assert np.array_equal(_png(tmp_path / "imagesTr/case_0006_0000.png"), _png(tmp_path / "imagesTr/case_0002_0000.png"))


def test_nnunet_slices_are_legsegnet_inputs_in_display_orientation_whatever_the_storage(tmp_path):
    exported = []
    for orientation in ("LPS", "RAS", "ALS"):  # slice index 3 is the same slice in all three
        ct, truth = _phantom(1, orientation=orientation)
        folder = tmp_path / orientation
        export_training_pairs(ct, truth, folder, slice_range=SliceRange(3, 4))
        exported.append((_png(folder / "imagesTr/case_0000_0000.png"), _png(folder / "labelsTr/case_0000.png")))
    for image, label in exported[1:]:
        assert np.array_equal(image, exported[0][0]) and np.array_equal(label, exported[0][1])
    image, label = exported[0]
    assert image.shape == label.shape == (256, 256) and image.dtype == np.uint8
    # Radiological display: the legs rest on the table, so the lowest tissue row lies in the lower half
    # and the air above the legs at the top; muscle HU 50 maps to (50 + 200) / 400 * 255 = 159.
    tissue_rows = np.flatnonzero(label.any(axis=1))
    assert tissue_rows[0] > 20 and tissue_rows[-1] > 128
    assert 140 < np.median(image[label == 2]) < 180


def test_nifti_pairs_keep_hu_and_the_physical_position_of_each_pixel(tmp_path):
    ct, truth = _phantom(2, orientation="RAS")
    result = export_training_pairs(ct, truth, tmp_path, format="nifti", slice_range=SliceRange(4, 5), name="leg")
    assert [path.name for path in result.files] == ["leg-0004-image.nii.gz", "leg-0004-label.nii.gz"]
    image, label = (read_volume(path) for path in result.files)
    assert image.array.shape == (1, 128, 160) and np.allclose(image.ijk_to_ras, label.ijk_to_ras)
    for row, column in [(0, 0), (40, 100), (127, 159)]:
        position = image.ras_of_index([0, row, column])
        k, j, i = np.rint(ct.index_of_ras(position)[0]).astype(int)
        assert image.array[0, row, column] == ct.array[k, j, i]
        assert label.array[0, row, column] == truth.array[k, j, i]
    with pytest.raises(ExportError, match="already exist"):
        export_training_pairs(ct, truth, tmp_path, format="nifti", slice_range=SliceRange(4, 5), name="leg")


def test_edited_slices_are_those_differing_from_the_original(tmp_path):
    ct, original = _phantom(3)
    corrected = original.with_array(original.array.copy())
    display = slice_layout(corrected).display_view(corrected.array)
    display[1][display[1] == 3] = 2  # IMAT relabelled as muscle on display slices 1 and 4
    display[4, 60:70, 60:70] = 4
    result = export_training_pairs(ct, corrected, tmp_path, reference=original)
    assert result.slices == [1, 4]
    ranged = export_training_pairs(ct, corrected, tmp_path / "ranged", reference=original, slice_range=SliceRange(2, 6))
    assert ranged.slices == [4]
    with pytest.raises(ExportError, match="nothing was edited"):
        export_training_pairs(ct, corrected, tmp_path / "none", reference=original, slice_range=SliceRange(2, 4))


def test_export_refuses_labels_off_the_ct_grid_or_outside_the_four_tissues(tmp_path):
    ct, truth = _phantom(0)
    other_ct, other_truth = _phantom(0, orientation="RAS")
    with pytest.raises(ExportError, match="not on the CT's voxel grid"):
        export_training_pairs(ct, other_truth, tmp_path)
    with pytest.raises(ExportError, match="outside 0..4"):
        export_training_pairs(ct, truth.with_array(truth.array * 2), tmp_path)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "x": 1}, "file_ending": ".png"}))
    with pytest.raises(ExportError, match="channel_names"):
        export_training_pairs(ct, truth, tmp_path / "foreign")


def test_export_command_line(tmp_path):
    ct, truth = _phantom(0)
    write_volume(ct, tmp_path / "ct.nii.gz")
    write_volume(truth, tmp_path / "labels.nii.gz")
    out = tmp_path / "dataset"
    assert main(["export-pairs", str(tmp_path / "ct.nii.gz"), str(tmp_path / "labels.nii.gz"), str(out),
                 "--range", "1:3"]) == 0
    assert json.loads((out / "legsegnet_cases.json").read_text())["case_0001"] == {"source": "ct", "slice": 2}
    assert main(["export-pairs", str(tmp_path / "ct.nii.gz"), str(tmp_path / "labels.nii.gz"), str(out),
                 "--slices", "edited"]) == 2  # --reference missing: a clean error, not a traceback


# --- plans and training -------------------------------------------------------------------------------------

def test_plans_scale_legsegnet_features_and_share_one_layout():
    assert features_per_stage(1.0) == [32, 64, 128, 256, 512, 512, 512]  # nnU-Net's plan for 256x256 slices
    assert features_per_stage(0.125) == [4, 8, 16, 32, 64, 64, 64]
    small = legsegnet_plans(features=(4, 8, 16, 32), patch_size=(128, 128))["configurations"]["2d"]
    assert small["architecture"]["arch_kwargs"]["strides"] == [[1, 1], [2, 2], [2, 2], [2, 2]]
    assert len(small["architecture"]["arch_kwargs"]["n_conv_per_stage_decoder"]) == 3
    assert small["patch_size"] == [128, 128]
    with pytest.raises(ValueError, match="normalization"):
        legsegnet_plans(normalization="MinMax")


def test_foreground_statistics_weigh_every_slice_equally():
    bright, dim = np.full((4, 4), 200, np.uint8), np.full((4, 4), 100, np.uint8)
    many, few = np.ones((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    few[0, 0] = 1
    statistics = foreground_intensity_properties([bright, dim], [many, few])
    assert statistics["mean"] == pytest.approx(150, abs=3)  # 16 bright and 1 dim pixel, one slice each
    assert statistics["min"] == 100 and statistics["max"] == 200


def test_export_train_segment_end_to_end(trained_model):
    folder, metrics = trained_model
    assert {path.name for path in folder.iterdir()} >= {"plans.json", "dataset.json", "splits_final.json", "fold_0"}
    assert LegSegNetEngine.from_model_folder(folder, SegmentationSettings(device="cpu")).in_plane_orientation == "PL"
    assert {path.name for path in (folder / "fold_0").iterdir()} >= {
        "checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth"}
    assert set(metrics["dice"]) == {"SAT", "SM", "IMAT", "Bone"}
    checkpoint = load_checkpoint(folder / "fold_0" / "checkpoint_final.pth")
    assert checkpoint["trainer_name"] == "nnUNetTrainer" and checkpoint["current_epoch"] == 3
    assert tuple(checkpoint["inference_allowed_mirroring_axes"]) == (0, 1)
    assert isinstance(checkpoint["logging"]["mean_fg_dice"][0], np.floating)
    assert "optimizer_state" not in checkpoint  # inference checkpoints stay small

    ct, _ = _phantom(seed=11)  # a phantom the model never saw
    labels = segment_volume(ct, LegSegNetEngine.from_model_folder(folder, SegmentationSettings(device="cpu")))
    assert labels.array.shape == ct.array.shape and np.allclose(labels.ijk_to_ras, ct.ijk_to_ras)
    assert labels.array.dtype == np.uint8 and set(np.unique(labels.array)) <= {0, 1, 2, 3, 4}
    # Three tiny epochs teach little, but both losses must already fall (trained behaviour is checked on
    # the bootstrap model, see test_bootstrap_model.py).
    logged = checkpoint["logging"]
    assert logged["train_losses"][-1] < logged["train_losses"][0]
    assert logged["val_losses"][-1] < logged["val_losses"][0]


def test_model_folder_predicts_the_same_in_nnunet_and_in_our_engine(trained_model):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    folder, _ = trained_model
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    ct, _ = _phantom(seed=12, shape=(3, 256, 256))
    hu = slice_layout(ct).display_view(ct.array)
    ours = LegSegNetEngine.from_model_folder(folder, SegmentationSettings(device="cpu")).segment_slices(np.ascontiguousarray(hu))
    for index, image in enumerate(legsegnet_image(hu)):
        reference = predictor.predict_single_npy_array(image[None, None].astype(np.float32), {"spacing": [999, 1, 1]})
        assert np.mean(reference[0] == ours[index]) > 0.999


def test_init_fine_tunes_from_the_given_weights(trained_model, phantom_dataset, tmp_path):
    folder, _ = trained_model
    start = load_model_folder(folder).networks[0].state_dict()
    # With learning rate 0 the weights cannot move: what comes out is exactly what training started from.
    train(phantom_dataset, tmp_path / "frozen", TrainingOptions(epochs=1, init=folder, learning_rate=0.0,
                                                                **dict(TINY, width=None)))
    frozen = load_checkpoint(tmp_path / "frozen" / "fold_0" / "checkpoint_final.pth")["network_weights"]
    assert all(torch.equal(frozen[key], start[key]) for key in start)
    assert json.loads((tmp_path / "frozen" / "plans.json").read_text()) == json.loads((folder / "plans.json").read_text())
    with pytest.raises(TrainingError, match="--width"):
        train(phantom_dataset, tmp_path / "wider", TrainingOptions(epochs=1, init=folder, **dict(TINY, width=0.25)))


def test_resumed_training_ends_where_an_uninterrupted_one_does(phantom_dataset, tmp_path):
    torch.set_num_threads(1)
    options = TrainingOptions(epochs=2, **dict(TINY, iterations_per_epoch=3))
    train(phantom_dataset, tmp_path / "straight", options)
    metrics = train(phantom_dataset, tmp_path / "resumed", options, epoch_callback=lambda epoch, metrics: False)
    assert metrics["epoch"] == 1 and not (tmp_path / "resumed" / "fold_0" / "checkpoint_final.pth").exists()
    with pytest.raises(TrainingError, match="--resume"):
        train(phantom_dataset, tmp_path / "resumed", options)
    assert main(["train", str(phantom_dataset), "--out", str(tmp_path / "resumed"), "--resume", "--epochs", "2",
                 "--iterations", "3", "--batch-size", "4", "--threads", "1"]) == 0

    straight = load_checkpoint(tmp_path / "straight" / "fold_0" / "checkpoint_final.pth")
    resumed = load_checkpoint(tmp_path / "resumed" / "fold_0" / "checkpoint_final.pth")
    assert resumed["current_epoch"] == 2
    for key, value in straight["network_weights"].items():
        assert torch.allclose(resumed["network_weights"][key], value, atol=1e-6), key


def test_exporting_training_pairs_does_not_need_pytorch():
    """Slicer users of the threshold engine have no PyTorch; exporting their corrections must still work."""
    import subprocess

    code = ("import sys; import LegSegNetLib.training.export; import SlicerLegSegNetLib.segmentation_logic; "
            "sys.exit('torch' in sys.modules)")
    slicer_side = Path(__file__).resolve().parents[1] / "LegSegNet"
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(slicer_side)}).returncode == 0


def test_train_without_the_training_extra_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    """`legsegnet train` after the README's plain install (no MONAI): one clear line, not a traceback."""
    for name in [name for name in sys.modules if name.split(".")[0] == "monai"] + ["monai"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if MONAI were not installed
    monkeypatch.delitem(sys.modules, "LegSegNetLib.training.trainer")
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "model")]) == 2
    error = capsys.readouterr().err
    assert "training needs MONAI" in error and "'.[train]'" in error and "Traceback" not in error
