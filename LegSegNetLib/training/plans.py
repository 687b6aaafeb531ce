"""nnU-Net v2 plans and dataset.json for LegSegNet's 2D configuration.

The values are those nnU-Net v2's default planner chooses for a dataset of 256x256 8-bit slices
(LegSegNet's training data): a 7-stage PlainConvUNet, 3x3 kernels, 2x2 strides, instance norm,
leaky ReLU, patch 256x256, spacing [1, 1]. `width` scales the feature counts for small models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from LegSegNetLib.tissues import BACKGROUND, TISSUES

CONFIGURATION = "2d"
PATCH_SIZE = (256, 256)
N_STAGES = 7  # 256 px halved 6 times leaves nnU-Net's minimum 4 px feature map
BASE_FEATURES = 32
MAX_FEATURES = 512
NNUNET_2D_BATCH_SIZE = 12  # nnU-Net's reference 2D batch size
NORMALIZATIONS = ("CTNormalization", "ZScoreNormalization")
IMAGE_FILE_ENDING = ".png"
CHANNEL_NAME = "CT"  # nnU-Net picks CTNormalization for a channel named CT

# Foreground statistics of the full 8-bit range, for plans built before any data is seen.
FULL_8BIT_INTENSITY_PROPERTIES = {
    "max": 255.0, "mean": 127.5, "median": 127.5, "min": 0.0,
    "percentile_00_5": 0.0, "percentile_99_5": 255.0, "std": 73.9,
}


def features_per_stage(width: float = 1.0) -> list[int]:
    """nnU-Net's 32, 64, ... capped at 512, scaled by `width` (at least 1 feature per stage)."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return [max(1, round(min(MAX_FEATURES, BASE_FEATURES * 2 ** stage) * width)) for stage in range(N_STAGES)]


def legsegnet_plans(
    width: float = 1.0,
    normalization: str = "CTNormalization",
    intensity_properties: Optional[dict] = None,
    batch_size: int = NNUNET_2D_BATCH_SIZE,
    dataset_name: str = "Dataset001_LegSegNet",
    features: Optional[Sequence[int]] = None,
    use_mask_for_norm: bool = False,
    patch_size: Sequence[int] = PATCH_SIZE,
) -> dict:
    """A complete nnU-Net v2 plans dictionary (what plans.json holds) for LegSegNet's 2D configuration.

    `intensity_properties`: the CT channel's foreground statistics used by CTNormalization
    (see `foreground_intensity_properties`); defaults to the full 8-bit range. `features` (one count per
    stage, for example (4, 8, 16, 32) for a shallow test network) replaces LegSegNet's 7 stages scaled by
    `width`; `use_mask_for_norm` and `patch_size` vary the plans for tests of the inference code.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
    return {
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [999.0, 1.0, 1.0],
        "original_median_shape_after_transp": [1, *PATCH_SIZE],
        "image_reader_writer": "NaturalImage2DIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: _configuration(
            list(features) if features is not None else features_per_stage(width),
            normalization, batch_size, use_mask_for_norm, patch_size,
        )},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": dict(intensity_properties or FULL_8BIT_INTENSITY_PROPERTIES)
        },
    }


def _configuration(features: list, normalization: str, batch_size: int, use_mask_for_norm: bool,
                   patch_size: Sequence[int]) -> dict:
    stages = len(features)
    return {
        "data_identifier": f"nnUNetPlans_{CONFIGURATION}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(batch_size),
        "patch_size": list(patch_size),
        "median_image_size_in_voxels": [float(size) for size in PATCH_SIZE],
        "spacing": [1.0, 1.0],
        "normalization_schemes": [normalization],
        "use_mask_for_norm": [use_mask_for_norm],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": stages,
                "features_per_stage": [int(count) for count in features],
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


def legsegnet_dataset_json(num_training: int = 0) -> dict:
    """nnU-Net v2 dataset.json for LegSegNet's four tissues on 8-bit PNG slices."""
    labels = {"background": BACKGROUND}
    labels.update({tissue.key: tissue.value for tissue in TISSUES})
    return {
        "channel_names": {"0": CHANNEL_NAME},
        "labels": labels,
        "numTraining": int(num_training),
        "file_ending": IMAGE_FILE_ENDING,
    }


def foreground_intensity_properties(images, labels, samples_per_image: int = 10000, seed: int = 1234) -> dict:
    """Statistics of image values under foreground labels, as nnU-Net's dataset fingerprint computes
    them: the same number of random foreground pixels (drawn with replacement) from every image, so
    each image weighs the same whatever its size. Used by CTNormalization."""
    rng = np.random.default_rng(seed)
    samples = []
    for image, label in zip(images, labels):
        values = np.asarray(image)[np.asarray(label) > 0]
        if values.size:
            samples.append(rng.choice(values, samples_per_image, replace=True).astype(np.float64))
    values = np.concatenate(samples) if samples else np.empty(0)
    if values.size == 0:
        raise ValueError("no foreground pixels in the training labels: cannot compute intensity statistics")
    return {
        "max": float(values.max()), "mean": float(values.mean()), "median": float(np.median(values)),
        "min": float(values.min()), "percentile_00_5": float(np.percentile(values, 0.5)),
        "percentile_99_5": float(np.percentile(values, 99.5)), "std": float(values.std()),
    }


def write_json(path: Path, content) -> None:
    """plans.json, dataset.json and their companions, indented as nnU-Net writes them."""
    path.write_text(json.dumps(content, indent=4), encoding="utf-8")
