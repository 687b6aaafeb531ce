"""Optional ONNX Runtime backend for CPU inference (`backend="onnx"`), and the ONNX export the OpenVINO backend
reads too.

Each fold's network is exported to ONNX from the weights already loaded (never from an untrusted pickle) and
cached under the LegSegNet home folder, keyed by a hash of the architecture and the weights, so later runs load
it directly. Its float arithmetic differs from PyTorch's in the last bits, so labels can differ at near-ties:
the default backend stays PyTorch, whose labels equal nnU-Net's (speeds and agreement: Testing/BENCHMARK.md).
Needs the optional packages `onnxruntime` (and `onnx` to export).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from LegSegNetLib.models.paths import legsegnet_home
from LegSegNetLib.device import network_threads
from LegSegNetLib.segmenting.engines.nnunet.backends import BackendUnavailableError
from LegSegNetLib.segmenting.engines.nnunet.model import NNUNetModel

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "logits"


class CpuRuntimeNetwork:
    """Stands in for a fold's torch network inside the Predictor: same call, same output, on the CPU only.
    Subclasses run a float32 numpy batch through their runtime."""

    def __init__(self, path: Path):
        self.path = path  # the ONNX file it was built from

    def run(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.forward(batch)

    def to(self, device) -> "CpuRuntimeNetwork":
        if torch.device(device).type != "cpu":
            raise BackendUnavailableError("this backend runs on the CPU only; use the torch backend for a GPU")
        return self

    def eval(self) -> "CpuRuntimeNetwork":
        return self


class OnnxNetwork(CpuRuntimeNetwork):
    def __init__(self, session, path: Path):
        super().__init__(path)
        self.session = session

    def run(self, image: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: image})[0]


def onnx_networks(model: NNUNetModel, cache_dir: Optional[Path] = None) -> list:
    """One ONNX Runtime network per fold of `model`, exporting (once) what the cache lacks."""
    runtime = _import_onnxruntime()
    return [OnnxNetwork(runtime.InferenceSession(str(path), _session_options(runtime),
                                                 providers=["CPUExecutionProvider"]), path)
            for path in exported_onnx(model, cache_dir)]


def exported_onnx(model: NNUNetModel, cache_dir: Optional[Path] = None) -> list:
    """The ONNX file of each fold's network, exported into the cache (default LEGSEGNET_HOME/onnx) when missing."""
    folder = Path(cache_dir) if cache_dir is not None else legsegnet_home() / "onnx"
    paths = []
    for network in model.networks:
        path = folder / f"{network_key(model, network)}.onnx"
        if not path.exists():
            export(network, model.patch_size, path)
        paths.append(path)
    return paths


def network_key(model: NNUNetModel, network: torch.nn.Module) -> str:
    """Hash of everything the exported graph depends on: architecture, weights, torch version, opset. The tensors
    are hashed on all cores (hashlib lets go of the GIL; 0.18 s -> 0.09 s for LegSegNet's 370 MB on 2), then
    their digests in order."""
    digest = hashlib.sha256()
    digest.update(json.dumps(model.configuration["architecture"], sort_keys=True).encode())
    digest.update(f"{torch.__version__}|{OPSET}|{model.patch_size}".encode())
    tensors = network.state_dict()
    with ThreadPoolExecutor(max_workers=network_threads(), thread_name_prefix="legsegnet-hash") as pool:
        for name, tensor_digest in zip(tensors, pool.map(_tensor_digest, tensors.values())):
            digest.update(name.encode())
            digest.update(tensor_digest)
    return digest.hexdigest()[:32]


def _tensor_digest(tensor: torch.Tensor) -> bytes:
    return hashlib.sha256(memoryview(tensor.detach().cpu().contiguous().numpy()).cast("B")).digest()


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
    options.intra_op_num_threads = network_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = runtime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle threads must not spin: the resampling and the next batch's preparation need the cores between runs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _import_onnxruntime():
    try:
        import onnxruntime
    except ModuleNotFoundError as error:
        raise BackendUnavailableError(
            "the ONNX backend needs the optional packages onnxruntime and onnx: pip install onnxruntime onnx "
            "(or use the default torch backend)"
        ) from error
    return onnxruntime
