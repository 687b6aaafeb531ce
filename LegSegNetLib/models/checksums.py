"""Sizes and SHA-256 recorded the first time a model's files are downloaded, for files the registry has no
checksum for: later downloads and `verify` are checked against this record (trust on first use)."""

from __future__ import annotations

import json
from typing import Optional

from LegSegNetLib.models import paths
from LegSegNetLib.models.manifest import FileRecord, write_json_atomically
from LegSegNetLib.models.registry import FileSpec


def _load() -> dict:
    path = paths.checksum_record_path()
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def expected_record(name: str, version: str, spec: FileSpec) -> Optional[FileRecord]:
    """What a downloaded file must match: the registry's size and SHA-256, else the first download's record."""
    if spec.sha256 and spec.size is not None:
        return FileRecord(spec.size, spec.sha256.lower())
    entry = _load().get(name, {}).get(version, {}).get(spec.path)
    return FileRecord(entry["size"], entry["sha256"]) if entry else None


def remember(name: str, version: str, records: dict) -> None:
    """Record files seen for the first time; entries already recorded are kept, never overwritten."""
    data = _load()
    known = data.setdefault(name, {}).setdefault(version, {})
    for relative_path, record in records.items():
        known.setdefault(relative_path, {"size": record.size, "sha256": record.sha256})
    paths.legsegnet_home().mkdir(parents=True, exist_ok=True)
    write_json_atomically(paths.checksum_record_path(), data)


def forget_recorded_checksums(name: str) -> None:
    """Drop the recorded checksums of a model, so the next download records the publisher's current files."""
    data = _load()
    if data.pop(name, None) is not None:
        write_json_atomically(paths.checksum_record_path(), data)
