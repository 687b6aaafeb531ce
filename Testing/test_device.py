"""The one device module: names checked without torch, 'auto' resolved, GPUs detected for the Slicer widget."""

import sys
from types import SimpleNamespace

import pytest
import torch

from LegSegNetLib import device as device_module
from LegSegNetLib.device import DeviceError, check_device_name, detect_devices, resolve_device


def test_device_names_are_checked_without_torch():
    assert check_device_name(" CUDA:1 ") == "cuda:1"
    for bad in ("tpu", "cuda:x", "", None):
        with pytest.raises(DeviceError, match="auto, cpu, cuda, cuda:N or mps"):
            check_device_name(bad)


def test_device_auto_falls_back_to_an_available_device():
    device = resolve_device("auto")
    if torch.cuda.is_available():
        assert device.type == "cuda"
    elif device.type != "mps":
        assert device.type == "cpu"


def test_unavailable_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="--device cpu"):
        resolve_device("cuda")


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N or mps"):
        resolve_device("tpu")


def fake_torch(cuda_names=(), mps=False):
    """A stand-in torch exposing only the attributes device detection reads (torch itself has no GPU here)."""
    cuda = SimpleNamespace(
        is_available=lambda: bool(cuda_names),
        device_count=lambda: len(cuda_names),
        get_device_name=lambda index: cuda_names[index],
        get_device_properties=lambda index: SimpleNamespace(total_memory=80 * 2**30),
    )
    backends = SimpleNamespace(mps=SimpleNamespace(is_available=lambda: mps))
    return SimpleNamespace(cuda=cuda, backends=backends, version=SimpleNamespace(cuda="12.4"), __version__="2.5.1")


def test_detects_each_gpu():
    report = detect_devices(fake_torch(("NVIDIA H100", "NVIDIA A100")))
    assert ("cuda:1", "GPU 1: NVIDIA A100") in report.choices
    assert report.choices[0][0] == "auto"
    assert "NVIDIA H100 (80 GiB)" in report.summary and "CUDA 12.4" in report.summary


def test_reports_cpu_only_and_apple_gpu():
    assert "no GPU found" in detect_devices(fake_torch()).summary
    assert ("mps", "Apple GPU (MPS)") in detect_devices(fake_torch(mps=True)).choices


def test_real_torch_here_is_detected_without_error():
    report = detect_devices()
    assert [value for value, _ in report.choices][:2] == ["auto", "cpu"]
    assert "torch" in report.summary


def test_without_torch_offers_auto_and_cpu(monkeypatch):
    monkeypatch.setattr(device_module.importlib.util, "find_spec", lambda name: None)
    report = detect_devices()
    assert report.summary == "PyTorch is not installed yet"
    assert [value for value, _ in report.choices] == ["auto", "cpu"]


def test_a_torch_that_fails_to_load_is_reported_not_raised(monkeypatch, tmp_path):
    """As on a machine where torch's CUDA libraries are missing: importing it raises OSError."""
    broken = tmp_path / "torch"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise OSError('libcudart.so.12: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    report = detect_devices()
    assert "cannot be loaded" in report.summary and "libcudart" in report.summary
    assert [value for value, _ in report.choices] == ["auto", "cpu"]
