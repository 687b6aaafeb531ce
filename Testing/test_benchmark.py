"""The benchmark script runs end to end on a tiny case (it is a script, not a timed test)."""

import pytest

import benchmark
import benchmark_native
from LegSegNetLib.reading.volume_files import write_volume
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom
from model_factory import make_model_folder

pytest.importorskip("nnunetv2", reason="the reference pipeline needs nnunetv2 (test-only)")


def test_benchmark_interleaves_whole_runs_on_a_tiny_case(tmp_path, capsys):
    ct, _ = make_leg_phantom(seed=1, shape=(3, 80, 112))
    write_volume(ct, tmp_path / "ct.nii.gz")
    model = make_model_folder(tmp_path / "model")

    figures = benchmark.main(["--ct", str(tmp_path / "ct.nii.gz"), "--model", str(model), "--threads", "1",
                              "--slices", "2", "--rounds", "2", "--work", str(tmp_path / "work")])

    printed = capsys.readouterr().out
    assert "ratio" in printed and "equal to the reference's" in printed
    assert [len(runs) for runs in figures["runs"].values()] == [2, 2]
    reference, ours = figures["summary"]["reference"], figures["summary"]["torch"]
    for summary in (reference, ours):
        assert summary["wall_s"]["min"] <= summary["wall_s"]["median"] <= summary["wall_s"]["max"]
        assert 0 < summary["network_s"]["median"] < summary["wall_s"]["median"]
        assert summary["peak_rss_mb"]["min"] > 50  # a whole process with torch loaded
    assert ours["ratio_to_reference"]["median"] > 0
    assert [run["slices_per_s"] for run in figures["runs"]["torch"]] == [2 / run["wall_s"]
                                                                       for run in figures["runs"]["torch"]]
    assert "peak_gpu_mb" not in ours and "device: cpu" in printed  # no GPU memory to report on the CPU
    agreement = figures["agreement"]["torch"]
    assert agreement["pixels"] == 2 * 256 * 256
    # Same slices, same model, exact arithmetic: the model-grid labels equal the reference's.
    assert agreement["differing_pixels"] == 0


def test_native_benchmark_runs_on_a_tiny_case(tmp_path, capsys):
    ct, _ = make_leg_phantom(seed=2, shape=(3, 80, 112))
    write_volume(ct, tmp_path / "ct.nii.gz")
    model = make_model_folder(tmp_path / "model", patch_size=(64, 64),
                              native={"spacing": (1.5, 1.5), "labels": ["SAT", "SM", "IMAT", "Bone"]})

    figures = benchmark_native.main(["--ct", str(tmp_path / "ct.nii.gz"), "--model", str(model), "--threads", "1",
                                     "--slices", "2"])

    assert "ours/reference wall time" in capsys.readouterr().out
    assert figures["slices"] == 2 and figures["ours_s"] > 0 and figures["reference_s"] > 0
    assert figures["label_agreement"] == 1.0  # same arithmetic as nnUNetPredictor
