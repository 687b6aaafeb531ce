"""Progress reports and cancel requests, shared by segmentation, downloads and the Slicer module."""

from __future__ import annotations

from typing import Callable, Optional

ProgressCallback = Callable[[int, int], Optional[bool]]
"""Called as progress(done, total); returning False requests cancel."""


class Cancelled(Exception):
    """The user asked to stop; nothing was produced (or, for a download, what was fetched is kept)."""


def report(progress: Optional[ProgressCallback], done: int, total: int, unit: str = "slices") -> None:
    """Tell `progress` how far the work is; raise Cancelled when it answers False."""
    if progress is not None and progress(done, total) is False:
        raise Cancelled(f"cancelled after {done} of {total} {unit}")
