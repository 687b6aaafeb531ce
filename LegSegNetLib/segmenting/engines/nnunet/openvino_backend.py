"""Optional OpenVINO backend for CPU inference (`backend="openvino"` float32, `"openvino-bf16"` bfloat16).

OpenVINO reads the same cached ONNX export as the ONNX Runtime backend (exported once from the loaded weights)
and keeps what it compiled from it for this CPU and precision beside it (read 0.2 s + compile 0.1 s for a
LegSegNet-sized network; loading the compiled one takes 0.04 s).
Its precision is always stated: on CPUs with AVX-512 BF16 or AMX OpenVINO would otherwise choose bfloat16 by
itself. Float32 differs from PyTorch in the last bits; bfloat16 keeps 8 bits of mantissa, so more near-ties
flip (agreement and speed measured on the bootstrap model: Testing/BENCHMARK.md). Needs `openvino` and `onnx`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from LegSegNetLib.device import network_threads
from LegSegNetLib.segmenting.engines.nnunet.backends import BackendUnavailableError
from LegSegNetLib.segmenting.engines.nnunet.model import NNUNetModel
from LegSegNetLib.segmenting.engines.nnunet.onnx_backend import CpuRuntimeNetwork, exported_onnx

PRECISIONS = ("f32", "bf16")

log = logging.getLogger(__name__)


class OpenVinoNetwork(CpuRuntimeNetwork):
    def __init__(self, compiled, path: Path):
        super().__init__(path)
        self.request = compiled.create_infer_request()

    def run(self, image: np.ndarray) -> np.ndarray:
        self.request.infer({0: image})
        return self.request.get_output_tensor(0).data.copy()  # the request reuses its output buffer


def openvino_networks(model: NNUNetModel, precision: str = "f32", cache_dir: Optional[Path] = None) -> list:
    """One OpenVINO network per fold of `model`, compiled for this CPU at `precision` (f32 or bf16)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown OpenVINO precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    openvino = _import_openvino()
    core = openvino.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise BackendUnavailableError("this CPU has no bfloat16 arithmetic (AVX-512 BF16 or AMX): use --backend "
                                      "openvino (float32) instead")
    config = {
        "INFERENCE_PRECISION_HINT": precision,
        "PERFORMANCE_HINT": "LATENCY",  # one batch at a time, all cores on it
        "INFERENCE_NUM_THREADS": network_threads(),
        "ENABLE_CPU_PINNING": False,  # the resampling and the next batch's preparation share the cores
    }
    paths = exported_onnx(model, cache_dir)
    compiled = _writable_folder(paths[0].parent / "openvino")
    if compiled is not None:
        config["CACHE_DIR"] = str(compiled)  # compiled networks: later runs load them instead of compiling
    return [OpenVinoNetwork(core.compile_model(str(path), "CPU", config), path) for path in paths]


def _writable_folder(folder: Path) -> Optional[Path]:
    """`folder`, made if need be, when this process may write there (OpenVINO fails on a cache folder it cannot
    make); else None: a read-only shared model cache still runs, compiling every time."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.debug("OpenVINO's compiled networks are not kept: %s", error)
        return None
    if not os.access(folder, os.W_OK | os.X_OK):
        log.debug("OpenVINO's compiled networks are not kept: %s is read-only", folder)
        return None
    return folder


def _import_openvino():
    try:
        import openvino
    except ModuleNotFoundError as error:
        raise BackendUnavailableError(
            "the OpenVINO backends need the optional packages openvino and onnx: pip install openvino onnx "
            "(or use the default torch backend)"
        ) from error
    return openvino
