"""Which Python packages the LegSegNet model engine needs inside 3D Slicer, which are missing, and what the user
is asked before they are installed. Pure Python: no Slicer or Qt (compute devices: LegSegNetLib.device).

Slicer bundles numpy and SimpleITK. torch must come from the PyTorch extension's PyTorchUtils when it is
present (it picks the CUDA build matching the user's GPU); the rest is installed with Slicer's pip helper.
dynamic-network-architectures is installed without its declared dependencies, which would replace torch.
Nothing is installed without the user's consent: the module widget asks first.
"""

from __future__ import annotations

import importlib.metadata
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
