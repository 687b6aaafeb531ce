"""Hostile and unusual inputs, end to end through `legsegnet segment` and the engines: each gives a clear error
(and no output that looks complete) or a correct result, never a crash or a silent wrong answer.

Unit checks of the validation rules and of atomic writing live in test_validation.py, test_segfile.py and
test_cli_segment.py; here every input goes the whole way a user's file goes.
"""

import gzip
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LegSegNetLib.cli import main
from LegSegNetLib.segmenting.engines.threshold import ThresholdEngine
from LegSegNetLib.reading.volume_files import read_volume, write_volume
from LegSegNetLib.reading.layout import slice_layout
from LegSegNetLib.measuring.measurements import compute_measurements, dice
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom
from LegSegNetLib.segmenting.pipeline import segment_volume
from LegSegNetLib.segmenting.run import run_segmentation
from LegSegNetLib.reading.volume import Volume
from model_factory import make_model_folder
from LegSegNetLib.settings import SegmentationSettings

REPO = Path(__file__).resolve().parent.parent
SAT, SM, IMAT, BONE = 1, 2, 3, 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("model"), seed=11)


@pytest.fixture(scope="module")
def legsegnet(model_dir):
    from LegSegNetLib.segmenting.engines.nnunet.engine import LegSegNetEngine

    return LegSegNetEngine.from_model_folder(model_dir, SegmentationSettings(device="cpu"))


def phantom(shape=(3, 160, 160), seed=3, region="calf"):
    return make_leg_phantom(seed=seed, shape=shape, region=region)


def segment_cli(*argv):
    return main(["segment", "--engine", "threshold", *map(str, argv)])


def write_dicom_series(folder, array, tags=()):
    """One CT series, one file per slice of `array` [slices, rows, columns], stored values as given; `tags`:
    more (tag, value) pairs for every file."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for index, plane in enumerate(array):
        image = sitk.GetImageFromArray(plane)
        for tag, value in (("0008|0060", "CT"), ("0020|000d", "1.2.826.0.1.3680043.2.1"),
                           ("0020|000e", "1.2.826.0.1.3680043.2.1.1"), ("0020|0013", str(index + 1)),
                           ("0008|0018", f"1.2.826.0.1.3680043.2.1.1.{index + 1}"),
                           ("0020|0032", f"0\\0\\{index * 2.5}"), ("0020|0037", "1\\0\\0\\0\\1\\0"), *tags):
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{index:03d}.dcm"))
        writer.Execute(image)


def assert_refused(tmp_path, source, caplog, message):
    """The command fails on `source` with `message` and leaves no output behind."""
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        assert segment_cli(source, "--labelmap", out / "labels.seg.nrrd", "--measurements", out / "m.csv") != 0
    assert message in caplog.text
    assert not out.exists() or list(out.iterdir()) == []


# ---- wrong kinds of image ------------------------------------------------------------------------------------

def test_2d_image(tmp_path, caplog):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((64, 64), np.int16)), str(tmp_path / "slice.nrrd"))
    assert_refused(tmp_path, tmp_path / "slice.nrrd", caplog, "2D image")


def test_4d_volume(tmp_path, caplog):
    volume = sitk.GetImageFromArray(np.zeros((3, 32, 32), np.int16))
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(tmp_path / "series.nii.gz"))
    assert_refused(tmp_path, tmp_path / "series.nii.gz", caplog, "4D image")


def test_colour_volume(tmp_path, caplog):
    colour = sitk.GetImageFromArray(np.zeros((3, 32, 32, 3), np.uint8), isVector=True)
    sitk.WriteImage(colour, str(tmp_path / "colour.nrrd"))
    assert_refused(tmp_path, tmp_path / "colour.nrrd", caplog, "3 values per voxel")


def test_mr_volume(tmp_path, caplog):
    """MR intensities (all >= 0) are refused as not-HU; MR with a few negative values still warns."""
    ct, _ = phantom()
    mr = ct.with_array((ct.array.astype(np.int32) + 1000).clip(0).astype(np.int16))
    write_volume(mr, tmp_path / "mr.nii.gz")
    assert_refused(tmp_path, tmp_path / "mr.nii.gz", caplog, "MR image")

    signed_mr = mr.with_array(mr.array - 50)
    result = run_segmentation(signed_mr, ThresholdEngine())
    assert any("not MR" in warning for warning in result.warnings)


def test_hu_not_calibrated_dicom_without_rescale(tmp_path, caplog):
    """A DICOM series stored as raw detector values (0..4095, no rescale intercept) is not taken for HU."""
    ct, _ = phantom()
    raw = (ct.array.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16)
    write_dicom_series(tmp_path / "dicom", raw)
    assert read_volume(tmp_path / "dicom").array.min() >= 0
    assert_refused(tmp_path, tmp_path / "dicom", caplog, "rescale slope/intercept were not applied")


def test_nan_and_infinite_values(tmp_path, caplog):
    ct, _ = phantom()
    values = ct.array.astype(np.float32)
    values[0, :10, :10] = np.nan  # outside a resampled field of view
    values[1, 0, 0] = np.inf
    write_volume(ct.with_array(values), tmp_path / "nan.nii.gz")
    assert_refused(tmp_path, tmp_path / "nan.nii.gz", caplog, "NaN or infinite")


# ---- unusual anatomy and sizes -------------------------------------------------------------------------------

def test_single_slice_gives_the_model_grid_labels(legsegnet):
    """One 256x256 slice alone gets the labels it gets inside a volume, which are nnU-Net's own argmax."""
    ct, _ = phantom(shape=(3, 256, 256))
    layout = slice_layout(ct)
    whole = layout.display_view(segment_volume(ct, legsegnet).array)
    single = Volume(np.ascontiguousarray(ct.array[1:2]), ct.ijk_to_ras)  # the phantom is stored slice-first
    alone = slice_layout(single).display_view(segment_volume(single, legsegnet).array)
    np.testing.assert_array_equal(alone[0], whole[1])
    np.testing.assert_array_equal(alone[0], legsegnet.segment_model_grid(layout.display_view(ct.array)[1:2])[0])


def test_one_leg(legsegnet):
    ct, truth = phantom()
    hu, labels_truth = slice_layout(ct).display_view(ct.array), slice_layout(truth).display_view(truth.array)
    hu[:, :, 80:] = -1000  # the patient's left leg (image right) is not in the scan
    labels_truth[:, :, 80:] = 0
    labels = segment_volume(ct, ThresholdEngine())
    for tissue in (SAT, SM, BONE):
        assert dice(labels.array == tissue, truth.array == tissue) > 0.9
    summary = compute_measurements(ct, labels).summary
    assert summary["separable_slice_count"] == 0  # one leg: no left/right split is claimed
    assert legsegnet.segment_slices(hu[:1]).shape == (1, 160, 160)


def test_thigh_with_the_pelvis_in_view():
    """The top slices show a pelvis joining both thighs: still labelled, and not split into two legs there."""
    ct, truth = phantom(region="thigh", shape=(4, 160, 160))
    hu = slice_layout(ct).display_view(ct.array)
    before = segment_volume(ct, ThresholdEngine()).array.copy()
    rows, cols = np.mgrid[:160, :160]
    pelvis = ((rows - 90) / 30.0) ** 2 + ((cols - 80) / 70.0) ** 2 <= 1
    hip_bones = pelvis & (((rows - 90) / 10.0) ** 2 + ((np.abs(cols - 80) - 35) / 12.0) ** 2 <= 1)
    hu[0][pelvis] = 45  # gluteal and pelvic muscle bridging the legs
    hu[0][hip_bones] = 700
    labels = segment_volume(ct, ThresholdEngine())
    top = slice_layout(labels).display_view(labels.array)[0]
    assert np.mean(top[hip_bones] == BONE) > 0.9
    assert np.mean(top[pelvis & ~hip_bones] == SM) > 0.8
    other = slice_layout(labels).display_view(labels.array)[1:]
    np.testing.assert_array_equal(other, slice_layout(ct).display_view(before)[1:])
    summary = compute_measurements(ct, labels).summary
    assert summary["separable_slice_count"] <= 3 and summary["slice_count"] == 4


def test_metal_implant(legsegnet):
    """HU up to the int16 limit: the 8-bit window saturates exactly as at 200 HU (no overflow), the threshold
    engine calls the metal bone, and mean HU are exact."""
    ct, _ = phantom()
    hu = slice_layout(ct).display_view(ct.array)
    labels = slice_layout(ct).display_view(segment_volume(ct, ThresholdEngine()).array)
    rod = np.zeros(hu.shape, bool)
    rod[labels == BONE] = True
    rod &= np.random.default_rng(0).random(hu.shape) < 0.5
    metal = hu.copy()
    metal[rod] = 32767
    saturated = hu.copy()
    saturated[rod] = 200
    np.testing.assert_array_equal(legsegnet.segment_slices(metal[:2]), legsegnet.segment_slices(saturated[:2]))

    implant = ct.with_array(ct.array.copy())
    slice_layout(implant).display_view(implant.array)[rod] = 32767
    result = run_segmentation(implant, ThresholdEngine())
    bone = result.labels.array == BONE
    metal_voxels = implant.array == 32767
    assert np.mean(result.labels.array[metal_voxels] == BONE) > 0.99
    expected_mean = implant.array[bone].astype(np.float64).mean()
    assert result.measurements.summary["Bone_mean_HU"] == pytest.approx(expected_mean)
    assert expected_mean > 5000


def test_huge_1024_slice(legsegnet):
    ct, truth = phantom(shape=(2, 1024, 1024))
    labels = segment_volume(ct, ThresholdEngine()).array
    for tissue in (SAT, SM, BONE):
        assert dice(labels == tissue, truth.array == tissue) > 0.9
    hu = slice_layout(ct).display_view(ct.array)
    native = legsegnet.segment_slices(hu[:1])
    model_grid = legsegnet.segment_model_grid(hu[:1])[0]
    assert native.shape == (1, 1024, 1024)
    # Brought back from the model grid: each 4x4 block mostly shows its model-grid pixel's label.
    assert np.mean(native[0] == np.kron(model_grid, np.ones((4, 4), np.uint8))) > 0.9


def test_tiny_volume(tmp_path, caplog, model_dir):
    ct, _ = phantom(shape=(2, 16, 16))
    write_volume(ct, tmp_path / "tiny.nrrd")
    out = tmp_path / "tiny_labels.nii.gz"
    assert main(["segment", str(tmp_path / "tiny.nrrd"), "--model", str(model_dir), "--device", "cpu",
                 "--labelmap", str(out)]) == 0
    labels = read_volume(out)
    assert labels.array.shape == ct.array.shape
    np.testing.assert_allclose(labels.ijk_to_ras, ct.ijk_to_ras)

    tinier, _ = phantom(shape=(2, 8, 8))
    write_volume(tinier, tmp_path / "tinier.nrrd")
    assert_refused(tmp_path, tmp_path / "tinier.nrrd", caplog, "at least 16 x 16")


# ---- broken files and outputs --------------------------------------------------------------------------------

def _truncated_gzip(path, ct):
    write_volume(ct, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_dicom_series(folder, ct):
    write_dicom_series(folder, ct.array)
    middle = folder / "001.dcm"
    middle.write_bytes(middle.read_bytes()[:-5000])  # pixel data cut short


def _dicom_series_missing_a_slice(folder, ct):
    write_dicom_series(folder, np.concatenate([ct.array, ct.array]))
    (folder / "003.dcm").unlink()


@pytest.mark.parametrize("name,make,message", [
    ("truncated.nii.gz", _truncated_gzip, "damaged or truncated"),
    ("garbage.mha", lambda path, ct: path.write_bytes(os.urandom(3000)), "cannot read"),
    ("bad_header.nrrd", lambda path, ct: path.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 9 9\n"),
     "cannot read"),
    ("not_gzip.nii.gz", lambda path, ct: path.write_bytes(gzip.compress(b"x" * 100)[:20] + b"\0" * 400),
     "cannot read"),
    ("corrupt_dicom", _corrupt_dicom_series, "DICOM file 001.dcm is damaged or truncated"),
    ("dicom_missing_a_slice", _dicom_series_missing_a_slice, "slices are missing from the series"),
])
def test_truncated_or_corrupt_file(tmp_path, caplog, name, make, message):
    ct, _ = phantom()
    make(tmp_path / name, ct)
    assert_refused(tmp_path, tmp_path / name, caplog, message)


def test_unwritable_output_paths(tmp_path, capsys):
    """An output name that is a folder, or under a file, is refused before any work; nothing is created."""
    ct, _ = phantom()
    write_volume(ct, tmp_path / "leg.nrrd")
    (tmp_path / "taken.seg.nrrd").mkdir()
    assert segment_cli(tmp_path / "leg.nrrd", "--labelmap", tmp_path / "taken.seg.nrrd") == 2
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert segment_cli(tmp_path / "leg.nrrd", "--measurements", tmp_path / "file" / "m.csv") != 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file", "leg.nrrd", "taken.seg.nrrd"]


def test_disk_filling_during_writing(tmp_path):
    """A file-size limit makes the label map fail part-way, as a full disk does: the run fails, nothing that
    looks complete is left, the input is not marked done, and a later run completes it."""
    ct, _ = phantom(shape=(6, 160, 160))
    write_volume(ct, tmp_path / "leg.nrrd")
    out = tmp_path / "out"
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"  # EFBIG errors instead of being killed
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))\n"
        "from LegSegNetLib.cli import main\n"
        f"sys.exit(main(['segment', '--engine', 'threshold', {str(tmp_path / 'leg.nrrd')!r}, "
        f"'--output-dir', {str(out)!r}, '--format', 'nii.gz']))\n"
    )
    full = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert full.returncode != 0, full.stderr
    assert "cannot write" in full.stderr or "File too large" in full.stderr
    assert not out.exists() or list(out.iterdir()) == []

    assert segment_cli(tmp_path / "leg.nrrd", "--output-dir", out, "--format", "nii.gz") == 0
    assert sorted(path.name for path in out.iterdir()) == [
        "leg.measurements.json", "leg.nii.gz", "measurements.csv", "measurements.json", "sites.csv", "sites.json",
        "slice_areas.csv"]
    assert json.loads((out / "leg.measurements.json").read_text())["summary"]["slice_count"] == 6
