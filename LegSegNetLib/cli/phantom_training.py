"""`legsegnet phantom-dataset` and `legsegnet phantom-dice`: synthetic training data and a truth-based check."""

from __future__ import annotations

import argparse
from pathlib import Path

from LegSegNetLib.device import DEVICE_HELP
from LegSegNetLib.settings import SegmentationSettings


def register(subparsers) -> None:
    dataset = subparsers.add_parser(
        "phantom-dataset", help="export synthetic leg phantoms as an nnU-Net training dataset",
        description="Export synthetic leg phantoms (calf and thigh, scan parameters drawn from each seed) as "
                    "an nnU-Net raw dataset of LegSegNet slices, appending to OUT.",
    )
    dataset.add_argument("out", type=Path, help="dataset folder (created or appended to)")
    dataset.add_argument("--seeds", type=parse_seed_range, default="0:48", metavar="A:B",
                         help="phantom seeds A (included) to B (excluded) (default 0:48)")
    dataset.add_argument("--slices", type=int, default=12, help="slices per phantom (default 12)")
    dataset.set_defaults(handler=run_dataset)

    dice = subparsers.add_parser(
        "phantom-dice", help="Dice per tissue of a model on synthetic leg phantoms",
        description="Segment synthetic leg phantoms with a model folder and print the Dice of each tissue "
                    "against the phantoms' exact truth (use seeds the model was not trained on).",
    )
    dice.add_argument("model", type=Path, help="nnU-Net v2 model folder")
    dice.add_argument("--seeds", type=parse_seed_range, default="1000:1008", metavar="A:B",
                      help="phantom seeds A (included) to B (excluded) (default 1000:1008)")
    dice.add_argument("--slices", type=int, default=12, help="slices per phantom (default 12)")
    dice.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default auto)")
    dice.set_defaults(handler=run_dice)


def parse_seed_range(text: str) -> range:
    start, separator, stop = text.partition(":")
    try:
        seeds = range(int(start), int(stop))
    except ValueError:
        seeds = range(0)
    if not separator or not seeds:
        raise argparse.ArgumentTypeError(f"expected A:B with integers A < B (for example 0:48), got {text!r}")
    return seeds


# The library imports sit in the handlers: other subcommands and --help should not wait for torch to load.
def run_dataset(args) -> int:
    from LegSegNetLib.training.phantom_dataset import export_phantom_dataset

    count = export_phantom_dataset(args.out, args.seeds, args.slices)
    print(f"exported {count} phantom slices to {args.out}")
    return 0


def run_dice(args) -> int:
    from LegSegNetLib.segmenting.engines.nnunet.engine import LegSegNetEngine
    from LegSegNetLib.training.phantom_dataset import phantom_dice

    engine = LegSegNetEngine.from_model_folder(args.model, SegmentationSettings(device=args.device))
    for tissue, value in phantom_dice(engine, args.seeds, args.slices).items():
        print(f"{tissue}\t{value:.4f}")
    return 0
