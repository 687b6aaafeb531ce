"""Installing a model folder into the cache atomically, offline installs from a folder or .zip, removal.

An install is assembled in a hidden folder, validated, given its manifest last, and only then renamed
to its final name, so an interrupted install never looks installed.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import Optional

from LegSegNetLib.models import paths
from LegSegNetLib.models.manifest import Manifest, record_files, write_manifest
from LegSegNetLib.models.registry import load_registry
from LegSegNetLib.models.validate import ModelValidationError, find_model_root, model_files, validate_model_folder

_DISK_MARGIN_BYTES = 64 << 20


class ModelExistsError(FileExistsError):
    """A model of that name is installed; replacing it needs the user's consent (replace=True, --yes)."""


class UnsafeArchiveError(ModelValidationError):
    pass


def ensure_replaceable(name: str, replace: bool) -> None:
    folder = paths.installed_model_dir(name)
    if folder.exists() and not replace:
        raise ModelExistsError(f"model {name!r} is already installed in {folder}; confirm replacing it "
                               "(--yes on the command line) or remove it first with "
                               f"`legsegnet models remove {name}`")


def commit_install(staging: Path, name: str, version: Optional[str], source: str, known_records=None) -> Path:
    """Validate the assembled folder, write its manifest last, then move it into place (replacing any old one)."""
    folds = validate_model_folder(staging)
    wanted = model_files(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    known = known_records or {}
    records = {**record_files(staging, [path for path in wanted if path not in known]),
               **{path: known[path] for path in wanted if path in known}}
    write_manifest(staging, Manifest(name=name, version=version, source=source, folds=list(folds), files=records))
    target = paths.installed_model_dir(name)
    retired = target.with_name(f".old-{name}-{uuid.uuid4().hex[:8]}")
    if target.exists():
        os.replace(target, retired)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)
    return target


def install_model_from(source, name: str = "legsegnet", replace: bool = False) -> Path:
    """Install a model from a folder or a .zip (Hugging Face or nnU-Net results layout); returns the installed folder."""
    source = Path(source).expanduser()
    paths.check_model_name(name)
    ensure_replaceable(name, replace)
    paths.models_dir().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=paths.models_dir()))
    check_install_source(source)
    try:
        if source.is_dir():
            _copy_model_from_folder(source, staging)
        else:
            _extract_model_from_zip(source, staging)
        return commit_install(staging, name, _registry_version_if_identical(name, staging), source=str(source.resolve()))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_install_source(source) -> None:
    """Raise, before anything is asked or copied, when `source` is neither a folder nor a .zip archive."""
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"nothing to install: {source} does not exist")
    if not (source.is_dir() or zipfile.is_zipfile(source)):
        raise ModelValidationError(f"{source} is neither a folder nor a .zip archive")


def _registry_version_if_identical(name: str, folder: Path) -> Optional[str]:
    """The registry's version when every file matches the registry's checksums; None (unknown) otherwise."""
    spec = load_registry().get(name)
    if spec is None or not all(file.sha256 for file in spec.files):
        return None
    present = model_files(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    records = record_files(folder, present)
    matches = all(records.get(file.path) and records[file.path].sha256 == file.sha256.lower() for file in spec.files)
    return spec.version if matches and len(records) == len(spec.files) else None


def _copy_model_from_folder(source: Path, staging: Path) -> None:
    relative = _relative_files(source)
    root = find_model_root(relative, str(source))
    for path in model_files(_strip_root(relative, root)):
        destination = staging / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / root / path, destination)


def _relative_files(folder: Path, max_depth: int = 6) -> list:
    """POSIX paths of the files under folder, not descending deeper than max_depth (a model sits near the top)."""
    found = []
    for directory, subdirectories, files in os.walk(folder):
        depth = len(Path(directory).relative_to(folder).parts)
        if depth >= max_depth:
            subdirectories.clear()
        found.extend(Path(directory, file).relative_to(folder).as_posix() for file in files)
    return found


def _strip_root(relative_paths, root: str) -> list:
    prefix = f"{root}/" if root else ""
    return [path[len(prefix):] for path in relative_paths if path.startswith(prefix)]


def _extract_model_from_zip(archive: Path, staging: Path) -> None:
    try:
        _extract_checked_members(archive, staging)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as error:  # bad CRC, cut short, odd method
        raise ModelValidationError(f"cannot unpack {archive}: it is damaged ({error}); copy or download it again") \
            from error


def _extract_checked_members(archive: Path, staging: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        members = {info.filename: info for info in bundle.infolist() if not info.is_dir()}
        for info in members.values():
            _refuse_unsafe_member(info, archive)
        root = find_model_root(members, str(archive))
        prefix = f"{root}/" if root else ""
        wanted = model_files(_strip_root(members, root))
        _require_disk_space(sum(members[prefix + path].file_size for path in wanted), staging)
        for path in wanted:
            destination = staging / path  # built from a validated model file name, never from the raw member name
            destination.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(members[prefix + path]) as packed, open(destination, "wb") as unpacked:
                shutil.copyfileobj(packed, unpacked, 1 << 20)


def _refuse_unsafe_member(info: zipfile.ZipInfo, archive: Path) -> None:
    name = info.filename.replace("\\", "/")
    is_link = stat.S_ISLNK(info.external_attr >> 16)
    if not paths.is_inside_relative_path(name) or is_link:
        raise UnsafeArchiveError(f"refusing {archive}: its entry {info.filename!r} would be written outside the "
                                 "model folder (absolute path, '..' or a link); the archive is damaged or malicious")
    if info.flag_bits & 0x1:
        raise UnsafeArchiveError(f"refusing {archive}: its entry {info.filename!r} is encrypted; give an archive "
                                 "without a password")


def _require_disk_space(needed: int, folder: Path) -> None:
    free = shutil.disk_usage(folder).free
    if needed + _DISK_MARGIN_BYTES > free:
        raise OSError(f"not enough disk space in {folder}: the model needs {needed / 1e6:.0f} MB, "
                      f"{free / 1e6:.0f} MB are free; free some space or set {paths.HOME_VARIABLE} to another disk")


def remove_model(name: str) -> Path:
    """Delete an installed model and any interrupted download or install of it; returns the removed folder."""
    target = paths.installed_model_dir(name)
    leftover = re.compile(rf"^\.(partial-{re.escape(name)}|(staging|old)-{re.escape(name)}-[a-z0-9_]{{8}})$")
    folders = [path for path in paths.models_dir().glob(".*") if leftover.match(path.name)]
    if target.exists():
        folders.append(target)
    if not folders:
        raise FileNotFoundError(f"model {name!r} is not installed in {paths.models_dir()}; nothing to remove")
    for folder in folders:
        shutil.rmtree(folder)
    return target
