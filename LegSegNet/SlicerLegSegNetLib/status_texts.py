"""What the Slicer module's widget shows, computed without Qt so it can be tested: each model's install status
and progress texts for segmentation and downloads.

The model registry (LegSegNetLib.models) is imported only when asked for, so the module loads even where it
cannot be (for example before its dependencies are installed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class EngineStatus:
    ready: bool  # the engine can run now
    text: str
    download_action: Optional[str] = None  # "Download", "Update" or "Repair"; None when there is nothing to fetch
    removable: bool = False  # weights are installed (maybe damaged) and can be deleted


def engine_status(choice) -> EngineStatus:
    """Is the chosen engine (a model_logic.EngineChoice) ready to run, what to tell the user, and which model
    actions make sense."""
    if not choice.needs_model:
        return EngineStatus(True, "Ready: no model weights needed.")
    from LegSegNetLib.models.status import CORRUPT, INSTALLED, model_status

    status = model_status(choice.model)
    in_registry = status.spec is not None
    if status.state == INSTALLED:
        text = f"Installed: version {status.version or 'unknown'}, folds {', '.join(map(str, status.folds))}."
        if status.update_available:
            return EngineStatus(True, f"{text} Version {status.spec.version} is available.", "Update", True)
        return EngineStatus(True, text, None, True)
    if status.state == CORRUPT:
        return EngineStatus(False, f"Damaged: {status.detail}.", "Repair" if in_registry else None, True)
    offline = "install it from a folder or .zip" if in_registry else "install it again from its folder or .zip"
    return EngineStatus(False, f"Not installed ({status.detail}): download it or {offline}.",
                        "Download" if in_registry else None)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(math.ceil(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def segmentation_progress_text(done: int, total: int, elapsed_s: float) -> str:
    """'Slice 12 of 350, about 1 min 05 s left' (no estimate before the first batch is done)."""
    if total == 0:
        return "No slice holds a body in the chosen range."
    text = f"Slice {done} of {total}"
    if 0 < done < total:
        text += f", about {format_duration(elapsed_s / done * (total - done))} left"
    return text


def segmentation_done_text(elapsed_s: float, warnings=()) -> str:
    """The status line after a run, with the warnings about a suspicious input (validation.validate_ct)."""
    warning = f" Warning: {'; '.join(warnings)}." if warnings else ""
    return (f"Done in {format_duration(elapsed_s)}.{warning} "
            "Edit the segments in Segment Editor, then click 'Update measurements'.")


def download_progress_text(progress) -> str:
    """A models.download.DownloadProgress as 'fold_0/checkpoint_best.pth (3/3): 120.0 of 250.0 MB, 5.2 MB/s'."""
    megabytes = 1e6
    total = f" of {progress.total / megabytes:.1f}" if progress.total else ""
    return (f"{progress.file} ({progress.file_index}/{progress.file_count}): {progress.done / megabytes:.1f}{total} MB, "
            f"{progress.bytes_per_second / megabytes:.1f} MB/s")



# What the export lists show for each choice the logic takes (segmentation_logic.EXPORT_FORMATS, EXPORT_SLICES).
EXPORT_FORMAT_LABELS = {"nnunet": "nnU-Net dataset", "nifti": "NIfTI image/label pairs"}
EXPORT_SLICE_LABELS = {"all": "All labelled slices", "range": "Slices between two positions",
                       "edited": "Only slices I edited"}
