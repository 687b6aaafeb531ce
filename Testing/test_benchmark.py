"""The benchmark script runs end to end on a tiny case (it is a script, not a timed test)."""

import pytest

import benchmark
from LegSegNetLib.reading.volume_files import write_volume
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom
from model_factory import make_model_folder

pytest.importorskip("LegSegNetLib.segmenting.engines.nnunet.engine", reason="the LegSegNet engine has not landed yet")
pytest.importorskip("nnunetv2", reason="the reference pipeline needs nnunetv2 (test-only)")


def test_benchmark_runs_both_pipelines_on_a_tiny_case(tmp_path, capsys):
    ct, _ = make_leg_phantom(seed=1, shape=(3, 80, 112))
    write_volume(ct, tmp_path / "ct.nii.gz")
    model = make_model_folder(tmp_path / "model")

    figures = benchmark.main(["--ct", str(tmp_path / "ct.nii.gz"), "--model", str(model), "--threads", "1",
                              "--slices", "2", "--work", str(tmp_path / "work")])

    printed = capsys.readouterr().out
    assert "ours/reference wall time" in printed and "label agreement" in printed
    for name in ("reference", "ours"):
        summary = figures["results"][name]
        assert summary["slices"] == "2/3"
        assert summary["network_s"] > 0 and 0 < summary["outside_share"] < 1
        assert summary["peak_rss_mb"] >= summary["model_rss_mb"] > 0
        assert summary["extrapolated_wall_s"] > summary["wall_s"]
    agreement = figures["agreement"]
    assert agreement["grid256_pixels"] == 2 * 256 * 256 and agreement["native_pixels"] == 2 * 80 * 112
    # Same slices, same model, exact arithmetic: the model-grid labels match the reference.
    assert agreement["grid256_equal"] >= 0.999


def test_native_benchmark_runs_on_a_tiny_case(tmp_path, capsys):
    ct, _ = make_leg_phantom(seed=2, shape=(3, 80, 112))
    write_volume(ct, tmp_path / "ct.nii.gz")
    model = make_model_folder(tmp_path / "model", patch_size=(64, 64),
                              native={"spacing": (1.5, 1.5), "labels": ["SAT", "SM", "IMAT", "Bone"]})

    figures = benchmark.main(["--native", "--ct", str(tmp_path / "ct.nii.gz"), "--model", str(model),
                              "--threads", "1", "--slices", "2"])

    assert "ours/reference wall time" in capsys.readouterr().out
    assert figures["slices"] == 2 and figures["ours_s"] > 0 and figures["reference_s"] > 0
    assert figures["label_agreement"] == 1.0  # same arithmetic as nnUNetPredictor
