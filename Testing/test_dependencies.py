"""Dependency checks and device detection for the Slicer module (pure Python, no Slicer needed)."""

import sys
from types import SimpleNamespace

import pytest

from SlicerLegSegNetLib import dependencies
from SlicerLegSegNetLib.dependencies import (
    MODEL_ENGINE_REQUIREMENTS, TORCH, Requirement, consent_message, detect_devices, is_satisfied,
    missing_requirements, restart_needed,
)


@pytest.mark.parametrize("version, expected", [
    ("2.4.0+cu121", True),  # CUDA build tag
    ("2.6.0.dev20241001+cu124", True),  # nightly
    ("2.1.0", True),
    ("2.0.1", False),
    ("not-a-version", False),
    (None, False),
])
def test_torch_versions(version, expected):
    assert is_satisfied(TORCH, version) is expected


def test_missing_requirements_lists_absent_and_too_old_packages_in_install_order():
    installed = {"torch": "1.13.1", "scipy": "1.14.0"}
    missing = missing_requirements(version_of=installed.get)
    assert [requirement.distribution for requirement in missing] == ["torch", "dynamic-network-architectures"]


def test_nothing_missing_in_this_environment():
    # The test environment is a complete LegSegNet runtime (torch, dynamic-network-architectures, scipy).
    assert missing_requirements() == []


def test_pip_arguments_keep_network_package_from_pulling_another_torch():
    network = next(r for r in MODEL_ENGINE_REQUIREMENTS if r.distribution == "dynamic-network-architectures")
    assert network.pip_arguments().endswith("--no-deps")
    assert Requirement("scipy", "scipy", ">=1.9", "x").pip_arguments() == "scipy>=1.9"


def test_restart_needed_only_when_an_installed_package_was_already_imported():
    assert restart_needed([TORCH], loaded_modules={"torch": object(), "numpy": object()})
    assert not restart_needed([TORCH], loaded_modules={"numpy": object()})


def test_consent_message_names_every_package_and_how_torch_is_installed():
    message = consent_message(list(MODEL_ENGINE_REQUIREMENTS), pytorch_utils_available=True)
    for requirement in MODEL_ENGINE_REQUIREMENTS:
        assert requirement.pip_spec in message
    assert "PyTorch extension" in message
    assert "Install now?" in message


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
    monkeypatch.setattr(dependencies.importlib.util, "find_spec", lambda name: None)
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
