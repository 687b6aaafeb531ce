"""LegSegNet as a SliceEngine: native HU slices in, tissue labels on the same native grid out.

Each slice goes through LegSegNet's own preprocessing (8-bit window, bicubic stretch to 256x256) and nnU-Net
inference; the class probabilities are then resampled bilinearly back to the slice's rows x columns and the
most probable class wins. A slice that is already 256x256 keeps nnU-Net's own argmax, so its labels equal
the reference pipeline's exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from LegSegNetLib.reading.layout import RADIOLOGICAL
from LegSegNetLib.settings import SegmentationSettings
from LegSegNetLib.tissues import label_set_from_names
from LegSegNetLib.segmenting.engines.nnunet.model import NNUNetModel, load_model_folder
from LegSegNetLib.segmenting.engines.nnunet.profiles import LEGSEGNET_PROFILE
from LegSegNetLib.segmenting.engines.nnunet.backends import DEFAULT_BACKEND, backend_networks
from LegSegNetLib.device import resolve_device
from LegSegNetLib.segmenting.engines.nnunet.predictor import (
    Predictor, SliceLogits, class_argmax, class_probabilities, intra_op_threads,
)
from LegSegNetLib.segmenting.engines.nnunet.preprocessing import MODEL_SIZE, legsegnet_image

ORIENTATION_KEY = "in_plane_orientation"  # in legsegnet.json beside plans.json; LegSegNet trained radiological


class LegSegNetEngine:
    name = "legsegnet"

    preprocessing = LEGSEGNET_PROFILE

    def __init__(self, model: NNUNetModel, tta: bool = False, device: str = "auto", batch_size: Optional[int] = None,
                 backend: str = DEFAULT_BACKEND):
        model.check_profile(LEGSEGNET_PROFILE)
        self.label_set = label_set_from_names(model.dataset_json["labels"])
        self.model = with_backend(model, backend, device)
        self.in_plane_orientation = model.extra.get(ORIENTATION_KEY, RADIOLOGICAL)
        self.predictor = Predictor(self.model, device=device, tta=tta, batch_size=batch_size)

    @classmethod
    def from_model_folder(cls, folder, settings: SegmentationSettings = SegmentationSettings()) -> "LegSegNetEngine":
        """The engine for a model folder, with the folds, checkpoint, TTA, device, batch size and backend of
        `settings`."""
        model = load_model_folder(folder, folds=settings.folds, checkpoint=settings.checkpoint)
        return cls(model, tta=settings.tta, device=settings.device, batch_size=settings.batch_size,
                   backend=settings.backend)

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    @property
    def preferred_batch_size(self) -> int:
        """Slices per network pass: the pipeline hands over this many, so cancel waits for one pass at most."""
        return self.predictor.batch_size

    def segment_slices(self, hu_slices: np.ndarray, pixel_spacing_mm=(1.0, 1.0)) -> np.ndarray:
        """[n, rows, cols] HU in display orientation -> uint8 labels on the same grid.

        LegSegNet stretches every slice to 256x256 whatever its pixel spacing, so the spacing is not used.
        """
        return self.segment_prepared(self.prepare_slices(hu_slices, pixel_spacing_mm))

    def prepare_slices(self, hu_slices: np.ndarray, pixel_spacing_mm=(1.0, 1.0)) -> tuple:
        """The CPU half of segment_slices (the pipeline runs it for the next batch in a background thread):
        LegSegNet's 8-bit window and bicubic stretch to 256x256."""
        return legsegnet_image(hu_slices), tuple(hu_slices.shape[1:])

    def segment_prepared(self, prepared: tuple) -> np.ndarray:
        """The network half of segment_slices: nnU-Net inference, back to the native grid."""
        images, native = prepared
        results = self.predictor.predict(images)
        if native == MODEL_SIZE:
            return np.stack([result.labels() for result in results])
        with intra_op_threads(1):  # too small to share out (see intra_op_threads)
            return _labels_on_native_grid(results, native)

    def segment_model_grid(self, hu_slices: np.ndarray) -> np.ndarray:
        """Labels on LegSegNet's 256x256 grid, as its own app returns them (for parity checks)."""
        return np.stack([result.labels() for result in self.predictor.predict(legsegnet_image(hu_slices))])


def with_backend(model: NNUNetModel, backend: str, device: str) -> NNUNetModel:
    """The model with its networks run by `backend` (backends.BACKENDS): another backend's networks replace the
    torch ones, whose weights are then let go."""
    return dataclasses.replace(model, networks=backend_networks(model, backend, resolve_device(device)))


def _labels_on_native_grid(results: Sequence[SliceLogits], native: tuple) -> np.ndarray:
    """Bilinear resampling of class probabilities (pixel centres aligned as in the bicubic stretch), argmax."""
    probabilities = class_probabilities(results)
    resampled = F.interpolate(probabilities, size=native, mode="bilinear", align_corners=False)
    return class_argmax(resampled, dim=1)
