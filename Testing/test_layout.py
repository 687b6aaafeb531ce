"""Axial slicing from direction cosines: the same physical scan stored any way gives the same slices."""

import itertools

import numpy as np
import pytest

from LegSegNetLib.reading.layout import OrientationError, slice_layout
from LegSegNetLib.reading.layout import EmptyRangeError, SliceRange
from LegSegNetLib.segmenting.pipeline import segment_volume
from LegSegNetLib.reading.volume import LPS_TO_RAS, Volume


def dicom_axial_volume(rng, shape=(5, 7, 9), spacing_ijk=(0.8, 0.9, 2.5)):
    """Stored like a DICOM axial series: i to patient left, j to posterior, k to superior (LPS identity)."""
    directions_ras = (LPS_TO_RAS[:3, :3] @ np.eye(3))
    return Volume.from_spacing(rng.normal(size=shape).astype(np.float32), spacing_ijk, (10.0, -20.0, 30.0), directions_ras)


ALL_STORAGES = [(order, flips) for order in itertools.permutations(range(3))
                for flips in itertools.product((False, True), repeat=3)]


@pytest.mark.parametrize("order,flips", ALL_STORAGES)
def test_every_storage_gives_the_radiological_picture(order, flips):
    original = dicom_axial_volume(np.random.default_rng(0))
    stored = original.reoriented(order, flips)
    # Same physical content: each voxel's value sits at the same RAS point.
    some = np.array([[1, 2, 3], [4, 6, 0], [0, 0, 8]])
    for kji in some:
        ras = original.ras_of_index(kji)
        new_kji = np.rint(stored.index_of_ras(ras)[0]).astype(int)
        assert stored.array[tuple(new_kji)] == original.array[tuple(kji)]

    expected = slice_layout(original).display_view(original.array)
    layout = slice_layout(stored)
    view = layout.display_view(stored.array)
    positions = layout.positions_mm
    if layout.superior_step_mm < 0:  # slices may run either way along S-I; compare in S order
        view, positions = view[::-1], positions[::-1]
    np.testing.assert_array_equal(view, expected)
    np.testing.assert_allclose(np.diff(positions), 2.5)
    assert (layout.spacing_row_mm, layout.spacing_column_mm) == pytest.approx((0.9, 0.8))


def test_radiological_display_puts_anterior_up_and_patient_right_on_the_left():
    # RAS-stored volume (i to the right, j anterior): bright voxel at the most anterior, rightmost corner.
    array = np.zeros((3, 4, 5), dtype=np.int16)
    array[1, 3, 4] = 1000  # j = 3 most anterior, i = 4 most right
    volume = Volume.from_spacing(array)
    view = slice_layout(volume).display_view(volume.array)
    assert view[1, 0, 0] == 1000


def test_slightly_oblique_volume_slices_along_nearest_axis():
    angle = np.deg2rad(8)
    tilt = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    # Array axis order chosen so that S-I lies along i (array axis 2).
    directions = tilt @ np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=float).T
    volume = Volume.from_spacing(np.zeros((4, 5, 6)), (3.0, 1.0, 1.0), directions_ras=directions)
    layout = slice_layout(volume)
    assert layout.slice_axis == 2
    assert layout.spacing_slice_mm == pytest.approx(3.0)


def test_model_declared_in_plane_orientation_is_honoured():
    volume = dicom_axial_volume(np.random.default_rng(1))
    radiological = slice_layout(volume, "PL").display_view(volume.array)
    neurological = slice_layout(volume, "PR").display_view(volume.array)
    np.testing.assert_array_equal(neurological, radiological[:, :, ::-1])
    with pytest.raises(OrientationError, match="perpendicular"):
        slice_layout(volume, "PA")
    with pytest.raises(OrientationError, match="two of"):
        slice_layout(volume, "up")


class _RecordingEngine:
    """Labels pixels above 0 HU as 2 and records the batches it was given."""

    name = "recording"
    in_plane_orientation = "PL"

    def __init__(self):
        self.calls = []

    def segment_slices(self, hu_slices, pixel_spacing_mm):
        self.calls.append((hu_slices.shape, pixel_spacing_mm))
        return np.where(hu_slices > 0, 2, 0).astype(np.uint8)


@pytest.mark.parametrize("order,flips", ALL_STORAGES[::5])
def test_labels_land_on_the_input_grid_in_any_storage(order, flips):
    volume = dicom_axial_volume(np.random.default_rng(2)).reoriented(order, flips)
    volume.array[:] += 0.0
    labels = segment_volume(volume, _RecordingEngine(), batch_size=2)
    np.testing.assert_array_equal(labels.ijk_to_ras, volume.ijk_to_ras)
    np.testing.assert_array_equal(labels.array, np.where(volume.array > 0, 2, 0))


def test_range_and_empty_slices_are_skipped_and_cancel_stops():
    volume = dicom_axial_volume(np.random.default_rng(3), shape=(6, 4, 4))
    volume.array[0] = -1000  # air only: no body
    engine = _RecordingEngine()
    labels = segment_volume(volume, engine, SliceRange(0, 4))
    assert sum(shape[0] for shape, _ in engine.calls) == 3
    assert not labels.array[0].any() and not labels.array[4:].any()

    with pytest.raises(EmptyRangeError):
        segment_volume(volume, engine, SliceRange(4, 4))

    seen = []

    def cancel_after_first(done, total):
        seen.append(done)
        return done == 0

    from LegSegNetLib.progress import Cancelled
    with pytest.raises(Cancelled):
        segment_volume(volume, _RecordingEngine(), progress=cancel_after_first, batch_size=1)
    assert seen == [0, 1]


def test_range_in_millimetres():
    volume = dicom_axial_volume(np.random.default_rng(4), shape=(6, 4, 4))  # S = 30, 32.5, ... 42.5
    layout = slice_layout(volume)
    assert layout.range_between_mm(33, 40) == SliceRange(2, 5)
    with pytest.raises(EmptyRangeError, match="spans"):
        layout.range_between_mm(100, 120)
