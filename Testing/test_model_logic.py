"""The widget's model-management logic without Qt: package installs through injected installers, downloads from
a local stand-in for Hugging Face with progress and cancel, offline installs that ask before replacing, removal."""

from __future__ import annotations

import pytest

from LegSegNetLib.models import DownloadCancelled, model_status
from LegSegNetLib.models.status import INSTALLED, NOT_INSTALLED
from models_helpers import hf_model, isolated_home, server  # noqa: F401
from SlicerLegSegNetLib import dependencies
from SlicerLegSegNetLib.model_logic import THRESHOLD_CHOICE, EngineChoice, ModelLogic

LEGSEGNET = EngineChoice("legsegnet", "legsegnet", "LegSegNet")


class FakePyTorchUtils:
    def __init__(self):
        self.asked = []

    def installTorch(self, askConfirmation, torchVersionRequirement):
        self.asked.append((askConfirmation, torchVersionRequirement))
        return object()


def test_packages_go_through_pytorch_utils_and_pip_without_asking_again():
    pip_calls, torch_utils = [], FakePyTorchUtils()
    logic = ModelLogic(pip_install=pip_calls.append, pytorch_utils=torch_utils)
    missing = list(dependencies.MODEL_ENGINE_REQUIREMENTS)
    statuses = []
    restart = logic.installRequirements(missing, statuses.append)
    assert torch_utils.asked == [(False, dependencies.TORCH.specifier)]  # the widget asked already
    assert pip_calls == [r.pip_arguments() for r in missing if not r.via_pytorch_utils]
    assert any("--no-deps" in call for call in pip_calls)
    assert len(statuses) == len(missing) and all("Installing" in text for text in statuses)
    assert restart  # torch and scipy are already imported in this process
    assert "PyTorch extension" in logic.consentMessage(missing)


def test_without_an_installer_the_logic_says_how_to_install():
    with pytest.raises(RuntimeError, match="install it with pip"):
        ModelLogic().installRequirements([dependencies.SCIPY])


def test_requirements_follow_the_engine():
    logic = ModelLogic()
    assert logic.requirements(THRESHOLD_CHOICE) == dependencies.THRESHOLD_ENGINE_REQUIREMENTS
    assert logic.requirements(LEGSEGNET) == dependencies.MODEL_ENGINE_REQUIREMENTS
    assert logic.missingRequirements(THRESHOLD_CHOICE) == []  # scipy is installed here


def test_download_reports_progress_and_a_cancel_keeps_the_model_uninstalled(server):
    logic = ModelLogic()
    assert "LEGSEGNET_WEIGHTS_URL" in logic.downloadQuestion(LEGSEGNET, "Download")
    with pytest.raises(DownloadCancelled):
        logic.download(LEGSEGNET, "Download", cancel=lambda: True)
    assert model_status("legsegnet").state == NOT_INSTALLED
    reports = []
    logic.download(LEGSEGNET, "Download", progress=reports.append)
    assert model_status("legsegnet").state == INSTALLED
    assert reports and reports[-1].done == reports[-1].total


def test_offline_install_asks_before_replacing_then_removal(hf_model):
    logic = ModelLogic()
    folder = logic.installFrom(hf_model, LEGSEGNET)
    assert model_status("legsegnet").state == INSTALLED
    asked = []
    assert logic.installFrom(hf_model, LEGSEGNET, confirm_replace=lambda: asked.append(1) or False) is None
    assert asked == [1]
    assert logic.installFrom(hf_model, LEGSEGNET, confirm_replace=lambda: True) == folder
    logic.remove(LEGSEGNET)
    assert model_status("legsegnet").state == NOT_INSTALLED


def test_comparison_needs_monai_and_torch_only_when_missing(monkeypatch):
    assert ModelLogic.missingComparisonRequirements() == []  # both installed here
    real_version = dependencies.importlib.metadata.version

    def version(name):
        if name == "monai":
            raise dependencies.importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(dependencies.importlib.metadata, "version", version)
    assert [r.distribution for r in ModelLogic.missingComparisonRequirements()] == ["monai"]
