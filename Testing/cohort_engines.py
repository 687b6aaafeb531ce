"""Engines for the cohort tests. Dask workers import this module, so Testing/ must be on their path (a local
cluster's processes inherit it; separately started workers get it through PYTHONPATH)."""

import os
import signal
import time
from pathlib import Path

from LegSegNetLib.segmenting.engines.threshold import ThresholdEngine

POISON_HU = 3071  # an input holding this value kills the process segmenting it, on every try
STALL_HU = 3070  # an input holding this value takes a minute


def mark_input(ct, hu: int):
    """The CT with a small block set to `hu`, in a corner far from the legs."""
    array = ct.array.copy()
    array[:, :4, :4] = hu
    return ct.with_array(array)


class WorkerKillingEngine(ThresholdEngine):
    """The threshold engine, except that it kills its own process (as the out-of-memory killer would) on poison
    inputs, and once per run: on the first call that manages to create `once_marker`."""

    def __init__(self, once_marker=None):
        super().__init__()
        self.once_marker = once_marker

    def segment_slices(self, hu_slices, pixel_spacing_mm):
        if (hu_slices == POISON_HU).any() or self._first_call():
            os.kill(os.getpid(), signal.SIGKILL)
        if (hu_slices == STALL_HU).any():
            time.sleep(60)
        return super().segment_slices(hu_slices, pixel_spacing_mm)

    def _first_call(self) -> bool:
        if self.once_marker is None:
            return False
        try:
            os.close(os.open(self.once_marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True


def noted_threshold_engine(notes_folder, settings):
    """The threshold engine, each build noted as a file: the building process and its torch threads."""
    import torch

    note = Path(notes_folder) / f"{os.getpid()}-{time.monotonic_ns()}"
    note.write_text(f"{os.getpid()} {torch.get_num_threads()}")
    return ThresholdEngine()

