"""The pipeline prepares the next batch in a background thread while the engine's network runs."""

import threading

import numpy as np
import pytest

from LegSegNetLib.segmenting.engines.base import PreparingSliceEngine
from LegSegNetLib.progress import Cancelled
from LegSegNetLib.segmenting.pipeline import segment_volume
from LegSegNetLib.reading.volume import Volume
from LegSegNetLib.settings import SegmentationSettings

WAIT_S = 10.0


class _SplitEngine:
    """Labels muscle-range HU; its 'network' step waits until the next batch's preparation has begun."""

    name = "split"
    in_plane_orientation = "PL"

    def __init__(self, batches_expected):
        self.prepared_batches = []
        self.prepare_started = [threading.Event() for _ in range(batches_expected)]
        self.prepare_threads = set()
        self.overlapped = []

    def prepare_slices(self, hu_slices, pixel_spacing_mm):
        number = len(self.prepared_batches)
        self.prepared_batches.append(hu_slices[:, 0, 0].copy())
        self.prepare_threads.add(threading.get_ident())
        self.prepare_started[number].set()
        return number, (hu_slices > 0) & (hu_slices < 150)

    def segment_prepared(self, prepared):
        number, muscle = prepared
        if number + 1 < len(self.prepare_started):
            self.overlapped.append(self.prepare_started[number + 1].wait(WAIT_S))
        return np.where(muscle, 2, 0).astype(np.uint8)

    def segment_slices(self, hu_slices, pixel_spacing_mm):
        return self.segment_prepared((0, self.prepare_slices(hu_slices, pixel_spacing_mm)[1]))


def _volume(slices=7):
    rng = np.random.default_rng(0)
    array = rng.integers(-300, 300, size=(slices, 6, 5)).astype(np.int16)
    array[:, 0, 0] = np.arange(slices)  # identifies each slice
    return Volume(array, np.diag([-1.0, -1.0, 2.0, 1.0]))


def test_next_batch_is_prepared_while_the_current_one_is_segmented():
    volume = _volume()
    engine = _SplitEngine(batches_expected=4)
    assert isinstance(engine, PreparingSliceEngine)

    labels = segment_volume(volume, engine, batch_size=2)

    expected = np.where((volume.array > 0) & (volume.array < 150), 2, 0)
    np.testing.assert_array_equal(labels.array, expected)
    assert engine.overlapped == [True, True, True]
    assert threading.get_ident() not in engine.prepare_threads
    # Each slice prepared once, in order.
    np.testing.assert_array_equal(np.concatenate(engine.prepared_batches), np.arange(7))


def test_cancel_stops_the_background_preparation():
    volume = _volume(slices=12)
    engine = _SplitEngine(batches_expected=6)

    with pytest.raises(Cancelled):
        segment_volume(volume, engine, batch_size=2, progress=lambda done, total: done < 4)

    # Batches 1-2 segmented, batch 3 prepared ahead; nothing after, and no thread left working.
    assert len(engine.prepared_batches) == 3
    assert not any(thread.name.startswith("legsegnet-prepare") for thread in threading.enumerate())


def test_legsegnet_engine_cancel_waits_for_one_network_pass_at_most(tmp_path):
    from model_factory import make_model_folder

    from LegSegNetLib.segmenting.engines.nnunet.engine import LegSegNetEngine

    engine = LegSegNetEngine.from_model_folder(make_model_folder(tmp_path / "model"), SegmentationSettings(device="cpu", batch_size=2))
    volume = _volume(slices=6)
    reports = []

    def cancel_after_first_pass(done, total):
        reports.append(done)
        return done == 0

    with pytest.raises(Cancelled):
        segment_volume(volume, engine, progress=cancel_after_first_pass)
    assert reports == [0, engine.preferred_batch_size]


def _jobs(folder, count):
    """`count` phantom inputs in `folder`, each a job writing its labels and record beside it."""
    from test_cli_segment import phantom_ct

    from LegSegNetLib.batch import Job
    from LegSegNetLib.reading.volume_files import write_volume

    jobs = []
    for number in range(count):
        path = folder / f"leg{number}.nii.gz"
        write_volume(phantom_ct(), path)
        jobs.append(Job(path, path.name, folder / f"leg{number}.seg.nrrd", folder / f"leg{number}.json"))
    return jobs


def test_the_first_input_to_do_is_read_while_the_engine_loads(tmp_path, monkeypatch):
    from hu_band_engine import HUBandEngine

    from LegSegNetLib import batch

    jobs = _jobs(tmp_path, 3)
    settings = SegmentationSettings(engine="threshold")
    batch.process_job(jobs[0], HUBandEngine(), settings)  # done: its record and labels exist
    reads, read_started, real_read = [], threading.Event(), batch.read_volume

    def read_volume(path):
        reads.append((path, threading.current_thread() is threading.main_thread()))
        read_started.set()
        return real_read(path)

    def load_engine():
        assert read_started.wait(WAIT_S), "the input was not read while the engine loaded"
        return HUBandEngine()

    monkeypatch.setattr(batch, "read_volume", read_volume)
    engine, read_already = batch.load_engine_reading_first_input(jobs, settings, load_engine)
    assert list(read_already) == [jobs[1]] and reads == [(jobs[1].input, False)]

    result = batch.run_batch(jobs, engine, settings, read_already=read_already)

    assert [path for path, _ in reads] == [jobs[1].input, jobs[2].input]  # each read once, the rest in turn
    assert reads[1][1] and not result.failed
    (tmp_path / "serial").mkdir()
    serial = batch.process_job(_jobs(tmp_path / "serial", 2)[1], HUBandEngine(), settings)
    assert {**result.records[1], "input": ""} == {**serial, "input": ""}


def test_a_first_input_that_cannot_be_read_fails_alone(tmp_path):
    from hu_band_engine import HUBandEngine

    from LegSegNetLib import batch

    jobs = _jobs(tmp_path, 2)
    jobs[0].input.write_bytes(b"not an image")
    settings = SegmentationSettings(engine="threshold")

    engine, read_already = batch.load_engine_reading_first_input(jobs, settings, HUBandEngine)
    result = batch.run_batch(jobs, engine, settings, read_already=read_already)

    assert result.failed == [jobs[0].input] and len(result.records) == 1 and jobs[1].record.exists()


def test_the_label_map_is_written_while_the_labels_are_measured(tmp_path, monkeypatch):
    from hu_band_engine import HUBandEngine

    from LegSegNetLib import batch
    from LegSegNetLib.segmenting import run

    job = _jobs(tmp_path, 1)[0]
    writing, real_write, real_measure = threading.Event(), batch.write_labelmap_into, run.measure_labels

    def write_labelmap_into(*args):
        writing.set()
        return real_write(*args)

    def measure_labels(*args, **kwargs):
        assert writing.wait(WAIT_S), "the label map was not being written while the labels were measured"
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(batch, "write_labelmap_into", write_labelmap_into)
    monkeypatch.setattr(run, "measure_labels", measure_labels)
    batch.process_job(job, HUBandEngine(), SegmentationSettings(engine="threshold"))

    from LegSegNetLib.reading.volume_files import read_volume

    assert np.array_equal(read_volume(job.labelmap).array, HUBandEngine().segment_slices(
        read_volume(job.input).array, (1.0, 1.0)))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["leg0.json", "leg0.nii.gz", "leg0.seg.nrrd"]


@pytest.mark.parametrize("failing", ["measure_labels", "write_labelmap_into"])
def test_nothing_lands_when_measuring_or_writing_fails(tmp_path, monkeypatch, failing):
    from hu_band_engine import HUBandEngine

    from LegSegNetLib import batch
    from LegSegNetLib.segmenting import run

    job = _jobs(tmp_path, 1)[0]

    def fail(*args, **kwargs):
        raise ValueError(f"{failing} failed")

    monkeypatch.setattr(run if failing == "measure_labels" else batch, failing, fail)
    with pytest.raises(ValueError, match=f"{failing} failed"):
        batch.process_job(job, HUBandEngine(), SegmentationSettings(engine="threshold"))
    assert [path.name for path in tmp_path.iterdir()] == ["leg0.nii.gz"]  # no label map, record or partial file


def test_an_existing_label_map_is_refused_before_the_input_is_segmented(tmp_path):
    from LegSegNetLib import batch
    from LegSegNetLib.writing.outputs import OutputExistsError

    job = _jobs(tmp_path, 1)[0]
    job.labelmap.write_text("the user's file")

    class NeverCalled:
        name, in_plane_orientation = "never", "PL"

        def segment_slices(self, hu_slices, pixel_spacing_mm):
            raise AssertionError("segmented although the output is refused")

    with pytest.raises(OutputExistsError):
        batch.process_job(job, NeverCalled(), SegmentationSettings(engine="threshold"))
    assert job.labelmap.read_text() == "the user's file"


def test_the_first_input_is_let_go_once_it_is_segmented(tmp_path, monkeypatch):
    import gc
    import weakref

    from hu_band_engine import HUBandEngine

    from LegSegNetLib import batch

    jobs, settings, first_ct = _jobs(tmp_path, 2), SegmentationSettings(engine="threshold"), []
    engine, read_already = batch.load_engine_reading_first_input(jobs, settings, HUBandEngine)
    real_process = batch.process_job

    def process_job(job, *args):
        if job is jobs[0]:
            first_ct.append(weakref.ref(args[-1].ct))
        else:
            gc.collect()
            assert first_ct[0]() is None, "the first input's volume is still held while the second is segmented"
        return real_process(job, *args)

    monkeypatch.setattr(batch, "process_job", process_job)
    assert not batch.run_batch(jobs, engine, settings, read_already=read_already).failed


def test_a_failed_engine_load_does_not_wait_for_the_read(tmp_path, monkeypatch):
    from LegSegNetLib import batch

    jobs, release, read_done = _jobs(tmp_path, 1), threading.Event(), threading.Event()

    def slow_read(path):
        release.wait(WAIT_S)
        read_done.set()

    monkeypatch.setattr(batch, "read_volume", slow_read)

    def load_engine():
        raise ValueError("no such model")

    try:
        with pytest.raises(ValueError, match="no such model"):
            batch.load_engine_reading_first_input(jobs, SegmentationSettings(engine="threshold"), load_engine)
        assert not read_done.is_set()  # raised while the read still ran
    finally:
        release.set()


def test_waiting_for_the_writer_rides_out_an_interrupt(monkeypatch):
    from concurrent.futures import Future

    from LegSegNetLib import batch

    written, calls, real_wait = Future(), [], batch.wait

    def interrupted_once(futures):
        calls.append(len(futures))
        if len(calls) == 1:
            threading.Timer(0.05, written.set_result, (None,)).start()  # the writer finishes a moment later
            raise KeyboardInterrupt
        return real_wait(futures)

    monkeypatch.setattr(batch, "wait", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        batch._wait_through_interrupts([written])
    assert written.done() and calls == [1, 1]


def test_a_failed_model_load_ends_the_command_cleanly_while_the_input_is_still_read(tmp_path):
    """The reader thread is still inside SimpleITK when the error is printed: the process must wait for it, not
    tear it down at exit (a daemon thread there aborts the whole process)."""
    import subprocess
    import sys

    import SimpleITK as sitk

    array = np.full((300, 512, 512), -1000, np.int16)  # large enough to be read still when the load fails
    array[:, 100:400, 100:400] = 40
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "ct.nii"))
    result = subprocess.run([sys.executable, "-m", "LegSegNetLib", "segment", str(tmp_path / "ct.nii"), "--model",
                             str(tmp_path / "no-such-model"), "--labelmap", str(tmp_path / "labels.seg.nrrd")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-500:]
    assert "cannot load the legsegnet engine: model folder not found" in result.stderr


def test_an_interrupt_while_the_label_map_is_written_leaves_no_partial_file(tmp_path, monkeypatch):
    import time

    from LegSegNetLib import batch
    from LegSegNetLib.tissues import LEGSEGNET_LABELS

    job = _jobs(tmp_path, 1)[0]
    real_write, real_wait, waits = batch.write_labelmap_into, batch.wait, []

    def slow_write(*args):
        time.sleep(0.3)
        return real_write(*args)

    def interrupted_wait(futures):  # Ctrl+C arrives while the writer is waited for
        waits.append(futures)
        if len(waits) == 1:
            raise KeyboardInterrupt
        return real_wait(futures)

    monkeypatch.setattr(batch, "write_labelmap_into", slow_write)
    monkeypatch.setattr(batch, "wait", interrupted_wait)
    labels = Volume(np.zeros((2, 4, 4), np.uint8), np.eye(4))
    with pytest.raises(KeyboardInterrupt):
        with batch._labelmap_written_meanwhile(job) as labels_ready:
            labels_ready(labels, LEGSEGNET_LABELS)
            raise KeyboardInterrupt  # the first Ctrl+C, during the measurements
    time.sleep(0.5)  # had the writer been left running, its file would appear now
    assert sorted(path.name for path in tmp_path.iterdir()) == ["leg0.nii.gz"]
