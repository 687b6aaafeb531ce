"""The `native` profile against nnunetv2: each slice with its real intensities and spacing through
nnUNetPredictor.predict_single_npy_array, on random-weight models (near-ties everywhere, so label equality is a
strict check) whose plans resample to a spacing other than the slice's and need several tiles per slice."""

import json
import shutil

import numpy as np
import pytest

from LegSegNetLib.reading.layout import slice_layout
from LegSegNetLib.reading.volume_files import read_volume
from LegSegNetLib.segmenting.engines.factory import create_engine
from LegSegNetLib.segmenting.engines.nnunet.engine import LegSegNetEngine
from LegSegNetLib.segmenting.engines.nnunet.model import ModelFolderError, load_model_folder
from LegSegNetLib.segmenting.engines.nnunet.native import NativeEngine, native_input
from LegSegNetLib.segmenting.engines.nnunet.predictor import tile_starts
from LegSegNetLib.settings import SegmentationSettings
from model_factory import make_model_folder
from nnunet_reference import ReferencePredictor, native_reference_labels
from test_nnunet_parity import leg_phantom_slices

pytest.importorskip("nnunetv2")

TEN_LABELS = ["SAT", "rectus_femoris", "vastus_lateralis", "vastus_medialis", "vastus_intermedius", "sartorius",
              "gracilis", "adductors", "hamstrings", "femur"]


@pytest.fixture(scope="module")
def real_slices(visible_human_dicom_dir, tmp_path_factory):
    """Two real 512x512 lower-leg CT slices in HU (display orientation) and their pixel spacing."""
    folder = tmp_path_factory.mktemp("ct")
    for number in (250, 420):
        shutil.copy(visible_human_dicom_dir / f"vhf.{number}.dcm", folder)
    volume = read_volume(folder)
    layout = slice_layout(volume)
    return np.ascontiguousarray(layout.display_view(volume.array)), (layout.spacing_row_mm, layout.spacing_column_mm)


def mr_like_slices(shape, count, seed):
    """Positive MR-like intensities on a zero background (so the nonzero crop and the masked z-score matter)."""
    hu = leg_phantom_slices(shape, count, seed)
    return np.where(hu > -500, hu + 300.0, 0.0).astype(np.float32)


def assert_same_labels_as_nnunet(engine, folder, slices, spacing, folds, tta=False, checkpoint="checkpoint_final.pth"):
    labels = engine.segment_slices(slices, spacing)
    reference = ReferencePredictor(folder, folds=folds, tta=tta, checkpoint_name=checkpoint)
    expected = np.stack([native_reference_labels(reference, image, spacing) for image in slices])
    np.testing.assert_array_equal(labels, expected)
    assert len(np.unique(labels)) > 2  # the comparison covers several classes


def test_ct_at_0_8_mm_with_a_320_patch_equals_nnunet_on_real_slices(tmp_path, real_slices):
    slices, spacing = real_slices
    folder = make_model_folder(tmp_path / "ct", "CTNormalization", folds=(0, 1), seed=4, patch_size=(320, 320),
                               native={"spacing": (0.8, 0.8), "labels": ["SAT", "SM", "IMAT", "Bone"]})
    engine = create_engine(SegmentationSettings(model=str(folder), device="cpu", batch_size=3))
    assert isinstance(engine, NativeEngine) and engine.model.folds == (0, 1)
    item = native_input(engine.model, slices[0][None], spacing)
    assert item.planes.shape[1:] != item.crop_shape  # resampled
    assert np.prod([len(starts) for starts in tile_starts(item.planes.shape[1:], (320, 320), 0.5)]) >= 4
    assert_same_labels_as_nnunet(engine, folder, slices, spacing, folds=(0, 1))


def test_mr_like_zscore_with_mask_and_mirroring_equals_nnunet(tmp_path):
    folder = make_model_folder(tmp_path / "mr", "ZScoreNormalization", folds=(0,), seed=5, use_mask_for_norm=True,
                               patch_size=(192, 160), native={"spacing": (1.1, 0.9), "labels": ["muscle", "fat", "bone"],
                                                              "channels": ("T1",)})
    engine = NativeEngine(load_model_folder(folder), tta=True, device="cpu")
    assert_same_labels_as_nnunet(engine, folder, mr_like_slices((300, 260), 2, seed=1), (1.25, 0.7), folds=(0,),
                                 tta=True)


def test_ten_labels_rescaled_to_0_1_from_checkpoint_best_equal_nnunet(tmp_path):
    folder = make_model_folder(tmp_path / "ten", "ZScoreNormalization", folds=(0,), seed=6, patch_size=(160, 160),
                               checkpoint_name="checkpoint_best.pth",
                               native={"spacing": (1.5, 1.5), "labels": TEN_LABELS})
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["2d"]["normalization_schemes"] = ["RescaleTo01Normalization"]
    (folder / "plans.json").write_text(json.dumps(plans))
    engine = NativeEngine(load_model_folder(folder), device="cpu")
    assert [label.key for label in engine.label_set.labels] == TEN_LABELS
    assert engine.model.checkpoint_name == "checkpoint_best.pth"
    assert_same_labels_as_nnunet(engine, folder, leg_phantom_slices((256, 300), 2, seed=3), (0.9, 0.9), folds=(0,),
                                 checkpoint="checkpoint_best.pth")


def test_the_profile_follows_the_folder_unless_the_settings_say_otherwise(tmp_path):
    native = make_model_folder(tmp_path / "native", native={"spacing": (1.0, 1.0)})
    png = make_model_folder(tmp_path / "png")
    assert isinstance(create_engine(SegmentationSettings(model=str(native), device="cpu")), NativeEngine)
    assert isinstance(create_engine(SegmentationSettings(model=str(png), device="cpu")), LegSegNetEngine)
    assert isinstance(create_engine(SegmentationSettings(model=str(png), device="cpu", preprocessing="native")),
                      NativeEngine)
    (native / "legsegnet.json").write_text(json.dumps({"preprocessing": "legsegnet"}))
    assert isinstance(create_engine(SegmentationSettings(model=str(native), device="cpu")), LegSegNetEngine)


def test_a_3d_only_model_is_refused_naming_its_configurations(tmp_path):
    folder = make_model_folder(tmp_path / "3d", native={"configuration": "3d_fullres"})
    with pytest.raises(ModelFolderError, match=r"not 2D.*configurations: 3d_fullres"):
        load_model_folder(folder)


def test_label_values_with_gaps_are_refused(tmp_path):
    folder = make_model_folder(tmp_path / "gaps", native={"labels": ["psoas", "fat"]})
    dataset = json.loads((folder / "dataset.json").read_text())
    dataset["labels"] = {"background": 0, "psoas": 1, "fat": 3}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(ModelFolderError, match=r"consecutive values 0..N, found \[0, 1, 3\]"):
        load_model_folder(folder)


def test_region_based_labels_are_refused(tmp_path):
    folder = make_model_folder(tmp_path / "regions", native={"labels": ["muscle", "fat"]})
    dataset = json.loads((folder / "dataset.json").read_text())
    dataset["labels"] = {"background": 0, "whole_leg": [1, 2], "fat": 2}
    dataset["regions_class_order"] = [1, 2]
    (folder / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(ModelFolderError, match="region-based models .* not supported"):
        load_model_folder(folder)


def test_a_model_wanting_other_inputs_is_refused(tmp_path):
    folder = make_model_folder(tmp_path / "dixon", "ZScoreNormalization",
                               native={"channels": ("fat", "water"), "spacing": (1.0, 1.0)})
    model = load_model_folder(folder)
    with pytest.raises(ModelFolderError, match=r"2 input channels \(fat, water\)"):
        NativeEngine(model, device="cpu")
    with pytest.raises(ModelFolderError, match="use --preprocessing native"):
        LegSegNetEngine(model, device="cpu")
    resampling = make_model_folder(tmp_path / "0.8", native={"spacing": (0.8, 0.8)})
    with pytest.raises(ModelFolderError, match=r"\(0.8, 0.8\) mm pixels"):
        create_engine(SegmentationSettings(model=str(resampling), device="cpu", preprocessing="legsegnet"))


def test_a_spacing_that_would_blow_slices_up_is_refused(tmp_path):
    folder = make_model_folder(tmp_path / "tiny", native={"spacing": (0.001, 0.001)})
    with pytest.raises(ModelFolderError, match=r"spacing \[0.001, 0.001\]; it needs two pixel sizes from 0.05 to 20"):
        load_model_folder(folder)
