"""Dependency checks for the Slicer module (pure Python, no Slicer needed)."""

import pytest

from SlicerLegSegNetLib.dependencies import (
    MODEL_ENGINE_REQUIREMENTS, TORCH, Requirement, consent_message, is_satisfied,
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
