"""`legsegnet segment`: label CT volumes and measure them.

One input: `--labelmap OUT` (and/or measurement files). Several inputs, or folders of inputs: `--output-dir DIR`
writes DIR/<name>.<format> and DIR/<name>.measurements.json per input (<name>: the file name without its
extension, or the DICOM folder's name), and with --overlay DIR/<name>.overlay.png; an input whose two files
exist is done and skipped if made with the same settings (redone with --overwrite); a failed input is
reported and the rest go on (exit status 1). DIR/measurements.csv (+ .json)
and DIR/slice_areas.csv, rebuilt at the end of every run from the per-input records, summarise the run's
inputs unless --measurements / --slice-areas name other files.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from LegSegNetLib.cli import UserError
from LegSegNetLib.segmenting.engines.factory import DEFAULT_MODEL, ENGINES, create_engine
from LegSegNetLib.segmenting.engines.nnunet.backends import BACKENDS, DEFAULT_BACKEND
from LegSegNetLib.reading.volume_files import is_dicom_series_folder, read_volume
from LegSegNetLib.models.folds import parse_folds
from LegSegNetLib.writing.outputs import (
    OutputExistsError, OutputWriteError, atomic_output, check_writable_folder, extension_of, refuse_existing,
    write_text,
)
from LegSegNetLib.segmenting.pipeline import SliceRange
from LegSegNetLib.segmenting.run import json_twin_path, measurement_record, run_segmentation, write_slice_table, write_summary_table
from LegSegNetLib.writing.labelmaps import LABELMAP_EXTENSIONS, write_labelmap

log = logging.getLogger("legsegnet")

VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
RECORD_SUFFIX = ".measurements.json"


@dataclass(frozen=True)
class Job:
    input: Path
    name: str
    labelmap: Optional[Path]
    record: Optional[Path]  # per-input measurement record (--output-dir)
    overlay: Optional[Path] = None  # quick-look picture (--overlay)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment", help="segment lower-leg CT into SAT, SM, IMAT and bone and measure them",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="CT file (.nii.gz .nii .nrrd .mha .mhd), DICOM series folder, or a folder of those")
    engine = parser.add_argument_group("engine")
    engine.add_argument("--engine", choices=ENGINES, default="legsegnet",
                        help="legsegnet: the LegSegNet model (default; needs its weights, see `legsegnet models`); "
                             "threshold: HU thresholds and fascia, no weights needed")
    engine.add_argument("--model", help="nnU-Net model folder or installed model name (default: legsegnet)")
    engine.add_argument("--folds", type=folds_argument, help="folds to ensemble, e.g. 0,1,2,3,4 (default: all present)")
    engine.add_argument("--checkpoint", help="checkpoint file name in each fold folder (default: final, else best)")
    engine.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (slower)")
    engine.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    engine.add_argument("--batch-size", type=_positive_int, metavar="N",
                        help="slices per network batch (default: chosen from the device's free memory)")
    engine.add_argument("--backend", choices=tuple(BACKENDS), default=DEFAULT_BACKEND,
                        help="; ".join(f"{name}: {text}" for name, text in BACKENDS.items())
                        + ". All but torch may change labels at near-ties (see README, Speed and memory)")
    axial = parser.add_mutually_exclusive_group()
    axial.add_argument("--range", type=parse_index_range, metavar="START:END",
                       help="only slices START..END-1 along the slice axis (either end may be left out)")
    axial.add_argument("--range-mm", type=parse_mm_range, metavar="START:END",
                       help="only slices whose centre lies between these S positions in mm "
                            "(write --range-mm=-120:-40 for negative values)")
    outputs = parser.add_argument_group("outputs")
    where = outputs.add_mutually_exclusive_group()
    where.add_argument("--labelmap", type=Path, help=f"label map of a single input: {' '.join(LABELMAP_EXTENSIONS)}")
    where.add_argument("--output-dir", type=Path, help="folder for the outputs of each input, named after it")
    outputs.add_argument("--format", choices=[ext.lstrip(".") for ext in LABELMAP_EXTENSIONS],
                         help="label map format with --output-dir (default seg.nrrd; "
                              "with --labelmap its extension chooses)")
    outputs.add_argument("--measurements", type=Path, help="one row per input (CSV) plus a .json twin")
    outputs.add_argument("--slice-areas", type=Path, help="per-slice tissue areas, long format (CSV)")
    outputs.add_argument("--overlay", action="store_true",
                         help="also write a quick-look PNG per input (axial slices and a coronal view, tissues in "
                              "colour) beside its label map: NAME.overlay.png")
    outputs.add_argument("--overwrite", action="store_true", help="replace existing outputs (and redo done inputs)")
    parser.set_defaults(handler=segment_command)


def segment_command(args) -> int:
    jobs = plan_jobs(args)  # output problems surface before a model is loaded
    return run_jobs(jobs, _engine(args), args)


def run_jobs(jobs: list, engine, args) -> int:
    """Process every job, carrying on past failures; write the run's tables; exit status 1 if any failed."""
    records, failed = [], []
    for number, job in enumerate(jobs, 1):
        label = f"[{number}/{len(jobs)}] {job.name}" if len(jobs) > 1 else job.name
        try:
            records.append(process(job, engine, args, label))
        except KeyboardInterrupt:
            if args.output_dir is not None and number > 1:
                log.warning("interrupted during %s: the inputs finished before it are kept in %s; the same command "
                            "continues from there", job.input, args.output_dir)
            raise
        except Exception as error:  # one bad input must not stop a batch
            log.debug("details", exc_info=True)
            log.error("%s: failed: %s", job.input, error)
            failed.append(job.input)
    for write, path, overwrite in _tables(args) if records else ():
        try:
            write(records, path, overwrite)
        except OSError as error:  # full disk, no permission, a file that appeared meanwhile
            raise UserError(str(error)) from error
    if failed:
        if len(jobs) > 1:  # one input's failure was just reported
            log.error("%d of %d inputs failed: %s", len(failed), len(jobs), ", ".join(map(str, failed)))
        return 1
    return 0


def plan_jobs(args) -> list:
    """The inputs with their output paths; refuses, before any work, outputs that would clobber files."""
    inputs = expand_inputs(args.inputs, exclude=args.output_dir)
    if args.output_dir is None:
        if len(inputs) > 1:
            raise UserError(f"{len(inputs)} inputs: use --output-dir to write one set of outputs per input")
        if not (args.labelmap or args.measurements or args.slice_areas):
            raise UserError("nothing to write: give --labelmap, --output-dir, --measurements or --slice-areas")
        if args.labelmap is not None and extension_of(args.labelmap) not in LABELMAP_EXTENSIONS:
            raise UserError(f"--labelmap must end with one of {', '.join(LABELMAP_EXTENSIONS)}")
        if args.format is not None:
            raise UserError(f"--format goes with --output-dir; with --labelmap the file name's extension chooses "
                            f"the format (e.g. --labelmap labels.{args.format})")
        if args.overlay and args.labelmap is None:
            raise UserError("--overlay goes with --labelmap (the picture is written beside it) or --output-dir")
        overlay = _overlay_beside(args.labelmap, args) if args.labelmap else None
        jobs = [Job(inputs[0], input_name(inputs[0]), args.labelmap, None, overlay)]
    else:
        labelmaps = [args.output_dir / f"{input_name(path)}.{args.format or 'seg.nrrd'}" for path in inputs]
        jobs = [Job(path, input_name(path), labelmap, args.output_dir / f"{input_name(path)}{RECORD_SUFFIX}",
                    _overlay_beside(labelmap, args)) for path, labelmap in zip(inputs, labelmaps)]
        _refuse_duplicate_names(jobs)
        if not args.overwrite:
            _refuse_results_of_other_settings(jobs, run_settings(args))
    for option, path in (("--measurements", args.measurements), ("--slice-areas", args.slice_areas)):
        if path is not None and extension_of(path) != ".csv":
            raise UserError(f"{option} names a CSV file (ending .csv), not {path.name!r}")
    explicit = [args.labelmap if args.output_dir is None else None, args.measurements, args.slice_areas]
    if args.output_dir is None:
        explicit.append(jobs[0].overlay)
    if args.measurements is not None:
        explicit.append(json_twin_path(args.measurements))
    folders = {path.parent for path in filter(None, explicit)} | ({args.output_dir} if args.output_dir else set())
    try:
        for path in filter(None, explicit):
            refuse_existing(path, args.overwrite)
        for folder in sorted(folders):
            check_writable_folder(folder)
    except (OutputExistsError, OutputWriteError) as error:  # a file in the way, no folder, no access
        raise UserError(str(error)) from None
    return jobs


def expand_inputs(arguments, exclude: Optional[Path] = None) -> list:
    """Files and DICOM series folders as given; other folders contribute the volumes and series inside them."""
    inputs = []
    for argument in arguments:
        path = Path(argument)
        if not path.exists():
            raise UserError(f"input not found: {path}")
        if path.is_file() or is_dicom_series_folder(path):
            inputs.append(path)
            continue
        if exclude is not None and exclude.exists() and path.resolve() == exclude.resolve():
            raise UserError(f"{path} is also the output folder: write the outputs to another folder")
        found = [child for child in sorted(path.iterdir()) if _is_volume_file(child) or is_dicom_series_folder(child)]
        if not found:
            raise UserError(f"{path} holds no CT volume ({' '.join(VOLUME_EXTENSIONS)}) and no DICOM series")
        inputs += found
    return inputs


def input_name(path: Path) -> str:
    return path.name[: len(path.name) - len(extension_of(path))] if path.is_file() else path.resolve().name


def process(job: Job, engine, args, label: str) -> dict:
    """Segment and measure one input, write its outputs; returns its measurement record."""
    if job.record is not None and job.record.exists() and job.labelmap.exists() and not args.overwrite:
        log.info("%s: already done, skipped (outputs in %s)", job.input, job.record.parent)
        if job.overlay is not None and not job.overlay.exists():  # asked for only now: drawn from the saved labels
            write_overlay(read_volume(job.input), read_volume(job.labelmap), job.overlay, overwrite=False)
        return _read_record(job.record)
    started = time.monotonic()
    ct = read_volume(job.input)
    progress = TerminalProgress(label)
    try:
        result = run_segmentation(ct, engine, args.range, args.range_mm, progress=progress)
    finally:
        progress.close()
    record = {**measurement_record(str(job.input), engine.name, result.measurements, _model_used(args)),
              "settings": run_settings(args)}
    if job.labelmap is not None:
        write_labelmap(result.labels, job.labelmap, args.overwrite)
    if job.overlay is not None:
        write_overlay(ct, result.labels, job.overlay, args.overwrite)
    if job.record is not None:  # written last: its presence marks the input as done
        write_text(job.record, json.dumps(record, indent=1), args.overwrite)
    log.info("%s: %d slices labelled in %.1f s", job.input, result.measurements.summary["slice_count"],
             time.monotonic() - started)
    return record


class TerminalProgress:
    """A one-line bar redrawn in place when stderr is a terminal; nothing in logs and pipes."""

    WIDTH = 30

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.line_open = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        filled = self.WIDTH * done // total
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total} slices")
        self.line_open = True
        if done == total:
            self.close()
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line, so that messages after a failure start on a line of their own."""
        if self.line_open:
            self.stream.write("\n")
            self.line_open = False


def folds_argument(text: str) -> Optional[tuple]:
    """models.folds.parse_folds for argparse, which shows an ArgumentTypeError's own message."""
    try:
        return parse_folds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_index_range(text: str) -> SliceRange:
    start, stop = _split_range(text, int, "--range takes START:END slice indices, e.g. 40:300 or 40:")
    return SliceRange(start, stop)


def parse_mm_range(text: str) -> tuple:
    start, stop = _split_range(text, float, "--range-mm takes START:END positions in mm, e.g. -120:-40")
    if start is None or stop is None:
        raise argparse.ArgumentTypeError("--range-mm needs both ends, e.g. -120:-40")
    return start, stop


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return int(text)


def _split_range(text: str, number, message: str) -> tuple:
    parts = text.split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(message)
    try:
        return tuple(number(part) if part.strip() else None for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None


def _engine(args):
    try:
        return create_engine(args.engine, model=args.model, folds=args.folds, tta=args.tta, device=args.device,
                             checkpoint=args.checkpoint, batch_size=args.batch_size, backend=args.backend)
    except (ValueError, OSError, RuntimeError) as error:  # missing/broken model, unknown name, no such device
        no_weights = args.engine == "legsegnet" and args.model is None and isinstance(error, FileNotFoundError)
        hint = "; or segment without weights now with --engine threshold" if no_weights else ""
        raise UserError(f"cannot load the {args.engine} engine: {error}{hint}") from error


def _tables(args) -> list:
    """(writer, path, overwrite) of each run table; the defaults in --output-dir are rebuilt every run."""
    tables = []
    for write, given, default_name in ((write_summary_table, args.measurements, "measurements.csv"),
                                       (write_slice_table, args.slice_areas, "slice_areas.csv")):
        if given is not None:
            tables.append((write, given, args.overwrite))
        elif args.output_dir is not None:
            tables.append((write, args.output_dir / default_name, True))
    return tables


def run_settings(args) -> dict:
    """The options that decide the labels, kept in each input's record: a done input is skipped only when
    it was made with the same ones."""
    return {"engine": args.engine, "model": args.model, "folds": list(args.folds) if args.folds else None,
            "checkpoint": args.checkpoint, "tta": args.tta, "backend": args.backend,
            "range": [args.range.start, args.range.stop] if args.range else None,
            "range_mm": list(args.range_mm) if args.range_mm else None}


def _refuse_results_of_other_settings(jobs: list, settings: dict) -> None:
    for job in jobs:
        if not (job.record.exists() and job.labelmap.exists()):
            continue
        made_with = _read_record(job.record).get("settings")
        if made_with != settings:
            differences = ", ".join(f"{key} {(made_with or {}).get(key)} there, {value} now"
                                    for key, value in settings.items() if (made_with or {}).get(key) != value)
            raise UserError(f"{job.record} was made with other settings ({differences}); add --overwrite to redo "
                            "those inputs with these settings, or choose another --output-dir")


def _model_used(args) -> str:
    """For the tables: the model folder as an absolute path, or the installed model's name."""
    if args.engine != "legsegnet":
        return ""
    model = args.model or DEFAULT_MODEL
    return str(Path(model).expanduser().resolve()) if Path(model).expanduser().is_dir() else model


def write_overlay(ct, labels, path: Path, overwrite: bool) -> None:
    from LegSegNetLib.writing.overlay import write_overlay_png  # imported here: it loads scipy

    with atomic_output(path, overwrite) as temporary:
        write_overlay_png(ct, labels, temporary)


def _overlay_beside(labelmap: Path, args) -> Optional[Path]:
    """NAME.overlay.png beside the label map NAME.<extension> when --overlay is given."""
    name = labelmap.name[: len(labelmap.name) - len(extension_of(labelmap))]
    return labelmap.with_name(f"{name}.overlay.png") if args.overlay else None


def _refuse_duplicate_names(jobs: list) -> None:
    seen = {}
    for job in jobs:
        if job.name in seen:
            raise UserError(f"{seen[job.name]} and {job.input} would both write '{job.name}' outputs; "
                            "rename one or run them separately")
        seen[job.name] = job.input


def _is_volume_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and extension_of(path) in VOLUME_EXTENSIONS


def _read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the earlier result {path} ({error}); redo it with --overwrite") from error
