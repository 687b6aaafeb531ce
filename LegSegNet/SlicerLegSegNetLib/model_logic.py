"""Model weights and Python packages for the Slicer module, without Qt: which engines can be chosen, what is
missing, what the user is asked, and the downloads, offline installs and removals themselves.

The widget asks the questions (this module gives their texts) and shows progress; everything else happens here,
so it is tested outside the application. How packages are installed is injected: inside Slicer,
`slicer.util.pip_install` and the PyTorch extension's PyTorchUtils logic (which picks the torch build for the
user's GPU); in tests, stand-ins.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Optional

from LegSegNetLib.settings import MODEL_ENGINE, MODEL_OPTIONS, THRESHOLD_ENGINE, SegmentationSettings
from SlicerLegSegNetLib import dependencies


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # "legsegnet" or "threshold", as SegmentationSettings takes it
    model: Optional[str]  # registry or installed model name (legsegnet engine only)
    label: str

    @property
    def needs_model(self) -> bool:
        return self.engine == MODEL_ENGINE

    @property
    def key(self) -> str:
        """What the parameter node stores and the engine list carries as item data: stable across list refills."""
        return f"{self.engine}:{self.model or ''}"

    def settings(self, **options) -> SegmentationSettings:
        """The segmentation settings for this choice and the widget's options (SegmentationSettings fields; the
        model options are dropped for the threshold engine). SettingsError or ValueError with a message for the
        user when one is not valid."""
        if not self.needs_model:
            kept = {name: value for name, value in options.items() if name not in MODEL_OPTIONS}
            return SegmentationSettings(engine=THRESHOLD_ENGINE, **kept)
        return SegmentationSettings(engine=MODEL_ENGINE, model=self.model, **options)


THRESHOLD_CHOICE = EngineChoice(THRESHOLD_ENGINE, None, "HU thresholds (no model, rough; for a quick look)")


def engine_choices() -> list[EngineChoice]:
    """Every registry model and every model installed under a name of its own, then the threshold engine
    (no weights, a quick rough answer)."""
    from LegSegNetLib.models.status import list_models

    return [EngineChoice(MODEL_ENGINE, status.name, status.spec.title if status.spec else status.name)
            for status in list_models()] + [THRESHOLD_CHOICE]


class ModelLogic:
    """Downloads, installs and removes model weights and installs the Python packages an engine needs."""

    def __init__(self, pip_install: Optional[Callable[[str], None]] = None, pytorch_utils=None):
        self.pip_install = pip_install  # slicer.util.pip_install inside Slicer
        self.pytorch_utils = pytorch_utils  # PyTorchUtils.PyTorchUtilsLogic() when the extension is installed

    # ---- Python packages ------------------------------------------------------------------------------------

    @staticmethod
    def requirements(choice: EngineChoice) -> tuple:
        if choice.needs_model:
            return dependencies.MODEL_ENGINE_REQUIREMENTS
        return dependencies.THRESHOLD_ENGINE_REQUIREMENTS

    def missingRequirements(self, choice: EngineChoice) -> list:
        return dependencies.missing_requirements(self.requirements(choice))

    @staticmethod
    def missingComparisonRequirements() -> list:
        """What comparing with a reference needs (MONAI's surface distances) and is not installed."""
        return dependencies.missing_requirements(dependencies.COMPARISON_REQUIREMENTS)

    def consentMessage(self, missing: list) -> str:
        return dependencies.consent_message(missing, self.pytorch_utils is not None)

    def installRequirements(self, missing: list, status: Callable[[str], None] = lambda text: None) -> bool:
        """Install what is missing (after the user agreed); True when Slicer must restart to use it."""
        restart = dependencies.restart_needed(missing, sys.modules)  # PyTorchUtils imports torch once installed
        for requirement in missing:
            status(f"Installing {requirement.pip_spec}... (this can take several minutes)")
            if requirement.via_pytorch_utils and self.pytorch_utils is not None:
                if self.pytorch_utils.installTorch(askConfirmation=False,
                                                   torchVersionRequirement=requirement.specifier) is None:
                    raise RuntimeError("the PyTorch extension could not install PyTorch")
            else:
                if self.pip_install is None:
                    raise RuntimeError(f"cannot install {requirement.pip_spec} here: install it with pip")
                self.pip_install(requirement.pip_arguments())
        return restart

    # ---- model weights --------------------------------------------------------------------------------------

    @staticmethod
    def downloadQuestion(choice: EngineChoice, action: str) -> str:
        """What the user is asked before `action` ("Download", "Update" or "Repair") fetches the weights."""
        from LegSegNetLib.models.registry import get_model_spec

        spec = get_model_spec(choice.model)
        licence = spec.licence.get("advice") or spec.licence.get("weights", "")
        return (f"{action} the {spec.title} weights (version {spec.version}) from {spec.homepage}?\n\n{licence}\n\n"
                "Behind a firewall, set LEGSEGNET_WEIGHTS_URL to a mirror, or use 'Install from file...'.")

    @staticmethod
    def download(choice: EngineChoice, action: str, folds="", progress=None, cancel=lambda: False):
        """Fetch and verify the chosen registry model (resumable; models.download.DownloadCancelled when
        cancel() turns True). `action` other than "Download" replaces the installed copy."""
        from LegSegNetLib.models.download import download_model
        from LegSegNetLib.models.folds import parse_folds

        return download_model(choice.model, folds=parse_folds(folds), progress=progress, cancel=cancel,
                              replace=action != "Download")

    @staticmethod
    def installFrom(source, choice: EngineChoice, confirm_replace: Callable[[], bool] = lambda: False):
        """Install a model folder or .zip as the chosen model; when one is installed already, it is replaced only
        if confirm_replace() agrees. Returns the installed folder, or None when the user kept the old one."""
        from LegSegNetLib.models.install import ModelExistsError, install_model_from

        try:
            return install_model_from(source, choice.model)
        except ModelExistsError:
            if not confirm_replace():
                return None
            return install_model_from(source, choice.model, replace=True)

    @staticmethod
    def remove(choice: EngineChoice):
        from LegSegNetLib.models.install import remove_model

        return remove_model(choice.model)
