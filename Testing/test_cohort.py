"""`legsegnet segment --workers N / --scheduler ADDRESS`: a batch on a Dask cluster gives the serial run's
results, file for file; a lost worker costs only its task; a poison input fails alone; Ctrl-C keeps what is done.

Clusters here are a LocalCluster of worker processes, or a scheduler and workers started as separate processes
(the `dask scheduler` / `dask worker` commands) on 127.0.0.1; no process outlives its test.
"""

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import psutil
import pytest

pytest.importorskip("distributed")

from cohort_engines import POISON_HU, STALL_HU, WorkerKillingEngine, mark_input, noted_threshold_engine  # noqa: E402

from LegSegNetLib import cohort  # noqa: E402
from LegSegNetLib.batch import RECORD_SUFFIX, Job  # noqa: E402
from LegSegNetLib.cli import build_parser, main  # noqa: E402
from LegSegNetLib.cli.segment import segment_command  # noqa: E402
from LegSegNetLib.cohort import Cluster, ClusterError, run_cohort  # noqa: E402
from LegSegNetLib.device import available_cores  # noqa: E402
from LegSegNetLib.reading.volume_files import write_volume  # noqa: E402
from LegSegNetLib.settings import SegmentationSettings  # noqa: E402
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom  # noqa: E402

TESTING = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def no_process_left():
    """Every process a test starts (cluster workers, nannies, a scheduler) has ended when it returns."""
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    yield
    started = [child for child in psutil.Process().children(recursive=True) if child.pid not in before]
    _, alive = psutil.wait_procs([process for process in started if _running(process)], timeout=20)
    running = [process for process in alive if _running(process)]
    for process in running:
        process.kill()
    assert not running, f"processes left running: {[process.cmdline() for process in running]}"


def _running(process) -> bool:
    """Alive and not multiprocessing's resource tracker (one per Python process that starts others, by design)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False


def write_phantoms(folder: Path, names, marks=None):
    """Small two-leg phantoms, one seed per name; `marks` gives some of them a marker HU block."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        ct, _ = make_leg_phantom(seed=seed, shape=(3, 64, 64))
        if marks and name in marks:
            ct = mark_input(ct, marks[name])
        write_volume(ct, folder / f"{name}.nrrd")
    return folder


def segment(*argv, engine=None):
    args = build_parser().parse_args(["segment", *map(str, argv)])
    return segment_command(args, engine)


def serial_results(tmp_path, inputs):
    out = tmp_path / "serial"
    assert main(["segment", str(inputs), "--engine", "threshold", "--output-dir", str(out)]) == 0
    return out


def assert_same_files(expected: Path, actual: Path):
    """The same visible files with the same bytes (labels, records, tables)."""
    names = sorted(path.name for path in expected.iterdir())
    assert sorted(path.name for path in actual.iterdir() if not path.name.startswith(".")) == names
    for name in names:
        assert (actual / name).read_bytes() == (expected / name).read_bytes(), name


def test_local_cluster_gives_the_serial_results_and_a_rerun_rebuilds_lost_tables(tmp_path, capsys, caplog,
                                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    inputs = write_phantoms(Path("cts"), ["a", "b", "c", "d"])  # relative: the tables name inputs as given
    serial = serial_results(tmp_path, inputs)
    out = tmp_path / "cohort"
    argv = ["segment", str(inputs), "--engine", "threshold", "--output-dir", str(out), "--workers", "2"]
    assert main(argv) == 0
    assert_same_files(serial, out)

    (out / "measurements.csv").unlink()  # the client died before writing the tables
    labels_time = (out / "a.seg.nrrd").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(argv) == 0
    assert caplog.text.count("already done, skipped") == 4
    assert (out / "a.seg.nrrd").stat().st_mtime_ns == labels_time
    assert_same_files(serial, out)

    assert main([*argv, "--range", "1:3"]) == 2  # other settings: refused before any work, as in a serial run
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [1, 2])
def test_each_worker_process_builds_its_engine_once_with_its_share_of_the_cores(tmp_path, workers):
    inputs = write_phantoms(tmp_path / "cts", ["a", "b", "c", "d", "e"])
    out = tmp_path / "out"
    jobs = [Job(path, path.stem, out / f"{path.stem}.nii.gz", out / f"{path.stem}{RECORD_SUFFIX}")
            for path in sorted(inputs.iterdir())]
    notes = tmp_path / "builds"
    notes.mkdir()
    settings = SegmentationSettings(engine="legsegnet", model="stand-in")  # a model engine: torch threads are set
    result = run_cohort(jobs, settings, Cluster(workers=workers), functools.partial(noted_threshold_engine, notes))
    assert len(result.records) == 5 and not result.failed
    builds = [note.read_text().split() for note in notes.iterdir()]
    assert 1 <= len(builds) == len({pid for pid, _ in builds}) <= workers  # once per process, not per input
    assert {int(threads) for _, threads in builds} == {max(1, available_cores() // workers)}


def test_a_lost_worker_costs_only_its_task_and_a_poison_input_fails_alone(tmp_path, caplog):
    inputs = write_phantoms(tmp_path / "cts", ["a", "b", "c"])
    serial = serial_results(tmp_path, inputs)
    bad = write_phantoms(tmp_path / "bad", ["poison"], {"poison": POISON_HU})
    (bad / "broken.nrrd").write_bytes(b"NRRD0004\nnonsense")
    out = tmp_path / "cohort"
    killer = WorkerKillingEngine(once_marker=tmp_path / "killed-once")
    with caplog.at_level(logging.INFO):
        status = segment(inputs, bad, "--engine", "threshold", "--output-dir", out, "--workers", "2", engine=killer)
    assert status == 1
    assert (tmp_path / "killed-once").exists()  # one worker died mid-task; its input was redone elsewhere
    assert "poison.nrrd: failed: its worker process died on every try" in caplog.text
    assert "broken.nrrd: failed" in caplog.text
    assert_same_files(serial, out)


def test_an_input_error_is_one_line_without_a_traceback_from_the_worker(tmp_path, caplog, capfd):
    inputs = write_phantoms(tmp_path / "cts", ["a"])
    (inputs / "broken.nrrd").write_bytes(b"NRRD0004\nnonsense")
    with caplog.at_level(logging.INFO):
        assert main(["segment", str(inputs), "--engine", "threshold", "--output-dir", str(tmp_path / "out"),
                     "--workers", "1"]) == 1
    assert "broken.nrrd: failed" in caplog.text and "a.nrrd: 3 slices labelled" in caplog.text
    assert "Traceback" not in capfd.readouterr().err  # the worker process writes to the same stderr


def test_an_empty_range_of_the_one_input_is_a_usage_error_as_in_a_serial_run(tmp_path, capsys):
    inputs = write_phantoms(tmp_path / "cts", ["a"])
    argv = ["segment", str(inputs / "a.nrrd"), "--engine", "threshold", "--range", "10:20",
            "--labelmap", str(tmp_path / "a.seg.nrrd")]
    assert main(argv) == 2
    serial_error = capsys.readouterr().err
    assert main([*argv, "--workers", "1"]) == 2
    assert capsys.readouterr().err == serial_error and "selects no slice" in serial_error


def test_a_retried_task_may_replace_only_what_this_run_wrote(tmp_path, monkeypatch):
    """A worker lost between writing the labels and the record leaves labels its input's retry must replace;
    labels that were there before the run stay protected, as in a serial run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    fresh = Job(Path("a.nrrd"), "a", Path("out/a.seg.nrrd"), Path(f"out/a{RECORD_SUFFIX}"))
    sent = cohort.job_for_worker(fresh)
    assert sent.overwrite and sent.input == tmp_path / "a.nrrd" and sent.labelmap == tmp_path / "out" / "a.seg.nrrd"
    (tmp_path / "out" / "a.seg.nrrd").write_bytes(b"labels from before this run")
    assert not cohort.job_for_worker(fresh).overwrite


class SchedulerInfoOnly:
    """A client that only reports its workers."""

    def __init__(self, *workers):
        self.workers = {f"tcp://10.0.0.{number}:1": worker for number, worker in enumerate(workers)}

    def scheduler_info(self, n_workers):
        return {"workers": self.workers}


def test_inputs_ask_for_a_gpu_only_where_workers_offer_one_and_the_model_may_use_it(caplog):
    gpu, cpu, two_threads = {"nthreads": 1, "resources": {"GPU": 1}}, {"nthreads": 1}, {"nthreads": 2}
    model = SegmentationSettings(model="stand-in")
    assert cohort._resources(SchedulerInfoOnly(gpu, cpu), model) == {"GPU": 1}
    assert cohort._resources(SchedulerInfoOnly(gpu), model.replace(device="cuda:0")) == {"GPU": 1}
    assert cohort._resources(SchedulerInfoOnly(gpu), model.replace(device="cpu")) is None
    assert cohort._resources(SchedulerInfoOnly(gpu), SegmentationSettings(engine="threshold")) is None
    assert cohort._resources(SchedulerInfoOnly(cpu), model) is None
    assert "--nthreads 1" not in caplog.text
    cohort._resources(SchedulerInfoOnly(cpu, two_threads), model)
    assert "several inputs at once with one model" in caplog.text and "--nthreads 1" in caplog.text


@pytest.fixture
def scheduler_with_two_workers(tmp_path):
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1, in another working folder, configured as the
    README says; a task whose worker dies twice is given up."""
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTING.parent), str(TESTING)]),
           "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1",
           "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0"}
    log_file = open(tmp_path / "dask.log", "wb")
    processes = []

    def start(module, *arguments):
        processes.append(subprocess.Popen([sys.executable, "-m", f"distributed.cli.{module}", *arguments,
                                           "--scheduler-file", str(scheduler_file), "--no-dashboard"],
                                          cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT))

    try:
        start("dask_scheduler", "--host", "127.0.0.1", "--port", "0")
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        for _ in range(2):
            start("dask_worker", "--host", "127.0.0.1", "--nthreads", "1")
        yield json.loads(scheduler_file.read_text())["address"]
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log_file.close()


def test_separately_started_scheduler_and_workers(tmp_path, caplog, scheduler_with_two_workers):
    inputs = write_phantoms(tmp_path / "cts", ["a", "b", "c"])
    serial = serial_results(tmp_path, inputs)
    bad = write_phantoms(tmp_path / "bad", ["poison"], {"poison": POISON_HU})
    out = tmp_path / "cohort"
    killer = WorkerKillingEngine(once_marker=tmp_path / "killed-once")
    with caplog.at_level(logging.INFO):
        status = segment(inputs, bad, "--engine", "threshold", "--output-dir", out,
                         "--scheduler", scheduler_with_two_workers, engine=killer)
    assert status == 1
    assert (tmp_path / "killed-once").exists()
    assert "poison.nrrd: failed: its worker process died on every try" in caplog.text
    assert_same_files(serial, out)


SEGMENT_WITH_STALLING_ENGINE = """
import sys
import LegSegNetLib.cli.segment as segment
from cohort_engines import WorkerKillingEngine
from LegSegNetLib.cli import main
segment.create_engine = lambda settings: WorkerKillingEngine()
sys.exit(main(sys.argv[1:]))
"""  # `legsegnet` with the test engine: a minute on inputs marked STALL_HU


def test_ctrl_c_in_the_terminal_keeps_the_finished_inputs_recorded(tmp_path):
    """SIGINT to the whole process group, as a terminal sends it: the client stops the workers and says what is
    kept; no worker prints a traceback."""
    inputs = write_phantoms(tmp_path / "cts", ["a", "stall"], {"stall": STALL_HU})
    out = tmp_path / "cohort"
    command = [sys.executable, "-c", SEGMENT_WITH_STALLING_ENGINE, "segment", str(inputs), "--engine", "threshold",
               "--output-dir", str(out), "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTING.parent), str(TESTING)])}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines = []
        for line in process.stderr:
            lines.append(line)
            if "a.nrrd: 3 slices labelled" in line:
                os.killpg(process.pid, signal.SIGINT)
                break
        lines += process.stderr.readlines()
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    messages = "".join(lines)
    assert sorted(path.name for path in out.iterdir() if not path.name.startswith(".")) == [
        "a.measurements.json", "a.seg.nrrd"]
    assert "interrupted: 1 of the 2 inputs sent to the cluster finished, kept in" in messages
    assert "the same command continues" in messages and "Traceback" not in messages


def test_cluster_options_and_their_errors(tmp_path, capsys, monkeypatch):
    inputs = write_phantoms(tmp_path / "cts", ["a"])
    base = ["segment", str(inputs), "--engine", "threshold", "--output-dir", str(tmp_path / "out")]
    for extra in (["--workers", "0"], ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*base, *extra])
    monkeypatch.setattr(cohort, "CONNECT_TIMEOUT_S", 1)
    assert main([*base, "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the dask extra were not installed
    assert main([*base, "--workers", "2"]) == 2
    assert "pip install 'legsegnet-slicer[dask]'" in capsys.readouterr().err
    for wrong in ({}, {"scheduler": " "}, {"scheduler": "tcp://node1:8786", "workers": 2}):
        with pytest.raises(ClusterError):
            Cluster(**wrong)
    assert not (tmp_path / "out" / "a.seg.nrrd").exists()


class RecipeStopped(Exception):
    """Raised by a stand-in SLURMCluster, with the arguments the recipe gave it."""


def test_readme_slurm_recipe_makes_single_threaded_gpu_workers_in_this_environment(monkeypatch):
    slurm = pytest.importorskip("dask_jobqueue.slurm")
    readme = (TESTING.parent / "README.md").read_text(encoding="utf-8")
    recipe = next(block for block in readme.split("```python\n")[1:] if "SLURMCluster(" in block).split("```")[0]

    def stand_in(**arguments):
        raise RecipeStopped(arguments)

    jobqueue, dask = types.ModuleType("dask_jobqueue"), types.ModuleType("dask")
    jobqueue.SLURMCluster = stand_in
    scheduler_config = {}
    dask.config = types.SimpleNamespace(set=scheduler_config.update)  # not this process's own configuration
    monkeypatch.setitem(sys.modules, "dask_jobqueue", jobqueue)
    monkeypatch.setitem(sys.modules, "dask", dask)
    with pytest.raises(RecipeStopped) as stopped:
        exec(compile(recipe, "README.md", "exec"), {"__name__": "slurm_cohort"})
    assert scheduler_config == {key: value for key, value in cohort.LOCAL_CLUSTER_CONFIG.items() if "scheduler" in key}
    script = slurm.SLURMJob(scheduler="tcp://127.0.0.1:8786", name="worker", **stopped.value.args[0]).job_script()
    assert "#SBATCH --cpus-per-task=8" in script and "#SBATCH --gres=gpu:1" in script
    assert f"{sys.executable} -m distributed.cli.dask_worker" in script
    assert "--nthreads 1" in script and "--resources GPU=1" in script
    assert "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False" in script


def test_errors_travel_back_from_workers_intact_or_as_their_message():
    import pickle

    from LegSegNetLib.cohort import InputFailed, _relayable
    from LegSegNetLib.writing.outputs import OutputExistsError

    exists = OutputExistsError(Path("out") / "leg.seg.nrrd")
    relayed = pickle.loads(pickle.dumps(_relayable(exists)))  # as the client receives it
    assert type(relayed) is OutputExistsError and str(relayed) == str(exists)

    relayed = pickle.loads(pickle.dumps(_relayable(RuntimeSaidNo("the runtime said no"))))
    assert type(relayed) is InputFailed and str(relayed) == "the runtime said no"


class RuntimeSaidNo(RuntimeError):
    """A third party's error (picklable here): the client may lack its package, so only its message travels."""
