"""Building the slice engine that segmentation settings ask for, for the command line and the Slicer module alike.

Engines are imported only when chosen, so the threshold engine works without torch, and a missing or
broken model gives one clear message.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

from LegSegNetLib.segmenting.engines.base import SliceEngine
from LegSegNetLib.segmenting.engines.nnunet.profiles import NATIVE_PROFILE
from LegSegNetLib.settings import DEFAULT_MODEL, THRESHOLD_ENGINE, SegmentationSettings


class EngineError(ValueError):
    """The engine cannot be built as asked; the message says what to change."""


def create_engine(settings: SegmentationSettings) -> SliceEngine:
    """The engine `settings` describe: the threshold engine, or a model folder or registry name (default
    "legsegnet") run by the nnU-Net engine with the settings' folds, checkpoint, TTA, device, batch size and
    backend."""
    if settings.engine == THRESHOLD_ENGINE:
        threshold = _import_engine_module("threshold", "LegSegNetLib.segmenting.engines.threshold")
        return threshold.ThresholdEngine()
    folder = resolve_model_folder(settings.model)
    model_module = _import_engine_module("legsegnet", "LegSegNetLib.segmenting.engines.nnunet.model")
    model = model_module.load_model_folder(folder, folds=settings.folds, checkpoint=settings.checkpoint)
    if model.preprocessing(settings.preprocessing, _registry_profile(settings.model)) == NATIVE_PROFILE:
        engine_class = _import_engine_module("legsegnet", "LegSegNetLib.segmenting.engines.nnunet.native").NativeEngine
    else:
        engine_class = _import_engine_module("legsegnet", "LegSegNetLib.segmenting.engines.nnunet.engine").LegSegNetEngine
    return engine_class(model, tta=settings.tta, device=settings.device, batch_size=settings.batch_size,
                        backend=settings.backend)


def _registry_profile(model: Optional[str]) -> Optional[str]:
    """The preprocessing the registry entry of a model given by name declares (None for folders)."""
    name = model or DEFAULT_MODEL
    if Path(name).expanduser().is_dir():
        return None
    spec = _import_engine_module("legsegnet", "LegSegNetLib.models.registry").load_registry().get(name)
    return spec.preprocessing if spec is not None else None


def resolve_model_folder(model: Optional[str]) -> Path:
    """A folder is used as it is; anything else is a model name looked up in the registry."""
    name = model or DEFAULT_MODEL
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise EngineError(f"model {name!r} is a file; give the nnU-Net model folder holding plans.json")
    if len(path.parts) > 1 or name.startswith("."):
        raise EngineError(f"model folder not found: {path}")
    registry = _import_engine_module("legsegnet", "LegSegNetLib.models.registry")
    return Path(registry.resolve_model(name))


def _import_engine_module(engine: str, module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise EngineError(
            f"the {engine} engine is not available: Python module {error.name!r} is missing "
            "(install LegSegNet with its dependencies, see README)"
        ) from error
