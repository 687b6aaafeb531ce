"""LegSegNet's per-slice preprocessing and nnU-Net v2's own, reproduced bit for bit.

LegSegNet turns each HU slice into an 8-bit image (window [-200, 200] HU, truncating cast) and resizes it to
256x256 with OpenCV's bicubic filter; nnU-Net then crops the slice to its nonzero bounding box and normalizes it.
The bicubic resize follows OpenCV's 8-bit arithmetic exactly (fixed-point horizontal pass, float32 vertical
pass with round-half-even), so no OpenCV is needed at run time.

nnU-Net's native 2D path (the `native` profile) works on real intensities: crop, normalize, then resample the
crop in-plane to the plans' spacing with its default resampling (a float64 spline per plane on the pixel-area
grid, edge values repeated, clipped to the plane's range), and the network's logits back the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class IntensityProperties:
    """The CT channel's foreground statistics from plans.json, used by CTNormalization."""

    mean: float
    std: float
    percentile_00_5: float
    percentile_99_5: float


HU_LOW = -200.0
HU_HIGH = 200.0
MODEL_SIZE = (256, 256)
_CUBIC_A = np.float32(-0.75)
_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE for 8-bit images


def hu_to_uint8(hu: np.ndarray) -> np.ndarray:
    """LegSegNet's window: clip to [-200, 200] HU, map to 0..255 in float32, truncate; NaN becomes 0."""
    x = np.clip(np.asarray(hu, dtype=np.float32), HU_LOW, HU_HIGH)
    x -= HU_LOW
    x /= HU_HIGH - HU_LOW
    x *= 255.0
    np.nan_to_num(x, copy=False, nan=0.0)
    return x.astype(np.uint8)


def resize_cubic_uint8(images: np.ndarray, size: tuple = MODEL_SIZE) -> np.ndarray:
    """cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_CUBIC) for each [rows, cols] uint8 image."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"resize_cubic_uint8 needs uint8 images, got {images.dtype}")
    if images.shape[-2:] == tuple(size):
        return images.copy()
    rows_in, cols_in = images.shape[-2:]
    col_offsets, col_weights = _cubic_taps(cols_in, size[1])
    row_offsets, row_weights = _cubic_taps(rows_in, size[0])
    # Horizontal pass: exact integer sums of the 8-bit pixels times 11-bit coefficients.
    horizontal = np.zeros((*images.shape[:-1], size[1]), dtype=np.int32)
    for tap in range(4):
        horizontal += images[..., col_offsets[:, tap]].astype(np.int32) * col_weights[:, tap]
    # Vertical pass: OpenCV's SIMD path converts to float32 and accumulates taps 3, 2, 1, 0 in that order.
    row_scale = np.float32(1.0 / (_COEF_SCALE * _COEF_SCALE))
    weights = (row_weights.astype(np.float32) * row_scale)[:, :, None]
    total = horizontal[..., row_offsets[:, 3], :].astype(np.float32) * weights[:, 3]
    for tap in (2, 1, 0):
        total = horizontal[..., row_offsets[:, tap], :].astype(np.float32) * weights[:, tap] + total
    return np.clip(np.rint(total), 0, 255).astype(np.uint8)


@lru_cache(maxsize=16)
def _cubic_taps(size_in: int, size_out: int) -> tuple:
    """Source index of each of the 4 taps (edge-replicated) and their fixed-point weights, per output pixel."""
    scale = 1.0 / (size_out / size_in)  # OpenCV inverts the inverse scale; keep its rounding
    position = ((np.arange(size_out) + 0.5) * scale - 0.5).astype(np.float32)
    start = np.floor(position)
    fraction = (position - start).astype(np.float32)
    weights = np.rint(_cubic_coefficients(fraction) * np.float32(_COEF_SCALE)).astype(np.int32)
    offsets = np.clip(start.astype(np.int64)[:, None] + np.arange(-1, 3), 0, size_in - 1)
    return offsets, weights


def _cubic_coefficients(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution weights with a = -0.75, evaluated in float32 in OpenCV's operation order."""
    a = _CUBIC_A
    one = np.float32(1)
    w0 = ((a * (x + one) - 5 * a) * (x + one) + 8 * a) * (x + one) - 4 * a
    w1 = ((a + 2) * x - (a + 3)) * x * x + one
    w2 = ((a + 2) * (one - x) - (a + 3)) * (one - x) * (one - x) + one
    w3 = one - w0 - w1 - w2
    return np.stack([w0, w1, w2, w3], axis=1).astype(np.float32)


def legsegnet_image(hu_slices: np.ndarray) -> np.ndarray:
    """Native HU slice(s) [..., rows, cols] -> LegSegNet's 256x256 uint8 model input(s)."""
    images = hu_to_uint8(hu_slices)
    return images if images.shape[-2:] == MODEL_SIZE else resize_cubic_uint8(images)


def nonzero_bbox(image: np.ndarray) -> tuple:
    """nnU-Net's crop of a single 2D slice: the bounding box of nonzero pixels, whole image when none.

    nnU-Net fills holes in the mask first, but on a (1, rows, cols) array every hole touches the border
    along the slice axis, so the mask is just `image != 0`.
    """
    mask = image != 0
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return slice(0, image.shape[0]), slice(0, image.shape[1])
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def normalize(
    cropped: np.ndarray,
    scheme: str,
    use_mask_for_norm: bool = False,
    intensity: Optional[IntensityProperties] = None,
    nonzero: Optional[np.ndarray] = None,
) -> np.ndarray:
    """nnU-Net's normalization of a cropped float32 slice (in place when it is float32), same float32 arithmetic.

    `nonzero`: the crop's mask of pixels nonzero in any channel (ZScore with mask); default: this image's."""
    image = cropped.astype(np.float32, copy=False)
    if scheme == "CTNormalization":
        np.clip(image, intensity.percentile_00_5, intensity.percentile_99_5, out=image)
        image -= intensity.mean
        image /= max(intensity.std, 1e-8)
    elif scheme == "ZScoreNormalization":
        if use_mask_for_norm:
            mask = image != 0 if nonzero is None else nonzero
            if mask.any():
                values = image[mask]
                image[mask] = (values - values.mean()) / max(values.std(), 1e-8)
        else:
            mean, std = image.mean(), image.std()
            image -= mean
            image /= max(std, 1e-8)
    elif scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= max(image.max(), 1e-8)
    elif scheme != "NoNormalization":
        raise ValueError(f"unsupported normalization scheme {scheme}")
    return image


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]) -> tuple:
    """nnU-Net's shape after resampling: spacing / target * size per axis, rounded half to even."""
    return tuple(int(round(current / target * size)) for size, current, target in zip(shape, spacing, target_spacing))


def resample_planes(planes: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """[channels, rows, cols] -> [channels, *shape] in planes' dtype, as nnU-Net's default resampling treats each
    plane of a 2D image: float64 spline of `order` on the pixel-area grid, edge values repeated beyond the border,
    result clipped to the plane's own range (higher orders overshoot)."""
    shape = tuple(int(size) for size in shape)
    if planes.shape[1:] == shape:
        return planes
    resampled = np.empty((len(planes), *shape), dtype=planes.dtype)
    zoom = [new / old for new, old in zip(shape, planes.shape[1:])]
    for channel, plane in enumerate(planes):
        plane = plane.astype(np.float64)
        zoomed = ndimage.zoom(plane, zoom, order=order, mode="nearest", grid_mode=True)
        resampled[channel] = np.clip(zoomed, plane.min(), plane.max(), out=zoomed)
    return resampled
