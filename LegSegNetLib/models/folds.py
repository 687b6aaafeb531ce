"""Folds of a model: which a folder or registry entry has, and which the user chose (`--folds 0,1,2`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def fold_of_path(relative_path: str) -> Optional[int]:
    """The fold a file belongs to (fold_3/checkpoint_best.pth -> 3), None for shared files."""
    head = relative_path.split("/", 1)[0]
    if head.startswith("fold_") and head[5:].isdigit() and "/" in relative_path:
        return int(head[5:])
    return None


def folds_of_paths(relative_paths) -> tuple:
    return tuple(sorted({fold for fold in map(fold_of_path, relative_paths) if fold is not None}))


def available_folds(model_folder) -> tuple:
    """Folds with a checkpoint in a model folder."""
    folder = Path(model_folder)
    return folds_of_paths(path.relative_to(folder).as_posix() for path in folder.glob("fold_*/checkpoint_*.pth"))


def parse_folds(text: Optional[str]) -> Optional[tuple]:
    """'0,2' -> (0, 2); 'all' or nothing -> None (every available fold)."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    try:
        folds = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise ValueError(f"--folds takes fold numbers separated by commas (e.g. 0,1,2) or 'all', not {text!r}") from None
    if not folds or min(folds) < 0:
        raise ValueError(f"--folds takes non-negative fold numbers, not {text!r}")
    return folds


def choose_folds(model_folder, requested=None) -> tuple:
    """The folds to use: all available when requested is None, else the requested ones, which must exist."""
    available = available_folds(model_folder)
    if not available:
        raise FileNotFoundError(f"{model_folder} has no fold_N/checkpoint_*.pth")
    if requested is None:
        return available
    missing = sorted(set(requested) - set(available))
    if missing:
        raise ValueError(f"fold {', '.join(map(str, missing))} is not in {model_folder} (it has folds "
                         f"{', '.join(map(str, available))}); choose among those or install the missing folds")
    return tuple(sorted(set(requested)))
