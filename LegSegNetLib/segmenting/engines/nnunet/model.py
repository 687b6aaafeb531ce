"""An nnU-Net v2 model folder (plans.json, dataset.json, fold_N/checkpoint_*.pth) loaded without nnunetv2.

Only what 2D inference needs is read: the configuration's network architecture, normalization, patch size,
the label list and each fold's weights. Class names in the plans are resolved from an allow-list of packages
(torch.nn and dynamic_network_architectures), never imported from arbitrary modules.
"""

from __future__ import annotations

import copy
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from LegSegNetLib.segmenting.engines.nnunet.checkpoint import CheckpointReadError, UnsafeCheckpointError, load_checkpoint
from LegSegNetLib.segmenting.engines.nnunet.preprocessing import IntensityProperties

CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")
IMPORTABLE_PREFIXES = ("torch.nn.", "dynamic_network_architectures.architectures.")
SUPPORTED_NORMALIZATIONS = ("CTNormalization", "ZScoreNormalization", "NoNormalization")
DEFAULT_MIRRORING_AXES_2D = (0, 1)


class ModelFolderError(ValueError):
    """The model folder is incomplete, inconsistent or not a 2D nnU-Net v2 model this library can run."""


@dataclass
class NNUNetModel:
    folder: Path
    plans: dict
    dataset_json: dict
    configuration_name: str
    configuration: dict
    folds: tuple
    networks: list  # one torch.nn.Module per fold, in eval mode, on the CPU
    inference_allowed_mirroring_axes: tuple
    checkpoint_name: str
    extra: dict = field(default_factory=dict)  # the optional legsegnet.json beside plans.json

    @property
    def patch_size(self) -> tuple:
        return tuple(int(size) for size in self.configuration["patch_size"])

    @property
    def normalization(self) -> str:
        return self.configuration["normalization_schemes"][0]

    @property
    def use_mask_for_norm(self) -> bool:
        return bool(self.configuration.get("use_mask_for_norm", [False])[0])

    @property
    def intensity_properties(self) -> Optional[IntensityProperties]:
        properties = self.plans.get("foreground_intensity_properties_per_channel", {}).get("0")
        if properties is None:
            return None
        return IntensityProperties(*(float(properties[key]) for key in IntensityProperties.__dataclass_fields__))

    @property
    def label_values(self) -> tuple:
        """Label value of each output channel (channel i is the i-th smallest label value)."""
        return tuple(sorted(_label_values(self.dataset_json)))


def load_model_folder(folder, folds: Optional[Sequence] = None, checkpoint: Optional[str] = None) -> NNUNetModel:
    """Read plans, dataset and per-fold weights; folds=None means every fold_N with a checkpoint.

    checkpoint=None picks checkpoint_final.pth, else checkpoint_best.pth (the one LegSegNet publishes), per fold.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"model folder not found: {folder}")
    plans = _read_json(folder, "plans.json")
    dataset_json = _read_json(folder, "dataset.json")
    extra = _read_json(folder, "legsegnet.json") if (folder / "legsegnet.json").is_file() else {}
    fold_names = _resolve_folds(folder, folds, checkpoint)
    checkpoints = [_read_fold_checkpoint(folder, fold, checkpoint) for fold in fold_names]

    configuration_name = checkpoints[0][1]["init_args"].get("configuration", "2d")
    configuration = _resolve_configuration(plans, configuration_name)
    _check_supported(configuration, configuration_name, dataset_json, plans)
    networks = []
    for fold, (path, content) in zip(fold_names, checkpoints):
        with torch.device("meta"):  # no random initialisation (about 0.6 s for LegSegNet): the weights replace it
            network = build_network(plans, configuration_name, dataset_json)
        _load_weights(network, content["network_weights"], path)
        networks.append(network.eval())
    axes = checkpoints[0][1].get("inference_allowed_mirroring_axes") or DEFAULT_MIRRORING_AXES_2D
    return NNUNetModel(
        folder=folder, plans=plans, dataset_json=dataset_json, configuration_name=configuration_name,
        configuration=configuration, folds=tuple(fold_names), networks=networks,
        inference_allowed_mirroring_axes=tuple(int(axis) for axis in axes),
        checkpoint_name=checkpoints[0][0].name, extra=extra,
    )


def build_network(plans: dict, configuration: str, dataset_json: dict) -> torch.nn.Module:
    """The configuration's network with random weights, as nnU-Net builds it for inference (no deep supervision)."""
    architecture = _resolve_configuration(plans, configuration).get("architecture")
    if not architecture:
        raise ModelFolderError(
            f"plans.json configuration '{configuration}' has no 'architecture' entry: plans written before "
            "nnU-Net v2.4 are not supported; re-export the model with a current nnU-Net v2"
        )
    kwargs = dict(architecture["arch_kwargs"])
    for name in architecture.get("_kw_requires_import", []):
        if kwargs.get(name) is not None:
            kwargs[name] = _locate(kwargs[name])
    network_class = _locate(architecture["network_class_name"])
    input_channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {"0": "CT"})))
    return network_class(
        input_channels=input_channels, num_classes=len(_label_values(dataset_json)), deep_supervision=False, **kwargs
    )


def _read_json(folder: Path, name: str) -> dict:
    path = folder / name
    if not path.is_file():
        raise ModelFolderError(f"{folder} is not an nnU-Net model folder: {name} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelFolderError(f"{path} is not valid JSON ({error}); re-download the model") from error


def _resolve_folds(folder: Path, folds: Optional[Sequence], checkpoint: Optional[str]) -> list:
    if folds is None:  # as nnU-Net: every numbered fold with a checkpoint; fold_all only when asked for
        found = sorted(
            int(path.name[len("fold_"):]) for path in folder.glob("fold_*")
            if path.name[len("fold_"):].isdigit() and _find_checkpoint(path, checkpoint)
        )
        if not found:
            wanted = checkpoint or " or ".join(CHECKPOINT_NAMES)
            raise ModelFolderError(f"{folder} has no fold_N folder holding {wanted}")
        return found
    if isinstance(folds, (int, str)):
        folds = [folds]
    names = [int(fold) if str(fold).isdigit() else str(fold) for fold in folds]
    if not names:
        raise ModelFolderError("no fold requested: give at least one fold, or None for all available folds")
    return names


def _find_checkpoint(fold_dir: Path, checkpoint: Optional[str]) -> Optional[Path]:
    for name in (checkpoint,) if checkpoint else CHECKPOINT_NAMES:
        if (fold_dir / name).is_file():
            return fold_dir / name
    return None


def _read_fold_checkpoint(folder: Path, fold, checkpoint: Optional[str]) -> tuple:
    fold_dir = folder / f"fold_{fold}"
    if not fold_dir.is_dir():
        available = sorted(path.name for path in folder.glob("fold_*")) or ["none"]
        raise ModelFolderError(f"fold {fold} is not in {folder} (folds there: {', '.join(available)})")
    path = _find_checkpoint(fold_dir, checkpoint)
    if path is None:
        wanted = checkpoint or " or ".join(CHECKPOINT_NAMES)
        present = sorted(p.name for p in fold_dir.glob("*.pth")) or ["none"]
        raise ModelFolderError(f"{fold_dir} holds no {wanted} (checkpoints there: {', '.join(present)})")
    try:
        content = load_checkpoint(path)
    except (UnsafeCheckpointError, CheckpointReadError) as error:
        raise ModelFolderError(str(error)) from error
    if not isinstance(content.get("init_args"), dict):
        raise ModelFolderError(f"{path} has no 'init_args': it is not an nnU-Net v2 checkpoint")
    return path, content


def _resolve_configuration(plans: dict, name: str) -> dict:
    configurations = plans.get("configurations", {})
    if name not in configurations:
        raise ModelFolderError(
            f"plans.json has no configuration '{name}' (it has: {', '.join(configurations) or 'none'})"
        )
    configuration = copy.deepcopy(configurations[name])
    parent = configuration.pop("inherits_from", None)
    if parent is not None:
        merged = _resolve_configuration(plans, parent)
        merged.update(configuration)
        configuration = merged
    return configuration


def _check_supported(configuration: dict, name: str, dataset_json: dict, plans: dict) -> None:
    if len(configuration.get("patch_size", ())) != 2:
        raise ModelFolderError(f"configuration '{name}' is not 2D (patch size {configuration.get('patch_size')})")
    spacing = [999.0 if value is None else float(value) for value in configuration.get("spacing", [1.0, 1.0])]
    if spacing != [1.0, 1.0]:
        raise ModelFolderError(
            f"configuration '{name}' resamples slices to spacing {spacing}; only models trained on 1x1 pixel "
            "spacing (LegSegNet's 8-bit slices) are supported"
        )
    if list(plans.get("transpose_forward", [0, 1, 2])) != [0, 1, 2]:
        raise ModelFolderError("plans.json transposes the image axes; only untransposed 2D models are supported")
    schemes = configuration.get("normalization_schemes", [])
    if len(schemes) != 1 or schemes[0] not in SUPPORTED_NORMALIZATIONS:
        raise ModelFolderError(
            f"normalization {schemes} is not supported: need one input channel with one of {SUPPORTED_NORMALIZATIONS}"
        )
    if schemes[0] == "CTNormalization" and "0" not in plans.get("foreground_intensity_properties_per_channel", {}):
        raise ModelFolderError("plans.json uses CTNormalization but has no foreground_intensity_properties_per_channel")
    values = sorted(_label_values(dataset_json))
    if values != list(range(len(values))):
        raise ModelFolderError(f"dataset.json labels must be the consecutive values 0..N, found {values}")


def _label_values(dataset_json: dict) -> list:
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ModelFolderError("dataset.json has no 'labels' mapping")
    if any(not isinstance(value, int) for value in labels.values()):
        raise ModelFolderError("region-based models (labels given as lists) are not supported")
    return list(labels.values())


def _locate(dotted_name: str):
    """A class named in the plans, imported only from torch.nn or dynamic_network_architectures."""
    if not isinstance(dotted_name, str) or not dotted_name.startswith(IMPORTABLE_PREFIXES):
        raise ModelFolderError(
            f"plans.json names '{dotted_name}', which is outside the allowed packages {IMPORTABLE_PREFIXES}"
        )
    module_name, _, class_name = dotted_name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        hint = " (install it with: pip install --no-deps dynamic-network-architectures)" if "dynamic" in module_name else ""
        raise ModelFolderError(f"cannot find '{dotted_name}' named in plans.json{hint}: {error}") from error


def _load_weights(network: torch.nn.Module, weights: dict, path: Path) -> None:
    weights = {key.removeprefix("_orig_mod.").removeprefix("module."): value for key, value in weights.items()}
    try:
        network.load_state_dict(weights, assign=True)  # the checkpoint's tensors become the network's
    except RuntimeError as error:
        first_lines = "; ".join(str(error).splitlines()[:4])
        raise ModelFolderError(
            f"the weights in {path} do not fit the network described by plans.json ({first_lines}). "
            "plans.json and the checkpoint must come from the same training run."
        ) from error
