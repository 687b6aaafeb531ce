"""Hostile and unusual inputs, end to end through `legsegnet segment` and the engines: each gives a clear error
(and no output that looks complete) or a correct result, never a crash or a silent wrong answer.

Unit checks of the validation rules and of atomic writing live in test_validation.py, test_segfile.py and
test_cli_segment.py; here every input goes the whole way a user's file goes.
"""

import csv
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
from LegSegNetLib.reading.volume_files import VolumeReadError, read_volume, write_volume
from LegSegNetLib.reading.layout import SliceRange, slice_layout
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


def write_dicom_series(folder, array, positions_mm=None, tags=()):
    """One CT series, one file per slice of `array` [slices, rows, columns], stored values as given, the slices
    2.5 mm apart unless `positions_mm` gives each one's position; `tags`: more (tag, value) pairs for every file."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    positions_mm = [index * 2.5 for index in range(len(array))] if positions_mm is None else positions_mm
    for index, plane in enumerate(array):
        image = sitk.GetImageFromArray(plane)
        for tag, value in (("0008|0060", "CT"), ("0020|000d", "1.2.826.0.1.3680043.2.1"),
                           ("0020|000e", "1.2.826.0.1.3680043.2.1.1"), ("0020|0013", str(index + 1)),
                           ("0008|0018", f"1.2.826.0.1.3680043.2.1.1.{index + 1}"),
                           ("0020|0032", f"0\\0\\{positions_mm[index]}"), ("0020|0037", "1\\0\\0\\0\\1\\0"), *tags):
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

    padded_mr = mr.with_array(np.where(ct.array < -500, -1000, mr.array).astype(np.int16))  # air padded negative
    write_volume(padded_mr, tmp_path / "padded_mr.nii.gz")
    assert_refused(tmp_path, tmp_path / "padded_mr.nii.gz", caplog, "neither a fat peak")


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


# ---- outputs that collide, concurrent runs, killed runs ------------------------------------------------------

@pytest.fixture
def leg_file(tmp_path):
    write_volume(phantom()[0], tmp_path / "leg.nrrd")
    return tmp_path / "leg.nrrd"


@pytest.mark.parametrize("arguments", [
    ("--labelmap", "{input}", "--overwrite"),  # would replace the CT with its labels
    ("--measurements", "{dir}/t.csv", "--slice-areas", "{dir}/t.csv"),
    ("--measurements", "{dir}/t.csv", "--slice-areas", "{dir}/elsewhere/../t.csv"),
    ("--output-dir", "{dir}/od", "--measurements", "{dir}/od/slice_areas.csv"),  # the folder's default table
    ("--output-dir", "{dir}/od", "--slice-areas", "{dir}/od/measurements.csv"),
])
def test_outputs_that_are_one_file_are_refused_before_any_work(leg_file, tmp_path, capsys, arguments):
    before = leg_file.read_bytes()
    argv = [argument.format(input=leg_file, dir=tmp_path) for argument in arguments]
    assert segment_cli(leg_file, *argv) == 2
    assert "are the same file" in capsys.readouterr().err
    assert leg_file.read_bytes() == before
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["leg.nrrd"]


def test_a_second_run_on_a_busy_output_folder_is_refused(leg_file, tmp_path, capsys):
    from LegSegNetLib.writing.outputs import output_folder_lock

    out = tmp_path / "out"
    with output_folder_lock(out):  # as a first run in another process holds it
        assert segment_cli(leg_file, "--output-dir", out) == 2
        assert f"another legsegnet run (process {os.getpid()}) is writing to {out}" in capsys.readouterr().err
        assert sorted(path.name for path in out.iterdir()) == [".legsegnet.lock"]
    assert segment_cli(leg_file, "--output-dir", out) == 0
    assert not (out / ".legsegnet.lock").exists()


def test_a_lock_left_by_a_killed_run_does_not_block(leg_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".legsegnet.lock").write_text("99999999")  # its process is gone, and so is its operating-system lock
    assert segment_cli(leg_file, "--output-dir", out) == 0


@pytest.mark.skipif(os.name == "nt", reason="Windows ends a process on SIGTERM without running its handler")
def test_sigterm_mid_write_leaves_no_partial_and_stale_partials_are_cleaned(leg_file, tmp_path):
    """A SIGTERM while the label map is being written stops the run like Ctrl+C (its temporary file removed);
    the hidden partial files of runs killed harder (SIGKILL, power loss) are removed by the next run."""
    out = tmp_path / "out"
    script = (
        "import os, signal, sys\n"
        "import SimpleITK as sitk\n"
        "write = sitk.WriteImage\n"
        "def write_then_get_killed(*args, **kwargs):\n"
        "    write(*args, **kwargs)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "sitk.WriteImage = write_then_get_killed\n"
        "from LegSegNetLib.cli import main\n"
        f"sys.exit(main(['segment', '--engine', 'threshold', {str(leg_file)!r}, '--output-dir', {str(out)!r}]))\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert killed.returncode == 130, killed.stderr
    assert list(out.iterdir()) == []

    stale = out / ".leg.seg.nrrd.0123abcd.partial.seg.nrrd"
    stale.write_bytes(b"half a label map")
    assert segment_cli(leg_file, "--output-dir", out) == 0
    assert not stale.exists()
    assert not any(path.name.startswith(".") for path in out.iterdir())


# ---- ranges and counts that are usage errors -----------------------------------------------------------------

@pytest.mark.parametrize("text", ["-1000:5", "2:-1"])
def test_negative_slice_indices_are_refused(leg_file, tmp_path, capsys, text):
    with pytest.raises(SystemExit) as exit_:
        segment_cli(leg_file, f"--range={text}", "--measurements", tmp_path / "m.csv")
    assert exit_.value.code == 2
    assert "slice indices start at 0" in capsys.readouterr().err


def test_an_empty_range_is_a_usage_error(leg_file, tmp_path, capsys):
    """For the one input given; in a batch it is that input's failure and the others are done (exit status 1)."""
    assert segment_cli(leg_file, "--range", "50:60", "--measurements", tmp_path / "m.csv") == 2
    assert "selects no slice of a volume with 3 slices" in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists()

    write_volume(phantom(shape=(6, 160, 160))[0], tmp_path / "longer.nrrd")
    assert segment_cli(leg_file, tmp_path / "longer.nrrd", "--range", "4:6", "--output-dir", tmp_path / "out") == 1
    assert [row["input"] for row in csv.DictReader((tmp_path / "out" / "measurements.csv").read_text().splitlines())] == [
        str(tmp_path / "longer.nrrd")]


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_training_for_no_epochs_is_refused(tmp_path, capsys, epochs):
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(tmp_path), "--out", str(tmp_path / "model"), f"--epochs={epochs}"])
    assert exit_.value.code == 2
    assert "expected a whole number of at least 1" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


# ---- geometry a format cannot keep ---------------------------------------------------------------------------

def sheared(volume):
    """The volume on a grid whose slice axis leans 20 degrees in the row direction (as after a gantry tilt,
    stored without resampling)."""
    ijk_to_ras = volume.ijk_to_ras.copy()
    ijk_to_ras[:3, 2] += np.tan(np.radians(20)) * ijk_to_ras[:3, 1] * np.linalg.norm(ijk_to_ras[:3, 2]) \
        / np.linalg.norm(ijk_to_ras[:3, 1])
    return Volume(volume.array, ijk_to_ras)


def test_a_sheared_grid_is_never_written_where_its_geometry_is_lost(tmp_path, caplog):
    ct = sheared(phantom()[0])
    write_volume(ct, tmp_path / "tilted.nrrd")
    np.testing.assert_allclose(read_volume(tmp_path / "tilted.nrrd").ijk_to_ras, ct.ijk_to_ras, atol=1e-6)

    with caplog.at_level(logging.ERROR):
        assert segment_cli(tmp_path / "tilted.nrrd", "--labelmap", tmp_path / "labels.nii.gz") != 0
    assert "cannot store this volume's voxel grid, which is sheared" in caplog.text
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tilted.nrrd"]

    for kept in ("labels.seg.nrrd", "labels.nrrd"):
        assert segment_cli(tmp_path / "tilted.nrrd", "--labelmap", tmp_path / kept) == 0
        np.testing.assert_allclose(read_volume(tmp_path / kept).ijk_to_ras, ct.ijk_to_ras, atol=1e-5)


# ---- sizes read from the header before any voxel -------------------------------------------------------------

def _oversized_mhd(folder):
    """13 bytes of data description claiming 512 x 512 x 20000 voxels (10 GB) over an endless zero device."""
    path = folder / "huge.mhd"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 512 512 20000\nElementType = MET_SHORT\n"
                    "ElementDataFile = /dev/zero\n")
    return path


def _nifti_claiming_more_slices(folder):
    """A 1 MB .nii.gz whose header claims 5000 slices of 512 x 512 (2.6 GB) where 4 are stored."""
    write_volume(Volume.from_spacing(np.zeros((4, 512, 512), np.int16)), folder / "small.nii")
    header = bytearray((folder / "small.nii").read_bytes())
    header[40 + 6:40 + 8] = np.int16(5000).tobytes()  # dim[3], the slice count
    path = folder / "claims_more.nii.gz"
    path.write_bytes(gzip.compress(bytes(header)))
    return path


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak memory read from Linux's /proc")
@pytest.mark.parametrize("make,message", [(_oversized_mhd, "more than the 2,147,483,648 LegSegNet reads"),
                                          (_nifti_claiming_more_slices, "")])
def test_an_oversized_header_is_refused_before_its_voxels_are_read(tmp_path, make, message):
    """Peak memory of the refusal, measured in a fresh process (address space capped at 4 GB so a regression
    fails instead of exhausting the machine), stays under 1 GB. The peak is the process's own VmHWM: getrusage's
    ru_maxrss would include the memory of the pytest process it was started from (Linux keeps it across exec)."""
    path = make(tmp_path)
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
        "from LegSegNetLib.reading.volume_files import VolumeReadError, read_volume\n"
        "try:\n"
        f"    read_volume({str(path)!r})\n"
        "    print('READ')\n"
        "except VolumeReadError as error:\n"
        "    print('REFUSED', error)\n"
        "status = open('/proc/self/status').read().split('VmHWM:')[1]\n"
        "print('PEAK_KB', status.split()[0])\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    assert message in lines["REFUSED"] and ("truncated" in lines["REFUSED"] or "memory" in lines["REFUSED"]
                                            or "more than" in lines["REFUSED"])
    assert int(lines["PEAK_KB"]) * 1024 < 1 << 30


def test_a_nifti_voxel_size_of_zero_is_refused(tmp_path, caplog):
    write_volume(phantom()[0], tmp_path / "leg.nii")
    header = bytearray((tmp_path / "leg.nii").read_bytes())
    header[76 + 4 * 3:76 + 4 * 4] = np.float32(0).tobytes()  # pixdim[3], the slice thickness
    (tmp_path / "zero.nii").write_bytes(bytes(header))
    assert_refused(tmp_path, tmp_path / "zero.nii", caplog, "a size of 0 would be read as 1 mm")


# ---- doubtful inputs: refused, or measured with a warning in the record --------------------------------------

def measured_warnings(tmp_path, source, *options):
    """Segment `source` with the threshold engine; the warnings column of its measurement row."""
    table = tmp_path / "m.csv"
    assert segment_cli(source, "--measurements", table, *options) == 0
    with open(table, newline="") as stream:
        return next(csv.DictReader(stream))["warnings"]


def test_unrescaled_ct_with_negative_padding_is_measured_with_a_warning(tmp_path, caplog):
    """Stored values (HU + 1024) with padding at -2000: no voxel at air's -1000 and no fat peak where CT has it."""
    ct, _ = phantom()
    stored = (ct.array.astype(np.int32) + 1024).clip(0, 4095)
    stored[:, :4, :] = -2000
    write_volume(ct.with_array(stored.astype(np.int16)), tmp_path / "stored.nrrd")
    with caplog.at_level(logging.WARNING):
        warnings = measured_warnings(tmp_path, tmp_path / "stored.nrrd")
    assert "no fat peak (-190..-30 HU)" in warnings and "stored values must be rescaled" in warnings
    assert "almost no voxel lies at air's -1100..-900 HU" in warnings
    assert "no fat peak" in caplog.text


def test_random_noise_is_refused(tmp_path, caplog):
    noise = np.random.default_rng(5).integers(-1024, 3071, (3, 160, 160)).astype(np.int16)
    write_volume(phantom()[0].with_array(noise), tmp_path / "noise.nrrd")
    assert_refused(tmp_path, tmp_path / "noise.nrrd", caplog, "neither a fat peak")


def test_nothing_labelled_is_a_warning(tmp_path):
    class LabelsNothing(ThresholdEngine):
        def segment_slices(self, hu_slices, pixel_spacing_mm):
            return np.zeros(hu_slices.shape, np.uint8)

    result = run_segmentation(phantom()[0], LabelsNothing())
    assert any("no voxel was labelled in any slice" in warning for warning in result.warnings)


def test_a_shifted_and_cut_off_slice_is_named_in_the_record(tmp_path):
    ct, _ = phantom(shape=(6, 160, 160))
    slices = slice_layout(ct).display_view(ct.array)
    slices[3] = np.roll(slices[3], 50, axis=0)  # moved down, as the Visible Human's vhf.316.dcm
    slices[3, 120:] = -1024  # and cut off
    write_volume(ct, tmp_path / "leg.nrrd")
    warnings = measured_warnings(tmp_path, tmp_path / "leg.nrrd")
    assert "slice 3 (S = " in warnings and "body area, body centre" in warnings
    assert "slice 2" not in warnings and "slice 4" not in warnings


def test_the_visible_human_series_names_its_corrupt_slice(tmp_path):
    """`segment` on the sample's DICOM folder warns about vhf.316.dcm (the demo repairs that slice instead)."""
    import realct
    from LegSegNetLib.reading.sample_data import CORRUPT_SLICE, SampleDataUnavailable, corrupt_slice_index

    try:
        folder = realct.visible_human_dicom_dir()
    except SampleDataUnavailable as error:
        pytest.skip(f"sample CT unavailable: {error}")
    index = corrupt_slice_index(read_volume(folder), folder / CORRUPT_SLICE)
    warnings = measured_warnings(tmp_path, folder, "--range", f"{index - 2}:{index + 3}")
    assert f"slice {index} (S = " in warnings and warnings.count("slice ") == 1
    assert not run_segmentation(realct.visible_human_leg_ct(), ThresholdEngine(),
                                SegmentationSettings(engine="threshold", slice_range=SliceRange(index - 2, index + 3))
                                ).warnings


@pytest.mark.parametrize("positions,message", [
    ([0, 2.5, 2.5, 5, 7.5, 10], "are slices at the same position"),
    ([0, 2.5, 5, 8, 10.5, 13], "unevenly spaced (2.5 to 3 mm apart)"),
])
def test_duplicated_or_irregular_slice_positions_are_refused(tmp_path, caplog, positions, message):
    write_dicom_series(tmp_path / "dicom", phantom(shape=(6, 64, 64))[0].array, positions)
    assert_refused(tmp_path, tmp_path / "dicom", caplog, message)


def test_spacing_a_ct_cannot_have(tmp_path, caplog):
    ct, _ = phantom()
    thick = Volume(ct.array, ct.ijk_to_ras @ np.diag([1.0, 1.0, 100.0 / np.linalg.norm(ct.ijk_to_ras[:3, 2]), 1.0]))
    write_volume(thick, tmp_path / "thick.nrrd")
    assert "the slices are 100 mm apart" in measured_warnings(tmp_path, tmp_path / "thick.nrrd")

    huge = Volume(ct.array, np.diag([1e6, 1e6, 1e6, 1.0]))
    write_volume(huge, tmp_path / "huge.nrrd")
    assert_refused(tmp_path, tmp_path / "huge.nrrd", caplog, "is impossible for a CT")


def test_every_test_the_readme_names_for_a_promise_exists():
    """The README backs each promise with tests by name: a renamed or deleted test must not leave it unbacked."""
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What LegSegNet promises", 1)[1].split("\n## ", 1)[0]
    named, current_file = [], None
    for file_name, test_name in re.findall(r"`(test_\w+\.py)?(?:::)?(test_\w+)?`", section):
        current_file = file_name or current_file  # `::test_x` and a bare `test_x` belong to the file named last
        if test_name:
            named.append((current_file, test_name))
    assert len(named) > 30
    for file_name, test_name in named:
        source = (REPO / "Testing" / file_name).read_text(encoding="utf-8")
        assert f"def {test_name}(" in source, f"README names {file_name}::{test_name}, which does not exist"


def test_a_series_folder_changed_in_place_between_reads_is_scanned_again(tmp_path):
    array = np.full((3, 8, 8), 40, np.int16)
    write_dicom_series(tmp_path / "series", array)
    assert read_volume(tmp_path / "series").array.shape == (3, 8, 8)
    write_dicom_series(tmp_path / "other", array[:1], tags=(("0020|000e", "1.2.826.0.1.3680043.2.1.2"),))
    # A slice of another series written over a file of the first: same names, so the folder itself is unchanged.
    (tmp_path / "series" / "001.dcm").write_bytes((tmp_path / "other" / "000.dcm").read_bytes())
    with pytest.raises(VolumeReadError, match="2 DICOM series"):
        read_volume(tmp_path / "series")


def test_a_broken_link_beside_the_inputs_is_passed_over(tmp_path):
    from LegSegNetLib.cli.segment import expand_inputs

    folder = tmp_path / "inputs"
    folder.mkdir()
    write_volume(phantom()[0], folder / "leg.nii.gz")
    (folder / "moved.dcm").symlink_to(tmp_path / "gone.dcm")  # a link whose file was moved away
    assert expand_inputs([folder]) == [folder / "leg.nii.gz"]
