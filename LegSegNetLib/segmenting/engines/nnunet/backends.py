"""The runtimes that can run LegSegNet's network, by name; importable without torch (the command line lists them).

torch is the default and the only exact one: its labels equal nnU-Net's. The others run on the CPU only, are
optional extras (pyproject.toml), and move labels at near-ties; their agreement with torch was measured on the
trained bootstrap model only (Testing/BENCHMARK.md), not on the published LegSegNet weights.
"""

from __future__ import annotations


BACKENDS = {
    "torch": "PyTorch, exact: labels equal nnU-Net's (default)",
    "onnx": "ONNX Runtime on the CPU, float32 (needs onnxruntime and onnx)",
    "openvino": "OpenVINO on the CPU, float32 (needs openvino and onnx)",
    "openvino-bf16": "OpenVINO on the CPU in bfloat16, fastest on CPUs with AVX-512 BF16 or AMX "
                     "(needs openvino and onnx)",
}
DEFAULT_BACKEND = "torch"


class BackendUnavailableError(RuntimeError):
    """The chosen backend cannot run here; the message says what to install or change."""


def backend_networks(model, backend: str, device) -> list:
    """One network per fold of `model` run by `backend`; `device` the torch.device the predictor resolved."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == DEFAULT_BACKEND:
        return model.networks
    if device.type != "cpu":
        raise BackendUnavailableError(f"the {backend} backend runs on the CPU: add --device cpu, or use the torch "
                                      "backend")
    if backend == "onnx":
        from LegSegNetLib.segmenting.engines.nnunet.onnx_backend import onnx_networks

        return onnx_networks(model)
    from LegSegNetLib.segmenting.engines.nnunet.openvino_backend import openvino_networks

    return openvino_networks(model, precision="bf16" if backend == "openvino-bf16" else "f32")

