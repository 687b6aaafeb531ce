"""Choosing and building a slice engine by name, for the command line and the Slicer module alike.

Engines are imported only when chosen, so the threshold engine works without torch, and a missing or
broken model gives one clear message.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Optional, Sequence

from LegSegNetLib.segmenting.engines.base import SliceEngine

ENGINES = ("legsegnet", "threshold")
DEFAULT_MODEL = "legsegnet"  # registry name of the published LegSegNet weights
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class EngineError(ValueError):
    """The engine cannot be built as asked; the message says what to change."""


def create_engine(
    engine: str = "legsegnet",
    model: Optional[str] = None,
    folds: Optional[Sequence[int]] = None,
    tta: bool = False,
    device: str = "auto",
    checkpoint: Optional[str] = None,
    batch_size: Optional[int] = None,
    backend: str = "torch",
) -> SliceEngine:
    """Build an engine. legsegnet: `model` is a model folder or registry name (default "legsegnet"),
    `folds` None means all the model has, `checkpoint` a file name inside fold_N (default: final, else best),
    `batch_size` None lets the engine choose, `backend` "torch" (exact) or "onnx" (ONNX Runtime on the CPU,
    optional packages). threshold: takes none of the model options."""
    if engine == "threshold":
        _refuse_model_options(model=model, folds=folds, tta=tta, checkpoint=checkpoint, batch_size=batch_size,
                              backend=None if backend == "torch" else backend)
        threshold = _import_engine_module("threshold", "LegSegNetLib.segmenting.engines.threshold")
        return threshold.ThresholdEngine()
    if engine == "legsegnet":
        if not DEVICE_PATTERN.match(device or ""):
            raise EngineError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
        folder = resolve_model_folder(model)
        nnunet_engine = _import_engine_module("legsegnet", "LegSegNetLib.segmenting.engines.nnunet.engine")
        return nnunet_engine.LegSegNetEngine.from_model_folder(
            folder, folds=folds, checkpoint=checkpoint, tta=tta, device=device, batch_size=batch_size, backend=backend
        )
    raise EngineError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")


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


def _refuse_model_options(**options) -> None:
    given = [name for name, value in options.items() if value not in (None, False)]
    if given:
        raise EngineError(f"the threshold engine takes no {', '.join(given)}: those choose a LegSegNet model")


def _import_engine_module(engine: str, module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise EngineError(
            f"the {engine} engine is not available: Python module {error.name!r} is missing "
            "(install LegSegNet with its dependencies, see README)"
        ) from error
