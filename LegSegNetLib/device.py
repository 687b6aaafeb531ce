"""Compute devices, in one place for inference, training and the Slicer module: which names are valid, what
torch can use here, and which device 'auto' means. torch is imported only when a device is resolved or
detected, so checking a name works where torch is missing."""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"


class DeviceError(ValueError):
    """A device name that is not valid, or a device this machine does not have; the message says what to use."""


def check_device_name(name: str) -> str:
    """The device name in lower case; DeviceError for anything but auto, cpu, cuda, cuda:N or mps."""
    normalized = str(name or "").strip().lower()
    if not DEVICE_PATTERN.match(normalized):
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return normalized


def resolve_device(name: str = "auto"):
    """The torch.device a name stands for: 'auto' picks CUDA, then Apple MPS, then the CPU; an explicit choice
    this machine lacks is a DeviceError that says what to install or choose instead."""
    import torch

    name = check_device_name(name)
    kind = name.split(":")[0]
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available(torch) else torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise DeviceError(
            f"CUDA was requested but torch {torch.__version__} ({build}) sees no usable NVIDIA GPU. Install a "
            "CUDA build of torch that matches your driver (in Slicer: the PyTorch extension), or use --device cpu."
        )
    if kind == "cuda" and ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
        raise DeviceError(f"{name} was requested but this machine has {torch.cuda.device_count()} GPU(s): "
                          f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if kind == "mps" and not mps_available(torch):
        raise DeviceError(
            "Apple MPS was requested but is not available (it needs an Apple-silicon Mac with macOS 12.3 or later "
            "and a torch build with MPS); use --device cpu."
        )
    return torch.device(name)


def mps_available(torch) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_cores() -> int:
    """The cores this process may run on (a container's or a batch job's share, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def network_threads() -> int:
    """Threads a network runtime may use: torch's setting (a Dask worker lowers it to its share of the cores),
    never more than the cores this process may run on (torch counts the machine's, not a container's)."""
    import torch

    return max(1, min(torch.get_num_threads(), available_cores()))


@dataclass(frozen=True)
class DeviceReport:
    choices: tuple[tuple[str, str], ...]  # (device name for the settings, label shown to the user)
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
    elif mps_available(torch):
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
