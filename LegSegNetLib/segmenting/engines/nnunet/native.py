"""Any 2D nnU-Net v2 model on its own terms (the `native` preprocessing profile), as a SliceEngine.

Each slice goes through nnU-Net's own 2D path with its real intensities and pixel spacing, as
nnUNetPredictor.predict_single_npy_array runs a slice given with spacing (999, row mm, column mm): crop to the
nonzero box, the plans' normalization per channel, resampling of the crop to the plans' spacing, sliding window
at the plans' patch size (tiles of all slices in a batch share network passes), fold and mirror averaging, the
fp16 logits resampled back to the crop, argmax, and background outside the crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from LegSegNetLib.measuring.label_measurements import CT, MR
from LegSegNetLib.reading.layout import RADIOLOGICAL
from LegSegNetLib.segmenting.engines.nnunet.engine import ORIENTATION_KEY, with_backend
from LegSegNetLib.segmenting.engines.nnunet.model import ModelFolderError, NNUNetModel
from LegSegNetLib.segmenting.engines.nnunet.predictor import Predictor
from LegSegNetLib.segmenting.engines.nnunet.profiles import NATIVE_PROFILE
from LegSegNetLib.segmenting.engines.nnunet.preprocessing import (
    nonzero_bbox, normalize, resample_planes, resampled_shape)
from LegSegNetLib.tissues import label_set_from_names


@dataclass
class _NativeSlice:
    bbox: tuple  # the crop in the slice
    crop_shape: tuple
    planes: np.ndarray  # [channels, rows, cols] float32: normalized, at the plans' spacing


class NativeEngine:
    name = "legsegnet"  # the model engine, whichever preprocessing profile runs it
    preprocessing = NATIVE_PROFILE

    def __init__(self, model: NNUNetModel, tta: bool = False, device: str = "auto", batch_size: Optional[int] = None,
                 backend: str = "torch"):
        if len(model.channel_names) != 1:
            raise ModelFolderError(
                f"{model.folder} takes {len(model.channel_names)} input channels ({', '.join(model.channel_names)}) "
                "but a run gives one image per slice; segment with a single-channel model")
        self.model = with_backend(model, backend, device)
        self.label_set = label_set_from_names(model.dataset_json["labels"])
        self.modality = CT if model.normalization == "CTNormalization" or model.channel_names[0].upper() == CT else MR
        self.in_plane_orientation = model.extra.get(ORIENTATION_KEY, RADIOLOGICAL)
        self.predictor = Predictor(self.model, device=device, tta=tta, batch_size=batch_size)

    @property
    def device(self):
        return self.predictor.device

    @property
    def preferred_batch_size(self) -> int:
        return self.predictor.batch_size

    def segment_slices(self, slices: np.ndarray, pixel_spacing_mm=(1.0, 1.0)) -> np.ndarray:
        """[n, rows, cols] intensities (HU for CT) in display orientation -> uint8 labels on the same grid."""
        return self.segment_prepared(self.prepare_slices(slices, pixel_spacing_mm))

    def prepare_slices(self, slices: np.ndarray, pixel_spacing_mm=(1.0, 1.0)) -> tuple:
        """The CPU half: crop, normalize and resample each slice (run by the pipeline in a background thread)."""
        return [native_input(self.model, image[None], pixel_spacing_mm) for image in slices], tuple(slices.shape[1:])

    def segment_prepared(self, prepared: tuple) -> np.ndarray:
        items, shape = prepared
        logits = self.predictor.predict_planes([item.planes for item in items])
        order = self.model.resampling_order("probabilities")
        return np.stack([native_labels(item, scores, shape, order) for item, scores in zip(items, logits)])


def native_input(model: NNUNetModel, channels: np.ndarray, pixel_spacing_mm: Sequence[float]) -> _NativeSlice:
    """One slice's [channels, rows, cols] intensities -> nnU-Net's network input at the plans' spacing."""
    channels = channels.astype(np.float32)
    nonzero = (channels != 0).any(axis=0)
    bbox = nonzero_bbox(nonzero)
    cropped, mask = channels[(slice(None), *bbox)], nonzero[bbox]
    for index in range(len(cropped)):
        cropped[index] = normalize(cropped[index], model.normalization_schemes[index], model.channel_uses_mask(index),
                                   model.channel_intensity_properties(index), mask)
    shape = resampled_shape(cropped.shape[1:], pixel_spacing_mm, model.target_spacing)
    return _NativeSlice(bbox, cropped.shape[1:], resample_planes(cropped, shape, model.resampling_order("data")))


def native_labels(item: _NativeSlice, logits, slice_shape: tuple, order: int) -> np.ndarray:
    """fp16 logits on the resampled crop -> uint8 labels of the whole slice, as nnU-Net exports them."""
    on_crop = resample_planes(logits.cpu().numpy(), item.crop_shape, order)
    labels = np.zeros(slice_shape, dtype=np.uint8)
    labels[item.bbox] = on_crop.argmax(0)
    return labels
