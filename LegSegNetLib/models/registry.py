"""The registry of known models (Resources/models.json) and resolving a model name or folder to a folder."""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from LegSegNetLib.resources import resources_dir
from LegSegNetLib.models import paths
from LegSegNetLib.models.folds import available_folds, folds_of_paths, fold_of_path
from LegSegNetLib.models.manifest import ManifestError, damaged_files, read_manifest

REGISTRY_FILE = "models.json"
MIRROR_VARIABLE = "LEGSEGNET_WEIGHTS_URL"
EXTRA_REGISTRY_VARIABLE = "LEGSEGNET_REGISTRY"  # a JSON file in the same format: adds or overrides models
REGISTRY_SCHEMES = ("https",)
MIRROR_SCHEMES = ("https", "http")  # plain http only for a mirror someone chose on purpose (a local server)


class UnknownModelError(ValueError):
    pass


class ModelNotInstalledError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class FileSpec:
    path: str  # relative POSIX path inside the model folder
    size: Optional[int]
    sha256: Optional[str]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    version: str
    homepage: str
    url_pattern: str
    files: tuple
    in_plane_orientation: str
    licence: dict
    citation: dict

    @property
    def folds(self) -> tuple:
        return folds_of_paths(spec.path for spec in self.files)

    def files_for_folds(self, folds=None) -> tuple:
        """The shared files plus the checkpoints of the chosen folds (all when None)."""
        chosen = self.folds if folds is None else tuple(folds)
        missing = sorted(set(chosen) - set(self.folds))
        if missing:
            raise ValueError(f"model {self.name!r} has no fold {missing} (it has folds {list(self.folds)})")
        return tuple(spec for spec in self.files if fold_of_path(spec.path) in (None, *chosen))

    def url_for(self, relative_path: str) -> str:
        """Where a file is downloaded from; LEGSEGNET_WEIGHTS_URL replaces the base (a mirror holding the same files)."""
        mirror = os.environ.get(MIRROR_VARIABLE, "").strip()
        quoted = urllib.parse.quote(relative_path)
        if mirror:
            _check_scheme(mirror, MIRROR_SCHEMES, MIRROR_VARIABLE)
            return f"{mirror.replace('{model}', self.name).rstrip('/')}/{quoted}"
        return self.url_pattern.format(path=quoted)


def load_registry() -> dict:
    """Model name -> ModelSpec, from Resources/models.json plus the file LEGSEGNET_REGISTRY names (a site's own models)."""
    registry = _read_registry_file(resources_dir() / REGISTRY_FILE)
    extra = os.environ.get(EXTRA_REGISTRY_VARIABLE)
    if extra:
        registry.update(_read_registry_file(Path(extra).expanduser()))
    return registry


def _read_registry_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {entry["name"]: _spec_from_json(entry) for entry in data["models"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"cannot read the model registry {path} ({type(error).__name__}: {error}); "
                         "fix the file or unset " + EXTRA_REGISTRY_VARIABLE) from error


def _spec_from_json(entry: dict) -> ModelSpec:
    files = tuple(FileSpec(item["path"], item.get("size"), item.get("sha256")) for item in entry["files"])
    for file in files:  # a download writes, and deletes when corrupt, exactly these paths
        if not paths.is_inside_relative_path(file.path):
            raise ValueError(f"model {entry['name']!r} lists the file {file.path!r}, which is not a relative path "
                             "inside the model folder")
    _check_scheme(entry["url_pattern"], REGISTRY_SCHEMES, f"model {entry['name']!r}'s url_pattern")
    return ModelSpec(name=entry["name"], title=entry.get("title", entry["name"]), version=entry["version"],
                     homepage=entry.get("homepage", ""), url_pattern=entry["url_pattern"], files=files,
                     in_plane_orientation=entry.get("in_plane_orientation", "PL"),
                     licence=entry.get("licence", {}), citation=entry.get("citation", {}))


def _check_scheme(url: str, schemes: tuple, what: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in schemes:
        raise ValueError(f"{what} is {url!r}: only {' or '.join(schemes)} addresses are allowed")


def get_model_spec(name: str) -> ModelSpec:
    registry = load_registry()
    if name not in registry:
        raise UnknownModelError(f"no model named {name!r} in the registry (known: {', '.join(sorted(registry))})")
    return registry[name]


def install_instructions(name: str) -> str:
    return (f"install it with `legsegnet models download {name}` (needs internet access to the weights server, "
            f"or set {MIRROR_VARIABLE} to a mirror), or offline with `legsegnet models install ZIP_OR_FOLDER"
            f"{'' if name == 'legsegnet' else ' --name ' + name}` (a .zip or folder holding plans.json, dataset.json "
            "and fold_N/checkpoint_*.pth); in Slicer use the LegSegNet module's model section")


def resolve_model(name_or_path) -> Path:
    """A local model folder (returned as given once it looks like a model) or the installed folder of a model name."""
    candidate = Path(os.fspath(name_or_path)).expanduser()
    if candidate.is_dir():
        return _checked_local_folder(candidate)
    name = os.fspath(name_or_path)
    if os.sep in name or "/" in name or not paths.is_valid_model_name(name):
        raise FileNotFoundError(f"model folder not found: {candidate}")
    folder = paths.installed_model_dir(name)
    reinstall = f"remove it with `legsegnet models remove {name}` and " + install_instructions(name)
    try:
        manifest = read_manifest(folder)
    except ManifestError as error:
        raise ModelNotInstalledError(f"{error}; {reinstall}") from error
    if manifest is None and name not in load_registry():  # nothing to download: a mistyped folder or name
        raise ModelNotInstalledError(
            f"model {name!r} is not installed in {paths.models_dir()}, not in the registry either, and there is no "
            f"folder {name!r} here; give the path of an nnU-Net v2 model folder, or install one under that name "
            f"offline with `legsegnet models install ZIP_OR_FOLDER --name {name}`")
    if manifest is None:
        raise ModelNotInstalledError(f"model {name!r} is not installed in {paths.models_dir()}; "
                                     + install_instructions(name))
    damaged = damaged_files(folder, manifest)
    if damaged:
        raise ModelNotInstalledError(f"the installed model {name!r} in {folder} is damaged "
                                     f"({', '.join(damaged)} missing or changed); {reinstall}")
    return folder


def _checked_local_folder(folder: Path) -> Path:
    missing = [name for name in ("plans.json", "dataset.json") if not (folder / name).is_file()]
    if missing or not available_folds(folder):
        raise FileNotFoundError(
            f"{folder} is not an nnU-Net v2 model folder: it needs plans.json, dataset.json and "
            f"fold_N/checkpoint_final.pth or checkpoint_best.pth (missing: {', '.join(missing) or 'fold checkpoints'})")
    return folder
