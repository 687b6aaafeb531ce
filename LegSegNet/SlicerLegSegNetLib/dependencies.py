"""Which Python packages the LegSegNet model engine needs inside 3D Slicer, which are missing, and which compute
devices torch can use. Pure Python: no Slicer or Qt, and torch is imported only when it is installed.

Slicer bundles numpy and SimpleITK. torch must come from the PyTorch extension's PyTorchUtils when it is
present (it picks the CUDA build matching the user's GPU); the rest is installed with Slicer's pip helper.
dynamic-network-architectures is installed without its declared dependencies, which would replace torch.
Nothing is installed without the user's consent: the module widget asks first.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Callable, Optional

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version


@dataclass(frozen=True)
class Requirement:
    distribution: str  # name on PyPI
    module: str  # name it is imported by
    specifier: str  # version range, "" for any
    purpose: str
    no_deps: bool = False  # install without the dependencies the package declares
    via_pytorch_utils: bool = False  # torch: let the PyTorch extension pick the build for the GPU

    @property
    def pip_spec(self) -> str:
        return f"{self.distribution}{self.specifier}"

    def pip_arguments(self) -> str:
        """The argument string for slicer.util.pip_install."""
        return f"{self.pip_spec} --no-deps" if self.no_deps else self.pip_spec


TORCH = Requirement("torch", "torch", ">=2.1", "runs the LegSegNet network", via_pytorch_utils=True)
SCIPY = Requirement("scipy", "scipy", ">=1.9", "image filters of the threshold engine and the self-test phantom")

# Everything the LegSegNet (nnU-Net) engine needs beyond what Slicer bundles, in install order.
MODEL_ENGINE_REQUIREMENTS: tuple[Requirement, ...] = (
    TORCH,
    Requirement("dynamic-network-architectures", "dynamic_network_architectures", ">=0.3",
                "builds the nnU-Net network from the model's plans", no_deps=True),
    SCIPY,
)

# The threshold engine and the measurements need only these.
THRESHOLD_ENGINE_REQUIREMENTS: tuple[Requirement, ...] = (SCIPY,)

# Compare with reference: MONAI's surface distances (HD95, ASSD); MONAI runs on torch, installed first.
COMPARISON_REQUIREMENTS: tuple[Requirement, ...] = (
    TORCH,
    Requirement("monai", "monai", ">=1.3", "surface distances (HD95, ASSD) when comparing with a reference"),
)

VersionLookup = Callable[[str], Optional[str]]


def installed_version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def is_satisfied(requirement: Requirement, version: Optional[str]) -> bool:
    if version is None:
        return False
    try:
        parsed = Version(version)
    except InvalidVersion:
        return False
    # Nightly and local builds (2.6.0.dev20241001+cu124) count as the version they are.
    return SpecifierSet(requirement.specifier).contains(parsed, prereleases=True)


def missing_requirements(requirements=MODEL_ENGINE_REQUIREMENTS,
                         version_of: VersionLookup = installed_version) -> list[Requirement]:
    """The requirements that are not installed, or installed in a version outside their range."""
    return [requirement for requirement in requirements if not is_satisfied(requirement, version_of(requirement.distribution))]


def restart_needed(installed: list[Requirement], loaded_modules) -> bool:
    """An installed or upgraded package that Python had already imported only takes effect after a restart."""
    return any(requirement.module in loaded_modules for requirement in installed)


def consent_message(missing: list[Requirement], pytorch_utils_available: bool) -> str:
    """What the user is asked before anything is installed."""
    lines = ["LegSegNet needs these Python packages, which are not installed yet:", ""]
    for requirement in missing:
        how = ""
        if requirement.via_pytorch_utils:
            how = (" (through the PyTorch extension, which picks the build for your GPU)" if pytorch_utils_available
                   else " (CPU/GPU build chosen by pip; install the PyTorch extension for a GPU-matched build)")
        lines.append(f"  - {requirement.pip_spec}: {requirement.purpose}{how}")
    lines += ["", "Downloading them may take several minutes and about 1-3 GB of disk. Install now?"]
    return "\n".join(lines)


@dataclass(frozen=True)
class DeviceReport:
    choices: tuple[tuple[str, str], ...]  # (device value for the engine, label shown to the user)
    summary: str  # what was detected, one line


_NO_DETECTION_CHOICES = (("auto", "Auto"), ("cpu", "CPU"))


def detect_devices(torch_module=None) -> DeviceReport:
    """The compute devices torch can use here; without torch only the choices that need no detection."""
    try:
        torch = torch_module if torch_module is not None else _import_torch_if_installed()
    except (ImportError, OSError) as error:  # a broken install (a missing CUDA DLL, a half-removed package)
        return DeviceReport(_NO_DETECTION_CHOICES, f"PyTorch is installed but cannot be loaded ({error}): reinstall "
                                                   "it (PyTorch Utils module, or pip) and restart Slicer")
    if torch is None:
        return DeviceReport(_NO_DETECTION_CHOICES, "PyTorch is not installed yet")
    choices = [("auto", "Auto (GPU if available)"), ("cpu", "CPU")]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
        memory = torch.cuda.get_device_properties(0).total_memory / 2**30
        choices += [(f"cuda:{index}", f"GPU {index}: {name}") for index, name in enumerate(names)]
        summary = f"GPU: {names[0]} ({memory:.0f} GiB), CUDA {torch.version.cuda}, torch {torch.__version__}"
    elif _mps_available(torch):
        choices.append(("mps", "Apple GPU (MPS)"))
        summary = f"Apple GPU (MPS), torch {torch.__version__}"
    else:
        summary = f"no GPU found (torch {torch.__version__} CPU build or no CUDA driver): segmentation runs on CPU"
    return DeviceReport(tuple(choices), summary)


def _import_torch_if_installed():
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def _mps_available(torch) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
