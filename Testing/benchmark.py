"""Times LegSegNet's reference pipeline against ours on one CT, in the same run, and compares their labels.

reference: LegSegNet's app as published: per-slice HU window + uint8 cast + cv2 bicubic resize to 256x256, then
           nnunetv2's nnUNetPredictor one slice at a time (mirroring as --tta), masks kept on the 256 grid and
           written with an identity affine. It is given the same radiological display slices as ours, so that
           labels compare (the app itself feeds the array as the file stores it).
ours:      LegSegNetLib: read_volume, run_segmentation (validation, streaming segment_volume with the LegSegNet
           engine, labels back on the native grid, measurements) and write_labelmap (.seg.nrrd).

Each pipeline runs in its own subprocess, so peak resident memory (ru_maxrss) is its own. The network's share
is the time spent inside the networks' forward calls; everything else (reading, preprocessing, resampling back,
writing, measurements) is "outside the network". Model loading is reported apart from the volume's wall time.
With --slices N only the N middle slices are segmented; times for the whole volume are then extrapolated
(fixed costs plus per-slice costs times the slice count) and marked as such.

    python Testing/benchmark.py                       # Visible Human lower-leg CT, LegSegNet-sized random model
    python Testing/benchmark.py --slices 40 --threads 2
    python Testing/benchmark.py --ct scan.nii.gz --model /path/to/LegSegNet
    python Testing/benchmark.py --phantom-slices 1000 --slices 20   # 512x512x1000 int16 phantom
    python Testing/benchmark.py --engine threshold --phantom-slices 1000  # memory of the threshold engine
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from LegSegNetLib.settings import SegmentationSettings

TESTING = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTING.parent), str(TESTING)]

PIPELINES = ("reference", "ours")
LEGSEGNET_SPACING = {"spacing": (999, 1, 1)}  # what nnU-Net's 2D PNG reader reports for LegSegNet's slices


# ---- timing helpers -------------------------------------------------------------------------------------------

class Clock:
    """Accumulates wall time per named phase; `network` is filled by wrapped forward calls."""

    def __init__(self):
        self.seconds = {}
        self.peak_mb_after = {}  # peak RSS so far when each phase last ended: shows which phase set the peak

    @contextmanager
    def phase(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
            if name != "network":
                self.peak_mb_after[name] = round(peak_rss_mb())

    def wrap(self, name: str, function):
        def timed(*args, **kwargs):
            with self.phase(name):
                return function(*args, **kwargs)
        return timed

    def time_forward(self, network) -> None:
        network.forward = self.wrap("network", network.forward)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def set_threads(threads) -> None:
    import torch

    if threads:
        torch.set_num_threads(int(threads))


# ---- the two pipelines (each run in a worker subprocess) ------------------------------------------------------

def run_reference(config: dict, clock: Clock, work: Path) -> dict:
    import SimpleITK as sitk
    import torch

    from LegSegNetLib.reading.volume_files import read_volume
    from LegSegNetLib.reading.layout import slice_layout
    from nnunet_reference import ReferencePredictor, reference_uint8

    set_threads(config["threads"])
    with clock.phase("setup"):
        reference = ReferencePredictor(config["model"], folds=config["folds"], tta=config["tta"],
                                       checkpoint_name=config["checkpoint"])
        if config["device"] != "cpu":
            reference.predictor.device = torch.device(config["device"])
            reference.predictor.network.to(reference.predictor.device)
        clock.time_forward(reference.predictor.network)
    model_rss = peak_rss_mb()
    predictor = reference.predictor
    with clock.phase("volume"):
        with clock.phase("read"):
            ct = read_volume(config["ct"])
            hu = slice_layout(ct).display_view(ct.array)
        indices = selected_indices(len(hu), config["slices"])
        masks = np.zeros((len(indices), 256, 256), dtype=np.uint8)
        for row, index in enumerate(indices):
            with clock.phase("preprocess"):
                image = reference_uint8(hu[index])
            masks[row] = predictor.predict_single_npy_array(image.astype(np.float32)[None, None],
                                                            dict(LEGSEGNET_SPACING))[0]
        with clock.phase("measure"):
            np.bincount(masks.ravel(), minlength=5)  # the app's volumes are label counts on the 256 grid
        with clock.phase("write"):
            sitk.WriteImage(sitk.GetImageFromArray(masks), str(work / "reference_masks.nii.gz"))
    np.save(work / "reference_256.npy", masks)
    return {"slices_total": len(hu), "slices_done": len(indices), "model_rss_mb": model_rss}


def run_ours(config: dict, clock: Clock, work: Path) -> dict:
    from LegSegNetLib.segmenting import run
    from LegSegNetLib.segmenting.engines.factory import create_engine
    from LegSegNetLib.reading.volume_files import read_volume
    from LegSegNetLib.reading.layout import SliceRange, slice_layout
    from LegSegNetLib.writing.labelmaps import write_labelmap

    set_threads(config["threads"])
    with clock.phase("setup"):
        settings = SegmentationSettings(engine="threshold") if config["engine"] == "threshold" else SegmentationSettings(
            model=config["model"], folds=config["folds"], tta=config["tta"], device=config["device"],
            checkpoint=config["checkpoint"], batch_size=config["batch_size"], backend=config["backend"])
        engine = create_engine(settings)
        model_grid = _record_model_grid_labels(engine, clock) if config["engine"] == "legsegnet" else None
    model_rss = peak_rss_mb()
    run.measure = clock.wrap("measure", run.measure)
    run.validate_ct = clock.wrap("validate", run.validate_ct)
    with clock.phase("volume"):
        with clock.phase("read"):
            ct = read_volume(config["ct"])
        layout = slice_layout(ct, engine.in_plane_orientation)
        indices = selected_indices(ct.array.shape[layout.slice_axis], config["slices"])
        chosen = SliceRange(indices[0], indices[-1] + 1)
        with clock.phase("segment"):
            result = run.run_segmentation(ct, engine, settings.replace(slice_range=chosen))
        with clock.phase("write"):
            write_labelmap(result.labels, work / "ours.seg.nrrd", overwrite=True)
    if config["keep_labels"]:
        np.save(work / "ours_native.npy", layout.display_view(result.labels.array)[indices])
        if model_grid is not None:
            np.save(work / "ours_256.npy", model_grid.stacked(indices, layout.display_view(ct.array)))
    return {"slices_total": ct.array.shape[layout.slice_axis], "slices_done": len(indices),
            "slices_segmented": model_grid.count if model_grid else None, "model_rss_mb": model_rss,
            "engine_batch_size": getattr(getattr(engine, "predictor", None), "batch_size", None)}


class _ModelGridLabels:
    """Keeps the model-grid argmax of every slice the engine predicts (for the agreement on the 256 grid)."""

    def __init__(self):
        self.labels = []

    @property
    def count(self) -> int:
        return len(self.labels)

    def stacked(self, indices, hu) -> np.ndarray:
        from LegSegNetLib.segmenting.pipeline import has_body

        out = np.zeros((len(indices), 256, 256), dtype=np.uint8)
        rows = [row for row, index in enumerate(indices) if has_body(hu[index])]
        out[rows] = np.stack(self.labels)
        return out


def _record_model_grid_labels(engine, clock: Clock) -> _ModelGridLabels:
    """Wrap the predictor so it hands its per-slice results to a recorder; the argmax is not timed."""
    record = _ModelGridLabels()
    predictor = engine.predictor
    predict = predictor.predict

    def predict_and_record(images):
        results = predict(images)
        started = time.perf_counter()
        record.labels.extend(result.labels() for result in results)
        clock.seconds["untimed"] = clock.seconds.get("untimed", 0.0) + time.perf_counter() - started
        return results

    predictor.predict = predict_and_record
    for network in predictor.networks:
        clock.time_forward(network)
    return record


def selected_indices(slice_count: int, wanted) -> list:
    """The `wanted` middle slices (all when None)."""
    if not wanted or wanted >= slice_count:
        return list(range(slice_count))
    start = (slice_count - wanted) // 2
    return list(range(start, start + wanted))


def worker(pipeline_name: str, config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    work = Path(config["work"])
    clock = Clock()
    runner = run_reference if pipeline_name == "reference" else run_ours
    facts = runner(config, clock, work)
    untimed = clock.seconds.pop("untimed", 0.0)
    clock.seconds["volume"] -= untimed
    if "segment" in clock.seconds:
        clock.seconds["segment"] -= untimed
    facts.update(seconds=clock.seconds, peak_rss_mb=peak_rss_mb(), peak_mb_after=clock.peak_mb_after)
    (work / f"{pipeline_name}.json").write_text(json.dumps(facts))


# ---- inputs ---------------------------------------------------------------------------------------------------

def default_ct() -> Path:
    import realct

    return realct.visible_human_dicom_dir()


def phantom_ct(slices: int, size: int = 512) -> Path:
    """A size x size x `slices` int16 calf phantom (a 40-slice phantom repeated along the leg), cached as NIfTI."""
    from LegSegNetLib.reading.volume_files import write_volume
    from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom
    from LegSegNetLib.reading.volume import Volume

    import realct

    path = realct.cache_dir() / f"phantom_{size}x{size}x{slices}.nii"
    if not path.exists():
        ct, _ = make_leg_phantom(seed=0, shape=(40, size, size), spacing=(1.0, 0.8, 0.8))
        repeats = -(-slices // 40)
        tiled = np.tile(ct.array, (repeats, 1, 1))[:slices] if ct.array.shape[0] == 40 else None
        if tiled is None:
            raise RuntimeError("the phantom is expected to be stored slice-first")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_volume(Volume(np.ascontiguousarray(tiled, dtype=np.int16), ct.ijk_to_ras), path)
    return path


def default_model(folder: Path) -> Path:
    """A random-weight model folder with the full LegSegNet plans width (32..512 features, 7 stages)."""
    from model_factory import LEGSEGNET_FEATURES, make_model_folder

    if not (folder / "plans.json").exists():
        make_model_folder(folder, features_per_stage=LEGSEGNET_FEATURES)
    return folder


# ---- comparison and report ------------------------------------------------------------------------------------

def agreement(work: Path) -> dict:
    """Share of equal labels: on the 256 grid, and on the native grid with the reference's 256 masks
    brought back by nearest neighbour (the app itself never leaves the 256 grid)."""
    import cv2

    paths = [work / name for name in ("reference_256.npy", "ours_256.npy", "ours_native.npy")]
    if not all(path.exists() for path in paths):
        return {}
    reference, ours_256, ours_native = (np.load(path) for path in paths)
    rows, cols = ours_native.shape[1:]
    reference_native = np.stack([cv2.resize(mask, (cols, rows), interpolation=cv2.INTER_NEAREST)
                                 for mask in reference])
    return {
        "grid256_equal": float(np.mean(reference == ours_256)),
        "grid256_differing_pixels": int(np.count_nonzero(reference != ours_256)),
        "grid256_pixels": int(reference.size),
        "native_equal": float(np.mean(reference_native == ours_native)),
        "native_differing_pixels": int(np.count_nonzero(reference_native != ours_native)),
        "native_pixels": int(ours_native.size),
    }


FIXED_PHASES = ("read", "validate", "measure", "write")  # once per volume, whatever the slice count


def summarise(facts: dict) -> dict:
    """Per-volume figures; with a slice subset the whole volume is extrapolated from per-slice costs."""
    seconds = facts["seconds"]
    done, total = facts["slices_done"], facts["slices_total"]
    volume, network = seconds["volume"], seconds.get("network", 0.0)
    fixed = sum(seconds.get(name, 0.0) for name in FIXED_PHASES)
    slicewise = volume - fixed
    summary = {
        "slices": f"{done}/{total}", "wall_s": volume, "slices_per_s": done / max(slicewise, 1e-9),
        "network_s": network, "outside_share": 1.0 - network / volume, "setup_s": seconds.get("setup", 0.0),
        "peak_rss_mb": facts["peak_rss_mb"], "model_rss_mb": facts["model_rss_mb"],
        "phases": {name: round(value, 3) for name, value in seconds.items()},
        "peak_mb_after": facts["peak_mb_after"],
    }
    if done < total:
        scale = total / done
        whole = fixed + slicewise * scale
        summary.update(extrapolated_wall_s=whole, extrapolated_outside_share=1.0 - network * scale / whole)
    return summary


def print_report(results: dict, agree: dict, config: dict, stream=None) -> None:
    stream = stream or sys.stdout
    print(f"CT: {config['ct']}   model: {config['model']}   engine: {config['engine']} ({config['backend']})   "
          f"tta: {config['tta']}   "
          f"device: {config['device']}   threads: {config['threads'] or 'default'}   "
          f"batch: {config['batch_size'] or 'engine default'}", file=stream)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on "
          f"{os.cpu_count()} CPUs", file=stream)
    header = f"{'':10}{'slices':>10}{'wall s':>9}{'slices/s':>9}{'outside':>9}{'peak MB':>9}{'model MB':>9}" \
             f"{'whole-vol s*':>13}{'outside*':>9}"
    print(header, file=stream)
    for name, summary in results.items():
        whole = summary.get("extrapolated_wall_s")
        outside = summary.get("extrapolated_outside_share")
        print(f"{name:10}{summary['slices']:>10}{summary['wall_s']:9.2f}{summary['slices_per_s']:9.2f}"
              f"{summary['outside_share']:9.1%}{summary['peak_rss_mb']:9.0f}{summary['model_rss_mb']:9.0f}"
              f"{'' if whole is None else f'{whole:.1f}':>13}{'' if outside is None else f'{outside:.1%}':>9}",
              file=stream)
    for name, summary in results.items():
        print(f"  {name} phases (s): {summary['phases']}", file=stream)
        print(f"  {name} peak RSS (MB) when each phase ended: {summary['peak_mb_after']}", file=stream)
    if "reference" in results and "ours" in results:
        ratio = results["ours"]["wall_s"] / results["reference"]["wall_s"]
        line = f"ours/reference wall time: {ratio:.3f}"
        if "extrapolated_wall_s" in results["ours"]:
            line += (f"  (whole volume, extrapolated: "
                     f"{results['ours']['extrapolated_wall_s'] / results['reference']['extrapolated_wall_s']:.3f})")
        print(line, file=stream)
    if agree:
        print(f"label agreement, 256 grid: {agree['grid256_equal']:.6%} "
              f"({agree['grid256_differing_pixels']} of {agree['grid256_pixels']} pixels differ); native grid: "
              f"{agree['native_equal']:.4%} ({agree['native_differing_pixels']} of {agree['native_pixels']} differ; "
              "reference masks brought back by nearest neighbour)", file=stream)
    print("* extrapolated to every slice of the volume from the measured per-slice cost", file=stream)


def benchmark(config: dict, pipelines=PIPELINES, stream=None) -> dict:
    """Run each pipeline in its own subprocess; return {"results": {...}, "agreement": {...}}."""
    work = Path(config["work"])
    (work / "config.json").write_text(json.dumps(config))
    results = {}
    for name in pipelines:
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTING.parent), str(TESTING)]))
        if config["threads"]:
            environment["OMP_NUM_THREADS"] = str(config["threads"])
        subprocess.run([sys.executable, __file__, "--worker", name, str(work / "config.json")],
                       check=True, env=environment)
        results[name] = summarise(json.loads((work / f"{name}.json").read_text()))
    agree = agreement(work)
    print_report(results, agree, config, stream)
    return {"results": results, "agreement": agree}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--ct", type=Path, help="CT file or DICOM folder (default: the Visible Human lower-leg CT)")
    source.add_argument("--phantom-slices", type=int, metavar="N", help="a 512x512xN int16 phantom instead")
    parser.add_argument("--model", type=Path, help="nnU-Net model folder (default: LegSegNet-sized random weights)")
    parser.add_argument("--engine", choices=("legsegnet", "threshold"), default="legsegnet",
                        help="our engine (threshold: no reference run, for memory figures)")
    parser.add_argument("--folds", default="0", help="folds, e.g. 0,1,2,3,4 (default 0)")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth")
    parser.add_argument("--slices", type=int, help="segment only the N middle slices (whole volume extrapolated)")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="our network backend")
    parser.add_argument("--threads", type=int, help="torch threads in both pipelines (default: torch's choice)")
    parser.add_argument("--only", choices=PIPELINES, help="run one pipeline")
    parser.add_argument("--work", type=Path, help="folder for outputs (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return {}
    with tempfile.TemporaryDirectory(prefix="legsegnet-bench-") as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        ct = args.ct or (phantom_ct(args.phantom_slices) if args.phantom_slices else default_ct())
        model = args.model or (None if args.engine == "threshold" else default_model(_model_cache()))
        config = {
            "ct": str(ct), "model": str(model) if model else None, "engine": args.engine,
            "folds": [int(fold) for fold in args.folds.split(",")], "checkpoint": args.checkpoint,
            "slices": args.slices, "tta": args.tta, "device": args.device, "batch_size": args.batch_size,
            "threads": args.threads, "backend": args.backend, "work": str(work),
            "keep_labels": args.engine == "legsegnet",
        }
        pipelines = ("ours",) if args.engine == "threshold" else ((args.only,) if args.only else PIPELINES)
        figures = benchmark(config, pipelines)
        if args.json:
            args.json.write_text(json.dumps({"config": config, **figures}, indent=1))
        return figures


def _model_cache() -> Path:
    import realct

    return realct.cache_dir() / "legsegnet_sized_random_model"


if __name__ == "__main__":
    main()
