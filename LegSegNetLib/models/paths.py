"""Where downloaded and installed models live.

Layout under the LegSegNet home folder (``LEGSEGNET_HOME``, else a per-user cache folder):

    models/<name>/                 an installed model: an nnU-Net v2 model folder plus legsegnet-model.json
    models/.partial-<name>/        a download in progress (files end in .part until complete and verified)
    models/.staging-<name>-<id>/   an install being assembled and validated
    checksums.json                 sizes and SHA-256 recorded on first download, when the registry has none

Only folders whose name starts with a letter or digit are models; the dotted ones are never used for inference.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

HOME_VARIABLE = "LEGSEGNET_HOME"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def legsegnet_home() -> Path:
    """The per-user LegSegNet folder: LEGSEGNET_HOME if set, else the platform's per-user cache location."""
    override = os.environ.get(HOME_VARIABLE)
    if override:
        return Path(override).expanduser()
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "LegSegNet"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "LegSegNet"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "legsegnet"


def models_dir() -> Path:
    return legsegnet_home() / "models"


def is_valid_model_name(name: str) -> bool:
    """Model names become folder names: letters, digits, '_', '.', '-', starting with a letter or digit."""
    return bool(_MODEL_NAME.match(name or ""))


def check_model_name(name: str) -> str:
    if not is_valid_model_name(name):
        raise ValueError(
            f"{name!r} is not a valid model name: use letters, digits, '_', '.' or '-' (at most 64), "
            "starting with a letter or digit"
        )
    return name


def is_inside_relative_path(path: str) -> bool:
    """Whether a relative path taken from a registry or an archive stays inside the folder it is joined to:
    no absolute path, drive letter, '..' part or backslash trickery (the same rule for zip entries and downloads)."""
    if not isinstance(path, str) or not path:
        return False
    parts = path.replace("\\", "/").split("/")
    return not (path.startswith(("/", "\\")) or ".." in parts or ":" in parts[0] or "\0" in path)


def installed_model_dir(name: str) -> Path:
    return models_dir() / check_model_name(name)


def partial_download_dir(name: str) -> Path:
    return models_dir() / f".partial-{check_model_name(name)}"


DOWNLOAD_STATE_FILE = "download.json"  # in a partial download folder: which version and source it holds


def checksum_record_path() -> Path:
    return legsegnet_home() / "checksums.json"
