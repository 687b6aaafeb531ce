"""`legsegnet train`: train or fine-tune a LegSegNet-style 2D nnU-Net v2 model on an exported dataset."""

from __future__ import annotations

from pathlib import Path

from LegSegNetLib.cli import UserError, positive_int
from LegSegNetLib.device import DEVICE_HELP
from LegSegNetLib.training.options import TrainingOptions


def register(subparsers) -> None:
    defaults = TrainingOptions()
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a 2D nnU-Net v2 model on exported training pairs",
        description="Train a 2D network described by nnU-Net v2 plans (LegSegNet's configuration by default) with "
                    "nnU-Net's 2D recipe, or fine-tune an existing model with --init. Writes an nnU-Net v2 model "
                    "folder (plans.json, dataset.json, fold_N/checkpoint_final.pth, checkpoint_best.pth) usable "
                    "by `legsegnet segment --model` and by nnU-Net itself.",
    )
    parser.add_argument("dataset", type=Path, help="nnU-Net raw dataset folder made by `legsegnet export-pairs`")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--init", type=Path, help="model folder to fine-tune from (its plans and weights)")
    parser.add_argument("--epochs", type=positive_int, default=defaults.epochs,
                        help=f"epochs (default {defaults.epochs})")
    parser.add_argument("--iterations", type=positive_int, default=defaults.iterations_per_epoch,
                        help=f"batches per epoch (default {defaults.iterations_per_epoch}, as nnU-Net)")
    parser.add_argument("--batch-size", type=positive_int, help="slices per batch (default: the plans' batch size)")
    parser.add_argument("--lr", type=float, default=defaults.learning_rate,
                        help=f"initial learning rate (default {defaults.learning_rate})")
    parser.add_argument("--width", type=float,
                        help="scale LegSegNet's feature counts (for example 0.125 for a small model; default 1)")
    parser.add_argument("--fold", default="0", help="cross-validation fold 0-4, or 'all' (default 0)")
    parser.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default auto)")
    parser.add_argument("--threads", type=int, help="CPU threads torch may use")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"random seed (default {defaults.seed})")
    parser.add_argument("--no-deep-supervision", action="store_true", help="train on the full-resolution output only")
    parser.add_argument("--resume", action="store_true", help="continue the training in --out from its last epoch")
    parser.set_defaults(handler=run)


def run(args) -> int:
    if args.fold != "all" and not args.fold.isdigit():
        raise UserError(f"--fold must be a fold number 0-4 or 'all', got {args.fold!r}")
    import torch  # imported here: other subcommands and --help should not wait for torch and MONAI to load

    try:
        from LegSegNetLib.training.trainer import train
    except ImportError as error:  # the optional [train] extra is missing
        raise UserError(f"training needs MONAI and tqdm, which this install lacks ({error.name or error} is missing); "
                        "from the checkout run: pip install -c requirements/constraints.txt '.[train]' "
                        "(the constraints keep your torch)") from error

    if args.threads:
        torch.set_num_threads(args.threads)
    options = TrainingOptions(
        epochs=args.epochs, iterations_per_epoch=args.iterations, batch_size=args.batch_size,
        learning_rate=args.lr, width=args.width, fold=args.fold if args.fold == "all" else int(args.fold),
        device=args.device, seed=args.seed, deep_supervision=not args.no_deep_supervision,
        init=args.init, resume=args.resume,
    )
    metrics = train(args.dataset, args.out, options)
    dice = "  ".join(f"{name} {value:.3f}" for name, value in metrics.get("dice", {}).items())
    print(f"model written to {args.out} (last validation Dice: {dice})")
    return 0
