"""Hostile and unusual inputs get a clear error or a warning, never a crash or a silent wrong answer."""

import numpy as np
import pytest
import SimpleITK as sitk

from LegSegNetLib.reading.volume_files import VolumeReadError, read_volume, write_volume
from LegSegNetLib.reading.validation import InputError, validate_ct
from LegSegNetLib.reading.volume import Volume


def ct_like(shape=(4, 32, 32)):
    array = np.full(shape, -1000, np.int16)
    array[:, 6:26, 6:26] = -100  # fat around
    array[:, 8:24, 8:24] = 40  # muscle
    return Volume.from_spacing(array, (0.8, 0.8, 3.0), directions_ras=np.diag([-1.0, -1.0, 1.0]))


def test_ordinary_ct_passes_quietly():
    assert validate_ct(ct_like()) == []


def test_metal_implant_values_are_accepted():
    volume = ct_like()
    volume.array[1, 12, 12] = 30000  # extended-range CT of a metal implant
    assert validate_ct(volume) == []


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_values_are_refused(bad_value):
    volume = ct_like()
    array = volume.array.astype(np.float32)
    array[0, 0, :3] = bad_value
    with pytest.raises(InputError, match="3 voxels are NaN or infinite"):
        validate_ct(volume.with_array(array))


def test_uncalibrated_or_mr_intensities_are_refused():
    volume = ct_like()
    with pytest.raises(InputError, match="not CT in Hounsfield units"):
        validate_ct(volume.with_array((volume.array + 1024).astype(np.uint16)))  # intercept not applied


def test_ct_without_air_gives_a_warning():
    volume = ct_like()
    warnings = validate_ct(volume.with_array(np.where(volume.array < 0, -5, 300).astype(np.int16)))
    assert len(warnings) == 2 and all("not MR" in warning for warning in warnings)  # no fat peak, no air


def test_single_slice_is_segmentable_with_a_warning():
    warnings = validate_ct(ct_like((1, 32, 32)))
    assert len(warnings) == 1 and "single axial slice" in warnings[0]


def test_tiny_slices_are_refused():
    with pytest.raises(InputError, match="8 x 32 pixels"):
        validate_ct(ct_like((5, 8, 32)))


def test_non_numeric_voxels_are_refused():
    volume = ct_like()
    with pytest.raises(InputError, match="not a number type"):
        validate_ct(volume.with_array(volume.array > 0))


def test_2d_image_file_is_refused(tmp_path):
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((32, 32), np.int16)), str(path))
    with pytest.raises(VolumeReadError, match="2D image"):
        read_volume(path)


def test_4d_image_file_is_refused(tmp_path):
    path = tmp_path / "series.nii.gz"
    frame = sitk.GetImageFromArray(np.zeros((3, 32, 32), np.int16))
    sitk.WriteImage(sitk.JoinSeries([frame, frame]), str(path))
    with pytest.raises(VolumeReadError, match="4D image"):
        read_volume(path)


def test_colour_volume_is_refused(tmp_path):
    path = tmp_path / "colour.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 32, 32, 3), np.uint8), isVector=True), str(path))
    with pytest.raises(VolumeReadError, match="3 values per voxel"):
        read_volume(path)


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii", "ct.nrrd", "ct.mha"])
def test_truncated_file_is_refused(tmp_path, name):
    path = tmp_path / name
    rng = np.random.default_rng(0)
    write_volume(Volume.from_spacing(rng.integers(-1000, 1000, (8, 64, 64)).astype(np.int16)), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(VolumeReadError, match="cannot read"):
        read_volume(path)


def test_intact_nifti_reads(tmp_path):
    volume = ct_like()
    write_volume(volume, tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(read_volume(tmp_path / "ct.nii.gz").array, volume.array)
