"""Small random-weight nnU-Net v2 model folders shaped like LegSegNet's, for tests and benchmarks.

The folder holds what a real nnU-Net v2 training leaves behind (plans.json with a '2d' configuration,
dataset.json, fold_N/checkpoint_*.pth with numpy scalars in the training log) so that both this library and
nnunetv2's nnUNetPredictor load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from LegSegNetLib.segmenting.engines.nnunet.model import build_network
from LegSegNetLib.training import plans as legsegnet_training_plans
from LegSegNetLib.training.plans import legsegnet_dataset_json, legsegnet_plans, write_json

SMALL_FEATURES = (4, 8, 16, 32)
LEGSEGNET_FEATURES = tuple(legsegnet_training_plans.features_per_stage(width=1.0))  # the published network: 32..512 over 7 stages
# Foreground statistics of LegSegNet-like 8-bit slices: (HU + 200) / 400 * 255 inside the leg.
UINT8_INTENSITY_PROPERTIES = {
    "max": 255.0, "mean": 120.0, "median": 128.0, "min": 0.0,
    "percentile_00_5": 3.0, "percentile_99_5": 250.0, "std": 45.0,
}


def make_model_folder(
    path,
    normalization: str = "CTNormalization",
    folds: Sequence = (0,),
    seed: int = 0,
    features_per_stage: Sequence[int] = SMALL_FEATURES,
    checkpoint_name: str = "checkpoint_final.pth",
    use_mask_for_norm: bool = False,
    patch_size: Sequence[int] = (256, 256),
    in_plane_orientation: str | None = None,
) -> Path:
    """Write plans.json, dataset.json and one random-weight checkpoint per fold into `path`; returns it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    plans = legsegnet_plans(normalization=normalization, features=features_per_stage, use_mask_for_norm=use_mask_for_norm,
                            patch_size=patch_size, intensity_properties=UINT8_INTENSITY_PROPERTIES,
                            dataset_name="Dataset001_LegCT")
    dataset_json = legsegnet_dataset_json(num_training=900)
    write_json(path / "plans.json", plans)
    write_json(path / "dataset.json", dataset_json)
    if in_plane_orientation is not None:
        write_json(path / "legsegnet.json", {"in_plane_orientation": in_plane_orientation})
    for index, fold in enumerate(folds):
        network = _random_network(plans, dataset_json, seed=seed * 1000 + index)
        (path / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(_checkpoint(network, plans, dataset_json, fold), path / f"fold_{fold}" / checkpoint_name)
    return path


def _random_network(plans: dict, dataset_json: dict, seed: int) -> torch.nn.Module:
    """He-initialised convolutions plus randomised norm affine parameters, so logits vary across classes."""
    torch.manual_seed(seed)
    network = build_network(plans, "2d", dataset_json)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, a=1e-2)
                torch.nn.init.normal_(module.bias, std=0.1)
            elif isinstance(module, torch.nn.InstanceNorm2d) and module.affine:
                torch.nn.init.normal_(module.weight, mean=1.0, std=0.2)
                torch.nn.init.normal_(module.bias, std=0.2)
    return network


def _checkpoint(network: torch.nn.Module, plans: dict, dataset_json: dict, fold) -> dict:
    """Laid out like nnUNetTrainer.save_checkpoint, numpy scalars in the log included."""
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    dice = [np.float64(0.5 + 0.01 * epoch) for epoch in range(3)]
    return {
        "network_weights": network.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": None,
        "logging": {
            "mean_fg_dice": dice,
            "ema_fg_dice": dice,
            "dice_per_class_or_region": [[value] * 4 for value in dice],
            "train_losses": [np.float32(-0.5)] * 3,
            "val_losses": [np.float32(-0.4)] * 3,
            "lrs": [0.01, 0.0099, 0.0098],
            "epoch_start_timestamps": [0.0, 1.0, 2.0],
            "epoch_end_timestamps": [1.0, 2.0, 3.0],
        },
        "_best_ema": np.float64(0.52),
        "current_epoch": 3,
        "init_args": {
            "plans": plans, "configuration": "2d", "fold": fold, "dataset_json": dataset_json,
            "device": torch.device("cpu"),
        },
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1),
    }
