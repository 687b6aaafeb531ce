"""Downloading a registry model: progress, resume after interruption, verification, atomic install.

Files are fetched into models/.partial-<name>/ as <file>.part, resumed with an HTTP Range request when
a transfer breaks off, checked against the expected size and SHA-256, renamed without .part, and the
whole folder is installed (validated, manifest written last, renamed into place) only when every file
is complete. urllib's default opener honours HTTP_PROXY, HTTPS_PROXY and NO_PROXY.
"""

from __future__ import annotations

import errno
import http.client
import json
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from LegSegNetLib.progress import Cancelled
from LegSegNetLib.models import checksums, paths
from LegSegNetLib.models.install import commit_install, ensure_replaceable
from LegSegNetLib.models.manifest import FileRecord, sha256_of
from LegSegNetLib.models.validate import MODEL_PROPERTIES_FILE, ModelValidationError
from LegSegNetLib.models.registry import MIRROR_VARIABLE, ModelSpec, get_model_spec, install_instructions

DEFAULT_TIMEOUT_S = 60.0  # idle: seconds without any data
# Overall deadline per file (retries included), so that a server trickling a byte now and then cannot hold a
# download forever: a base plus the time the file takes at a very slow 10 kB/s (an hour when its size is unknown).
DEADLINE_BASE_S = 300.0
DEADLINE_SLOWEST_BYTES_PER_S = 10_000
DEADLINE_UNKNOWN_SIZE_S = 3600.0
_CHUNK = 256 * 1024
_PROGRESS_INTERVAL_S = 0.2
_SPEED_WINDOW_S = 0.5  # speed is measured over the last half second or so


class DownloadError(OSError):
    """The download failed; the message says why and what to do (partial files are kept for resuming)."""


class DownloadTimeoutError(DownloadError):
    pass


class ChecksumMismatchError(DownloadError):
    pass


class DownloadDeadlineError(DownloadTimeoutError):
    """The file did not arrive within its overall deadline; its partial file is deleted."""


class OversizedDownloadError(DownloadError):
    """The server sent more bytes than the file has; its partial file is deleted."""


class DiskFullError(DownloadError):
    """The disk filled up while writing; its partial file is deleted."""


class DownloadCancelled(Cancelled):
    pass


class _RangeNotSatisfiable(Exception):
    pass


class _Interrupted(Exception):
    """The connection broke off midway; the transfer can resume where it stopped."""


@dataclass(frozen=True)
class DownloadProgress:
    file: str  # the file being transferred, relative to the model folder
    file_index: int  # 1-based
    file_count: int
    file_done: int  # bytes of this file on disk
    file_total: Optional[int]
    done: int  # bytes of all files on disk
    total: Optional[int]  # None until every file's size is known
    bytes_per_second: float


ProgressCallback = Callable[[DownloadProgress], None]


def download_model(name: str = "legsegnet", folds=None, progress: Optional[ProgressCallback] = None,
                   cancel: Optional[Callable[[], bool]] = None, timeout: float = DEFAULT_TIMEOUT_S,
                   replace: bool = False, retries: int = 3, deadline: Optional[float] = None) -> Path:
    """Download a registry model (all its folds, or those given) and install it; returns the installed folder.

    cancel() returning True stops the transfer (DownloadCancelled); what was fetched is kept and the next
    call resumes. A broken connection is resumed automatically up to `retries` times. replace=True is
    needed to replace an installed model (ask the user first). `timeout`: seconds without data; `deadline`:
    seconds one file may take in all (default from its size, see DEADLINE_BASE_S).
    """
    spec = get_model_spec(name)
    ensure_replaceable(name, replace)
    files = spec.files_for_folds(folds)
    folder = _prepare_partial_folder(spec, files)
    meter = _Meter(files, folder, progress)
    opener = urllib.request.build_opener()
    records = {}
    for index, file in enumerate(files, 1):
        meter.start_file(file, index)
        expected = checksums.expected_record(name, spec.version, file)
        limits = _Limits(timeout, time.monotonic() + (deadline or _default_deadline(expected)),
                         expected.size if expected else None)
        records[file.path] = _fetch_verified(opener, spec, file.path, folder, expected, meter, cancel, limits, retries)
    _write_model_properties(folder, spec)
    (folder / paths.DOWNLOAD_STATE_FILE).unlink()
    try:
        installed = commit_install(folder, name, spec.version, source=spec.url_for(""), known_records=records)
    except ModelValidationError:
        shutil.rmtree(folder, ignore_errors=True)  # unusable files must not be reused by the next attempt
        raise
    checksums.remember(name, spec.version, records)
    return installed


def _write_model_properties(folder: Path, spec: ModelSpec) -> None:
    """legsegnet.json tells the engine what the registry knows and nnU-Net's files do not: the in-plane orientation."""
    if not any(file.path == MODEL_PROPERTIES_FILE for file in spec.files):
        (folder / MODEL_PROPERTIES_FILE).write_text(json.dumps({"in_plane_orientation": spec.in_plane_orientation}))


def _prepare_partial_folder(spec: ModelSpec, files) -> Path:
    """The folder a download is assembled in, emptied if it holds another version's or another source's files."""
    folder = paths.partial_download_dir(spec.name)
    state = {"version": spec.version, "source": spec.url_for("")}
    state_path = folder / paths.DOWNLOAD_STATE_FILE
    if folder.exists() and (not state_path.is_file() or json.loads(state_path.read_text()) != state):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps(state))
    wanted = {file.path for file in files} | {file.path + ".part" for file in files} | {paths.DOWNLOAD_STATE_FILE}
    for path in [p for p in folder.rglob("*") if p.is_file()]:
        if path.relative_to(folder).as_posix() not in wanted:
            path.unlink()  # another fold selection's files: not part of this install
    return folder


@dataclass(frozen=True)
class _Limits:
    idle_timeout: float  # seconds without data
    deadline_at: float  # time.monotonic() by which the file must have arrived
    max_size: Optional[int]  # bytes the file has, when known: more is never written


def _default_deadline(expected: Optional[FileRecord]) -> float:
    if expected is None:
        return DEADLINE_UNKNOWN_SIZE_S
    return DEADLINE_BASE_S + expected.size / DEADLINE_SLOWEST_BYTES_PER_S


def _fetch_verified(opener, spec: ModelSpec, relative_path: str, folder: Path, expected: Optional[FileRecord],
                    meter: "_Meter", cancel, limits: _Limits, retries: int) -> FileRecord:
    final = folder / relative_path
    if final.is_file():  # completed and verified by an earlier, interrupted run
        return _verified(final, expected, spec, relative_path, None)
    part = final.with_name(final.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    url = spec.url_for(relative_path)
    for attempt in range(retries + 1):
        try:
            announced = _transfer(opener, url, part, expected, meter, cancel, limits)
            break
        except _Interrupted as interruption:
            if attempt == retries:
                raise DownloadError(f"the connection to {url} kept breaking off ({interruption}); run the download "
                                    "again to resume, or " + install_instructions(spec.name)) from None
    record = _verified(part, expected, spec, relative_path, announced)
    part.replace(final)
    return record


def _verified(path: Path, expected: Optional[FileRecord], spec: ModelSpec, relative_path: str,
              announced_size: Optional[int]) -> FileRecord:
    """Size and SHA-256 of a complete file, checked against what it must be; a bad file is deleted."""
    record = FileRecord(path.stat().st_size, sha256_of(path))
    problem = None
    if expected and record.size != expected.size:
        problem = f"it has {record.size} bytes instead of {expected.size}"
    elif expected and record.sha256 != expected.sha256:
        problem = f"its SHA-256 is {record.sha256}, expected {expected.sha256}"
    elif announced_size is not None and record.size != announced_size:
        problem = f"it has {record.size} bytes but the server announced {announced_size}"
    if problem:
        path.unlink()
        raise ChecksumMismatchError(
            f"{relative_path} of model {spec.name!r} from {spec.url_for(relative_path)} is corrupt: {problem}. "
            "It was deleted; download again, and if this repeats the server or a proxy is altering the file "
            f"(if the publisher changed the weights, `legsegnet models download {spec.name} --forget-checksums` "
            "accepts the new files)")
    return record


def _transfer(opener, url: str, part: Path, expected: Optional[FileRecord], meter: "_Meter", cancel,
              limits: _Limits) -> Optional[int]:
    """Fetch url into part, resuming from what part already holds; returns the size the server announced
    (None when it announced none or nothing needed fetching)."""
    have = part.stat().st_size if part.exists() else 0
    if expected and have == expected.size:
        return None  # fetched completely before the last run stopped; verified next
    if expected and have > expected.size:
        part.unlink()
        have = 0
    timeout = limits.idle_timeout
    try:
        response = _open(opener, url, have, timeout)
    except _RangeNotSatisfiable:  # the part already holds the whole file, or the server's file shrank
        part.unlink()
        have = 0
        response = _open(opener, url, have, timeout)
    with response:
        resumed = have > 0 and response.status == 206 and _range_start(response) == have
        if response.status == 206 and not resumed:
            raise DownloadError(f"{url} answered with a part of the file that was not asked for; try again, or "
                                + _offline_hint())
        if not resumed:
            have = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        announced = have + int(length) if length is not None else None
        meter.file_restarted(have, announced or (expected.size if expected else None))
        known_sizes = [size for size in (announced, limits.max_size) if size is not None]
        max_size = min(known_sizes) if known_sizes else None
        try:
            with open(part, "ab" if resumed else "wb") as sink:
                _copy_stream(response, _LimitedSink(sink, part, have, max_size, url), url, meter, cancel, limits)
        except (DownloadDeadlineError, OversizedDownloadError, DiskFullError):
            part.unlink(missing_ok=True)  # its bytes are useless (too many) or it cannot grow (deadline, disk)
            raise
    size = part.stat().st_size
    if announced is not None and size < announced:
        raise _Interrupted(f"{size} of {announced} bytes received")
    return announced


def _open(opener, url: str, offset: int, timeout: float):
    headers = {"User-Agent": "LegSegNet-Slicer"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            raise _RangeNotSatisfiable() from None
        raise _http_error(error, url) from None
    except (TimeoutError, urllib.error.URLError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            raise _timeout_error(url, timeout) from None
        raise DownloadError(f"cannot reach {url} ({reason}). Check the network connection; behind a proxy set "
                            "HTTPS_PROXY (and HTTP_PROXY), e.g. HTTPS_PROXY=http://proxy.example:3128; "
                            f"{MIRROR_VARIABLE} points to a mirror; or {_offline_hint()}") from None
    except (ConnectionError, http.client.HTTPException) as error:
        raise _Interrupted(str(error) or type(error).__name__) from None


class _LimitedSink:
    """The .part file, which never grows past the file's known size and names itself when the disk is full."""

    def __init__(self, stream, path: Path, size: int, max_size: Optional[int], url: str):
        self.stream, self.path, self.size, self.max_size, self.url = stream, path, size, max_size, url

    def write(self, chunk: bytes) -> None:
        if self.max_size is not None and self.size + len(chunk) > self.max_size:
            raise OversizedDownloadError(
                f"{self.url} sent more than the {self.max_size} bytes the file has (the server or a proxy is "
                f"misbehaving); the partial file was deleted. Try again later, or {_offline_hint()}")
        try:
            self.stream.write(chunk)
            self.stream.flush()
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"the disk is full while writing {self.path}; the partial file was deleted. Free "
                                    f"some space there, or set {paths.HOME_VARIABLE} to a folder on another disk, "
                                    "and download again") from None
            raise
        self.size += len(chunk)


def _copy_stream(response, sink: _LimitedSink, url: str, meter: "_Meter", cancel, limits: _Limits) -> None:
    timeout = limits.idle_timeout
    while True:
        if cancel is not None and cancel():
            raise DownloadCancelled("download cancelled; what was fetched is kept and the next download resumes")
        if time.monotonic() > limits.deadline_at:
            raise DownloadDeadlineError(
                f"{url} did not arrive within its time limit (the link is very slow or the server trickles data); "
                f"the partial file was deleted. Try again later, or {_offline_hint()}")
        try:
            chunk = response.read1(_CHUNK)  # whatever has arrived: progress and cancel stay responsive on slow links
        except TimeoutError:
            raise _timeout_error(url, timeout) from None
        except (ConnectionError, http.client.HTTPException) as error:
            raise _Interrupted(str(error) or type(error).__name__) from None
        if not chunk:
            return
        sink.write(chunk)
        meter.advance(len(chunk))


def _offline_hint() -> str:
    return ("install offline: download the files elsewhere (plans.json, dataset.json, fold_N/checkpoint_best.pth), "
            "copy them over as a folder or .zip and run `legsegnet models install ZIP_OR_FOLDER` "
            "(in Slicer: the module's 'Install from file' button)")


def _http_error(error: urllib.error.HTTPError, url: str) -> DownloadError:
    if error.code == 404:
        return DownloadError(f"{url} was not found (HTTP 404): the weights moved or the mirror in "
                             f"{MIRROR_VARIABLE} lacks this file. To {_offline_hint()}")
    if error.code in (401, 403, 407):
        return DownloadError(f"access to {url} was refused (HTTP {error.code} {error.reason}); a proxy or firewall "
                             f"may block it: set HTTPS_PROXY, use a mirror via {MIRROR_VARIABLE}, or {_offline_hint()}")
    return DownloadError(f"the server answered HTTP {error.code} {error.reason} for {url}; try again later, "
                         f"or {_offline_hint()}")


def _timeout_error(url: str, timeout: float) -> DownloadTimeoutError:
    return DownloadTimeoutError(f"the server at {url} sent nothing for {timeout:g} s, so the download stopped. "
                                "Run it again to resume where it stopped (a slow link may need a longer --timeout), "
                                f"check the proxy settings (HTTPS_PROXY), or {_offline_hint()}")


def _range_start(response) -> Optional[int]:
    """The first byte of a 206 response ('Content-Range: bytes 100-199/200' -> 100)."""
    content_range = response.headers.get("Content-Range", "")
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


class _Meter:
    """Bytes on disk per file and overall, transfer speed, and throttled progress reports."""

    def __init__(self, files, folder: Path, callback: Optional[ProgressCallback]):
        self._callback = callback
        self._count = len(files)
        self._sizes = {file.path: file.size for file in files}
        self._done = {file.path: _size_on_disk(folder, file.path) for file in files}
        self._file = None
        self._index = 0
        self._speed_mark = (time.monotonic(), 0)
        self._transferred = 0
        self._speed = 0.0
        self._last_report = 0.0

    def start_file(self, file, index: int) -> None:
        self._file, self._index = file.path, index
        self._report(force=True)

    def file_restarted(self, bytes_on_disk: int, size: Optional[int]) -> None:
        self._done[self._file] = bytes_on_disk
        if size is not None:
            self._sizes[self._file] = size
        self._report(force=True)

    def advance(self, count: int) -> None:
        self._done[self._file] += count
        self._transferred += count
        now = time.monotonic()
        mark_time, mark_bytes = self._speed_mark
        if now - mark_time >= _SPEED_WINDOW_S:
            self._speed = (self._transferred - mark_bytes) / (now - mark_time)
            self._speed_mark = (now, self._transferred)
        self._report(force=self._done[self._file] == self._sizes.get(self._file))

    def _report(self, force: bool) -> None:
        now = time.monotonic()
        if self._callback is None or not (force or now - self._last_report >= _PROGRESS_INTERVAL_S):
            return
        self._last_report = now
        sizes = list(self._sizes.values())
        self._callback(DownloadProgress(
            file=self._file, file_index=self._index, file_count=self._count, file_done=self._done[self._file],
            file_total=self._sizes[self._file], done=sum(self._done.values()),
            total=None if None in sizes else sum(sizes), bytes_per_second=self._speed))


def _size_on_disk(folder: Path, relative_path: str) -> int:
    for candidate in (folder / relative_path, folder / (relative_path + ".part")):
        if candidate.is_file():
            return candidate.stat().st_size
    return 0
