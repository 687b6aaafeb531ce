"""Small random-weight nnU-Net v2 model folders shaped like LegSegNet's, for tests and benchmarks.

The folder holds what a real nnU-Net v2 training leaves behind (plans.json with a '2d' configuration,
dataset.json, fold_N/checkpoint_*.pth with numpy scalars in the training log) so that both this library and
nnunetv2's nnUNetPredictor load it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from LegSegNetLib.nnunet.model import build_network

SMALL_FEATURES = (4, 8, 16, 32)
LEGSEGNET_FEATURES = (32, 64, 128, 256, 512, 512, 512)  # nnU-Net's default 2D plan for 256x256 slices
LABELS = {"background": 0, "SAT": 1, "SM": 2, "IMAT": 3, "Bone": 4}
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
    plans = make_plans(normalization, features_per_stage, use_mask_for_norm, patch_size)
    dataset_json = make_dataset_json()
    _write_json(path / "plans.json", plans)
    _write_json(path / "dataset.json", dataset_json)
    if in_plane_orientation is not None:
        _write_json(path / "legsegnet.json", {"in_plane_orientation": in_plane_orientation})
    for index, fold in enumerate(folds):
        network = _random_network(plans, dataset_json, seed=seed * 1000 + index)
        (path / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(_checkpoint(network, plans, dataset_json, fold), path / f"fold_{fold}" / checkpoint_name)
    return path


def make_plans(normalization="CTNormalization", features_per_stage=SMALL_FEATURES, use_mask_for_norm=False,
               patch_size=(256, 256)) -> dict:
    stages = len(features_per_stage)
    return {
        "dataset_name": "Dataset001_LegCT",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [999.0, 1.0, 1.0],
        "original_median_shape_after_transp": [1, 256, 256],
        "image_reader_writer": "NaturalImage2DIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "2d": {
                "data_identifier": "nnUNetPlans_2d",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 12,
                "patch_size": list(patch_size),
                "median_image_size_in_voxels": [256.0, 256.0],
                "spacing": [1.0, 1.0],
                "normalization_schemes": [normalization],
                "use_mask_for_norm": [use_mask_for_norm],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None,
                },
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": {
                        "n_stages": stages,
                        "features_per_stage": list(features_per_stage),
                        "conv_op": "torch.nn.modules.conv.Conv2d",
                        "kernel_sizes": [[3, 3]] * stages,
                        "strides": [[1, 1]] + [[2, 2]] * (stages - 1),
                        "n_conv_per_stage": [2] * stages,
                        "n_conv_per_stage_decoder": [2] * (stages - 1),
                        "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                        "dropout_op": None,
                        "dropout_op_kwargs": None,
                        "nonlin": "torch.nn.LeakyReLU",
                        "nonlin_kwargs": {"inplace": True},
                    },
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
                "batch_dice": True,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": dict(UINT8_INTENSITY_PROPERTIES)},
    }


def make_dataset_json() -> dict:
    return {"channel_names": {"0": "CT"}, "labels": dict(LABELS), "numTraining": 900, "file_ending": ".png"}


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


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=4), encoding="utf-8")
