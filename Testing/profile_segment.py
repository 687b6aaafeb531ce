"""Where the time of one whole `legsegnet segment` run goes, by phase, with user and system CPU time apart.

Runs the command line in this process with timers around its phases: import, the engine's import and model load,
the read of the input (in a background thread meanwhile: process-wide CPU time), the preparation of each batch
(8-bit window and bicubic stretch, in another background thread: its own thread's CPU time), the network's
forward calls, the rest of the predictor (tiling, Gaussian weighting, fp16 arithmetic), resampling back to the
native grid, measurements and the label map's writing (in a background thread meanwhile). Python's own start-up
is what the process's total (printed last, from getrusage) has beyond the phases.

    python Testing/profile_segment.py --slices 100 -- --device cpu            # LegSegNet-sized random model
    python Testing/profile_segment.py --slices 100 --cprofile out.prof -- --backend openvino
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

TESTING = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTING.parent), str(TESTING)]


class PhaseTimer:
    """Wall, user and system seconds per phase. Process-wide CPU time for phases of the main thread; the
    preparing thread's phase counts its own thread's CPU time only (it overlaps the network)."""

    def __init__(self):
        self.totals = {}

    @contextmanager
    def phase(self, name: str, who=resource.RUSAGE_SELF):
        before, started = resource.getrusage(who), time.perf_counter()
        try:
            yield
        finally:
            after = resource.getrusage(who)
            wall, user, system = self.totals.get(name, (0.0, 0.0, 0.0))
            self.totals[name] = (wall + time.perf_counter() - started, user + after.ru_utime - before.ru_utime,
                                 system + after.ru_stime - before.ru_stime)

    def wrap(self, owner, attribute: str, name: str, who=resource.RUSAGE_SELF) -> None:
        function = getattr(owner, attribute)

        def timed(*args, **kwargs):
            with self.phase(name, who):
                return function(*args, **kwargs)

        setattr(owner, attribute, timed)

    def report(self, stream=sys.stdout) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(f"{'phase':34}{'wall s':>8}{'user s':>8}{'sys s':>8}", file=stream)
        for name, (wall, user, system) in self.totals.items():
            print(f"{name:34}{wall:8.2f}{user:8.2f}{system:8.2f}", file=stream)
        print(f"{'whole process (after start-up)':34}{time.perf_counter() - STARTED:8.2f}{usage.ru_utime:8.2f}"
              f"{usage.ru_stime:8.2f}   peak RSS {usage.ru_maxrss / 1024:.0f} MB, "
              f"{usage.ru_minflt} minor page faults", file=stream)
        print(f"load average: {' '.join(f'{value:.2f}' for value in os.getloadavg())} on {os.cpu_count()} CPUs",
              file=stream)


def instrument(timer: PhaseTimer) -> None:
    """Timers around the command line's phases (patched where segment.py and the engine look them up). The
    engine's modules (torch) are imported while the model loads, as in the command itself, so the first input's
    read overlaps them there too."""
    from LegSegNetLib import batch
    from LegSegNetLib.cli import segment
    from LegSegNetLib.segmenting import run

    create_engine = segment.create_engine

    def timed_create_engine(settings):
        with timer.phase("engine import and model load"):
            engine = create_engine(settings)
        instrument_engine(timer)
        return engine

    segment.create_engine = timed_create_engine
    timer.wrap(batch, "read_volume", "read (overlaps the model load)")
    timer.wrap(batch, "write_labelmap_into", "write (overlaps the measurements)")
    timer.wrap(run, "measure_labels", "measurements")


def instrument_engine(timer: PhaseTimer) -> None:
    from LegSegNetLib.segmenting.engines.nnunet import engine, predictor

    timer.wrap(engine.LegSegNetEngine, "prepare_slices", "preparing thread (own CPU time)", resource.RUSAGE_THREAD)
    timer.wrap(predictor.Predictor, "predict", "predictor (network included)")
    timer.wrap(engine, "_labels_on_native_grid", "resampling back to 512x512")
    forward = predictor.Predictor._weighted_network_output

    def timed_forward(self, fold, tiles):
        network = self.networks[fold]
        if not getattr(network, "timed", False):
            timer.wrap(network, "forward", "network forward")
            network.timed = True
        return forward(self, fold, tiles)

    predictor.Predictor._weighted_network_output = timed_forward


def slice_count(ct: Path) -> int:
    """Slices of a DICOM folder or a volume file (slice-first), from the headers alone."""
    import SimpleITK as sitk

    if ct.is_dir():
        return len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(ct)))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(ct))
    reader.ReadImageInformation()
    return reader.GetSize()[2]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=100, help="the N middle slices (default 100)")
    parser.add_argument("--start", type=int, help="the first of the N slices (default: found from the headers, "
                                                   "so that they are the middle ones)")
    parser.add_argument("--ct", type=Path, help="CT (default: the Visible Human lower-leg CT)")
    parser.add_argument("--model", type=Path, help="model folder (default: LegSegNet-sized random weights)")
    parser.add_argument("--cprofile", type=Path, help="also write cProfile statistics of the main thread here")
    parser.add_argument("--json", type=Path, help="also write the phases' seconds as JSON")
    parser.add_argument("segment_options", nargs="*", help="more `legsegnet segment` options, after --")
    args = parser.parse_args(argv)
    timer = PhaseTimer()
    with timer.phase("import"):
        import benchmark

        from LegSegNetLib.cli import main as cli_main
        from LegSegNetLib.cli import prepare_exit
    instrument(timer)
    ct = args.ct or benchmark.default_ct()
    model = args.model or benchmark.default_model()
    start = args.start if args.start is not None else max((slice_count(ct) - args.slices) // 2, 0)
    with tempfile.TemporaryDirectory(prefix="legsegnet-profile-") as work:
        command = ["segment", str(ct), "--model", str(model), "--labelmap", str(Path(work) / "labels.seg.nrrd"),
                   "--range", f"{start}:{start + args.slices}", *args.segment_options]
        profiler = cProfile.Profile() if args.cprofile else None
        with timer.phase("segment command (all below)"):
            if profiler:
                profiler.runcall(cli_main, command)
            else:
                cli_main(command)
    if profiler:
        profiler.dump_stats(str(args.cprofile))
    timer.report()
    if args.json:
        args.json.write_text(json.dumps({"network_s": timer.totals.get("network forward", (0.0,))[0],
                                         "peak_gpu_mb": benchmark.peak_gpu_mb(), "phases": timer.totals}))
    prepare_exit()  # as the `legsegnet` script ends


if __name__ == "__main__":
    main()
