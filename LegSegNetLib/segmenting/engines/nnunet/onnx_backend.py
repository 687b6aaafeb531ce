"""Optional ONNX Runtime backend for CPU inference (`backend="onnx"`).

Each fold's network is exported to ONNX from the weights already loaded (never from an untrusted pickle) and
cached under the LegSegNet home folder, keyed by a hash of the architecture and the weights, so later runs load
it directly. On this project's 2-core test machine ONNX Runtime ran the full-width LegSegNet network about
1.7-2x faster than PyTorch (see Testing/BENCHMARK.md). Its float arithmetic differs from PyTorch's in the last
bits, so labels can differ at near-ties: the default backend stays PyTorch, whose labels equal nnU-Net's.
Needs the optional packages `onnxruntime` (and `onnx` to export).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from LegSegNetLib.models.paths import legsegnet_home
from LegSegNetLib.segmenting.engines.nnunet.model import NNUNetModel

BACKENDS = ("torch", "onnx")
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "logits"


class BackendUnavailableError(RuntimeError):
    """The chosen backend cannot run here; the message says what to install or change."""


class OnnxNetwork:
    """Stands in for a fold's torch network inside the Predictor: same call, same output, on the CPU only."""

    def __init__(self, session, path: Path):
        self.session = session
        self.path = path

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        image = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: image})[0])

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.forward(batch)

    def to(self, device) -> "OnnxNetwork":
        if torch.device(device).type != "cpu":
            raise BackendUnavailableError("the ONNX backend runs on the CPU only; use the torch backend for a GPU")
        return self

    def eval(self) -> "OnnxNetwork":
        return self


def onnx_networks(model: NNUNetModel, cache_dir: Optional[Path] = None) -> list:
    """One ONNX Runtime network per fold of `model`, exporting (once) what the cache lacks."""
    runtime = _import_onnxruntime()
    folder = Path(cache_dir) if cache_dir is not None else legsegnet_home() / "onnx"
    networks = []
    for network in model.networks:
        path = folder / f"{network_key(model, network)}.onnx"
        if not path.exists():
            export(network, model.patch_size, path)
        networks.append(OnnxNetwork(runtime.InferenceSession(str(path), _session_options(runtime),
                                                             providers=["CPUExecutionProvider"]), path))
    return networks


def network_key(model: NNUNetModel, network: torch.nn.Module) -> str:
    """Hash of everything the exported graph depends on: architecture, weights, torch version, opset."""
    digest = hashlib.sha256()
    digest.update(json.dumps(model.configuration["architecture"], sort_keys=True).encode())
    digest.update(f"{torch.__version__}|{OPSET}|{model.patch_size}".encode())
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def export(network: torch.nn.Module, patch_size, path: Path) -> None:
    """Write the network as ONNX with a variable batch size; the file appears only once complete."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ModuleNotFoundError as error:
        raise BackendUnavailableError("exporting to ONNX needs the 'onnx' package: pip install onnx") from error
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    example = torch.zeros((1, 1, *patch_size), dtype=torch.float32)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on InstanceNorm and dynamic shapes
            torch.onnx.export(
                network.cpu().eval(), example, str(temporary), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=OPSET,
                dynamo=False,
            )
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _session_options(runtime):
    options = runtime.SessionOptions()
    options.intra_op_num_threads = _available_cores()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = runtime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle threads must not spin: the resampling and the next batch's preparation need the cores between runs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _import_onnxruntime():
    try:
        import onnxruntime
    except ModuleNotFoundError as error:
        raise BackendUnavailableError(
            "the ONNX backend needs the optional packages onnxruntime and onnx: pip install onnxruntime onnx "
            "(or use the default torch backend)"
        ) from error
    return onnxruntime
