"""Inputs per hour of `legsegnet segment` run serially and on a local Dask cluster of 1 and 2 workers, in one run.

Every mode is the command a user runs (`python -m LegSegNetLib segment DIR --output-dir OUT [--workers N]`), in a
fresh process, over the same phantom inputs (two-leg phantoms of 256 x 256 pixels). Each mode runs over a small
and a large set of inputs: the difference of the two wall times is the marginal time of the extra inputs, in
which the fixed costs (Python start, cluster start, model loading and warm-up) cancel. "Per hour" is the
marginal throughput, what a cohort of thousands sees; the wall times with their fixed costs are shown too.
The load average is recorded before and after each mode: other processes share the cores, and wall times on a
busy machine say little. So the CPU time of each run's whole process tree (client, workers) is measured too:
its marginal per input is the work an input costs in each mode, whatever the load; "2 idle cores" projects the
2-worker throughput from it for an engine whose serial run uses one core (the threshold engine), as a
projection. "s in job" is the median time each input spent in batch.process_job (from its log line), without
scheduling or fixed costs. The outputs of every mode are checked equal to the serial run's. No GPU is used; a GPU node's
throughput is not measured here.

    python Testing/benchmark_cohort.py                            # threshold engine and the bootstrap model
    python Testing/benchmark_cohort.py --engine threshold --inputs 8 16 --slices 40 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTING = Path(__file__).resolve().parent
ROOT = TESTING.parent
sys.path.insert(0, str(ROOT))

from LegSegNetLib.reading.volume_files import write_volume  # noqa: E402
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom  # noqa: E402

BOOTSTRAP_MODEL = ROOT / "Resources" / "Models" / "legsegnet-bootstrap"
ENGINE_ARGUMENTS = {
    "threshold": ["--engine", "threshold"],
    "bootstrap": ["--model", str(BOOTSTRAP_MODEL), "--device", "cpu"],
}
DEFAULT_SIZES = {"threshold": ((6, 18), 40), "bootstrap": ((4, 12), 8)}  # (input counts, slices per input)
JOB_TIME = re.compile(r"slices labelled in ([0-9.]+) s")
MODES = (("serial", []), ("1 worker", ["--workers", "1"]), ("2 workers", ["--workers", "2"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=(*ENGINE_ARGUMENTS, "both"), default="both")
    parser.add_argument("--inputs", type=int, nargs=2, metavar=("SMALL", "LARGE"), help="input counts of the two sets")
    parser.add_argument("--slices", type=int, help="slices per input")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every mode and set (the median is kept)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; load average at start {load_average()}")
    for engine in ENGINE_ARGUMENTS if args.engine == "both" else (args.engine,):
        counts, slices = DEFAULT_SIZES[engine]
        benchmark(engine, args.inputs or counts, args.slices or slices, args.repeats)


def benchmark(engine: str, counts: tuple, slices: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="legsegnet-cohort-benchmark-") as temporary:
        folder = Path(temporary)
        sets = {count: write_inputs(folder / f"inputs-{count}", count, slices) for count in counts}
        walls = {mode: {count: [] for count in counts} for mode, _ in MODES}
        cpus = {mode: {count: [] for count in counts} for mode, _ in MODES}
        job_seconds = {mode: [] for mode, _ in MODES}
        loads = {mode: [] for mode, _ in MODES}
        for repeat in range(repeats):
            for count in counts:
                for mode, extra in MODES:  # interleaved, so that a burst of load from others hits every mode alike
                    out = folder / f"out-{mode.replace(' ', '-')}-{count}-{repeat}"
                    loads[mode].append(load_average())
                    wall, cpu, seconds = run_segment(sets[count], out, [*ENGINE_ARGUMENTS[engine], *extra])
                    walls[mode][count].append(wall)
                    cpus[mode][count].append(cpu)
                    job_seconds[mode] += seconds
                    loads[mode].append(load_average())
                    check_equal(folder / f"out-serial-{count}-{repeat}", out)
        report(engine, counts, slices, walls, cpus, job_seconds, loads)


def write_inputs(folder: Path, count: int, slices: int) -> Path:
    folder.mkdir(parents=True)
    for seed in range(count):
        ct, _ = make_leg_phantom(seed=seed, shape=(slices, 256, 256))
        write_volume(ct, folder / f"leg{seed:03d}.nrrd")
    return folder


def run_segment(inputs: Path, out: Path, arguments: list) -> tuple:
    """Wall seconds and CPU seconds of the command and every process it started (reaped children count), and
    the seconds of each input's job as logged."""
    command = [sys.executable, "-m", "LegSegNetLib", "segment", str(inputs), "--output-dir", str(out), *arguments]
    cpu_before = children_cpu_seconds()
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    job_seconds = [float(seconds) for seconds in JOB_TIME.findall(completed.stderr)]
    return wall, children_cpu_seconds() - cpu_before, job_seconds


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check_equal(serial: Path, other: Path) -> None:
    for name in ("measurements.csv", "slice_areas.csv"):
        if (serial / name).read_bytes() != (other / name).read_bytes():
            raise SystemExit(f"{other / name} differs from the serial run's {serial / name}")


def report(engine: str, counts: tuple, slices: int, walls: dict, cpus: dict, job_seconds: dict, loads: dict) -> None:
    small, large = counts
    print(f"\n{engine} engine, {slices} slices of 256 x 256 per input; medians of runs over {small} and {large} "
          "inputs; per input: the difference divided by the extra inputs")
    print("| mode | wall small / large (s) | wall s per input | inputs per hour | vs serial | CPU s per input | "
          "CPU vs serial | s in job | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    wall, cpu = marginal(walls, small, large), marginal(cpus, small, large)
    for mode, runs in walls.items():
        print(f"| {mode} | {statistics.median(runs[small]):.1f} / {statistics.median(runs[large]):.1f} | "
              f"{wall[mode]:.2f} | {3600 / wall[mode]:.0f} | {wall['serial'] / wall[mode]:.2f}x | {cpu[mode]:.2f} | "
              f"{100 * (cpu[mode] / cpu['serial'] - 1):+.1f}% | {statistics.median(job_seconds[mode]):.1f} | "
              f"{min(loads[mode]):.1f}-{max(loads[mode]):.1f} |")
    print("one worker's overhead per input against the serial batch: "
          f"wall {100 * (wall['1 worker'] / wall['serial'] - 1):+.1f}%, "
          f"CPU {100 * (cpu['1 worker'] / cpu['serial'] - 1):+.1f}%")
    print("projection for 2 idle cores (serial on one core): 2 workers "
          f"{2 * cpu['serial'] / cpu['2 workers']:.2f}x the serial throughput")


def marginal(seconds: dict, small: int, large: int) -> dict:
    return {mode: (statistics.median(runs[large]) - statistics.median(runs[small])) / (large - small)
            for mode, runs in seconds.items()}


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


if __name__ == "__main__":
    main()
