"""Checkpoints load with weights_only=True: numpy scalars allowed, code refused, damage reported."""

import os

import numpy as np
import pytest
import torch

from LegSegNetLib.segmenting.engines.nnunet.checkpoint import CheckpointReadError, UnsafeCheckpointError, load_checkpoint


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch should-never-exist",))


def test_numpy_scalars_in_an_nnunet_style_checkpoint_load(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {"w": torch.ones(3)}, "_best_ema": np.float64(0.81),
                "logging": {"dice": [np.float32(0.5)], "epoch": np.int64(3)}}, path)
    checkpoint = load_checkpoint(path)
    assert checkpoint["_best_ema"] == pytest.approx(0.81)
    torch.testing.assert_close(checkpoint["network_weights"]["w"], torch.ones(3))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"network_weights": {}, "payload": _RunsCode()}, path)
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system|nt.system"):
        load_checkpoint(path)
    assert not (tmp_path / "should-never-exist").exists()


def test_truncated_and_foreign_files_are_reported(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"network_weights": {}}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:64])
    with pytest.raises(CheckpointReadError, match="truncated"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointReadError, match="not an nnU-Net checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pth")


def _as_saved_by_numpy_1(path):
    """Rewrite a checkpoint's pickle so its numpy classes carry numpy 1.x module names (numpy.core...),
    as in checkpoints saved before numpy 2, such as many published nnU-Net models."""
    import zipfile

    with zipfile.ZipFile(path) as source:
        entries = {name: source.read(name) for name in source.namelist()}
    pickle_name = next(name for name in entries if name.endswith("data.pkl"))
    assert b"numpy._core" in entries[pickle_name]
    entries[pickle_name] = entries[pickle_name].replace(b"numpy._core", b"numpy.core")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for name, data in entries.items():
            target.writestr(name, data)


def test_a_checkpoint_saved_under_numpy_1_loads(tmp_path):
    path = tmp_path / "checkpoint_best.pth"
    torch.save({"network_weights": {"w": torch.ones(2)}, "_best_ema": np.float64(0.75)}, path)
    _as_saved_by_numpy_1(path)
    assert load_checkpoint(path)["_best_ema"] == pytest.approx(0.75)
