"""The native profile (nnU-Net's own 2D preprocessing on real intensities and spacing) against nnUNetPredictor.

Both run in this process on the same slices: the middle --slices N (default 4) 512x512 slices of the Visible
Human lower-leg CT (or --ct) at their own spacing; ours in batches whose tiles share network passes, the reference
one slice at a time with predict_single_npy_array. Prints the wall times, their ratio and the label agreement.

    python Testing/benchmark_native.py --slices 8 --threads 2
    python Testing/benchmark_native.py --backend onnx
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

TESTING = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTING.parent), str(TESTING)]

from benchmark import default_ct, middle_slices  # noqa: E402
from LegSegNetLib.segmenting.engines.nnunet.backends import BACKENDS  # noqa: E402

NATIVE_SPACING_MM = (0.8, 0.8)
NATIVE_PATCH = (320, 320)


def native_benchmark(args, stream=None) -> dict:
    """The native profile (NativeEngine: batches of slices, tiles of all of them sharing network passes) against
    nnUNetPredictor.predict_single_npy_array one slice at a time, both in this process on the same slices: the
    middle --slices N (default 4) 512x512 slices of the Visible Human leg CT (or --ct) at their own spacing. The
    default model is LegSegNet-sized with random weights, CTNormalization, 0.8 mm spacing and a 320 patch."""
    import torch

    from LegSegNetLib.reading.layout import slice_layout
    from LegSegNetLib.reading.volume_files import read_volume
    from LegSegNetLib.segmenting.engines.nnunet.model import load_model_folder
    from LegSegNetLib.segmenting.engines.nnunet.native import NativeEngine
    from nnunet_reference import ReferencePredictor, native_reference_labels
    import realct

    if args.threads:
        torch.set_num_threads(args.threads)
    volume = read_volume(args.ct or default_ct())
    layout = slice_layout(volume)
    display = layout.display_view(volume.array)
    indices = middle_slices(len(display), args.slices)
    slices = np.ascontiguousarray(display[indices]).astype(np.float32)
    spacing = (layout.spacing_row_mm, layout.spacing_column_mm)
    model = args.model or default_native_model(realct.cache_dir() / "legsegnet_sized_native_model")
    folds = [int(fold) for fold in args.folds.split(",")]

    started = time.perf_counter()
    engine = NativeEngine(load_model_folder(model, folds=folds), tta=args.tta, device=args.device,
                          batch_size=args.batch_size, backend=args.backend)
    ours_load = time.perf_counter() - started
    started = time.perf_counter()
    step = engine.preferred_batch_size
    ours = np.concatenate([engine.segment_slices(slices[start:start + step], spacing)
                           for start in range(0, len(slices), step)])
    ours_s = time.perf_counter() - started

    started = time.perf_counter()
    reference = ReferencePredictor(model, folds=folds, tta=args.tta)
    reference_load = time.perf_counter() - started
    started = time.perf_counter()
    expected = np.stack([native_reference_labels(reference, image, spacing) for image in slices])
    reference_s = time.perf_counter() - started

    figures = {"slices": len(slices), "slice_shape": list(slices.shape[1:]), "spacing_mm": list(spacing),
               "threads": torch.get_num_threads(), "backend": args.backend, "ours_s": ours_s, "reference_s": reference_s,
               "ours_load_s": ours_load, "reference_load_s": reference_load, "ratio": ours_s / reference_s,
               "label_agreement": float(np.mean(ours == expected))}
    stream = stream or sys.stdout
    print(f"native profile, {len(slices)} slices {slices.shape[1]}x{slices.shape[2]} at {spacing[0]:.3g} mm, "
          f"{figures['threads']} threads, our backend {args.backend}", file=stream)
    print(f"  ours      {ours_s:8.2f} s  ({ours_s / len(slices):.2f} s/slice; model load {ours_load:.1f} s)", file=stream)
    print(f"  reference {reference_s:8.2f} s  ({reference_s / len(slices):.2f} s/slice; model load "
          f"{reference_load:.1f} s)", file=stream)
    print(f"  ours/reference wall time {figures['ratio']:.2f}; label agreement {figures['label_agreement']:.6f}",
          file=stream)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return figures


def default_native_model(folder: Path) -> Path:
    """A LegSegNet-sized random-weight model trained (so to speak) on CT in HU at 0.8 mm with a 320 patch."""
    from model_factory import LEGSEGNET_FEATURES, make_model_folder

    if not (folder / "fold_0" / "checkpoint_final.pth").is_file():
        make_model_folder(folder, "CTNormalization", features_per_stage=LEGSEGNET_FEATURES, patch_size=NATIVE_PATCH,
                          native={"spacing": NATIVE_SPACING_MM, "labels": ["SAT", "SM", "IMAT", "Bone"]})
    return folder


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct", type=Path, help="CT file or DICOM folder (default: the Visible Human lower-leg CT)")
    parser.add_argument("--model", type=Path, help="nnU-Net model folder (default: LegSegNet-sized random weights, "
                                                   "0.8 mm, 320 patch)")
    parser.add_argument("--slices", type=int, default=4, help="the N middle slices (default 4)")
    parser.add_argument("--folds", default="0", help="folds, e.g. 0,1 (default 0)")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--backend", choices=tuple(BACKENDS), default="torch", help="our network backend")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    return native_benchmark(parse_args(argv))


if __name__ == "__main__":
    main()
