"""Writing output files safely: never over a user's file unless asked, never a partial file that looks complete.

Each output is written to a hidden temporary file in the destination folder and moved into place in one
step once complete, so a crash, a cancel or a full disk leaves either the old state or the whole new file.
A run writing into an output folder holds a lock file there, so that two runs never write the same files at
once, and removes the temporary files a killed run left behind.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

COMPOUND_EXTENSIONS = (".seg.nrrd", ".nii.gz")
LOCK_FILE = ".legsegnet.lock"
_PARTIAL_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.partial[.a-z]*$")  # atomic_output's temporary files


class OutputExistsError(FileExistsError):
    def __init__(self, path: Path):
        super().__init__(f"{path} already exists; choose another name or allow overwriting (--overwrite)")
        self.path = path

    def __reduce__(self):  # rebuilt from its path, not its message (errors travel back from Dask workers)
        return type(self), (self.path,)


class OutputWriteError(OSError):
    """Writing failed (disk full, no permission, ...); nothing was left at the destination."""


class OutputFolderBusyError(OSError):
    """Another run holds the output folder's lock."""


def extension_of(path) -> str:
    """The file-type extension, compound ones (.seg.nrrd, .nii.gz) included, lower case."""
    name = Path(path).name.lower()
    for extension in COMPOUND_EXTENSIONS:
        if name.endswith(extension):
            return extension
    return Path(name).suffix


def refuse_existing(path, overwrite: bool) -> None:
    """Raise OutputExistsError early, before any work, when `path` exists and overwriting was not allowed."""
    path = Path(path)
    if path.is_dir():
        raise OutputWriteError(f"{path} is a folder, not a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(path)


def check_writable_folder(folder) -> None:
    """Raise OutputWriteError now, before any work, when no file can be created in `folder` (made if missing)."""
    folder = Path(folder)
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        raise OutputWriteError(f"cannot write in {folder}: {existing} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise OutputWriteError(f"cannot write in {folder}: {error.strerror or error}") from error


@contextmanager
def atomic_output(path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; when the block ends without error it becomes `path`."""
    path = Path(path)
    refuse_existing(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputWriteError(f"cannot create the folder for {path}: {error.strerror or error}") from error
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial{extension_of(path)}")
    try:
        yield temporary
        _flush_to_disk(temporary)
        _move_into_place(temporary, path, overwrite)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path, text: str, overwrite: bool = False) -> None:
    with atomic_output(path, overwrite) as temporary:
        try:
            Path(temporary).write_text(text, encoding="utf-8", newline="")
        except OSError as error:
            raise OutputWriteError(f"cannot write {path}: {error.strerror or error}") from error


@contextmanager
def output_folder_lock(folder) -> Iterator[None]:
    """Hold `folder`'s lock file while the block runs (OutputFolderBusyError when another run holds it), and first
    remove the temporary files of runs that were killed. The operating system releases the lock of a process that
    dies, so a lock file left behind never blocks the next run."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    with open(lock, "a+") as stream:
        if not _try_lock(stream) or not _is_current_file(stream, lock):
            stream.seek(0)
            owner = stream.read().strip() or "unknown"
            raise OutputFolderBusyError(f"another legsegnet run (process {owner}) is writing to {folder}; wait for it "
                                        "to finish, or write to another --output-dir")
        stream.seek(0)
        stream.truncate()
        stream.write(str(os.getpid()))
        stream.flush()
        try:
            remove_stale_partials(folder)
            yield
        finally:
            try:
                lock.unlink(missing_ok=True)  # before the lock is released, so no other run sees a lock it can take
            except OSError:  # Windows cannot delete an open file: the next run takes the released lock over
                pass


def remove_stale_partials(folder) -> list:
    """Delete the hidden temporary files that atomic_output leaves when its process is killed; returns them."""
    stale = [path for path in Path(folder).iterdir() if _PARTIAL_NAME.match(path.name) and path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _try_lock(stream) -> bool:
    try:
        if os.name == "nt":
            import msvcrt

            stream.seek(1 << 20)  # a byte past the process id, which stays readable for the message
            msvcrt.locking(stream.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _is_current_file(stream, path: Path) -> bool:
    """Whether the locked file is still the one at `path` (its holder may have removed it just before)."""
    try:
        return os.path.samestat(os.fstat(stream.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _flush_to_disk(path: Path) -> None:
    """Make the bytes durable before the rename makes the file visible."""
    with open(path, "rb") as stream:
        os.fsync(stream.fileno())


def _move_into_place(temporary: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)  # fails if `path` appeared meanwhile: never clobbers
    except FileExistsError:
        raise OutputExistsError(path) from None
    except OSError:  # file systems without hard links
        if path.exists():
            raise OutputExistsError(path) from None
        os.replace(temporary, path)
