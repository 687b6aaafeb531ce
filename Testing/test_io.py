"""Reading and writing volumes keeps every voxel at its physical position."""

import logging

import numpy as np
import pytest
import SimpleITK as sitk

from LegSegNetLib.reading.volume_files import (
    VolumeReadError, is_dicom_series_folder, read_volume, sitk_from_volume, volume_from_sitk, write_volume,
)
from LegSegNetLib.reading.volume import Volume


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_round_trip_keeps_geometry(tmp_path, suffix):
    rng = np.random.default_rng(0)
    angle = np.deg2rad(10)
    directions = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, -1]])
    volume = Volume.from_spacing(rng.integers(-1000, 1000, (4, 5, 6)).astype(np.int16), (0.7, 0.8, 2.0),
                                 (12.0, -3.0, 40.0), directions)
    path = tmp_path / f"ct{suffix}"
    write_volume(volume, path)
    again = read_volume(path)
    np.testing.assert_array_equal(again.array, volume.array)
    np.testing.assert_allclose(again.ijk_to_ras, volume.ijk_to_ras, atol=1e-5)


def test_sitk_lps_geometry_maps_to_ras():
    image = sitk.Image(3, 3, 3, sitk.sitkInt16)
    image.SetOrigin((5.0, 6.0, 7.0))  # LPS
    volume = volume_from_sitk(image)
    np.testing.assert_allclose(volume.origin, (-5.0, -6.0, 7.0))
    np.testing.assert_allclose(sitk_from_volume(volume).GetOrigin(), (5.0, 6.0, 7.0))


def test_dicom_series_folder(visible_human_dicom_dir):
    volume = read_volume(visible_human_dicom_dir)
    assert volume.array.shape == (350, 512, 512)
    np.testing.assert_allclose(volume.spacing, (1.0, 1.0, 1.0), atol=0.01)


def test_unreadable_inputs_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_volume(tmp_path / "missing.nii.gz")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image")
    with pytest.raises(VolumeReadError, match="cannot read"):
        read_volume(junk)
    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    with pytest.raises(VolumeReadError, match="no DICOM series"):
        read_volume(empty_folder)


def test_searching_a_folder_without_dicom_prints_nothing(tmp_path, capfd):
    """A batch over a folder of NIfTI files must not print GDCM's 'No Series were found' warning."""
    write_volume(Volume.from_spacing(np.zeros((2, 4, 4), np.int16)), tmp_path / "ct.nii.gz")
    assert not is_dicom_series_folder(tmp_path)
    with pytest.raises(VolumeReadError, match="no DICOM series"):
        read_volume(tmp_path)
    assert capfd.readouterr().err == ""


def test_a_file_of_another_type_is_named_as_such(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(VolumeReadError, match=r"not an image file type LegSegNet reads \(.nii.gz") as raised:
        read_volume(notes)
    assert "sitk::ERROR" not in str(raised.value)


def test_one_file_of_a_dicom_series_is_read_with_a_hint_to_give_the_folder(visible_human_dicom_dir, caplog):
    with caplog.at_level(logging.WARNING):
        volume = read_volume(visible_human_dicom_dir / "vhf.200.dcm")
    assert volume.array.shape == (1, 512, 512)
    assert "one file of a DICOM series of 350 slices" in caplog.text and str(visible_human_dicom_dir) in caplog.text
