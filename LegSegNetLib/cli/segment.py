"""`legsegnet segment`: label CT volumes and measure them.

One input: `--labelmap OUT` (and/or measurement files). Several inputs, or folders of inputs: `--output-dir DIR`
writes DIR/<name>.<format> and DIR/<name>.measurements.json per input (<name>: the file name without its
extension, or the DICOM folder's name), and with --overlay DIR/<name>.overlay.png; an input whose two files
exist is done and skipped if made with the same settings (redone with --overwrite); a failed input is
reported and the rest go on (exit status 1). DIR/measurements.csv (+ .json),
DIR/slice_areas.csv and DIR/sites.csv (+ .json), rebuilt at the end of every run from the per-input records,
summarise the run's inputs unless --measurements / --slice-areas / --sites name other files.
With --workers N or --scheduler ADDRESS the inputs are segmented on a Dask cluster, one input per task, with the
same outputs and the same resuming (see LegSegNetLib/cohort.py and the README's cluster recipes).

Sites: mid_thigh, tibia_66, tibia_38, tibia_4 and max_calf per leg, from the bone anatomy, plus any --site; a
site that cannot be placed (its bone ends outside the scan, legs not told apart, metal) is listed as not
measured with the reason. See the README's Measurements section for the definitions and their sources.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

from LegSegNetLib.batch import (
    RECORD_SUFFIX, Job, RecordError, TableOutput, load_engine_reading_first_input, refuse_results_of_other_settings,
    run_batch, write_tables,
)
from LegSegNetLib.cli import UserError, positive_int
from LegSegNetLib.cohort import Cluster, run_cohort
from LegSegNetLib.device import DEVICE_HELP
from LegSegNetLib.segmenting.engines.nnunet.backends import BACKENDS, DEFAULT_BACKEND
from LegSegNetLib.models.folds import parse_folds
from LegSegNetLib.reading.layout import SliceRange
from LegSegNetLib.reading.volume_files import is_dicom_series_folder
from LegSegNetLib.segmenting.engines.factory import create_engine, resolve_model_folder
from LegSegNetLib.settings import (
    DEFAULT_IMAT_FAT_FRACTION, DEFAULT_MUSCLE_BANDS, ENGINES, PREPROCESSING, MeasurementSettings,
    SegmentationSettings,
)
from LegSegNetLib.writing.labelmaps import LABELMAP_EXTENSIONS
from LegSegNetLib.writing.outputs import (OutputExistsError, OutputWriteError, check_writable_folder, extension_of,
                                          output_folder_lock, refuse_existing)
from LegSegNetLib.writing.tables import json_twin_path, write_site_table, write_slice_table, write_summary_table

log = logging.getLogger("legsegnet")

VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
# The run's tables: the option naming one, its writer, and its file in --output-dir when the option is not given.
TABLE_OPTIONS = (("measurements", write_summary_table, "measurements.csv"),
                 ("slice_areas", write_slice_table, "slice_areas.csv"),
                 ("sites", write_site_table, "sites.csv"))
WRITERS_WITH_JSON_TWIN = (write_summary_table, write_site_table)


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
    engine.add_argument("--device", default="auto", help=DEVICE_HELP)
    engine.add_argument("--batch-size", type=positive_int, metavar="N",
                        help="slices per network batch (default: chosen from the device's free memory)")
    engine.add_argument("--backend", choices=tuple(BACKENDS), default=DEFAULT_BACKEND,
                        help="; ".join(f"{name}: {text}" for name, text in BACKENDS.items())
                        + ". All but torch may change labels at near-ties (see README, Speed and memory)")
    engine.add_argument("--preprocessing", choices=PREPROCESSING,
                        help="legsegnet: LegSegNet's 8-bit window and 256x256 stretch; native: nnU-Net's own 2D path "
                             "on real intensities and spacing (default: what the model declares)")
    dixon = parser.add_argument_group("Dixon MRI (one input)")
    dixon.add_argument("--fat", type=Path, help="fat image of the input (same grid): fat fraction per label, IMAT")
    dixon.add_argument("--water", type=Path, help="water image of the input (same grid)")
    dixon.add_argument("--imat-fat-fraction", type=float, default=DEFAULT_IMAT_FAT_FRACTION, metavar="F",
                       help="muscle voxels with fat / (fat + water) above F count as IMAT "
                            f"(default {DEFAULT_IMAT_FAT_FRACTION:g})")
    axial = parser.add_mutually_exclusive_group()
    axial.add_argument("--range", dest="slice_range", type=parse_index_range, metavar="START:END",
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
    outputs.add_argument("--sites", type=Path, help="landmark sites per input and leg, long format (CSV) plus a "
                                                     ".json twin")
    outputs.add_argument("--overlay", action="store_true",
                         help="also write a quick-look PNG per input (axial slices and a coronal view, tissues in "
                              "colour) beside its label map: NAME.overlay.png")
    outputs.add_argument("--overwrite", action="store_true", help="replace existing outputs (and redo done inputs)")
    measuring = parser.add_argument_group("measuring")
    measuring.add_argument("--site", action="append", type=parse_site, default=[], metavar="NAME=S_MM",
                           help="also measure the slice nearest to this S position (mm), per leg; repeatable "
                                "(write --site=knee=-420 for negative values)")
    measuring.add_argument("--muscle-bands", type=parse_bands, metavar="LOW:HIGH,...",
                           help="muscle HU bands measured at each site, both ends included (default "
                                "-29:150,0:100,-29:29,30:150; write --muscle-bands=-29:150,...)")
    measuring.add_argument("--height-m", type=float, metavar="M",
                           help="the patient's height in metres for the muscle indexes (default: the DICOM "
                                "PatientSize where the input has one)")
    _add_cluster_arguments(parser)
    parser.set_defaults(handler=segment_command)


def _add_cluster_arguments(parser) -> None:
    cluster = parser.add_argument_group("cluster (Dask, optional extra: pip install 'legsegnet-slicer[dask]')")
    where = cluster.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive_int, metavar="N",
                       help="segment on N worker processes of this machine, one input each at a time")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="send the inputs to the workers of a running Dask scheduler (e.g. tcp://node1:8786); "
                            "they must see the inputs, the model and the output folder at the same paths")


def segment_command(args, engine=None) -> int:
    """Run the command; `engine` replaces the one the settings describe (tests inject their own)."""
    settings = settings_from_arguments(args)
    jobs = plan_jobs(args, settings)  # output problems surface before a model is loaded
    try:
        with output_folder_lock(args.output_dir) if args.output_dir else nullcontext():
            if args.workers or args.scheduler:
                result = _run_on_cluster(jobs, settings, Cluster(args.scheduler, args.workers), engine)
            else:
                engine, read_already = load_engine_reading_first_input(
                    jobs, settings, lambda: engine or _engine(settings))
                result = run_batch(jobs, engine, settings,
                                   lambda job, number: TerminalProgress(_job_label(job, number, len(jobs))),
                                   read_already)
            if result.records:
                write_tables(_tables(args), result.records)
    except OSError as error:  # another run holds the folder, full disk, no access, a file that appeared meanwhile
        raise UserError(str(error)) from error
    if result.failed:
        if len(jobs) > 1:  # one input's failure was just reported
            log.error("%d of %d inputs failed: %s", len(result.failed), len(jobs), ", ".join(map(str, result.failed)))
        return 1
    return 0


def settings_from_arguments(args) -> SegmentationSettings:
    """The one settings object the run uses: every option whose destination names a settings field (checked
    there, before any work), and the measuring options as its `measurement`. A new option needs its argument here
    and its field in SegmentationSettings (or MeasurementSettings)."""
    names = {field.name for field in dataclasses.fields(SegmentationSettings)}
    fields = {name: value for name, value in vars(args).items() if name in names}
    fields["measurement"] = MeasurementSettings(muscle_bands=args.muscle_bands or DEFAULT_MUSCLE_BANDS,
                                                user_sites=tuple(args.site), height_m=args.height_m)
    return SegmentationSettings(**fields)


def _job_label(job: Job, number: int, count: int) -> str:
    return f"[{number}/{count}] {job.name}" if count > 1 else job.name


def plan_jobs(args, settings: SegmentationSettings) -> list:
    """The inputs with their output paths; refuses, before any work, outputs that would clobber files."""
    inputs = expand_inputs(args.inputs, exclude=args.output_dir)
    if len(inputs) > 1 and (args.fat or args.water):
        raise UserError("--fat and --water belong to one input: segment Dixon inputs one at a time")
    fat_water = _fat_water(args)
    if args.output_dir is None:
        if len(inputs) > 1:
            raise UserError(f"{len(inputs)} inputs: use --output-dir to write one set of outputs per input")
        if not (args.labelmap or args.measurements or args.slice_areas or args.sites):
            raise UserError("nothing to write: give --labelmap, --output-dir, --measurements, --slice-areas or --sites")
        if args.labelmap is not None and extension_of(args.labelmap) not in LABELMAP_EXTENSIONS:
            raise UserError(f"--labelmap must end with one of {', '.join(LABELMAP_EXTENSIONS)}")
        if args.format is not None:
            raise UserError(f"--format goes with --output-dir; with --labelmap the file name's extension chooses "
                            f"the format (e.g. --labelmap labels.{args.format})")
        if args.overlay and args.labelmap is None:
            raise UserError("--overlay goes with --labelmap (the picture is written beside it) or --output-dir")
        overlay = _overlay_beside(args.labelmap, args) if args.labelmap else None
        jobs = [Job(inputs[0], input_name(inputs[0]), args.labelmap, None, overlay, args.overwrite, fat_water)]
    else:
        labelmaps = [args.output_dir / f"{input_name(path)}.{args.format or 'seg.nrrd'}" for path in inputs]
        jobs = [Job(path, input_name(path), labelmap, args.output_dir / f"{input_name(path)}{RECORD_SUFFIX}",
                    _overlay_beside(labelmap, args), args.overwrite, fat_water) for path, labelmap in zip(inputs, labelmaps)]
        _refuse_duplicate_names(jobs)
        try:
            refuse_results_of_other_settings(jobs, settings)
        except RecordError as error:
            raise UserError(str(error)) from None
    for option, path in (("--measurements", args.measurements), ("--slice-areas", args.slice_areas),
                         ("--sites", args.sites)):
        if path is not None and extension_of(path) != ".csv":
            raise UserError(f"{option} names a CSV file (ending .csv), not {path.name!r}")
    _refuse_same_files(jobs, _tables(args))
    given = [(write, _given_table(args, option, name)) for option, write, name in TABLE_OPTIONS]
    explicit = [args.labelmap if args.output_dir is None else None, *(path for _, path in given)]
    if args.output_dir is None:
        explicit.append(jobs[0].overlay)
    explicit += [json_twin_path(path) for write, path in given if path is not None and write in WRITERS_WITH_JSON_TWIN]
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
    try:
        return SliceRange(start, stop)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_mm_range(text: str) -> tuple:
    start, stop = _split_range(text, float, "--range-mm takes START:END positions in mm, e.g. -120:-40")
    if start is None or stop is None:
        raise argparse.ArgumentTypeError("--range-mm needs both ends, e.g. -120:-40")
    return start, stop


def parse_site(text: str) -> tuple:
    try:
        (site,) = MeasurementSettings.from_text(user_sites=text).user_sites
    except ValueError as error:  # not NAME=number, or a name SettingsError refuses
        raise argparse.ArgumentTypeError(f"--site takes one NAME=S_MM, e.g. knee_line=-420 ({error})") from None
    return site


def parse_bands(text: str) -> tuple:
    try:
        return MeasurementSettings.from_text(muscle_bands=text).muscle_bands
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--muscle-bands takes LOW:HIGH HU pairs, e.g. -29:150,0:100 ({error})") from None


def _split_range(text: str, number, message: str) -> tuple:
    parts = text.split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(message)
    try:
        return tuple(number(part) if part.strip() else None for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None


def _engine(settings: SegmentationSettings):
    try:
        return create_engine(settings)
    except (ValueError, OSError, RuntimeError) as error:  # missing/broken model, unknown name, no such device
        no_weights = settings.uses_model and settings.model is None and isinstance(error, FileNotFoundError)
        hint = "; or segment without weights now with --engine threshold" if no_weights else ""
        raise UserError(f"cannot load the {settings.engine} engine: {error}{hint}") from error


def _run_on_cluster(jobs: list, settings: SegmentationSettings, cluster: Cluster, engine=None):
    """The workers load the model; here only its folder is found, so a wrong name fails before any work."""
    if engine is None and settings.uses_model:
        try:
            resolve_model_folder(settings.model)
        except (ValueError, OSError) as error:
            raise UserError(f"cannot load the {settings.engine} engine: {error}") from error
    return run_cohort(jobs, settings, cluster, create_engine if engine is None else lambda _settings: engine)


def _tables(args) -> list:
    """The run's tables; the defaults in --output-dir are rebuilt every run."""
    tables = []
    for option, write, default_name in TABLE_OPTIONS:
        given = _given_table(args, option, default_name)
        if given is not None:
            tables.append(TableOutput(write, given, args.overwrite))
        elif args.output_dir is not None:
            tables.append(TableOutput(write, args.output_dir / default_name, True))
    return tables


def _given_table(args, option: str, default_name: str) -> Optional[Path]:
    """The file a table option names, or None where it names the table's own file in --output-dir: that one is
    rebuilt every run (so a run resumes) as when the option is not given."""
    given = getattr(args, option)
    if given is not None and args.output_dir is not None and \
            _file_identity(given) == _file_identity(args.output_dir / default_name):
        return None
    return given


def _fat_water(args) -> Optional[tuple]:
    """The Dixon (fat, water) files of the one input, both or neither."""
    if (args.fat is None) != (args.water is None):
        raise UserError("give both --fat and --water (the fat fraction needs the two Dixon images)")
    if args.fat is None:
        return None
    for path in (args.fat, args.water):
        if not path.exists():
            raise UserError(f"Dixon image not found: {path}")
    return args.fat, args.water


def _overlay_beside(labelmap: Path, args) -> Optional[Path]:
    """NAME.overlay.png beside the label map NAME.<extension> when --overlay is given."""
    name = labelmap.name[: len(labelmap.name) - len(extension_of(labelmap))]
    return labelmap.with_name(f"{name}.overlay.png") if args.overlay else None


def _refuse_same_files(jobs: list, tables: list) -> None:
    """Two outputs, or an output and an input, that are one file would destroy each other: refuse before any work."""
    named = [(f"the input {job.input}", job.input) for job in jobs if job.input.is_file()]
    for job in jobs:
        named += [(f"the {what} of {job.input}", path) for what, path in
                  (("label map", job.labelmap), ("record", job.record), ("overlay", job.overlay)) if path is not None]
    for table in tables:
        named.append((f"the table {table.path}", table.path))
        if table.write in WRITERS_WITH_JSON_TWIN:
            named.append((f"the JSON twin of {table.path}", json_twin_path(table.path)))
    seen = {}
    for what, path in named:
        key = _file_identity(path)
        if key in seen:
            raise UserError(f"{seen[key]} and {what} are the same file ({path}); give each output its own name, "
                            "apart from the inputs")
        seen[key] = what


def _file_identity(path: Path):
    """What makes two paths one file: the same inode when it exists (links included), else the same full path."""
    try:
        status = os.stat(path)
        return status.st_dev, status.st_ino
    except OSError:
        return os.path.normcase(os.path.realpath(path))


def _refuse_duplicate_names(jobs: list) -> None:
    seen = {}
    for job in jobs:
        if job.name in seen:
            raise UserError(f"{seen[job.name]} and {job.input} would both write '{job.name}' outputs; "
                            "rename one or run them separately")
        seen[job.name] = job.input


def _is_volume_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and extension_of(path) in VOLUME_EXTENSIONS
