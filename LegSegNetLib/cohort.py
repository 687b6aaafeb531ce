"""A batch of segmentation jobs on a Dask cluster: a laptop's cores, a GPU node or a SLURM allocation.

The client (the `legsegnet segment` process) plans the jobs as for a serial run, reads back the records of done
inputs itself and sends every other input to the cluster as one task. The task runs batch.process_job on a
worker, which writes the input's outputs atomically into the shared output folder, its record last, so the
guarantees of the serial batch hold: a record marks its input done, nothing existing is replaced without
--overwrite. Each worker process builds its engine (loads the model) for its first input and keeps it for the
next ones. The caller writes the run's tables from the returned records at the end; a crash of the client loses
nothing a re-run (which skips done inputs and rebuilds the tables) cannot restore.

A worker process lost mid-task (killed, out of memory) costs only that task: the scheduler gives it to another
worker, at most `distributed.scheduler.allowed-failures` times (WORKER_LOSSES_ALLOWED for the local cluster
started here); an input still failing then, or raising an error, is reported as failed and the others go on.
`distributed` is imported only when a cluster is used (optional extra `dask`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import pickle
import signal
import sys
import traceback
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from LegSegNetLib.batch import BatchResult, Job, ends_the_run, label_set_of, process_job, reuse_done_job
from LegSegNetLib.device import available_cores
from LegSegNetLib.segmenting.engines.base import SliceEngine
from LegSegNetLib.segmenting.engines.factory import create_engine
from LegSegNetLib.settings import SegmentationSettings

log = logging.getLogger("legsegnet")

WORKER_LOSSES_ALLOWED = 2  # retries after a worker died running the input; the third death marks it failed
LOCAL_CLUSTER_CONFIG = {
    "distributed.scheduler.allowed-failures": WORKER_LOSSES_ALLOWED,
    # One task on a worker per thread, none queued behind it: when a worker dies, only the input it was running
    # counts the death.
    "distributed.scheduler.worker-saturation": 1.0,
    # Dask's sampling profiler (every 10 ms) and event-loop watchdog (every 20 ms) cost 2-3 % of a core per
    # process, idle or not, for diagnostics no one reads here.
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
}
GPU_RESOURCE = "GPU"  # `dask worker --resources GPU=1`: one input at a time on the worker's GPU
CONNECT_TIMEOUT_S = 30
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
INSTALL_HINT = "pip install 'legsegnet-slicer[dask]'"
LOGGERS_TO_RELAY = ("legsegnet", "LegSegNetLib")  # the core's messages, shown by the client


class ClusterError(ValueError):
    """The cluster cannot be used as asked; the message says what to do."""


class InputFailed(Exception):
    """An input's error on a worker that cannot travel to the client, brought back as its message."""


@dataclass(frozen=True)
class Cluster:
    """Where the tasks run: a running scheduler's address, or a local cluster of this many worker processes."""

    scheduler: Optional[str] = None
    workers: Optional[int] = None

    def __post_init__(self):
        if (self.scheduler is None) == (self.workers is None):
            raise ClusterError("give either the address of a Dask scheduler or a number of local workers")
        if self.scheduler is not None and not self.scheduler.strip():  # Dask would start a cluster of its own
            raise ClusterError("the scheduler address is empty: give one such as tcp://node1:8786")
        if self.workers is not None and self.workers < 1:
            raise ClusterError(f"a local cluster needs at least one worker, not {self.workers}")


def run_cohort(jobs: list, settings: SegmentationSettings, cluster: Cluster,
               engine_factory: Callable[[SegmentationSettings], SliceEngine] = create_engine,
               stream=None) -> BatchResult:
    """Process every job on `cluster`, carrying on past failures (each logged); the records come in job order.
    `engine_factory(settings)` builds a worker's engine (it must be picklable); `stream` shows the progress bar
    when it is a terminal (default stderr)."""
    records, failed = {}, {}
    for index, job in enumerate(jobs):
        if job.done:
            _record_outcome(index, jobs, records, failed, lambda: reuse_done_job(job, label_set_of(settings)))
    pending = {index: job_for_worker(job) for index, job in enumerate(jobs) if not job.done}
    if pending:
        with _client(cluster) as client:
            _run_tasks(client, jobs, pending, settings, engine_factory, records, failed, stream or sys.stderr)
    return BatchResult([records[index] for index in sorted(records)], [jobs[index].input for index in sorted(failed)])


def job_for_worker(job: Job) -> Job:
    """The job as a worker needs it: absolute paths (the worker's working folder may differ; the records keep the
    input as named), and leave to replace the outputs of an earlier try of this run whose worker was lost (files
    that did not exist before the run)."""
    outputs = (job.labelmap, job.record, job.overlay)
    untouched = not any(path is not None and path.exists() for path in outputs)
    paths = {name: getattr(job, name) for name in ("input", "labelmap", "record", "overlay")}
    return dataclasses.replace(job, **{name: path.absolute() for name, path in paths.items() if path is not None},
                               overwrite=job.overwrite or untouched, given_as=job.input_name_given)


def segment_on_worker(job: Job, settings: SegmentationSettings, engine_factory) -> tuple:
    """The task: one input segmented, measured and written by a worker; returns its record, the log messages
    (level, text) the client shows and, when the input failed, its error as (error, traceback) in place of the
    record: an error raised out of the task would be logged by the worker with its traceback, besides the
    client's one line."""
    with _captured_messages() as messages:
        try:
            engine = _engine_of_this_process(settings, engine_factory)
            return process_job(job, engine, settings), messages, None
        except Exception as error:
            return None, messages, (_relayable(error), traceback.format_exc())


def _run_tasks(client, jobs: list, pending: dict, settings, engine_factory, records: dict, failed: dict,
               stream) -> None:
    from distributed import as_completed

    resources = _resources(client, settings)
    futures = {client.submit(segment_on_worker, job, settings, engine_factory, resources=resources, pure=False,
                             key=f"legsegnet-{job.name}-{uuid.uuid4().hex[:8]}"): index
               for index, job in pending.items()}
    with _progress_bar(len(futures), stream) as bar:
        try:
            for future in as_completed(futures):
                index = futures[future]
                _record_outcome(index, jobs, records, failed, lambda: _relayed(future.result()))
                bar.set_postfix(failed=len(failed), refresh=False)
                bar.update()
        except KeyboardInterrupt:
            client.cancel(list(futures))
            _say_what_is_kept(pending.values())
            raise


def _say_what_is_kept(jobs) -> None:
    """Finished inputs are recorded by their workers, also those whose result the client has not seen yet."""
    recorded = [job.record for job in jobs if job.record is not None and job.record.exists()]
    if recorded:
        log.warning("interrupted: %d of the %d inputs sent to the cluster finished, kept in %s; the same command "
                    "continues with the others", len(recorded), len(jobs), recorded[0].parent)


def _record_outcome(index: int, jobs: list, records: dict, failed: dict, outcome: Callable[[], dict]) -> None:
    try:
        records[index] = outcome()
    except Exception as error:  # one bad input must not stop a cohort
        if ends_the_run(error, len(jobs)):  # the serial batch's rule, for the same exit status
            raise
        log.debug("details", exc_info=True)
        log.error("%s: failed: %s", jobs[index].input, _failure_text(error))
        failed[index] = error


def _relayed(result: tuple) -> dict:
    record, messages, error = result
    for level, text in messages:
        log.log(level, text)
    if error is not None:
        error, details = error
        log.debug("details, on the worker:\n%s", details)
        raise error
    return record


def _relayable(error: Exception) -> Exception:
    """The error itself when it arrives intact at the client, whose rules go by its type: a Python or LegSegNet
    error that unpickles as the same type and message. Else its message (the client may lack the package that
    raised it, and an exception that rebuilds itself from its message would garble it)."""
    if type(error).__module__.split(".")[0] in ("builtins", "LegSegNetLib"):
        try:
            copy = pickle.loads(pickle.dumps(error))
        except Exception:  # anything may fail in a third party's pickling
            copy = None
        if type(copy) is type(error) and str(copy) == str(error):
            return error
    return InputFailed(str(error))


def _failure_text(error: Exception) -> str:
    from distributed import KilledWorker  # only reached with a cluster: distributed is installed

    if isinstance(error, KilledWorker):
        return ("its worker process died on every try (out of memory, or a crash while reading or segmenting "
                "it); the other inputs went on")
    return str(error)


def _resources(client, settings: SegmentationSettings) -> Optional[dict]:
    """A GPU per task when the cluster has GPU workers and the model may use one; also warns about workers
    that would run several inputs at once."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    if any(worker.get("nthreads", 1) > 1 for worker in workers):
        log.warning("some Dask workers run several threads: they segment several inputs at once with one model; "
                    "start workers with --nthreads 1 (see README)")
    gpu_workers = [worker for worker in workers if worker.get("resources", {}).get(GPU_RESOURCE)]
    if settings.uses_model and settings.device != "cpu" and gpu_workers:
        return {GPU_RESOURCE: 1}
    return None


@contextmanager
def _client(cluster: Cluster) -> Iterator:
    try:
        import distributed  # noqa: F401 (only whether it is installed: _connected imports what it uses)
    except ImportError as error:
        raise ClusterError(f"running on a Dask cluster needs Dask distributed: {INSTALL_HINT}") from error
    with _dask_messages_above_info(), _connected(cluster) as client:
        yield client


@contextmanager
def _connected(cluster: Cluster) -> Iterator:
    import dask
    from distributed import Client, LocalCluster

    if cluster.workers is not None:
        with dask.config.set(LOCAL_CLUSTER_CONFIG):
            local = LocalCluster(n_workers=cluster.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                 dashboard_address=":0", silence_logs=logging.ERROR)  # any free port, not 8787
        with local, Client(local) as client:
            client.register_plugin(_interrupts_left_to_the_client())
            yield client
        return
    try:
        client = Client(cluster.scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as error:
        raise ClusterError(f"cannot reach the Dask scheduler at {cluster.scheduler} ({error}); start one with "
                           "`dask scheduler` and its workers with `dask worker ADDRESS --nthreads 1`") from error
    with client:
        if not client.scheduler_info(n_workers=-1)["workers"]:
            log.info("no worker has joined the scheduler at %s yet: the inputs wait for one", cluster.scheduler)
        yield client


def _interrupts_left_to_the_client():
    """Ctrl-C in a terminal reaches a local cluster's worker processes too; the client alone handles it (it
    cancels the tasks and stops the workers), instead of every worker printing a traceback."""
    from distributed import WorkerPlugin

    class InterruptsIgnored(WorkerPlugin):
        name = "legsegnet-interrupts-ignored"

        def setup(self, worker):  # on the worker's main thread, also in a worker restarted after a crash
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    return InterruptsIgnored()


@contextmanager
def _dask_messages_above_info() -> Iterator[None]:
    """Dask's routine messages (workers joining, connections) only with --verbose; its warnings always."""
    dask_log = logging.getLogger("distributed")
    level = dask_log.level
    if not log.isEnabledFor(logging.DEBUG):
        dask_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        dask_log.setLevel(level)


@contextmanager
def _progress_bar(total: int, stream) -> Iterator:
    """Inputs done, failed and time left, on a terminal only; log lines are printed above the bar."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with tqdm(total=total, unit="input", file=stream, disable=not stream.isatty(), dynamic_ncols=True) as bar:
        if bar.disable:
            yield bar
            return
        with logging_redirect_tqdm():
            yield bar


# Worker side: one engine per process, kept for the inputs that follow.
_engines: dict = {}


def _engine_of_this_process(settings: SegmentationSettings, engine_factory) -> SliceEngine:
    import cloudpickle  # a dependency of distributed; the factory may arrive as a new object with every task

    key = (cloudpickle.dumps(engine_factory), settings)
    if key not in _engines:
        _engines.clear()  # one model per process: a run with other settings replaces it
        _large_arrays_from_the_heap()
        if settings.uses_model:
            _share_cores_with_sibling_workers()
        _engines[key] = engine_factory(settings)
    return _engines[key]


def _large_arrays_from_the_heap() -> None:
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_ set, which freezes glibc's mmap threshold at 128 KiB:
    every slice-sized array is then a fresh mapping whose pages fault in on first touch (measured: 50 times the
    page faults and +0.2 s CPU per 40-slice input with the threshold engine). Raising the threshold to glibc's own
    dynamic maximum (32 MiB on 64-bit) serves them from the heap again, as in a serial run."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: not affected
        return
    libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)


def _share_cores_with_sibling_workers() -> None:
    """Torch threads: this process's share of the cores, with the other workers of its host."""
    import torch
    from distributed import get_client, get_worker
    from distributed.comm import get_address_host

    workers = get_client().scheduler_info(n_workers=-1)["workers"]
    siblings = Counter(get_address_host(address) for address in workers)[get_address_host(get_worker().address)]
    torch.set_num_threads(max(1, available_cores() // max(1, siblings)))


class _MessageList(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelno, record.getMessage()))


@contextmanager
def _captured_messages() -> Iterator[list]:
    """The core's log messages during a task, kept for the client instead of the worker's own log."""
    handler = _MessageList()
    loggers = [logging.getLogger(name) for name in LOGGERS_TO_RELAY]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        yield handler.messages
    finally:
        for logger, (level, propagate) in zip(loggers, saved):
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
