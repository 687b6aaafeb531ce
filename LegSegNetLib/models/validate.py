"""Checking that a folder really is a usable nnU-Net v2 model before it is installed.

Accepted layouts (the model root is the folder holding plans.json):
  Hugging Face:    plans.json, dataset.json, fold_0/checkpoint_best.pth
  nnU-Net results: DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__2d/{plans.json, dataset.json, fold_N/checkpoint_final.pth}
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from LegSegNetLib.segmenting.engines.nnunet.model import CHECKPOINT_NAMES, ModelFolderError, load_model_folder
from LegSegNetLib.models.folds import fold_of_path, folds_of_paths
from LegSegNetLib.segmenting.engines.nnunet.profiles import MODEL_PROPERTIES_FILE  # optional (orientation, profile)

SHARED_FILES = ("plans.json", "dataset.json", MODEL_PROPERTIES_FILE)
_SEARCH_DEPTH = 4  # model roots deeper than this in an archive or folder are not looked for


class ModelValidationError(ModelFolderError):
    """The folder or archive is not a usable model; the message says what is wrong."""


def model_files(relative_paths) -> list:
    """The files a model needs, among paths relative to its root: plans, dataset and the folds' checkpoints."""
    wanted = []
    for path in relative_paths:
        if path in SHARED_FILES:
            wanted.append(path)
        elif fold_of_path(path) is not None and path.count("/") == 1 and posixpath.basename(path) in CHECKPOINT_NAMES:
            wanted.append(path)
    return sorted(wanted)


def find_model_root(relative_paths, source: str) -> str:
    """The one folder (POSIX, '' for the top) holding plans.json, dataset.json and fold checkpoints."""
    paths = set(relative_paths)
    roots = []
    for path in paths:
        root = posixpath.dirname(path)
        if posixpath.basename(path) == "plans.json" and path.count("/") < _SEARCH_DEPTH:
            prefix = f"{root}/" if root else ""
            inside = [candidate[len(prefix):] for candidate in paths if candidate.startswith(prefix)]
            if "dataset.json" in inside and folds_of_paths(model_files(inside)):
                roots.append(root)
    if not roots:
        raise ModelValidationError(
            f"{source} holds no nnU-Net v2 model: expected plans.json, dataset.json and fold_N/checkpoint_best.pth "
            "(or checkpoint_final.pth) in one folder, as on Hugging Face or in an nnU-Net results folder "
            "DatasetXXX/nnUNetTrainer__nnUNetPlans__2d/")
    if len(roots) > 1:
        raise ModelValidationError(f"{source} holds several models ({', '.join(sorted(r or '.' for r in roots))}); "
                                   "install the folder of the one you want")
    return roots[0]


def validate_model_folder(folder: Path) -> tuple:
    """Load every checkpoint into the network its plans describe (weights_only, strict); returns the folds.

    Raises ModelValidationError saying what is wrong: missing or unparsable files, a checkpoint that needs
    code to load, weights that do not fit the network, a configuration this library cannot run."""
    folder = Path(folder)
    present = model_files(path.relative_to(folder).as_posix() for path in folder.glob("**/*") if path.is_file())
    for checkpoint in CHECKPOINT_NAMES:
        for fold in folds_of_paths(path for path in present if posixpath.basename(path) == checkpoint):
            try:  # one fold at a time: memory stays at one checkpoint and network whatever the ensemble size
                load_model_folder(folder, folds=(fold,), checkpoint=checkpoint)
            except ModelFolderError as error:
                raise ModelValidationError(f"not a usable model: {error}") from error
    folds = folds_of_paths(present)
    if not folds:
        raise ModelValidationError(f"{folder} has no fold_N/checkpoint_best.pth or checkpoint_final.pth")
    return folds
