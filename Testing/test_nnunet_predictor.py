import json

import numpy as np
import pytest
import torch

from LegSegNetLib.segmenting.engines.nnunet.engine import LegSegNetEngine
from LegSegNetLib.segmenting.engines.nnunet.preprocessing import legsegnet_image
from LegSegNetLib.segmenting.engines.nnunet.model import ModelFolderError, load_model_folder
from LegSegNetLib.segmenting.engines.nnunet.predictor import (
    Predictor, gaussian_importance_map, tile_starts,
)
from model_factory import make_model_folder
from LegSegNetLib.settings import SegmentationSettings

nnunetv2 = pytest.importorskip("nnunetv2")


@pytest.fixture(scope="module")
def small_patch_model(tmp_path_factory):
    """A 128x128-patch model: 256x256 slices need several overlapping tiles, narrow crops need padding."""
    return make_model_folder(tmp_path_factory.mktemp("patch128"), patch_size=(128, 128), folds=(0,), seed=7)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("model"), folds=(0,), seed=3)


@pytest.mark.parametrize("patch", [(256, 256), (192, 160), (64, 96)])
def test_gaussian_importance_map_equals_nnunet(patch):
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    expected = compute_gaussian(patch, sigma_scale=1.0 / 8, value_scaling_factor=10, device=torch.device("cpu"))
    assert torch.equal(gaussian_importance_map(patch), expected)


@pytest.mark.parametrize("size", [(256, 256), (300, 128), (129, 700), (128, 255)])
@pytest.mark.parametrize("step", [0.5, 1.0])
def test_tile_starts_equal_nnunet(size, step):
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    assert tile_starts(size, (128, 128), step) == compute_steps_for_sliding_window(size, (128, 128), step)


def test_several_tiles_and_padding_are_bit_exact(small_patch_model):
    from nnunet_reference import ReferencePredictor

    images = np.zeros((2, 256, 256), dtype=np.uint8)
    rng = np.random.default_rng(8)
    images[0, 20:230, 10:250] = rng.integers(1, 256, (210, 240))  # 210x240 crop: 3x3 tiles of 128
    images[1, 100:190, 30:250] = rng.integers(1, 256, (90, 220))  # 90 rows: padded to 128
    # Batch size 1: oneDNN may pick another convolution algorithm for a batch of 128x128 tiles.
    ours = Predictor(load_model_folder(small_patch_model), device="cpu", batch_size=1).predict(images)
    reference = ReferencePredictor(small_patch_model, folds=(0,))
    for result, image in zip(ours, images):
        logits, _, labels = reference.logits_and_labels(image)
        assert torch.equal(result.logits, logits)
        np.testing.assert_array_equal(result.labels(), labels)


class OutOfMemoryAboveBatch(torch.nn.Module):
    """Behaves like a GPU that runs out of memory for batches larger than `limit`."""

    def __init__(self, network, limit):
        super().__init__()
        self.network, self.limit = network, limit

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.network(x)


def test_out_of_memory_halves_the_batch_and_keeps_the_results(model_dir):
    images = legsegnet_image(np.random.default_rng(9).uniform(-300, 300, (5, 256, 256)))
    predictor = Predictor(load_model_folder(model_dir), device="cpu", batch_size=4)
    expected = predictor.predict(images)
    predictor.networks[0] = OutOfMemoryAboveBatch(predictor.networks[0], limit=1)
    results = predictor.predict(images)
    assert predictor.batch_size == 1
    for result, reference in zip(results, expected):
        assert torch.equal(result.logits, reference.logits)


def test_out_of_memory_at_batch_one_on_the_cpu_is_reported(model_dir):
    predictor = Predictor(load_model_folder(model_dir), device="cpu", batch_size=1)
    predictor.networks[0] = OutOfMemoryAboveBatch(predictor.networks[0], limit=0)
    with pytest.raises(MemoryError, match="one slice at a time"):
        predictor.predict(np.zeros((1, 256, 256), dtype=np.uint8))


def test_engine_orientation_comes_from_the_model_folder(tmp_path, model_dir):
    assert LegSegNetEngine.from_model_folder(model_dir, SegmentationSettings(device="cpu")).in_plane_orientation == "PL"
    other = make_model_folder(tmp_path / "other", in_plane_orientation="AR")
    assert LegSegNetEngine.from_model_folder(other, SegmentationSettings(device="cpu")).in_plane_orientation == "AR"


def test_engine_refuses_a_model_without_the_four_tissues(tmp_path):
    folder = make_model_folder(tmp_path)
    dataset = json.loads((folder / "dataset.json").read_text())
    dataset["labels"] = {"background": 0, "muscle": 1, "fat": 2, "bone": 3, "skin": 4, "vessel": 5}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(ModelFolderError):
        LegSegNetEngine.from_model_folder(folder, SegmentationSettings(device="cpu"))


def test_engine_on_256_slices_returns_the_model_grid_labels(model_dir):
    hu = np.random.default_rng(10).uniform(-300, 300, (2, 256, 256)).astype(np.float32)
    engine = LegSegNetEngine.from_model_folder(model_dir, SegmentationSettings(device="cpu"))
    labels = engine.segment_slices(hu, (1.0, 1.0))
    assert labels.dtype == np.uint8 and labels.shape == hu.shape
    np.testing.assert_array_equal(labels, engine.segment_model_grid(hu))
