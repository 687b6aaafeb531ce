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
