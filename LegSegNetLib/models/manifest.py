"""The manifest that marks a model folder as completely installed, and file hashing.

The manifest is written last, after every file is in place and the folder validated, so a folder
without one (an interrupted install) is never taken for a model.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

MANIFEST_NAME = "legsegnet-model.json"
_FORMAT = 1
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: str


@dataclass
class Manifest:
    name: str
    version: Optional[str]
    source: str
    folds: list
    files: dict  # relative POSIX path -> FileRecord
    installed_at: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))

    def to_json(self) -> dict:
        data = asdict(self)
        data["format"] = _FORMAT
        return data


class ManifestError(ValueError):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_files(folder: Path, relative_paths) -> dict:
    """FileRecord of each file, hashed from disk."""
    return {path: FileRecord((folder / path).stat().st_size, sha256_of(folder / path)) for path in relative_paths}


def write_json_atomically(path: Path, data) -> None:
    """Write to a temporary name beside the target, flush to disk, then rename over it."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=2, sort_keys=True)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def damaged_files(folder: Path, manifest: Manifest) -> list:
    """Recorded files that are missing or whose size changed: a quick check, without hashing."""
    damaged = []
    for relative_path, record in manifest.files.items():
        path = Path(folder) / relative_path
        if not path.is_file() or path.stat().st_size != record.size:
            damaged.append(relative_path)
    return damaged


def write_manifest(folder: Path, manifest: Manifest) -> None:
    write_json_atomically(folder / MANIFEST_NAME, manifest.to_json())


def read_manifest(folder: Path) -> Optional[Manifest]:
    """The folder's manifest, None when it has none (not an installed model); ManifestError when unreadable."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = {name: FileRecord(int(entry["size"]), str(entry["sha256"])) for name, entry in data["files"].items()}
        return Manifest(name=data["name"], version=data.get("version"), source=data.get("source", ""),
                        folds=[int(fold) for fold in data["folds"]], files=files, installed_at=data.get("installed_at", ""))
    except (ValueError, KeyError, TypeError) as error:
        raise ManifestError(f"the install record {path} is damaged ({error})") from error
