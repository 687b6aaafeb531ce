"""`legsegnet segment` end to end: outputs in the input's geometry, tables, batches, resuming, and clear errors.

The engine here labels by HU bands (a stand-in with a known answer on box phantoms); model loading is
exercised through its error paths.
"""

import argparse
import csv
import io
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from hu_band_engine import HUBandEngine

from LegSegNetLib.cli import build_parser, main
from LegSegNetLib.cli.segment import (
    TerminalProgress, expand_inputs, folds_argument, parse_index_range, parse_mm_range, plan_jobs, segment_command,
    settings_from_arguments,
)
from LegSegNetLib.reading.layout import EmptyRangeError
from LegSegNetLib.reading.volume_files import read_volume, write_volume
from LegSegNetLib.measuring.measurements import SLICE_COLUMNS, ColumnInfo
from LegSegNetLib.writing.tables import RECORD_COLUMNS, csv_text
from LegSegNetLib.reading.volume import LPS_TO_RAS, Volume
from LegSegNetLib.settings import SegmentationSettings, SettingsError

SPACING = (0.9, 0.8, 3.0)
VOXEL_CM3 = 0.9 * 0.8 * 3.0 / 1000
FAT_HU, MUSCLE_HU, BONE_HU = -100, 40, 700


def phantom_ct(slices=6):
    """Two box legs in air, stored with oblique-free LPS axes and a non-trivial origin."""
    array = np.full((slices, 48, 64), -1000, np.int16)
    for col0 in (4, 36):  # patient right leg on the image left, left leg on the right
        array[:, 8:40, col0:col0 + 24] = FAT_HU  # 32 x 24
        array[:, 12:36, col0 + 4:col0 + 20] = MUSCLE_HU  # 24 x 16
        array[:, 20:24, col0 + 10:col0 + 14] = BONE_HU  # 4 x 4
    directions = np.diag([-1.0, -1.0, 1.0])
    return Volume.from_spacing(array, SPACING, (15.0, -30.0, -200.0), directions)


PER_LEG_SLICE = {"SAT": 32 * 24 - 24 * 16, "SM": 24 * 16 - 16, "Bone": 16}


def args_for(*argv):
    return build_parser().parse_args(["segment", *map(str, argv)])


def plan(*argv):
    args = args_for(*argv)
    return plan_jobs(args, settings_from_arguments(args))


def run_cli(*argv):
    args = args_for(*argv)
    return segment_command(args, HUBandEngine())


def read_csv(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_single_input_writes_all_outputs_in_the_input_geometry(tmp_path):
    ct = phantom_ct()
    write_volume(ct, tmp_path / "leg.nrrd")
    out = tmp_path / "out"
    status = run_cli(tmp_path / "leg.nrrd", "--labelmap", out / "leg.seg.nrrd", "--measurements", out / "m.csv",
                     "--slice-areas", out / "areas.csv", "--sites", out / "sites.csv", "--site=level=-195")
    assert status == 0

    segmentation = slicerio.read_segmentation(str(out / "leg.seg.nrrd"))
    np.testing.assert_allclose(segmentation["ijkToLPS"], LPS_TO_RAS @ ct.ijk_to_ras, atol=1e-6)
    labels = np.transpose(segmentation["voxels"], (2, 1, 0))
    assert labels.shape == ct.array.shape
    assert labels[2, 22, 4 + 11] == 4 and labels[2, 10, 5] == 1 and labels[2, 0, 0] == 0

    rows = read_csv(out / "m.csv")
    assert len(rows) == 1
    assert list(rows[0]) == [column.name for column in RECORD_COLUMNS]
    assert rows[0]["warnings"] == ""
    assert rows[0]["right_thigh_SM_volume_cm3"] == ""  # box legs: no femur, so no regions
    assert rows[0]["engine"] == "hu-bands"
    for tissue, pixels in PER_LEG_SLICE.items():
        assert float(rows[0][f"{tissue}_volume_cm3"]) == pytest.approx(2 * pixels * 6 * VOXEL_CM3)
        assert float(rows[0][f"right_{tissue}_volume_cm3"]) == pytest.approx(pixels * 6 * VOXEL_CM3)
    assert float(rows[0]["SM_mean_HU"]) == pytest.approx(MUSCLE_HU)
    assert rows[0]["IMAT_mean_HU"] == ""  # no IMAT: undefined, not a crash
    assert float(rows[0]["IMAT_SAT_ratio"]) == 0.0

    twin = json.loads((out / "m.json").read_text())
    assert [column["name"] for column in twin["columns"]] == list(rows[0])
    assert twin["rows"][0]["IMAT_mean_HU"] is None
    assert twin["rows"][0]["SAT_volume_cm3"] == pytest.approx(float(rows[0]["SAT_volume_cm3"]))

    areas = read_csv(out / "areas.csv")
    assert list(areas[0]) == ["input"] + [column.name for column in SLICE_COLUMNS]
    assert len(areas) == 6 * 3 * 4
    bone_right = [row for row in areas if row["side"] == "right" and row["tissue"] == "Bone"]
    np.testing.assert_allclose([float(row["S_mm"]) for row in bone_right], -200.0 + 3.0 * np.arange(6))
    assert all(float(row["area_cm2"]) == pytest.approx(16 * 0.9 * 0.8 / 100) for row in bone_right)

    sites = {(row["site"], row["side"]): row for row in read_csv(out / "sites.csv")}
    assert len(sites) == 6 * 2
    assert sites[("mid_thigh", "right")]["measured"] == "False"
    assert sites[("mid_thigh", "right")]["reason"] == ("no femur found in this leg: the scan covers 18 mm of the leg, "
                                                       "too little to tell its long bones (at least 80 mm)")
    level = sites[("level", "left")]
    assert level["measured"] == "True" and float(level["slice_S_mm"]) == pytest.approx(-194.0)
    assert float(level["SM_area_cm2"]) == pytest.approx(PER_LEG_SLICE["SM"] * 0.9 * 0.8 / 100)
    twin = json.loads((out / "sites.json").read_text())
    assert [column["name"] for column in twin["columns"]] == list(read_csv(out / "sites.csv")[0])


def test_plain_labelmap_geometry_equals_the_input(tmp_path):
    ct = phantom_ct().reoriented((2, 1, 0), (True, False, True))  # stored sideways and flipped
    write_volume(ct, tmp_path / "leg.nii.gz")
    assert run_cli(tmp_path / "leg.nii.gz", "--labelmap", tmp_path / "labels.nii.gz") == 0
    labels = read_volume(tmp_path / "labels.nii.gz")
    np.testing.assert_allclose(labels.ijk_to_ras, read_volume(tmp_path / "leg.nii.gz").ijk_to_ras, atol=1e-5)
    np.testing.assert_array_equal(labels.array == 4, ct.array == BONE_HU)


def test_existing_outputs_are_refused_before_any_work(tmp_path, capsys):
    write_volume(phantom_ct(), tmp_path / "leg.nrrd")
    (tmp_path / "m.csv").write_text("keep me")
    argv = ["segment", str(tmp_path / "leg.nrrd"), "--engine", "threshold", "--measurements", str(tmp_path / "m.csv")]
    assert main(argv) == 2
    assert "m.csv already exists" in capsys.readouterr().err
    assert (tmp_path / "m.csv").read_text() == "keep me"
    assert run_cli(tmp_path / "leg.nrrd", "--measurements", tmp_path / "m.csv", "--overwrite") == 0
    assert len(read_csv(tmp_path / "m.csv")) == 1


def test_batch_over_a_folder_continues_past_a_bad_input_and_resumes(tmp_path, caplog):
    inputs = tmp_path / "cts"
    inputs.mkdir()
    write_volume(phantom_ct(4), inputs / "a.nii.gz")
    write_volume(phantom_ct(6), inputs / "b.mha")
    (inputs / "broken.nrrd").write_bytes(b"NRRD0004\nnonsense")
    write_volume(Volume.from_spacing(np.full((3, 32, 32), 500, np.int16)), inputs / "not_hu.nrrd")
    (inputs / "notes.txt").write_text("ignored: not a volume")
    out = tmp_path / "out"

    with caplog.at_level(logging.INFO):
        assert run_cli(inputs, "--output-dir", out) == 1
    assert "broken.nrrd: failed" in caplog.text
    assert "not CT in Hounsfield units" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == [
        "a.measurements.json", "a.seg.nrrd", "b.measurements.json", "b.seg.nrrd", "measurements.csv",
        "measurements.json", "sites.csv", "sites.json", "slice_areas.csv"]
    assert [os.path.basename(row["input"]) for row in read_csv(out / "sites.csv")] == ["a.nii.gz"] * 10 + ["b.mha"] * 10
    rows = read_csv(out / "measurements.csv")
    assert [os.path.basename(row["input"]) for row in rows] == ["a.nii.gz", "b.mha"]
    assert float(rows[1]["SM_volume_cm3"]) == pytest.approx(2 * PER_LEG_SLICE["SM"] * 6 * VOXEL_CM3)

    done_time = (out / "a.seg.nrrd").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_cli(inputs, "--output-dir", out) == 1  # the broken inputs still fail
    assert caplog.text.count("already done, skipped") == 2
    assert (out / "a.seg.nrrd").stat().st_mtime_ns == done_time
    assert len(read_csv(out / "measurements.csv")) == 2


@pytest.mark.parametrize("option, name", [("--sites", "sites.csv"), ("--measurements", "measurements.csv"),
                                          ("--slice-areas", "slice_areas.csv")])
def test_a_table_named_as_its_default_in_the_output_folder_resumes_like_the_default(tmp_path, caplog, monkeypatch,
                                                                                   option, name):
    inputs = tmp_path / "cts"
    inputs.mkdir()
    for stem in ("a", "b"):
        write_volume(phantom_ct(), inputs / f"{stem}.nrrd")
    out = tmp_path / "out"
    argv = ["segment", str(inputs), "--engine", "threshold", "--output-dir", str(out)]
    assert main(argv) == 0
    (out / name).unlink()  # lost with the client, say: rebuilt from the records
    with caplog.at_level(logging.INFO):
        assert main([*argv, option, str(out / name)]) == 0
    assert caplog.text.count("already done, skipped") == 2
    assert {os.path.basename(row["input"]) for row in read_csv(out / name)} == {"a.nrrd", "b.nrrd"}
    monkeypatch.chdir(tmp_path)
    assert main([*argv, option, f"out/{name}"]) == 0  # also when spelt otherwise


def test_done_inputs_made_with_other_settings_are_not_reused(tmp_path, capsys):
    """Re-running into an output folder with another engine, model or range must not pass off the old labels
    and measurements as the new ones."""
    write_volume(phantom_ct(), tmp_path / "leg.nrrd")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "leg.nrrd"), "--engine", "threshold", "--output-dir", str(out)]) == 0
    record_time = (out / "leg.measurements.json").stat().st_mtime_ns
    assert main(["segment", str(tmp_path / "leg.nrrd"), "--engine", "threshold", "--range", "1:3",
                 "--output-dir", str(out)]) == 2
    error = capsys.readouterr().err
    assert "other settings" in error and "range None there, [1, 3] now" in error and "--overwrite" in error
    assert (out / "leg.measurements.json").stat().st_mtime_ns == record_time
    assert main(["segment", str(tmp_path / "leg.nrrd"), "--engine", "threshold", "--range", "1:3",
                 "--output-dir", str(out), "--overwrite"]) == 0
    assert read_csv(out / "measurements.csv")[0]["slice_count"] == "2"
    assert main(["segment", str(tmp_path / "leg.nrrd"), "--engine", "threshold", "--range", "1:3",
                 "--output-dir", str(out)]) == 0  # same settings: skipped as done


@pytest.mark.parametrize("changed", [["--muscle-bands=-29:150"], ["--height-m", "1.7"], ["--site=knee=-20"]])
def test_done_inputs_measured_with_other_options_are_not_reused_by_a_run_with_the_defaults(tmp_path, capsys, changed):
    """Measuring options are kept in a record only when changed: a later run with the defaults must still see
    that the record was made otherwise (its sites table would carry the old bands, sites or indexes)."""
    write_volume(phantom_ct(), tmp_path / "leg.nrrd")
    argv = ["segment", str(tmp_path / "leg.nrrd"), "--engine", "threshold", "--output-dir", str(tmp_path / "out")]
    assert main([*argv, *changed]) == 0
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "other settings" in error and "measurement" in error
    assert main([*argv, *changed]) == 0  # the same options again: skipped as done


def test_csv_numbers_carry_no_binary_rounding_noise():
    columns = [ColumnInfo(name, "", "") for name in ("volume", "ratio", "count", "missing")]
    text = csv_text(columns, [{"volume": 2233816 * 0.001, "ratio": 1 / 3, "count": 350, "missing": math.nan}])
    assert text.splitlines()[1] == "2233.816,0.3333333333,350,"


class InterruptedOnSecondVolume(HUBandEngine):
    """Ctrl-C arrives while the second input is being segmented."""

    def __init__(self):
        self.volumes_started = 0

    def segment_slices(self, hu_slices, pixel_spacing_mm):
        if hu_slices.shape[0] and self.volumes_started == 1:
            raise KeyboardInterrupt
        self.volumes_started += 1
        return super().segment_slices(hu_slices, pixel_spacing_mm)


def test_interrupted_batch_keeps_finished_inputs_and_says_how_to_continue(tmp_path, caplog):
    inputs = tmp_path / "cts"
    inputs.mkdir()
    write_volume(phantom_ct(2), inputs / "a.nrrd")
    write_volume(phantom_ct(2), inputs / "b.nrrd")
    args = args_for(inputs, "--output-dir", tmp_path / "out", "--batch-size", "8")
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        segment_command(args, InterruptedOnSecondVolume())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.measurements.json", "a.seg.nrrd"]
    assert "interrupted during" in caplog.text and "the same command continues" in caplog.text


def test_overlay_pictures_for_quality_control(tmp_path, capsys):
    """--overlay writes a picture per input beside its label map, also for inputs done in an earlier run."""
    inputs = tmp_path / "cts"
    inputs.mkdir()
    write_volume(phantom_ct(4), inputs / "a.nii.gz")
    write_volume(phantom_ct(4), inputs / "b.mha")
    out = tmp_path / "out"
    assert run_cli(inputs, "--output-dir", out, "--format", "nii.gz") == 0
    assert not list(out.glob("*.png"))
    labels_time = (out / "a.nii.gz").stat().st_mtime_ns
    assert run_cli(inputs, "--output-dir", out, "--format", "nii.gz", "--overlay") == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["a.overlay.png", "b.overlay.png"]
    assert (out / "a.nii.gz").stat().st_mtime_ns == labels_time  # the done input was not redone
    picture = sitk.ReadImage(str(out / "a.overlay.png"))
    assert picture.GetNumberOfComponentsPerPixel() == 3 and picture.GetHeight() == 320
    pixels = sitk.GetArrayFromImage(picture).reshape(-1, 3).astype(int)
    assert (pixels[:, 0] - pixels[:, 2] > 60).any()  # tissue colours drawn, not only grey

    assert run_cli(inputs / "a.nii.gz", "--labelmap", tmp_path / "one.seg.nrrd", "--overlay") == 0
    assert (tmp_path / "one.overlay.png").is_file()
    assert main(["segment", str(inputs / "a.nii.gz"), "--measurements", str(tmp_path / "m.csv"), "--overlay"]) == 2
    assert "--overlay goes with --labelmap" in capsys.readouterr().err


def test_format_with_a_single_labelmap_is_refused_not_ignored(tmp_path, capsys):
    write_volume(phantom_ct(), tmp_path / "ct.nrrd")
    argv = ["segment", str(tmp_path / "ct.nrrd"), "--engine", "threshold", "--labelmap", str(tmp_path / "o.seg.nrrd")]
    assert main([*argv, "--format", "nii.gz"]) == 2
    assert "--labelmap labels.nii.gz" in capsys.readouterr().err
    assert not (tmp_path / "o.seg.nrrd").exists()


def test_a_single_failed_input_is_reported_once(tmp_path, caplog):
    (tmp_path / "broken.nrrd").write_bytes(b"NRRD0004\nnonsense")
    with caplog.at_level(logging.ERROR):
        assert run_cli(tmp_path / "broken.nrrd", "--measurements", tmp_path / "m.csv") == 1
    assert len(caplog.records) == 1 and "broken.nrrd: failed: cannot read" in caplog.text


def test_measurement_tables_must_be_csv(tmp_path):
    write_volume(phantom_ct(), tmp_path / "ct.nrrd")
    with pytest.raises(Exception, match="ending .csv"):
        plan(tmp_path / "ct.nrrd", "--measurements", tmp_path / "m.json")


def test_several_inputs_need_an_output_folder(tmp_path):
    for name in ("a.nrrd", "b.nrrd"):
        write_volume(phantom_ct(), tmp_path / name)
    with pytest.raises(Exception, match="--output-dir"):
        plan(tmp_path / "a.nrrd", tmp_path / "b.nrrd", "--labelmap", tmp_path / "x.nii.gz")
    (tmp_path / "other").mkdir()
    write_volume(phantom_ct(), tmp_path / "other" / "a.nrrd")
    with pytest.raises(Exception, match="both write 'a' outputs"):
        plan(tmp_path / "a.nrrd", tmp_path / "other" / "a.nrrd", "--output-dir", tmp_path / "out")


def test_single_slice_volume_is_measured(tmp_path, caplog):
    write_volume(phantom_ct(1), tmp_path / "slice.nrrd")
    with caplog.at_level(logging.WARNING):
        assert run_cli(tmp_path / "slice.nrrd", "--measurements", tmp_path / "m.csv") == 0
    assert "single axial slice" in caplog.text
    row = read_csv(tmp_path / "m.csv")[0]
    assert float(row["Bone_volume_cm3"]) == pytest.approx(2 * PER_LEG_SLICE["Bone"] * VOXEL_CM3)
    assert float(row["axial_extent_mm"]) == pytest.approx(3.0)


@pytest.mark.parametrize("option, target", [
    ("--labelmap", "file/labels.seg.nrrd"), ("--measurements", "file/sub/m.csv"), ("--output-dir", "file"),
    ("--slice-areas", "locked/areas.csv"),
])
def test_unwritable_output_is_refused_before_any_work(tmp_path, capsys, option, target):
    """A place no file can be written is found before a model is loaded or a slice segmented (exit status 2)."""
    write_volume(phantom_ct(), tmp_path / "leg.nrrd")
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "locked").mkdir(mode=0o555)
    if os.geteuid() == 0:  # root may write anywhere: a path under /proc is refused to root as well
        target = target.replace("locked", "/proc")
    argv = ["segment", str(tmp_path / "leg.nrrd"), "--engine", "threshold", option, str(tmp_path / target)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "cannot write in" in error and "Traceback" not in error


def test_output_folder_must_differ_from_an_input_folder(tmp_path):
    write_volume(phantom_ct(), tmp_path / "leg.nrrd")
    with pytest.raises(Exception, match="also the output folder"):
        plan(tmp_path, "--output-dir", tmp_path)


def test_folder_of_dicom_series_folders(visible_human_dicom_dir, tmp_path):
    (tmp_path / "patient_7").symlink_to(visible_human_dicom_dir, target_is_directory=True)
    (tmp_path / "empty").mkdir()
    assert expand_inputs([tmp_path]) == [tmp_path / "patient_7"]
    with pytest.raises(Exception, match="no CT volume"):
        expand_inputs([tmp_path / "empty"])


def test_axial_ranges(tmp_path, caplog):
    ct = phantom_ct()
    write_volume(ct, tmp_path / "leg.nrrd")
    assert run_cli(tmp_path / "leg.nrrd", "--range", "2:4", "--labelmap", tmp_path / "r.nrrd") == 0
    assert np.flatnonzero(read_volume(tmp_path / "r.nrrd").array.any(axis=(1, 2))).tolist() == [2, 3]
    # S positions are -200 + 3 k: -197..-191 mm holds the centres of slices 1, 2 and 3.
    assert run_cli(tmp_path / "leg.nrrd", "--range-mm=-191:-197", "--labelmap", tmp_path / "mm.nrrd") == 0
    assert np.flatnonzero(read_volume(tmp_path / "mm.nrrd").array.any(axis=(1, 2))).tolist() == [1, 2, 3]
    with pytest.raises(EmptyRangeError, match="selects no slice"):  # a usage error: exit status 2 from main
        run_cli(tmp_path / "leg.nrrd", "--range", "10:20", "--labelmap", tmp_path / "e.nrrd")
    assert not (tmp_path / "e.nrrd").exists()


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal():
    terminal, log_file = Terminal(), io.StringIO()
    for stream in (terminal, log_file):
        bar = TerminalProgress("leg", stream)
        for done in range(0, 5):
            bar(done, 4)
    assert log_file.getvalue() == ""
    assert terminal.getvalue().count("\r") == 5
    assert terminal.getvalue().endswith("[" + "#" * 30 + "] 4/4 slices\n")
    interrupted = Terminal()
    bar = TerminalProgress("leg", interrupted)
    bar(1, 4)
    bar.close()
    bar.close()
    assert interrupted.getvalue().endswith("1/4 slices\n")


def test_argument_parsers():
    assert folds_argument("0,1,2,3,4") == (0, 1, 2, 3, 4)
    assert folds_argument("all") is None
    assert parse_index_range("40:") == parse_index_range("40:").__class__(40, None)
    assert parse_mm_range("-120.5:-40") == (-120.5, -40.0)
    for bad in ("x", "1:2:3"):
        with pytest.raises(Exception):
            parse_index_range(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="fold numbers"):
        folds_argument("one")


@pytest.mark.parametrize("command", ["segment", "phantom"])
def test_every_option_says_what_it_does(command):
    subparsers = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    undocumented = [action.dest for action in subparsers.choices[command]._actions if not action.help]
    assert undocumented == []


def test_bad_folds_are_refused_by_the_parser_with_the_reason(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["segment", "ct.nrrd", "--folds", "0,x"])
    assert "--folds takes fold numbers separated by commas" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--model", "{tmp}/no_such_folder"], "model folder not found"),
    (["--model", "{tmp}/ct.nrrd"], "is a file"),
    (["--engine", "threshold", "--tta"], "takes no tta"),
    (["--device", "gpu"], "unknown device"),
])
def test_engine_errors_are_one_clear_line(tmp_path, capsys, argv, message):
    write_volume(phantom_ct(), tmp_path / "ct.nrrd")
    argv = [part.format(tmp=tmp_path) for part in argv]
    assert main(["segment", str(tmp_path / "ct.nrrd"), "--labelmap", str(tmp_path / "o.nii.gz"), *argv]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_broken_model_folder_is_reported(tmp_path, capsys):
    write_volume(phantom_ct(), tmp_path / "ct.nrrd")
    (tmp_path / "model").mkdir()
    assert main(["segment", str(tmp_path / "ct.nrrd"), "--model", str(tmp_path / "model"),
                 "--labelmap", str(tmp_path / "o.nii.gz")]) == 2
    assert "cannot load the legsegnet engine" in capsys.readouterr().err
    assert not (tmp_path / "o.nii.gz").exists()


def test_uninstalled_model_name_says_how_to_install(tmp_path, capsys, monkeypatch):
    pytest.importorskip("LegSegNetLib.models.registry")
    monkeypatch.setenv("LEGSEGNET_HOME", str(tmp_path / "home"))
    write_volume(phantom_ct(), tmp_path / "ct.nrrd")
    assert main(["segment", str(tmp_path / "ct.nrrd"), "--labelmap", str(tmp_path / "o.nii.gz")]) == 2
    error = capsys.readouterr().err
    assert "model 'legsegnet' is not installed" in error and "legsegnet models download" in error
    assert error.rstrip().endswith("or segment without weights now with --engine threshold")


def test_threshold_runs_and_help_shows_without_importing_torch(tmp_path):
    """torch takes seconds to import and may be missing or broken: --help and the threshold engine need none."""
    write_volume(phantom_ct(), tmp_path / "ct.nrrd")
    script = ("import sys\nfrom LegSegNetLib.cli import build_parser, main\nbuild_parser()\n"
              f"assert main(['segment', {str(tmp_path / 'ct.nrrd')!r}, '--engine', 'threshold', "
              f"'--measurements', {str(tmp_path / 'm.csv')!r}]) == 0\n"
              "print(sorted(name for name in ('torch', 'monai') if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_settings_refuse_unknown_engines():
    with pytest.raises(SettingsError, match="legsegnet, threshold"):
        SegmentationSettings(engine="magic")


def test_real_ct_end_to_end(visible_human_dicom_dir, tmp_path):
    """The Visible Human lower legs: outputs on the DICOM grid, both legs found and of similar size."""
    out = tmp_path / "out"
    assert run_cli(visible_human_dicom_dir, "--output-dir", out, "--format", "nii.gz") == 0
    name = visible_human_dicom_dir.name
    ct = read_volume(visible_human_dicom_dir)
    labels = read_volume(out / f"{name}.nii.gz")
    assert labels.array.shape == ct.array.shape
    np.testing.assert_allclose(labels.ijk_to_ras, ct.ijk_to_ras, atol=1e-4)
    # Dense bone is bone wherever it is in the scan.
    np.testing.assert_array_equal(labels.array[ct.array > 400] == 4, True)
    row = read_csv(out / "measurements.csv")[0]
    assert int(row["separable_slice_count"]) > 0.8 * int(row["slice_count"])
    ratio = float(row["right_Bone_volume_cm3"]) / float(row["left_Bone_volume_cm3"])
    assert 0.8 < ratio < 1.25, ratio


def test_real_ct_with_a_small_model_folder(visible_human_dicom_dir, tmp_path):
    """`legsegnet segment` with a LegSegNet-like model folder the tests make: outputs on the DICOM grid."""
    pytest.importorskip("LegSegNetLib.segmenting.engines.nnunet.engine")
    model_factory = pytest.importorskip("model_factory")
    model = model_factory.make_model_folder(tmp_path / "model")
    out = tmp_path / "out"
    assert main(["segment", str(visible_human_dicom_dir), "--model", str(model), "--device", "cpu",
                 "--batch-size", "2", "--range", "150:153", "--labelmap", str(out / "legs.seg.nrrd"),
                 "--measurements", str(out / "m.csv"), "--slice-areas", str(out / "areas.csv")]) == 0
    ct = read_volume(visible_human_dicom_dir)
    segmentation = slicerio.read_segmentation(str(out / "legs.seg.nrrd"))
    np.testing.assert_allclose(segmentation["ijkToLPS"], LPS_TO_RAS @ ct.ijk_to_ras, atol=1e-4)
    labels = np.transpose(segmentation["voxels"], (2, 1, 0))
    assert labels.shape == ct.array.shape
    outside = np.ones(len(labels), bool)
    outside[150:153] = False
    assert not labels[outside].any()
    assert read_csv(out / "m.csv")[0]["engine"] == "legsegnet"
    assert read_csv(out / "m.csv")[0]["model"] == str(model.resolve())  # which model made these numbers
    assert {int(row["slice_index"]) for row in read_csv(out / "areas.csv")} <= {150, 151, 152}


def test_threshold_engine_through_the_command(tmp_path):
    """The real threshold engine built by name: labels land on the input grid of an oblique, flipped volume."""
    pytest.importorskip("LegSegNetLib.segmenting.engines.threshold")
    ct = phantom_ct().reoriented((0, 2, 1), (True, False, True))
    write_volume(ct, tmp_path / "leg.nii.gz")
    assert main(["segment", str(tmp_path / "leg.nii.gz"), "--engine", "threshold",
                 "--labelmap", str(tmp_path / "labels.nrrd"), "--measurements", str(tmp_path / "m.csv")]) == 0
    labels = read_volume(tmp_path / "labels.nrrd")
    np.testing.assert_allclose(labels.ijk_to_ras, ct.ijk_to_ras, atol=1e-5)
    assert np.all(labels.array[ct.array == BONE_HU] == 4)
    assert read_csv(tmp_path / "m.csv")[0]["engine"] == "threshold"
    assert read_csv(tmp_path / "m.csv")[0]["model"] == ""



def test_an_operating_system_error_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    """A system error during a command (here a full disk) gives one clear line and status 2, as user errors do."""
    import LegSegNetLib.cli.phantom_volume as phantom_command

    def disk_full(args):
        raise OSError(28, "No space left on device", str(tmp_path / "ct.nii.gz"))

    monkeypatch.setattr(phantom_command, "run", disk_full)
    assert main(["phantom", str(tmp_path / "ct.nii.gz"), "--truth", str(tmp_path / "truth.nii.gz")]) == 2
    error = capsys.readouterr().err
    assert "No space left on device" in error and "Traceback" not in error


def test_warnings_about_an_input_name_it(tmp_path, caplog):
    """In a batch each WARNING line must say which input it concerns."""
    inputs = tmp_path / "cts"
    inputs.mkdir()
    write_volume(phantom_ct(), inputs / "fine.nrrd")
    no_air = phantom_ct()
    write_volume(no_air.with_array(np.maximum(no_air.array, -400).astype(np.int16)), inputs / "no_air.nrrd")
    with caplog.at_level(logging.WARNING):
        assert run_cli(inputs, "--output-dir", tmp_path / "out") == 0
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings and all(message.startswith(str(inputs / "no_air.nrrd") + ": ") for message in warnings)
