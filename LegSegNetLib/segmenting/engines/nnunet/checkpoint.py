"""Loading nnU-Net checkpoints without ever executing code from them.

nnU-Net checkpoints are torch pickles that also hold numpy scalars (for example the best EMA Dice).
`torch.load(weights_only=True)` refuses anything but tensors and plain containers unless the extra
classes are allow-listed; we allow exactly the numpy scalar and dtype classes and nothing else, so a
checkpoint crafted to run code is refused instead of executed.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch


class UnsafeCheckpointError(ValueError):
    """The file needs more than tensors, containers and numpy scalars to load: it is refused."""


class CheckpointReadError(ValueError):
    pass


def _numpy_safe_globals() -> list:
    # numpy 2 renamed numpy.core to numpy._core: checkpoints pickle the scalar class under the name of the numpy
    # that saved them, so allow it under both whichever numpy loads them.
    try:
        from numpy._core.multiarray import scalar  # numpy 2, and numpy 1.26's forward-compatible name
    except ImportError:
        from numpy.core.multiarray import scalar
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [(scalar, f"{module}.multiarray.scalar") for module in ("numpy.core", "numpy._core")] + [
        np.dtype, *dtype_classes]


def load_checkpoint(path) -> dict:
    """Load a checkpoint on the CPU; returns its dictionary (network_weights, init_args, ...)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    damaged = f"cannot read checkpoint {path}: it is truncated or not a torch file; re-download the model"
    if not _looks_like_torch_file(path):
        raise CheckpointReadError(damaged)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if _offending_global(error) is None:  # damaged bytes, not a forbidden import
            raise CheckpointReadError(f"{damaged} ({str(error).splitlines()[0][:200]})") from error
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it needs code that is not allowed in a weights file "
            f"({_offending_global(error)}). Only load checkpoints from a source you trust; "
            "re-download the model if this file should be a LegSegNet checkpoint."
        ) from error
    except (RuntimeError, EOFError, OSError, KeyError, IndexError, ValueError, TypeError, AttributeError,
            zipfile.BadZipFile) as error:  # what damaged bytes make the unpickler raise
        raise CheckpointReadError(f"{damaged} ({type(error).__name__}: {str(error)[:200]})") from error
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise CheckpointReadError(f"{path} is not an nnU-Net checkpoint (no 'network_weights')")
    return checkpoint


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (or, before torch 1.6, a pickle, which starts with the PROTO opcode):
    anything else is refused before the unpickler sees it."""
    with open(path, "rb") as stream:
        start = stream.read(4)
    return start.startswith(b"PK\x03\x04") or start[:1] == b"\x80"


def _offending_global(error: Exception):
    """The line of torch's message naming what the file wanted to import (None when it names none)."""
    for line in str(error).splitlines():
        if "unsupported global" in line.lower() or "unsupported operand" in line.lower():
            return line.strip(" .")
    return None
