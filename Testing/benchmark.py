"""Whole-process speed and memory of `legsegnet segment` against LegSegNet's reference pipeline, A/B interleaved.

Every run is a fresh process timed from outside: wall time, and that process's user and system CPU time and peak
resident memory (from wait4), so Python's start-up, imports, model loading, reading and writing count as a user
pays them. The arms:

reference:  LegSegNet's app as published: per-slice HU window, truncating uint8 cast and cv2 bicubic resize to
            256x256, then nnunetv2's nnUNetPredictor one slice at a time (weights loaded once), masks kept on the
            256 grid and written with an identity affine. It gets the same radiological display slices as ours.
<backend>:  `legsegnet segment --device cpu --backend <backend>` (run through Testing/profile_segment.py, which
            also records the time inside the network's forward calls; its timers cost microseconds).
baseline:   with --baseline DIR, `legsegnet segment` (torch) from another checkout, e.g. the code before a change.

Each round runs every arm once, the order rotated from round to round, and ratios to the reference are taken
within a round; figures are the median and range over rounds, each run with the 1-minute load average at its
start. After the timed runs, one untimed pass of each backend's engine on the same slices gives its labels on
the 256 grid, compared with the reference's masks.

    python Testing/benchmark.py                                  # 100 Visible Human slices, 3 rounds, torch
    python Testing/benchmark.py --backends torch,openvino-bf16 --baseline /tmp/before --rounds 3
    python Testing/benchmark.py --ct scan.nii.gz --model /path/to/LegSegNet --slices 200
    python Testing/benchmark.py --phantom-slices 1000 --slices 100   # 512x512x1000 int16 phantom
    python Testing/benchmark.py --device cuda --batch-size 16        # on a GPU: slices/s and peak GPU memory
    python Testing/benchmark.py --device cuda --phantom-slices 1000 --slices 1000 --no-reference --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from LegSegNetLib.cli import positive_int
from LegSegNetLib.settings import SegmentationSettings

TESTING = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTING.parent), str(TESTING)]

LEGSEGNET_SPACING = {"spacing": (999, 1, 1)}  # what nnU-Net's 2D PNG reader reports for LegSegNet's slices
REFERENCE_CHECKPOINT = "checkpoint_final.pth"


# ---- the reference pipeline (a worker process) ----------------------------------------------------------------

def run_reference(config: dict, work: Path) -> dict:
    """The reference app on the middle slices; returns the seconds inside the network's forward calls."""
    import SimpleITK as sitk
    import torch

    from LegSegNetLib.reading.layout import slice_layout
    from LegSegNetLib.reading.volume_files import read_volume
    from nnunet_reference import ReferencePredictor, reference_uint8

    if config["threads"]:
        torch.set_num_threads(config["threads"])
    reference = ReferencePredictor(config["model"], folds=(0,), tta=config["tta"],
                                   checkpoint_name=REFERENCE_CHECKPOINT, device=config["device"])
    predictor = reference.predictor
    network_seconds = [0.0]
    forward = predictor.network.forward

    def timed_forward(*args, **kwargs):
        started = time.perf_counter()
        try:
            return forward(*args, **kwargs)
        finally:
            network_seconds[0] += time.perf_counter() - started

    predictor.network.forward = timed_forward
    ct = read_volume(config["ct"])
    hu = slice_layout(ct).display_view(ct.array)
    indices = middle_slices(len(hu), config["slices"])
    masks = np.zeros((len(indices), 256, 256), dtype=np.uint8)
    for row, index in enumerate(indices):
        image = reference_uint8(hu[index]).astype(np.float32)[None, None]
        masks[row] = predictor.predict_single_npy_array(image, dict(LEGSEGNET_SPACING))[0]
    np.bincount(masks.ravel(), minlength=5)  # the app's volumes are label counts on the 256 grid
    sitk.WriteImage(sitk.GetImageFromArray(masks), str(work / "reference_masks.nii.gz"))
    np.save(work / "reference_256.npy", masks)
    return {"network_s": network_seconds[0], "peak_gpu_mb": peak_gpu_mb()}


def peak_gpu_mb():
    """Peak GPU memory torch allocated in this process (MB), None when it used no GPU."""
    import torch

    if not torch.cuda.is_initialized():  # asked first: is_available() would start the driver in a CPU run
        return None
    return torch.cuda.max_memory_allocated() / 2 ** 20


def middle_slices(slice_count: int, wanted: int) -> list:
    """The `wanted` middle slices (all when the volume has no more)."""
    start = max((slice_count - wanted) // 2, 0)
    return list(range(start, min(start + wanted, slice_count)))


# ---- one timed process ----------------------------------------------------------------------------------------

def arm_command(arm: str, config: dict, facts: Path) -> tuple:
    """(command, working directory, extra PYTHONPATH) of one run of `arm`."""
    if arm == "reference":
        return [sys.executable, __file__, "--worker", str(facts), json.dumps(config)], None, [TESTING.parent, TESTING]
    options = ["--device", config["device"]] + (["--tta"] if config["tta"] else []) + (
        ["--batch-size", str(config["batch_size"])] if config["batch_size"] else [])
    labels = Path(config["work"]) / f"{arm}.seg.nrrd"
    start = middle_slices(config["slice_count"], config["slices"])[0]
    if arm == "baseline":  # the other checkout's own command line, nothing of this one
        code = "import sys; from LegSegNetLib.cli import main; sys.exit(main(sys.argv[1:]))"
        command = [sys.executable, "-c", code, "segment", config["ct"], "--model", config["model"], "--labelmap",
                   str(labels), "--overwrite", "--range", f"{start}:{start + config['slices']}", *options]
        return command, config["baseline"], [Path(config["baseline"])]
    command = [sys.executable, str(TESTING / "profile_segment.py"), "--slices", str(config["slices"]), "--start",
               str(start), "--ct",
               config["ct"], "--model", config["model"], "--json", str(facts), "--", "--backend", arm, *options]
    return command, None, [TESTING.parent, TESTING]


def timed_run(arm: str, config: dict, run_number: int) -> dict:
    """Run one arm in a fresh process; its wall, CPU and peak memory, and what the process itself recorded."""
    facts = Path(config["work"]) / f"{arm}-{run_number}.json"
    command, cwd, paths = arm_command(arm, config, facts)
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(str(path) for path in paths))
    if config["threads"]:
        environment["OMP_NUM_THREADS"] = str(config["threads"])
    load = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"the {arm} run failed (exit status {process.returncode}): {' '.join(command)}")
    recorded = json.loads(facts.read_text()) if facts.exists() else {}
    return {"wall_s": wall, "slices_per_s": config["slices"] / wall, "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024.0, "load_1min": load,
            "network_s": recorded.get("network_s"), "peak_gpu_mb": recorded.get("peak_gpu_mb")}


def worker(facts: str, config_text: str) -> None:
    config = json.loads(config_text)
    Path(facts).write_text(json.dumps(run_reference(config, Path(config["work"]))))


# ---- labels (untimed) -----------------------------------------------------------------------------------------

def model_grid_agreement(config: dict, backend: str) -> dict:
    """The engine's 256-grid labels on the benchmark's slices against the reference's masks."""
    from LegSegNetLib.reading.layout import slice_layout
    from LegSegNetLib.reading.volume_files import read_volume
    from LegSegNetLib.segmenting.engines.factory import create_engine
    from LegSegNetLib.segmenting.pipeline import has_body

    reference = np.load(Path(config["work"]) / "reference_256.npy")
    engine = create_engine(SegmentationSettings(engine="legsegnet", model=config["model"], device=config["device"],
                                                backend=backend, tta=config["tta"]))
    ct = read_volume(config["ct"])
    hu = slice_layout(ct, engine.in_plane_orientation).display_view(ct.array)
    indices = middle_slices(len(hu), config["slices"])
    ours = np.zeros_like(reference)
    for row, index in enumerate(indices):
        if has_body(hu[index]):
            ours[row] = engine.segment_model_grid(np.ascontiguousarray(hu[index:index + 1]))[0]
    return {"equal": float(np.mean(ours == reference)), "differing_pixels": int(np.count_nonzero(ours != reference)),
            "pixels": int(reference.size)}


# ---- inputs ---------------------------------------------------------------------------------------------------

def default_ct() -> Path:
    import realct

    return realct.visible_human_dicom_dir()


def phantom_ct(slices: int, size: int = 512) -> Path:
    """A size x size x `slices` int16 calf phantom (a 40-slice phantom repeated along the leg), cached as NIfTI."""
    from LegSegNetLib.reading.volume import Volume
    from LegSegNetLib.reading.volume_files import write_volume
    from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom

    import realct

    path = realct.cache_dir() / f"phantom_{size}x{size}x{slices}.nii"
    if not path.exists():
        ct, _ = make_leg_phantom(seed=0, shape=(40, size, size), spacing=(1.0, 0.8, 0.8))
        tiled = np.tile(ct.array, (-(-slices // 40), 1, 1))[:slices]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_volume(Volume(np.ascontiguousarray(tiled, dtype=np.int16), ct.ijk_to_ras), path)
    return path


def default_model() -> Path:
    """A random-weight model folder with the full LegSegNet plans width (32..512 features, 7 stages)."""
    import realct

    folder = realct.cache_dir() / "legsegnet_sized_random_model"
    if not (folder / "plans.json").exists():
        from model_factory import LEGSEGNET_FEATURES, make_model_folder  # imports torch: only to build it

        make_model_folder(folder, features_per_stage=LEGSEGNET_FEATURES)
    return folder


# ---- the interleaved runs and the report ----------------------------------------------------------------------

def benchmark(config: dict, arms: list, rounds: int, stream=None) -> dict:
    runs = {arm: [] for arm in arms}
    for number in range(rounds):
        shift = number % len(arms)
        for arm in arms[shift:] + arms[:shift]:
            runs[arm].append(timed_run(arm, config, number))
            print(f"round {number + 1} {arm}: {runs[arm][-1]['wall_s']:.1f} s (load {runs[arm][-1]['load_1min']:.2f})",
                  file=stream or sys.stdout, flush=True)
    agreement = {arm: model_grid_agreement(config, arm) for arm in arms
                 if "reference" in arms and arm not in ("reference", "baseline")}
    figures = {"runs": runs, "summary": summarise(runs), "agreement": agreement}
    print_report(figures, config, stream or sys.stdout)
    return figures


def summarise(runs: dict) -> dict:
    summary = {}
    for arm, measured in runs.items():
        figures = {key: spread([run[key] for run in measured])
                   for key in ("wall_s", "slices_per_s", "user_s", "sys_s", "peak_rss_mb", "load_1min")}
        if all(run["network_s"] is not None for run in measured):
            figures["network_s"] = spread([run["network_s"] for run in measured])
            figures["outside_network_s"] = spread([run["wall_s"] - run["network_s"] for run in measured])
        if all(run.get("peak_gpu_mb") is not None for run in measured):
            figures["peak_gpu_mb"] = spread([run["peak_gpu_mb"] for run in measured])
        if "reference" in runs and arm != "reference":
            figures["ratio_to_reference"] = spread([run["wall_s"] / reference["wall_s"]
                                                    for run, reference in zip(measured, runs["reference"])])
        summary[arm] = figures
    return summary


def spread(values: list) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def print_report(figures: dict, config: dict, stream) -> None:
    print(f"CT: {config['ct']}   model: {config['model']}   {config['slices']} middle slices   tta: {config['tta']}   "
          f"device: {config['device']}   threads: {config['threads'] or 'default'}   {os.cpu_count()} CPUs   rounds: "
          f"{len(next(iter(figures['runs'].values())))}", file=stream)
    columns = ("wall_s", "ratio_to_reference", "slices_per_s", "user_s", "sys_s", "network_s", "outside_network_s",
               "peak_rss_mb", "peak_gpu_mb", "load_1min")
    print(f"{'arm':15}" + "".join(f"{name:>24}" for name in columns), file=stream)
    for arm, summary in figures["summary"].items():
        cells = [_cell(summary.get(name), "{:.0f}" if name.startswith("peak") else "{:.2f}") for name in columns]
        print(f"{arm:15}" + "".join(f"{cell:>24}" for cell in cells), file=stream)
    print("median (min-max) over rounds; ratio: wall time over the reference's in the same round", file=stream)
    for arm, agree in figures["agreement"].items():
        print(f"{arm} labels on the 256 grid equal to the reference's: {agree['equal']:.6%} "
              f"({agree['differing_pixels']} of {agree['pixels']} pixels differ)", file=stream)


def _cell(figure, number_format: str) -> str:
    if figure is None:
        return "-"
    low, middle, high = (number_format.format(figure[key]) for key in ("min", "median", "max"))
    return f"{middle} ({low}-{high})"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--ct", type=Path, help="CT file or DICOM folder (default: the Visible Human lower-leg CT)")
    source.add_argument("--phantom-slices", type=int, metavar="N", help="a 512x512xN int16 phantom instead")
    parser.add_argument("--model", type=Path, help="nnU-Net model folder (default: LegSegNet-sized random weights)")
    parser.add_argument("--slices", type=int, default=100, help="the N middle slices (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--backends", default="torch", help="our backends to run, comma-separated (default torch)")
    parser.add_argument("--baseline", type=Path, help="also run `legsegnet segment` from this other checkout")
    parser.add_argument("--no-reference", action="store_true", help="leave out the reference pipeline")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N], for every arm (a GPU runs the "
                                                         "model with fp16 autocast, as nnU-Net does)")
    parser.add_argument("--batch-size", type=positive_int, help="our arms' slices per network pass (default: their "
                                                                  "own)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS and torch threads (default: their own choice)")
    parser.add_argument("--work", type=Path, help="folder for outputs (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write every run's figures as JSON")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    import profile_segment

    args = parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return {}
    with tempfile.TemporaryDirectory(prefix="legsegnet-bench-") as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        ct = args.ct or (phantom_ct(args.phantom_slices) if args.phantom_slices else default_ct())
        config = {
            "ct": str(ct), "model": str(args.model or default_model()), "slices": args.slices, "tta": args.tta,
            "threads": args.threads, "work": str(work), "slice_count": profile_segment.slice_count(ct),
            "device": args.device, "batch_size": args.batch_size,
            "baseline": str(args.baseline.resolve()) if args.baseline else None,
        }
        arms = ([] if args.no_reference else ["reference"]) + args.backends.split(",") + (
            ["baseline"] if args.baseline else [])
        figures = benchmark(config, arms, args.rounds)
        if args.json:
            args.json.write_text(json.dumps({"config": config, **figures}, indent=1))
        return figures


if __name__ == "__main__":
    main()
