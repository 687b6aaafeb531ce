"""A batch of segmentation jobs: each input read, segmented, measured and written, then the run's tables.

A `Job` is complete: its input, every output path and whether existing files may be replaced. Each input's
record (its measurements plus the settings that made them) is written last, so its presence marks the input
as done; a re-run reuses done inputs made with the same settings and refuses to mix in others.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from LegSegNetLib.measuring.label_measurements import CT, FatWater
from LegSegNetLib.progress import ProgressCallback
from LegSegNetLib.reading.layout import EmptyRangeError
from LegSegNetLib.reading.volume import Volume
from LegSegNetLib.reading.volume_files import read_volume
from LegSegNetLib.segmenting.engines.base import SliceEngine
from LegSegNetLib.segmenting.heap import release_freed_memory
from LegSegNetLib.segmenting.run import run_segmentation
from LegSegNetLib.settings import SegmentationSettings
from LegSegNetLib.tissues import LEGSEGNET_LABELS, LabelSet, label_set_from_names
from LegSegNetLib.writing.labelmaps import check_labelmap_name, write_labelmap_into
from LegSegNetLib.writing.outputs import atomic_output, write_text
from LegSegNetLib.writing.tables import measurement_record

log = logging.getLogger("legsegnet")

RECORD_SUFFIX = ".measurements.json"


class RecordError(ValueError):
    """An earlier result cannot be reused; the message says how to redo it."""


@dataclass(frozen=True)
class Job:
    input: Path
    name: str
    labelmap: Optional[Path]
    record: Optional[Path]  # per-input measurement record (batch runs into an output folder)
    overlay: Optional[Path] = None  # quick-look picture
    overwrite: bool = False
    fat_water: Optional[tuple] = None  # Dixon MRI: the (fat, water) image files of the input
    given_as: Optional[str] = None  # the input as the command named it, when `input` is a worker's absolute path

    @property
    def input_name_given(self) -> str:
        """The input as the command named it: the tables' `input` column, the same on a cluster."""
        return self.given_as or str(self.input)

    @property
    def done(self) -> bool:
        """Finished by an earlier run (and not to be redone)."""
        return (not self.overwrite and self.record is not None and self.record.exists()
                and self.labelmap is not None and self.labelmap.exists())


@dataclass(frozen=True)
class TableOutput:
    write: Callable  # writing.tables.write_summary_table or write_slice_table: (records, path, overwrite)
    path: Path
    overwrite: bool


@dataclass(frozen=True)
class JobInputs:
    ct: Volume
    fat_water: Optional[FatWater] = None


@dataclass
class BatchResult:
    records: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # inputs that failed


def run_batch(jobs: list, engine: SliceEngine, settings: SegmentationSettings,
              progress_for: Callable[[Job, int], Optional[ProgressCallback]] = lambda job, number: None,
              read_already: Optional[dict] = None) -> BatchResult:
    """Process every job, carrying on past failures (each logged). `progress_for(job, number)` gives the
    progress callback for one job; `read_already` maps jobs to the Future of their inputs being read
    (load_engine_reading_first_input)."""
    result = BatchResult()
    read_already = read_already or {}
    for number, job in enumerate(jobs, 1):
        try:
            inputs = read_already.pop(job).result() if job in read_already else None  # let it go after
            result.records.append(process_job(job, engine, settings, progress_for(job, number), inputs))
        except KeyboardInterrupt:
            if job.record is not None and number > 1:
                log.warning("interrupted during %s: the inputs finished before it are kept in %s; the same command "
                            "continues from there", job.input, job.record.parent)
            raise
        except Exception as error:  # one bad input must not stop a batch
            if ends_the_run(error, len(jobs)):
                raise
            log.debug("details", exc_info=True)
            log.error("%s: failed: %s", job.input, error)
            result.failed.append(job.input)
    return result


def ends_the_run(error: Exception, job_count: int) -> bool:
    """Whether an input's error is the run's usage problem (exit status 2) rather than one failed input among
    others: the range given selects nothing of the one input."""
    return isinstance(error, EmptyRangeError) and job_count == 1


def load_engine_reading_first_input(jobs: list, settings: SegmentationSettings,
                                    load_engine: Callable[[], SliceEngine]) -> tuple:
    """(engine, read_already for run_batch): the first input still to do is read in a background thread while
    the engine loads. SimpleITK lets go of the GIL while it reads, so the read overlaps torch's import and the
    model load (0.6 s of a 100-slice run on the 2-core test machine). Only the first input: later ones are read
    in turn, so no two volumes are held at once. A failed load (or Ctrl+C) is raised at once; the process then ends
    when the read has (a thread stopped inside SimpleITK at exit would crash it)."""
    first = next((job for job in jobs if not job.done), None)
    if first is None:
        return load_engine(), {}
    reading = _in_background("legsegnet-read", _read_in_background, first, settings)
    return load_engine(), {first: reading}


def _read_in_background(job: Job, settings: SegmentationSettings) -> JobInputs:
    try:
        return read_inputs(job, settings)
    finally:
        release_freed_memory()  # else the reader's buffers stay in its thread's arena: 70 MB more peak memory


def _in_background(name: str, function: Callable, *args) -> Future:
    """`function(*args)` run in a new thread; its result, or the error it raised, in the Future. Not a daemon
    thread: one stopped inside SimpleITK at the interpreter's exit would crash the process."""
    outcome: Future = Future()

    def run():
        try:
            outcome.set_result(function(*args))
        except BaseException as error:  # raised to whoever asks for the result, as a call there would
            outcome.set_exception(error)

    threading.Thread(target=run, name=name).start()
    return outcome


def read_inputs(job: Job, settings: SegmentationSettings) -> JobInputs:
    ct = read_volume(job.input)
    if job.fat_water is None:
        return JobInputs(ct)
    fat, water = (read_volume(path) for path in job.fat_water)
    return JobInputs(ct, FatWater(fat, water, settings.imat_fat_fraction))


def process_job(job: Job, engine: SliceEngine, settings: SegmentationSettings,
                progress: Optional[ProgressCallback] = None, inputs: Optional[JobInputs] = None) -> dict:
    """Segment and measure one input (read here unless `inputs` holds it) and write its outputs; returns its
    measurement record. A done job's record is read back instead (and a picture asked for only now is drawn from
    its saved labels)."""
    if job.done:
        return reuse_done_job(job, getattr(engine, "label_set", LEGSEGNET_LABELS))
    started = time.monotonic()
    inputs = inputs or read_inputs(job, settings)
    ct = inputs.ct
    with _labelmap_written_meanwhile(job) as labels_ready:
        result = run_segmentation(ct, engine, settings, progress, inputs.fat_water, labels_ready)
    for warning in result.warnings:
        log.warning("%s: %s", job.input, warning)
    record = {**measurement_record(job.input_name_given, engine.name, result.measurements, settings.model_used(),
                                   result.warnings, result.modality),
              "settings": settings.record()}
    if job.overlay is not None:
        write_overlay(ct, result.labels, job.overlay, job.overwrite, result.label_set, result.measurements.site_rows,
                      result.modality)
    if job.record is not None:  # written last: its presence marks the input as done
        write_text(job.record, json.dumps(record, indent=1), job.overwrite)
    log.info("%s: %d slices labelled in %.1f s", job.input_name_given, result.measurements.summary["slice_count"],
             time.monotonic() - started)
    return record


@contextmanager
def _labelmap_written_meanwhile(job: Job) -> Iterator[Optional[Callable]]:
    """Yields run_segmentation's `labels_ready`, which writes the job's label map in a background thread while the
    labels are measured (SimpleITK lets go of the GIL while it compresses, writes and reads the file back: 0.3 s of
    a 100-slice run overlap the measurements). The file lands only when the block ends without error."""
    if job.labelmap is None:
        yield None
        return
    check_labelmap_name(job.labelmap)
    writing = []
    with atomic_output(job.labelmap, job.overwrite) as temporary:  # an existing file is refused before any work
        try:
            yield lambda labels, label_set: writing.append(_in_background(
                "legsegnet-write", write_labelmap_into, temporary, labels, job.labelmap, label_set))
        finally:
            _wait_through_interrupts(writing)  # the writer must be done before its temporary file is cleaned up
        writing[0].result()  # a failed write raises here, and nothing lands


def _wait_through_interrupts(futures: list) -> None:
    """Waits for `futures` even when Ctrl+C (or SIGTERM) arrives meanwhile, then raises that interrupt."""
    interrupted = None
    while True:
        try:
            wait(futures)
            break
        except KeyboardInterrupt as error:
            interrupted = error
    if interrupted is not None:
        raise interrupted


def label_set_of(settings: SegmentationSettings) -> LabelSet:
    """The labels the settings' engine writes, from the model folder's dataset.json (no model loaded)."""
    if not settings.uses_model:
        return LEGSEGNET_LABELS
    from LegSegNetLib.segmenting.engines.factory import resolve_model_folder

    dataset = json.loads((resolve_model_folder(settings.model) / "dataset.json").read_text(encoding="utf-8"))
    return label_set_from_names(dataset["labels"])


def reuse_done_job(job: Job, label_set: LabelSet = LEGSEGNET_LABELS) -> dict:
    """A done job's record, read back (and a picture asked for only now drawn from its saved labels, coloured
    by the model's `label_set`)."""
    log.info("%s: already done, skipped (outputs in %s)", job.input, job.record.parent)
    record = read_record(job.record)
    if job.overlay is not None and not job.overlay.exists():
        write_overlay(read_volume(job.input), read_volume(job.labelmap), job.overlay, False, label_set,
                      record.get("site_rows", ()), record.get("modality", CT))
    return record


def write_tables(tables: list, records: list) -> None:
    for table in tables:
        table.write(records, table.path, table.overwrite)


def refuse_results_of_other_settings(jobs: list, settings: SegmentationSettings) -> None:
    """RecordError when a done job was made with other settings: its results would pass for these."""
    for job in jobs:
        if not job.done:
            continue
        differences = settings.record_differences(read_record(job.record).get("settings") or {})
        if differences:
            raise RecordError(f"{job.record} was made with other settings ({', '.join(differences)}); add "
                              "--overwrite to redo those inputs with these settings, or choose another --output-dir")


def read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RecordError(f"cannot read the earlier result {path} ({error}); redo it with --overwrite") from error


def write_overlay(ct, labels, path: Path, overwrite: bool, label_set: LabelSet = LEGSEGNET_LABELS, sites=(),
                  modality: str = CT) -> None:
    from LegSegNetLib.writing.overlay import write_overlay_png  # imported here: it loads scipy

    with atomic_output(path, overwrite) as temporary:
        write_overlay_png(ct, labels, temporary, label_set=label_set, sites=sites, modality=modality)
