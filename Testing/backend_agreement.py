"""How far the inexact speed options move LegSegNet's labels: the optional backends (ONNX Runtime, OpenVINO
float32 and bfloat16) and torch bf16 autocast on the CPU, each against the exact PyTorch path, on real CT slices,
with the time per slice of each.

Use a trained model (random weights put near-ties everywhere and exaggerate the differences):

    python Testing/backend_agreement.py --model /path/to/model_folder --checkpoint checkpoint_best.pth --slices 24
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from LegSegNetLib.settings import SegmentationSettings

TESTING = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTING.parent), str(TESTING)]


def spread_slices(hu: np.ndarray, count: int) -> np.ndarray:
    """`count` slices spread evenly over the volume (only those with a body in them)."""
    from LegSegNetLib.segmenting.pipeline import has_body

    indices = [index for index in np.linspace(0, len(hu) - 1, count).round().astype(int) if has_body(hu[index])]
    return np.ascontiguousarray(hu[indices])


def bf16_autocast(engine) -> None:
    """Run the engine's networks under CPU bf16 autocast (outputs back to float32, as the predictor expects)."""
    for network in engine.predictor.networks:
        forward = network.forward

        def autocast_forward(batch, forward=forward):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return forward(batch).float()

        network.forward = autocast_forward


def timed_labels(engine, hu: np.ndarray) -> tuple:
    started = time.perf_counter()
    native = np.concatenate([engine.segment_slices(hu[start:start + 8]) for start in range(0, len(hu), 8)])
    seconds = (time.perf_counter() - started) / len(hu)
    return engine.segment_model_grid(hu), native, seconds


def compare(name: str, exact: tuple, other: tuple, stream=sys.stdout) -> dict:
    grid_equal = float(np.mean(exact[0] == other[0]))
    native_equal = float(np.mean(exact[1] == other[1]))
    dices = {tissue: _dice(exact[1] == tissue, other[1] == tissue) for tissue in (1, 2, 3, 4)}
    print(f"{name:14} {other[2]:8.2f} s/slice   equal labels: 256 grid {grid_equal:.5%}, native {native_equal:.5%}; "
          "Dice vs exact " + " ".join(f"{tissue}:{value:.4f}" for tissue, value in dices.items()), file=stream)
    return {"seconds_per_slice": other[2], "grid256_equal": grid_equal, "native_equal": native_equal, "dice": dices}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2 * np.count_nonzero(a & b) / total


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--checkpoint")
    parser.add_argument("--ct", type=Path, help="CT file or DICOM folder (default: the Visible Human lower-leg CT)")
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--options", default="onnx,openvino,openvino-bf16,bf16",
                        help="comma-separated backend names, and bf16 (torch autocast)")
    args = parser.parse_args(argv)

    from LegSegNetLib.reading.volume_files import read_volume
    from LegSegNetLib.reading.layout import slice_layout
    from LegSegNetLib.segmenting.engines.nnunet.engine import LegSegNetEngine
    import realct

    ct = read_volume(args.ct or realct.visible_human_dicom_dir())
    hu = spread_slices(slice_layout(ct).display_view(ct.array), args.slices)

    def engine(backend="torch"):
        return LegSegNetEngine.from_model_folder(args.model, SegmentationSettings(checkpoint=args.checkpoint, device="cpu", backend=backend))

    exact = timed_labels(engine(), hu)
    print(f"{len(hu)} slices of {hu.shape[1]}x{hu.shape[2]}; torch (exact) {exact[2]:.2f} s/slice")
    results = {"torch_seconds_per_slice": exact[2]}
    for option in args.options.split(","):
        if option == "bf16":
            bf16 = engine()
            bf16_autocast(bf16)
            results[option] = compare("bf16", exact, timed_labels(bf16, hu))
        else:
            results[option] = compare(option, exact, timed_labels(engine(option), hu))
    return results


if __name__ == "__main__":
    main()
