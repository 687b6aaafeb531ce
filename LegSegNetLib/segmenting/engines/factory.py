"""Building the slice engine that segmentation settings ask for, for the command line and the Slicer module alike.

Engines are imported only when chosen, so the threshold engine works without torch, and a missing or
broken model gives one clear message.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

from LegSegNetLib.segmenting.engines.base import SliceEngine
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
    if _preprocessing(settings, model) == model_module.NATIVE_PROFILE:
        engine_class = _import_engine_module("legsegnet", "LegSegNetLib.segmenting.engines.nnunet.native").NativeEngine
    else:
        engine_class = _import_engine_module("legsegnet", "LegSegNetLib.segmenting.engines.nnunet.engine").LegSegNetEngine
    return engine_class(model, tta=settings.tta, device=settings.device, batch_size=settings.batch_size,
                        backend=settings.backend)


def _preprocessing(settings: SegmentationSettings, model) -> str:
    """The settings' profile, else the model folder's legsegnet.json, else its registry entry, else the rule of
    NNUNetModel.declared_preprocessing (PNG-trained: legsegnet; otherwise native)."""
    if settings.preprocessing or model.extra.get("preprocessing"):
        return settings.preprocessing or model.declared_preprocessing
    name = settings.model or DEFAULT_MODEL
    registry = _import_engine_module("legsegnet", "LegSegNetLib.models.registry")
    spec = None if Path(name).expanduser().is_dir() else registry.load_registry().get(name)
    return (spec.preprocessing if spec is not None and spec.preprocessing else None) or model.declared_preprocessing


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
