"""Our LegSegNet inference against the reference: LegSegNet's preprocessing with OpenCV, then nnunetv2's
nnUNetPredictor one slice at a time. Tiny random-weight networks keep this fast; random weights put
near-ties everywhere, which makes label equality a strict check."""

import shutil

import numpy as np
import pytest
import torch

from LegSegNetLib.reading.volume_files import read_volume
from LegSegNetLib.reading.layout import slice_layout
from LegSegNetLib.segmenting.engines.nnunet.engine import LegSegNetEngine
from LegSegNetLib.segmenting.engines.nnunet.preprocessing import legsegnet_image
from LegSegNetLib.segmenting.pipeline import segment_volume
from LegSegNetLib.reading.volume import Volume
from model_factory import make_model_folder
from nnunet_reference import ReferencePredictor, reference_uint8
from LegSegNetLib.settings import SegmentationSettings

pytest.importorskip("nnunetv2")
pytest.importorskip("cv2")

FOLDS = (0, 1)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "CTNormalization": make_model_folder(root / "ct", "CTNormalization", folds=FOLDS, seed=1),
        "ZScoreNormalization": make_model_folder(
            root / "zscore", "ZScoreNormalization", folds=FOLDS, seed=2, use_mask_for_norm=True
        ),
    }


@pytest.fixture(scope="module")
def real_ct(visible_human_dicom_dir, tmp_path_factory):
    """Three real lower-leg CT slices (512x512) in radiological display orientation, as read from DICOM."""
    folder = tmp_path_factory.mktemp("ct")
    for number in (200, 330, 470):
        shutil.copy(visible_human_dicom_dir / f"vhf.{number}.dcm", folder)
    volume = read_volume(folder)
    return np.ascontiguousarray(slice_layout(volume).display_view(volume.array))


def leg_phantom_slices(shape, count=2, seed=0):
    """Leg-like HU slices: air, a fat ring, muscle with fat streaks, and a bone with marrow, plus noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    y, x = (rows + 0.5) / shape[0] - 0.5, (cols + 0.5) / shape[1] - 0.5
    slices = []
    for index in range(count):
        radius = np.hypot(y / 0.42, (x - 0.02 * index) / 0.36)
        hu = np.full(shape, -1000.0)
        hu[radius < 1.0] = -100.0
        hu[radius < 0.8] = 45.0
        hu[(radius < 0.8) & (np.abs(np.sin(9 * x + 5 * y)) < 0.08)] = -80.0
        bone = np.hypot((y + 0.05) / 0.12, (x - 0.05) / 0.1)
        hu[bone < 1.0] = 900.0
        hu[bone < 0.6] = 20.0
        slices.append(hu + rng.normal(0, 15, shape))
    return np.stack(slices).astype(np.float32)


def reference_results(model_dir, hu_slices, folds, tta):
    reference = ReferencePredictor(model_dir, folds=folds, tta=tta)
    return [reference.logits_and_labels(reference_uint8(hu)) for hu in hu_slices]


@pytest.mark.parametrize(
    "normalization,tta,folds",
    [
        ("CTNormalization", False, (0,)),
        ("CTNormalization", True, FOLDS),
        ("ZScoreNormalization", False, FOLDS),
        ("ZScoreNormalization", True, (1,)),
    ],
)
def test_phantom_labels_and_logits_equal_the_reference(model_dirs, normalization, tta, folds):
    hu_slices = leg_phantom_slices((512, 512), count=2, seed=len(folds))
    engine = LegSegNetEngine.from_model_folder(model_dirs[normalization], SegmentationSettings(folds=folds, tta=tta, device="cpu", batch_size=2))
    ours = engine.predictor.predict(legsegnet_image(hu_slices))
    for result, (logits, bbox, labels) in zip(ours, reference_results(model_dirs[normalization], hu_slices, folds, tta)):
        assert [[s.start, s.stop] for s in result.bbox] == [list(b) for b in bbox]
        assert torch.equal(result.logits, logits)  # bit for bit
        np.testing.assert_array_equal(result.labels(), labels)


@pytest.mark.parametrize("normalization,tta,folds", [("CTNormalization", True, FOLDS), ("ZScoreNormalization", False, (1,))])
def test_real_ct_labels_equal_the_reference(model_dirs, real_ct, normalization, tta, folds):
    real_ct = real_ct[:2] if tta else real_ct
    engine = LegSegNetEngine.from_model_folder(model_dirs[normalization], SegmentationSettings(folds=folds, tta=tta, device="cpu"))
    labels = engine.segment_model_grid(real_ct)
    expected = [labels for _, _, labels in reference_results(model_dirs[normalization], real_ct, folds, tta)]
    np.testing.assert_array_equal(labels, np.stack(expected))
    assert len(np.unique(labels)) > 1


def test_batch_size_one_gives_bit_identical_logits_on_real_ct(model_dirs, real_ct):
    engine = LegSegNetEngine.from_model_folder(model_dirs["CTNormalization"], SegmentationSettings(folds=(0,), device="cpu", batch_size=1))
    ours = engine.predictor.predict(legsegnet_image(real_ct[:2]))
    reference = reference_results(model_dirs["CTNormalization"], real_ct[:2], (0,), False)
    for result, (logits, _, _) in zip(ours, reference):
        assert torch.equal(result.logits, logits)


def test_256_volume_through_segment_volume_equals_the_reference(model_dirs, real_ct):
    """A scan whose slices are already 256x256: the written labels are the reference's, voxel for voxel."""
    display = real_ct[:, ::2, ::2]  # 256x256 slices, 2 mm pixels
    # Store it as DICOM/LPS files do: i runs to the patient's left, j to posterior, k superior.
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    volume = Volume.from_spacing(np.ascontiguousarray(display), (2.0, 2.0, 1.0), directions_ras=lps_to_ras)
    engine = LegSegNetEngine.from_model_folder(model_dirs["CTNormalization"], SegmentationSettings(folds=FOLDS, device="cpu"))
    labels = segment_volume(volume, engine)
    layout = slice_layout(labels, engine.in_plane_orientation)
    written = layout.display_view(labels.array)
    expected = [labels for _, _, labels in reference_results(model_dirs["CTNormalization"], display, FOLDS, False)]
    np.testing.assert_array_equal(written, np.stack(expected))


def test_non_square_slices_come_back_on_their_own_grid(model_dirs):
    hu_slices = leg_phantom_slices((300, 420), count=1)
    engine = LegSegNetEngine.from_model_folder(model_dirs["CTNormalization"], SegmentationSettings(folds=(0,), device="cpu"))
    native = engine.segment_slices(hu_slices, (0.8, 0.6))
    assert native.shape == hu_slices.shape and native.dtype == np.uint8
    model_grid = engine.segment_model_grid(hu_slices)[0]
    # Each native pixel centre maps to model-grid position (index + 0.5) * 256 / size - 0.5.
    rows = np.clip(np.round((np.arange(300) + 0.5) * 256 / 300 - 0.5).astype(int), 0, 255)
    cols = np.clip(np.round((np.arange(420) + 0.5) * 256 / 420 - 0.5).astype(int), 0, 255)
    nearest = model_grid[np.ix_(rows, cols)]
    assert np.mean(native[0] == nearest) > 0.9
    # Air outside the body's bounding box is never cropped in: certain background.
    assert not native[0][:20].any() and not native[0][:, :20].any()


def test_non_square_reference_labels_with_opencv_arithmetic(model_dirs):
    """With OpenCV's own resize arithmetic (IPP off) the stretched slice, and so the labels, are the reference's."""
    hu_slices = leg_phantom_slices((300, 420), count=1)
    engine = LegSegNetEngine.from_model_folder(model_dirs["ZScoreNormalization"], SegmentationSettings(folds=(0,), device="cpu"))
    expected = reference_results(model_dirs["ZScoreNormalization"], hu_slices, (0,), False)[0][2]
    np.testing.assert_array_equal(engine.segment_model_grid(hu_slices)[0], expected)
