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
from LegSegNetLib.segmenting.engines.nnunet.profiles import NATIVE_PROFILE, choose_preprocessing

CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")
IMPORTABLE_PREFIXES = ("torch.nn.", "dynamic_network_architectures.architectures.")
SUPPORTED_NORMALIZATIONS = ("CTNormalization", "ZScoreNormalization", "RescaleTo01Normalization", "NoNormalization")
DEFAULT_MIRRORING_AXES_2D = (0, 1)
# Bounds on plans values that decide memory: a hostile or corrupt plans.json must not allocate gigabytes.
PATCH_SIZE_LIMITS = (8, 2048)  # pixels per side of the 2D patch
MAX_FEATURES = 2048  # channels of any stage (nnU-Net caps 2D networks at 512)
MAX_STAGES = 12
SPACING_LIMITS_MM = (0.05, 20.0)  # the plans' in-plane spacing: slices are resampled to it (native profile)


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
        return self.normalization_schemes[0]

    @property
    def normalization_schemes(self) -> tuple:
        """nnU-Net's normalization of each input channel."""
        return tuple(self.configuration["normalization_schemes"])

    @property
    def use_mask_for_norm(self) -> bool:
        return self.channel_uses_mask(0)

    @property
    def intensity_properties(self) -> Optional[IntensityProperties]:
        return self.channel_intensity_properties(0)

    def channel_uses_mask(self, channel: int) -> bool:
        flags = self.configuration.get("use_mask_for_norm") or [False] * (channel + 1)
        return bool(flags[channel])

    def channel_intensity_properties(self, channel: int) -> Optional[IntensityProperties]:
        properties = self.plans.get("foreground_intensity_properties_per_channel", {}).get(str(channel))
        if properties is None:
            return None
        return IntensityProperties(*(float(properties[key]) for key in IntensityProperties.__dataclass_fields__))

    @property
    def channel_names(self) -> tuple:
        """The input channels' names in channel order (e.g. ('CT',) or ('fat', 'water'))."""
        return tuple(name for _, name in sorted(_channel_names(self.dataset_json).items(), key=lambda item: int(item[0])))

    @property
    def target_spacing(self) -> tuple:
        """The in-plane pixel spacing (rows, columns) in mm the network was trained on."""
        return tuple(float(value) for value in self.configuration["spacing"])

    def resampling_order(self, kind: str) -> int:
        """Spline order of nnU-Net's resampling of the image ('data') or of the logits ('probabilities')."""
        default = 3 if kind == "data" else 1
        return int(self.configuration.get(f"resampling_fn_{kind}_kwargs", {}).get("order", default))

    def preprocessing(self, requested: Optional[str] = None, registry_profile: Optional[str] = None) -> str:
        """The profile that runs this model (see profiles.choose_preprocessing)."""
        try:
            return choose_preprocessing(self.dataset_json, self.extra, self.folder, requested, registry_profile)
        except ValueError as error:
            raise ModelFolderError(str(error)) from error

    def check_profile(self, profile: str) -> None:
        """Refuse a preprocessing profile this model cannot run with; the message says why."""
        if profile == NATIVE_PROFILE:
            return
        if len(self.channel_names) != 1:
            raise ModelFolderError(f"{self.folder} takes {len(self.channel_names)} input channels "
                                   f"({', '.join(self.channel_names)}); LegSegNet's 8-bit preprocessing makes one: "
                                   "use --preprocessing native")
        if self.target_spacing != (1.0, 1.0):
            raise ModelFolderError(
                f"{self.folder} resamples slices to {self.target_spacing} mm pixels; LegSegNet's 8-bit preprocessing "
                "is for models trained on 1x1 pixel spacing: use --preprocessing native")

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
    _check_network_size(kwargs)
    network_class = _locate(architecture["network_class_name"])
    if not (isinstance(network_class, type) and issubclass(network_class, torch.nn.Module)):
        raise ModelFolderError(f"plans.json's network_class_name '{architecture['network_class_name']}' is not a "
                               "network class; the model folder is damaged or not an nnU-Net v2 model")
    input_channels = len(_channel_names(dataset_json))
    try:
        return network_class(input_channels=input_channels, num_classes=len(_label_values(dataset_json)),
                             deep_supervision=False, **kwargs)
    except (TypeError, ValueError, AttributeError, IndexError, KeyError, RuntimeError) as error:
        raise ModelFolderError(f"cannot build the network '{architecture['network_class_name']}' plans.json "
                               f"describes ({type(error).__name__}: {error}); re-export the model") from error


def _check_network_size(arch_kwargs: dict) -> None:
    """Refuse architectures far beyond any 2D nnU-Net before their weights are allocated."""
    stages = arch_kwargs.get("n_stages", 0)
    features = arch_kwargs.get("features_per_stage", [])
    features = features if isinstance(features, (list, tuple)) else [features]
    if not (isinstance(stages, int) and 0 <= stages <= MAX_STAGES) or \
            not all(isinstance(count, int) and 0 < count <= MAX_FEATURES for count in features):
        raise ModelFolderError(f"plans.json describes a network beyond the supported size (n_stages {stages!r}, at "
                               f"most {MAX_STAGES}; features_per_stage {features!r}, each at most {MAX_FEATURES})")


def _read_json(folder: Path, name: str) -> dict:
    path = folder / name
    if not path.is_file():
        raise ModelFolderError(f"{folder} is not an nnU-Net model folder: {name} is missing")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelFolderError(f"{path} is not valid JSON ({error}); re-download the model") from error
    if not isinstance(content, dict):
        raise ModelFolderError(f"{path} holds a JSON {type(content).__name__}, not an object; re-download the model")
    return content


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


def _resolve_configuration(plans: dict, name: str, children: tuple = ()) -> dict:
    configurations = plans.get("configurations", {})
    if not isinstance(configurations, dict) or not isinstance(configurations.get(name), dict):
        known = ", ".join(configurations) if isinstance(configurations, dict) else ""
        raise ModelFolderError(f"plans.json has no configuration '{name}' (it has: {known or 'none'})")
    if name in children:
        raise ModelFolderError(f"plans.json configurations inherit from each other in a loop "
                               f"({' -> '.join((*children, name))}); re-export the model")
    configuration = copy.deepcopy(configurations[name])
    parent = configuration.pop("inherits_from", None)
    if parent is not None:
        merged = _resolve_configuration(plans, parent, (*children, name))
        merged.update(configuration)
        configuration = merged
    return configuration


def _check_supported(configuration: dict, name: str, dataset_json: dict, plans: dict) -> None:
    patch_size = configuration.get("patch_size", ())
    if not isinstance(patch_size, list) or len(patch_size) != 2:
        found = ", ".join(plans.get("configurations", {})) or "none"
        raise ModelFolderError(
            f"the checkpoints were trained with configuration '{name}', which is not 2D (patch size "
            f"{configuration.get('patch_size')}); LegSegNet runs 2D nnU-Net models only (plans.json configurations: "
            f"{found}): train and export the '2d' configuration")
    low, high = PATCH_SIZE_LIMITS
    if not all(isinstance(size, int) and not isinstance(size, bool) and low <= size <= high for size in patch_size):
        raise ModelFolderError(f"configuration '{name}' has patch size {patch_size}; each side must be a whole "
                               f"number of pixels from {low} to {high}")
    spacing = configuration.get("spacing", [1.0, 1.0])
    low, high = SPACING_LIMITS_MM
    if not (isinstance(spacing, list) and len(spacing) == 2 and all(
            isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
            for value in spacing)):
        raise ModelFolderError(f"configuration '{name}' has spacing {spacing}; it needs two pixel sizes from "
                               f"{low} to {high} mm")
    if list(plans.get("transpose_forward", [0, 1, 2])) != [0, 1, 2]:
        raise ModelFolderError("plans.json transposes the image axes; only untransposed 2D models are supported")
    channels = len(_channel_names(dataset_json))
    schemes = configuration.get("normalization_schemes", [])
    if len(schemes) != channels or any(scheme not in SUPPORTED_NORMALIZATIONS for scheme in schemes):
        raise ModelFolderError(f"normalization {schemes} is not supported: need one of {SUPPORTED_NORMALIZATIONS} "
                               f"for each of the {channels} input channels")
    properties = plans.get("foreground_intensity_properties_per_channel", {})
    for channel, scheme in enumerate(schemes):
        if scheme == "CTNormalization" and str(channel) not in properties:
            raise ModelFolderError(f"plans.json uses CTNormalization for channel {channel} but has no "
                                   "foreground_intensity_properties_per_channel for it")
    values = sorted(_label_values(dataset_json))
    if values != list(range(len(values))):
        raise ModelFolderError(f"dataset.json labels must be the consecutive values 0..N, found {values}: "
                               "nnU-Net trains only on consecutive labels; renumber them and retrain")


def _channel_names(dataset_json: dict) -> dict:
    return dataset_json.get("channel_names", dataset_json.get("modality", {"0": "CT"}))


def _label_values(dataset_json: dict) -> list:
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ModelFolderError("dataset.json has no 'labels' mapping")
    if any(not isinstance(value, int) for value in labels.values()) or "regions_class_order" in dataset_json:
        raise ModelFolderError(
            "region-based models (dataset.json labels given as lists of values, with regions_class_order) are not "
            "supported: their outputs overlap, one label per pixel cannot hold them; train the model with "
            "plain labels")
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
