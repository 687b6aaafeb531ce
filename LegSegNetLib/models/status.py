"""What is installed, in what state, and full integrity checks: what `legsegnet models list|verify` and the
Slicer module show."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from LegSegNetLib.models import checksums, paths
from LegSegNetLib.models.paths import DOWNLOAD_STATE_FILE
from LegSegNetLib.models.manifest import ManifestError, damaged_files, read_manifest, sha256_of
from LegSegNetLib.models.folds import available_folds
from LegSegNetLib.models.registry import ModelSpec, load_registry
from LegSegNetLib.segmenting.engines.nnunet.profiles import MODEL_PROPERTIES_FILE, choose_preprocessing

INSTALLED = "installed"
NOT_INSTALLED = "not installed"
CORRUPT = "corrupt"
BUNDLED = "bundled"  # shipped with LegSegNet in Resources/Models: usable by name, read-only


@dataclass(frozen=True)
class ModelStatus:
    name: str
    state: str  # INSTALLED, NOT_INSTALLED or CORRUPT
    path: Path  # where the model is (or would be) installed
    folds: tuple  # installed folds
    version: Optional[str]  # installed version; None when unknown (an offline install of other files)
    spec: Optional[ModelSpec]  # the registry entry, None for a model installed under a name of its own
    detail: str  # one sentence for the user
    partial_bytes: int = 0  # bytes of an interrupted download kept for resuming
    preprocessing: str = ""  # legsegnet or native, for a usable model ('' when not known)
    labels: tuple = ()  # label names from its dataset.json, background left out

    @property
    def update_available(self) -> bool:
        return self.state == INSTALLED and self.spec is not None and self.version not in (None, self.spec.version)


def model_status(name: str) -> ModelStatus:
    """Quick status (no hashing): installed, not installed or corrupt (files missing or resized, record damaged)."""
    spec = load_registry().get(name)
    folder = paths.installed_model_dir(name)
    partial = _partial_bytes(name)
    resume_note = f"; {partial / 1e6:.1f} MB of an interrupted download are kept and will be resumed" if partial else ""
    try:
        manifest = read_manifest(folder)
    except ManifestError as error:
        return ModelStatus(name, CORRUPT, folder, (), None, spec, f"{error}; remove and install it again", partial)
    bundled = paths.bundled_model_dir(name)
    if manifest is None and bundled is not None and not folder.exists():
        return _described(ModelStatus(name, BUNDLED, bundled, available_folds(bundled), None, spec,
                                      "bundled with LegSegNet (read-only)"))
    if manifest is None:
        detail = ("a folder is there but its install never completed" if folder.exists() else "not installed")
        return ModelStatus(name, NOT_INSTALLED, folder, (), None, spec, detail + resume_note, partial)
    damaged = damaged_files(folder, manifest)
    if damaged:
        return ModelStatus(name, CORRUPT, folder, tuple(manifest.folds), manifest.version, spec,
                           f"files missing or changed: {', '.join(damaged)}; remove and install it again", partial)
    return _described(ModelStatus(name, INSTALLED, folder, tuple(manifest.folds), manifest.version, spec,
                                  f"installed from {manifest.source} on {manifest.installed_at}", partial))


def _described(status: ModelStatus) -> ModelStatus:
    """The status with the model's preprocessing profile and label names, read from its folder's JSON files."""
    try:
        dataset = json.loads((status.path / "dataset.json").read_text(encoding="utf-8"))
        properties_file = status.path / MODEL_PROPERTIES_FILE
        properties = json.loads(properties_file.read_text(encoding="utf-8")) if properties_file.is_file() else {}
        profile = choose_preprocessing(dataset, properties, status.path,
                                       registry_profile=status.spec.preprocessing if status.spec else None)
        labels = tuple(name for name, value in sorted(dataset["labels"].items(), key=lambda item: str(item[1]).zfill(4))
                       if value != 0)
    except (OSError, ValueError, KeyError, AttributeError) as error:
        return dataclasses.replace(status, detail=f"{status.detail}; its dataset.json is unreadable ({error})")
    return dataclasses.replace(status, preprocessing=profile, labels=labels)


def list_models() -> list:
    """Status of every registry model and of every model installed under another name."""
    names = set(load_registry()) | set(paths.bundled_model_names())
    if paths.models_dir().is_dir():
        names |= {folder.name for folder in paths.models_dir().iterdir()
                  if folder.is_dir() and paths.is_valid_model_name(folder.name)}
    return [model_status(name) for name in sorted(names)]


def verify_model(name: str) -> list:
    """Hash every installed file and compare with the install record, the registry and the first-download record.

    Returns the problems found (an empty list means the model is intact)."""
    status = model_status(name)
    if status.state != INSTALLED:
        return [f"model {name!r} is {status.state}: {status.detail}"]
    manifest = read_manifest(status.path)
    problems = []
    for relative_path, record in manifest.files.items():
        actual = sha256_of(status.path / relative_path)
        if actual != record.sha256:
            problems.append(f"{relative_path}: SHA-256 {actual} differs from the one recorded at install ({record.sha256})")
        problems += _reference_mismatch(status, relative_path, actual)
    return problems


def _reference_mismatch(status: ModelStatus, relative_path: str, actual: str) -> list:
    """Compare with the registry (or the first-download record) when the install is that registry version."""
    if status.spec is None or status.version != status.spec.version:
        return []
    file = next((file for file in status.spec.files if file.path == relative_path), None)
    expected = checksums.expected_record(status.name, status.version, file) if file else None
    if expected and expected.sha256 != actual:
        return [f"{relative_path}: SHA-256 {actual} is not the published file's ({expected.sha256})"]
    return []


def _partial_bytes(name: str) -> int:
    folder = paths.partial_download_dir(name)
    if not folder.is_dir():
        return 0
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and path.name != DOWNLOAD_STATE_FILE)
