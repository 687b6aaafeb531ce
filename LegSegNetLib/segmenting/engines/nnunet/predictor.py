"""nnU-Net v2 2D prediction of model-grid slices: crop, normalize, sliding window, mirroring, folds.

The arithmetic follows nnUNetPredictor step for step (fp32 network output times an fp16 Gaussian, fp16
accumulation and division, fp16 fold averaging, argmax of the fp16 logits), so at batch size 1 the logits are
bit-identical to the reference. Slices are batched through the network: one tile per slice for LegSegNet's
256x256 patches, so several slices share each forward pass.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch

from LegSegNetLib.device import network_threads, resolve_device
from LegSegNetLib.segmenting.engines.nnunet.model import NNUNetModel
from LegSegNetLib.segmenting.engines.nnunet.preprocessing import nonzero_bbox, normalize

log = logging.getLogger(__name__)

GAUSSIAN_SIGMA_SCALE = 1.0 / 8
GAUSSIAN_PEAK = 10.0
DEFAULT_CPU_BATCH = 4
MAX_GPU_BATCH = 64


@dataclass
class SliceLogits:
    """Logits [classes, rows, cols] (fp16, on the compute device) on the nonzero crop `bbox` of a model-grid slice."""

    logits: torch.Tensor
    bbox: tuple
    shape: tuple

    def labels(self) -> np.ndarray:
        """nnU-Net's segmentation: argmax of the fp16 logits inside the crop, background outside."""
        labels = np.zeros(self.shape, dtype=np.uint8)
        labels[self.bbox] = class_argmax(self.logits, dim=0)
        return labels


def class_probabilities(results: Sequence[SliceLogits]) -> torch.Tensor:
    """Softmax [slices, classes, rows, cols] float32 of the slices' logits; certain background outside each crop."""
    first = results[0]
    probabilities = torch.zeros((len(results), first.logits.shape[0], *first.shape), dtype=torch.float32,
                                device=first.logits.device)
    probabilities[:, 0] = 1.0
    for item, result in zip(probabilities, results):
        item[(slice(None), *result.bbox)] = torch.softmax(result.logits, dim=0, dtype=torch.float32)
    return probabilities


def class_argmax(scores: torch.Tensor, dim: int) -> np.ndarray:
    """uint8 index of the largest score along `dim` (the first on ties), as a numpy array on the CPU.

    On the CPU numpy's argmax is used: torch's is several times slower across a non-innermost dimension.
    """
    if scores.device.type == "cpu":
        return scores.numpy().argmax(dim).astype(np.uint8)
    return scores.argmax(dim).to(torch.uint8).cpu().numpy()


def gaussian_importance_map(patch_size: Sequence[int]) -> torch.Tensor:
    """nnU-Net's tile weighting: a Gaussian (sigma = patch / 8, truncated at 4 sigma) scaled to peak 10, fp16.

    Built as the outer product of the 1D kernels scipy's gaussian_filter applies to a centred impulse.
    """
    profiles = [_gaussian_profile(size, size * GAUSSIAN_SIGMA_SCALE) for size in patch_size]
    weights = profiles[0][:, None] * profiles[1][None, :]
    weights /= weights.max() / GAUSSIAN_PEAK
    half = torch.from_numpy(weights).to(torch.float16)
    zero = half == 0  # a zero weight would divide by zero where tiles do not overlap
    half[zero] = half[~zero].min()
    return half


def _gaussian_profile(size: int, sigma: float) -> np.ndarray:
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / (sigma * sigma) * offsets ** 2)
    kernel = kernel / kernel.sum()
    profile = np.zeros(size)
    centre = size // 2
    low, high = max(centre - radius, 0), min(centre + radius + 1, size)
    profile[low:high] = kernel[low - centre + radius:high - centre + radius]
    return profile


def tile_starts(image_size: Sequence[int], patch_size: Sequence[int], step: float) -> List[List[int]]:
    """Evenly spaced tile origins per axis, at most `step` * patch apart, first at 0 and last at the edge."""
    starts = []
    for size, patch in zip(image_size, patch_size):
        count = int(np.ceil((size - patch) / (patch * step))) + 1
        spacing = (size - patch) / (count - 1) if count > 1 else 0
        starts.append([int(np.round(spacing * index)) for index in range(count)])
    return starts


def padding_for(shape: Sequence[int], patch_size: Sequence[int]) -> list:
    """(before, after) zero padding to reach the patch size, centred with the odd pixel after."""
    pads = []
    for size, patch in zip(shape, patch_size):
        missing = max(patch - size, 0)
        pads.append((missing // 2, missing - missing // 2))
    return pads


@dataclass
class _Slice:
    index: int
    bbox: tuple
    padded: torch.Tensor  # [channels, rows, cols] float32, at least patch-sized
    pads: list
    tiles: list  # tile slicers (rows, cols) in nnU-Net's order


class _MovedToCpu(Exception):
    """Work already done on the GPU must be redone on the CPU."""


class Predictor:
    """Runs one NNUNetModel on batches of model-grid slices."""

    def __init__(
        self,
        model: NNUNetModel,
        device: str = "auto",
        tta: bool = False,
        batch_size: Optional[int] = None,
        tile_step_size: float = 0.5,
    ):
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.model = model
        self.device = resolve_device(device)
        self.tta = tta
        self.tile_step_size = tile_step_size
        self.patch_size = model.patch_size
        self.mirror_axes = _mirror_combinations(model.inference_allowed_mirroring_axes) if tta else []
        self.batch_size = batch_size or self._default_batch_size()
        # The network's threads (device.network_threads); the small operations around it take one
        # (see intra_op_threads).
        self.network_threads = network_threads()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # as nnU-Net: fastest kernels for the fixed patch size
        self._move_to(self.device)

    # ---- public -------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def predict(self, images: np.ndarray) -> List[SliceLogits]:
        """images: [n, rows, cols] model-grid slices (LegSegNet's uint8). Returns per-slice cropped logits,
        left on the compute device so that resampling and argmax need no transfer."""
        slices = [self._prepare(index, image) for index, image in enumerate(images)]
        shape = tuple(images.shape[1:])
        return [SliceLogits(total, item.bbox, shape) for total, item in zip(self._logits(slices), slices)]

    @torch.inference_mode()
    def predict_planes(self, planes: Sequence[np.ndarray]) -> List[torch.Tensor]:
        """Fold-averaged fp16 logits [classes, rows, cols] of slices already cropped, normalized and resampled
        ([channels, rows, cols] float32 each, any sizes), on the compute device."""
        return self._logits([self._tiled(index, None, item) for index, item in enumerate(planes)])

    def _logits(self, slices: List[_Slice]) -> List[torch.Tensor]:
        while True:
            try:
                with intra_op_threads(1):
                    return self._average_folds(slices)
            except _MovedToCpu:
                continue  # the GPU ran out of memory even one slice at a time: start over on the CPU

    def _average_folds(self, slices: List[_Slice]) -> List[torch.Tensor]:
        """Sum of the folds' fp16 logits divided by the fold count, in fp16, as nnU-Net averages them."""
        totals = self._sliding_window(0, slices)
        for fold in range(1, len(self.networks)):
            for total, logits in zip(totals, self._sliding_window(fold, slices)):
                total += logits
        if len(self.networks) > 1:
            for total in totals:
                total /= len(self.networks)
        return totals

    # ---- preprocessing and tiling -------------------------------------------------------------------------

    def _prepare(self, index: int, image: np.ndarray) -> _Slice:
        image = image.astype(np.float32)
        bbox = nonzero_bbox(image)
        cropped = normalize(
            image[bbox], self.model.normalization, self.model.use_mask_for_norm, self.model.intensity_properties
        )
        return self._tiled(index, bbox, cropped[None])

    def _tiled(self, index: int, bbox: tuple, planes: np.ndarray) -> _Slice:
        """The network input of one slice: its normalized [channels, rows, cols] padded to the patch, and tiles."""
        pads = padding_for(planes.shape[1:], self.patch_size)
        padded = np.pad(planes, [(0, 0), *pads]) if any(before or after for before, after in pads) else planes
        starts = tile_starts(padded.shape[1:], self.patch_size, self.tile_step_size)
        tiles = [
            tuple(slice(start, start + patch) for start, patch in zip(origin, self.patch_size))
            for origin in itertools.product(*starts)
        ]
        return _Slice(index, bbox, torch.from_numpy(np.ascontiguousarray(padded)), pads, tiles)

    # ---- the network --------------------------------------------------------------------------------------

    def _sliding_window(self, fold: int, slices: List[_Slice]) -> List[torch.Tensor]:
        """Each slice's Gaussian-weighted fp16 average of its tiles' logits, nnU-Net's roundings kept.

        A slice with a single tile (LegSegNet's usual case: the padded slice is the patch) skips the fp16 zeros
        its sums would start from: 0 + x rounded to fp16 is x rounded to fp16, and its weight sum is the Gaussian.
        """
        logits: List[Optional[torch.Tensor]] = [None] * len(slices)
        weights: List[torch.Tensor] = [self._gaussian] * len(slices)
        work = [(item, tile) for item in slices for tile in item.tiles]
        start = 0
        while start < len(work):
            chunk = work[start:start + self.batch_size]
            try:
                predictions = self._weighted_network_output(fold, [item.padded[(slice(None), *tile)] for item, tile in chunk])
            except RuntimeError as error:
                if not _is_out_of_memory(error):
                    raise
                self._shrink_after_out_of_memory()
                continue
            for (item, tile), prediction in zip(chunk, predictions):
                if len(item.tiles) == 1:
                    logits[item.index] = prediction.to(torch.float16)
                    continue
                if logits[item.index] is None:
                    logits[item.index] = torch.zeros((len(prediction), *item.padded.shape[1:]), dtype=torch.float16,
                                                     device=self.device)
                    weights[item.index] = torch.zeros(item.padded.shape[1:], dtype=torch.float16, device=self.device)
                logits[item.index][(slice(None), *tile)] += prediction
                weights[item.index][tile] += self._gaussian
            start += len(chunk)
        for total, weight in zip(logits, weights):
            torch.div(total, weight, out=total)
        return [self._unpad(total, item.pads) for total, item in zip(logits, slices)]

    def _weighted_network_output(self, fold: int, tiles: List[torch.Tensor]) -> torch.Tensor:
        """Gaussian-weighted network output [n, classes, rows, cols], mirrorings averaged like nnU-Net."""
        network = self.networks[fold]
        batch = torch.stack(tiles).to(self.device, non_blocking=True)
        with torch.autocast("cuda") if self.device.type == "cuda" else contextlib.nullcontext(), \
                intra_op_threads(self.network_threads):
            prediction = network(batch)
            for axes in self.mirror_axes:
                prediction += torch.flip(network(torch.flip(batch, axes)), axes)
            if self.mirror_axes:
                prediction /= len(self.mirror_axes) + 1
        prediction *= self._gaussian
        return prediction

    @staticmethod
    def _unpad(logits: torch.Tensor, pads: list) -> torch.Tensor:
        rows, cols = ((before, size - after) for (before, after), size in zip(pads, logits.shape[1:]))
        return logits[:, rows[0]:rows[1], cols[0]:cols[1]]

    # ---- devices and memory -------------------------------------------------------------------------------

    def _move_to(self, device: torch.device) -> None:
        self.networks = [network.to(device).eval() for network in self.model.networks]
        self._gaussian = gaussian_importance_map(self.patch_size).to(device)

    def _shrink_after_out_of_memory(self) -> None:
        """Halve the batch after a GPU out-of-memory error; at batch 1 continue on the CPU."""
        _empty_cache(self.device)
        if self.batch_size > 1:
            self.batch_size //= 2
            log.warning("GPU out of memory: retrying with %d slices per batch", self.batch_size)
            return
        if self.device.type == "cpu":
            raise MemoryError("out of memory on the CPU even one slice at a time")
        log.warning("GPU out of memory even one slice at a time: continuing on the CPU (slower)")
        self.device = torch.device("cpu")
        self.batch_size = DEFAULT_CPU_BATCH
        self._move_to(self.device)
        raise _MovedToCpu()

    def _default_batch_size(self) -> int:
        if self.device.type != "cuda":
            return DEFAULT_CPU_BATCH
        free, _ = torch.cuda.mem_get_info(self.device)
        per_slice = _activation_bytes_per_tile(self.model, self.patch_size) * (1 + len(self.mirror_axes))
        return int(max(1, min(MAX_GPU_BATCH, free * 0.5 // per_slice)))


def _mirror_combinations(axes: Sequence[int]) -> list:
    """nnU-Net's flips for TTA: every non-empty combination of the allowed axes, smallest first."""
    dims = [axis + 2 for axis in axes]
    return [combo for count in range(1, len(dims) + 1) for combo in itertools.combinations(dims, count)]


def _activation_bytes_per_tile(model: NNUNetModel, patch_size: Sequence[int]) -> int:
    """Rough fp16 activation memory of one tile: features x pixels per stage, encoder and decoder, with slack."""
    kwargs = model.configuration["architecture"]["arch_kwargs"]
    features_per_stage = kwargs["features_per_stage"]
    if isinstance(features_per_stage, int):
        features_per_stage = [features_per_stage] * kwargs["n_stages"]
    pixels = math.prod(patch_size)
    total = 0
    for features, stride in zip(features_per_stage, kwargs["strides"]):
        pixels //= math.prod(stride) if isinstance(stride, (list, tuple)) else stride ** len(patch_size)
        total += features * pixels
    return total * 2 * 8  # 2 bytes, x8 for decoder, skips, norm temporaries and cuDNN workspaces


@contextlib.contextmanager
def intra_op_threads(count: int):
    """torch's intra-op threads set to `count` for a while (for operations started from this thread).

    The tensor operations around the network (Gaussian weighting, fp16 sums, softmax, resampling) are too small
    to share out: on a busy 2-core machine their two threads waited for each other so long that they cost 3-20
    times the CPU time of one thread (Testing/BENCHMARK.md). They run on one thread, the network on all.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _is_out_of_memory(error: RuntimeError) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
