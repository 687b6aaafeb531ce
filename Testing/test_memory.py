"""Memory stays bounded: slices stream through the engine and the measurements without whole-volume float
copies, and volumes are held in the narrowest type that keeps their values."""

import tracemalloc

import numpy as np
import SimpleITK as sitk

from LegSegNetLib.segmenting.engines.threshold import ThresholdEngine
from LegSegNetLib.reading.volume_files import read_volume
from LegSegNetLib.measuring.measurements import compute_measurements
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom
from LegSegNetLib.segmenting.pipeline import segment_volume
from LegSegNetLib.writing.labelmaps import label_extents
from LegSegNetLib.reading.volume import Volume


def _long_phantom(slices=128):
    ct, _ = make_leg_phantom(seed=0, shape=(8, 256, 256))
    return Volume(np.tile(ct.array, (slices // 8, 1, 1)), ct.ijk_to_ras)


def _peak_bytes(function, *args, **kwargs):
    tracemalloc.start()
    try:
        result = function(*args, **kwargs)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_segmentation_and_measurements_stream_without_volume_copies():
    ct = _long_phantom()
    labels, segment_peak = _peak_bytes(segment_volume, ct, ThresholdEngine(), batch_size=4)
    # The uint8 output plus a few slices of work, where a float32 copy of the CT alone would be 2x its int16 size.
    assert segment_peak < labels.array.nbytes + ct.array.nbytes / 2
    _, measure_peak = _peak_bytes(compute_measurements, ct, labels)
    assert measure_peak < ct.array.nbytes


def test_dicom_ct_is_held_as_int16(visible_human_dicom_dir):
    """ITK returns 12-bit DICOM CT as int32 after the rescale; the values fit in int16, half the memory."""
    volume = read_volume(visible_human_dicom_dir)
    assert volume.array.dtype == np.int16
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(visible_human_dicom_dir)))
    itk_values = sitk.GetArrayFromImage(reader.Execute())
    assert itk_values.dtype != np.int16
    np.testing.assert_array_equal(volume.array, itk_values)


def test_values_that_do_not_fit_int16_are_kept(tmp_path):
    array = np.zeros((2, 16, 16), np.int32)
    array[0, 0, 0] = 40000
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "wide.nrrd"))
    volume = read_volume(tmp_path / "wide.nrrd")
    assert volume.array.dtype == np.int32 and volume.array[0, 0, 0] == 40000


def test_segment_extents_equal_itk_label_statistics():
    """The slice-wise extents written into .seg.nrrd headers are ITK's bounding boxes, without its memory."""
    array = np.zeros((7, 30, 40), np.uint8)
    rng = np.random.default_rng(1)
    for value in (1, 2, 4):  # label 3 absent
        k, j, i = rng.integers(0, 5, 3)
        array[k:k + rng.integers(1, 3), j:j + rng.integers(1, 20), i:i + rng.integers(1, 30)] = value
    image = sitk.GetImageFromArray(array)
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(image)
    expected = {}
    for value in statistics.GetLabels():
        box = statistics.GetBoundingBox(value)
        expected[value] = " ".join(f"{first} {first + size - 1}" for first, size in zip(box[:3], box[3:]))
    assert label_extents(image) == expected and 3 not in expected
