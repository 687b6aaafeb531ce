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
# Foreground statistics of soft tissue and bone in CT (HU), as a body-composition dataset's fingerprint has them.
HU_INTENSITY_PROPERTIES = {
    "max": 2500.0, "mean": 30.0, "median": 35.0, "min": -1000.0,
    "percentile_00_5": -180.0, "percentile_99_5": 1200.0, "std": 160.0,
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
    native: dict | None = None,
) -> Path:
    """Write plans.json, dataset.json and one random-weight checkpoint per fold into `path`; returns it.

    `native` makes a model trained on real intensities (see native_changes): e.g. {"spacing": (0.8, 0.8),
    "labels": ["psoas", ...], "intensity_properties": HU_INTENSITY_PROPERTIES, "configuration": "3d_fullres"}."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    plans = legsegnet_plans(normalization=normalization, features=features_per_stage, use_mask_for_norm=use_mask_for_norm,
                            patch_size=patch_size, intensity_properties=UINT8_INTENSITY_PROPERTIES,
                            dataset_name="Dataset001_LegCT")
    dataset_json = legsegnet_dataset_json(num_training=900)
    configuration = "2d"
    if native is not None:
        configuration = native_changes(plans, dataset_json, **native)
    write_json(path / "plans.json", plans)
    write_json(path / "dataset.json", dataset_json)
    if in_plane_orientation is not None:
        write_json(path / "legsegnet.json", {"in_plane_orientation": in_plane_orientation})
    for index, fold in enumerate(folds):
        network = _random_network(plans, dataset_json, seed=seed * 1000 + index, configuration=configuration)
        (path / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(_checkpoint(network, plans, dataset_json, fold, configuration), path / f"fold_{fold}" / checkpoint_name)
    return path


def native_changes(plans: dict, dataset_json: dict, spacing=(1.0, 1.0), labels: Sequence[str] | None = None,
                   intensity_properties: dict | None = None, configuration: str = "2d", file_ending: str = ".nii.gz",
                   channels: Sequence[str] = ("CT",)) -> str:
    """Turn LegSegNet's plans and dataset.json into those of a model trained on NIfTI volumes (in place):
    the 2d configuration's spacing, the label names (background first), the channels, the foreground statistics;
    `configuration` renames the 2d configuration (a '3d_fullres' name makes it 3D). Returns the name."""
    settings = plans["configurations"].pop("2d")
    settings["spacing"] = [float(value) for value in spacing]
    settings["normalization_schemes"] = settings["normalization_schemes"] * len(channels)
    settings["use_mask_for_norm"] = settings["use_mask_for_norm"] * len(channels)
    if configuration.startswith("3d"):
        settings["patch_size"] = [32, *settings["patch_size"]]
        settings["spacing"] = [2.5, *settings["spacing"]]
    plans["configurations"][configuration] = settings
    plans["original_median_spacing_after_transp"] = [999.0, *settings["spacing"][-2:]]
    plans["image_reader_writer"] = "SimpleITKIO"
    properties = intensity_properties or HU_INTENSITY_PROPERTIES
    plans["foreground_intensity_properties_per_channel"] = {str(index): dict(properties) for index in range(len(channels))}
    dataset_json["channel_names"] = {str(index): name for index, name in enumerate(channels)}
    dataset_json["file_ending"] = file_ending
    if labels is not None:
        dataset_json["labels"] = {"background": 0, **{name: value for value, name in enumerate(labels, 1)}}
    return configuration


def _random_network(plans: dict, dataset_json: dict, seed: int, configuration: str = "2d") -> torch.nn.Module:
    """He-initialised convolutions plus randomised norm affine parameters, so logits vary across classes."""
    torch.manual_seed(seed)
    network = build_network(plans, configuration, dataset_json)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, a=1e-2)
                torch.nn.init.normal_(module.bias, std=0.1)
            elif isinstance(module, torch.nn.InstanceNorm2d) and module.affine:
                torch.nn.init.normal_(module.weight, mean=1.0, std=0.2)
                torch.nn.init.normal_(module.bias, std=0.2)
    return network


def _checkpoint(network: torch.nn.Module, plans: dict, dataset_json: dict, fold, configuration: str = "2d") -> dict:
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
            "dice_per_class_or_region": [[value] * (len(dataset_json["labels"]) - 1) for value in dice],
            "train_losses": [np.float32(-0.5)] * 3,
            "val_losses": [np.float32(-0.4)] * 3,
            "lrs": [0.01, 0.0099, 0.0098],
            "epoch_start_timestamps": [0.0, 1.0, 2.0],
            "epoch_end_timestamps": [1.0, 2.0, 3.0],
        },
        "_best_ema": np.float64(0.52),
        "current_epoch": 3,
        "init_args": {
            "plans": plans, "configuration": configuration, "fold": fold, "dataset_json": dataset_json,
            "device": torch.device("cpu"),
        },
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1),
    }
