"""Training and export options (torch-free, so the command line can show them without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

EXPORT_FORMATS = ("nnunet", "nifti")  # training pairs: an nnU-Net v2 raw dataset, or NIfTI image/label pairs


@dataclass
class TrainingOptions:
    epochs: int = 100
    iterations_per_epoch: int = 250
    batch_size: Optional[int] = None  # None: the plans' batch size
    learning_rate: float = 1e-2
    width: Optional[float] = None  # feature scale of LegSegNet's plans; None: 1 (or the --init model's plans)
    fold: Union[int, str] = 0  # 0-4, or "all" (train on every case, validate on the training cases)
    device: str = "auto"
    seed: int = 0
    deep_supervision: bool = True
    max_validation_slices: int = 100
    init: Optional[Path] = None  # model folder whose weights (and plans) training starts from
    resume: bool = False

    def __post_init__(self):
        for name in ("epochs", "iterations_per_epoch"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:  # 0 would save an untrained model
                raise ValueError(f"{name} must be a whole number of at least 1, not {getattr(self, name)!r}")
