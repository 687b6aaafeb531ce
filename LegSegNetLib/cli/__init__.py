"""The `legsegnet` command. Each subcommand lives in its own module exposing `register(subparsers)`,
which adds its parser and sets `handler(args) -> int` as the parser default."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import signal
import sys
import threading

SUBCOMMAND_MODULES = (
    "segment",
    "compare",
    "models",
    "demo",
    "phantom_volume",
    "export",
    "train",
    "phantom_training",
)


class UserError(Exception):
    """A problem the user can fix; printed as one clear line, without a traceback."""


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="legsegnet", description="Lower-extremity CT tissue segmentation (LegSegNet).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def _stop_cleanly_on_sigterm() -> None:
    """A SIGTERM (kill, a job scheduler's time limit) stops the run like Ctrl+C: temporary files are removed and
    locks released, instead of the process vanishing with a hidden partial file left behind."""
    def interrupt(signal_number, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, interrupt)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s")
    _stop_cleanly_on_sigterm()
    try:
        return int(args.handler(args) or 0)
    except (UserError, ValueError, OSError) as error:  # bad input, missing file, full disk: one line, no traceback
        if args.verbose:
            raise
        print(f"legsegnet: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("legsegnet: interrupted", file=sys.stderr)
        return 130


def command() -> None:
    """The installed `legsegnet` script and `python -m LegSegNetLib`: main(), then the process ends."""
    status = main()
    prepare_exit()
    sys.exit(status)


def prepare_exit() -> None:
    """Hides every object alive from the garbage collector: the process is about to end, and Python's last
    collection at exit would otherwise walk every object torch created (0.4 s of each run on the test machine)."""
    gc.freeze()
