"""`legsegnet models list|download|install|verify|remove`: manage LegSegNet weights in the per-user cache."""

from __future__ import annotations

import sys
import time

from LegSegNetLib.cli import UserError
from LegSegNetLib import models

_BAR_WIDTH = 30


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="download, install offline, verify and remove model weights",
                                   description="Manage model weights in the LegSegNet cache "
                                               f"({models.legsegnet_home()}; LEGSEGNET_HOME overrides it).")
    commands = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    commands.add_parser("list", help="models in the registry and in the cache, with their state").set_defaults(handler=_list)

    download = commands.add_parser("download", help="download a registry model (LEGSEGNET_WEIGHTS_URL: mirror; "
                                                    "HTTPS_PROXY/HTTP_PROXY: proxy)")
    download.add_argument("name", nargs="?", default="legsegnet")
    download.add_argument("--folds", help="folds to download, e.g. 0,1,2 (default: all the registry lists)")
    download.add_argument("--timeout", type=float, default=60.0, help="seconds without data before giving up (60)")
    download.add_argument("--yes", action="store_true", help="replace an installed copy without asking")
    download.add_argument("--forget-checksums", action="store_true",
                          help="accept files that differ from those recorded at the first download (publisher update)")
    download.set_defaults(handler=_download)

    install = commands.add_parser("install", help="install offline from a .zip or folder (Hugging Face or nnU-Net "
                                                  "results layout)")
    install.add_argument("source", metavar="ZIP_OR_FOLDER")
    install.add_argument("--name", default="legsegnet",
                         help="name to install it under (default: legsegnet); any 2D nnU-Net v2 model may be installed "
                              "under a name of its own and then used with `legsegnet segment --model NAME`")
    install.add_argument("--yes", action="store_true", help="replace an installed model of that name without asking")
    install.set_defaults(handler=_install)

    verify = commands.add_parser("verify", help="check every installed file's SHA-256")
    verify.add_argument("names", nargs="*", metavar="NAME", help="models to check (default: all installed)")
    verify.set_defaults(handler=_verify)

    remove = commands.add_parser("remove", help="delete an installed model")
    remove.add_argument("name")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    remove.set_defaults(handler=_remove)


def _list(args) -> int:
    print(f"{'NAME':<20} {'STATE':<14} {'VERSION':<9} {'FOLDS':<10} {'PROFILE':<10} PATH")
    for status in models.list_models():
        folds = ",".join(map(str, status.folds)) or "-"
        version = status.version or ("-" if status.state != models.INSTALLED else "unknown")
        profile = status.preprocessing or (status.spec.preprocessing if status.spec else None) or "-"
        print(f"{status.name:<20} {status.state:<14} {version:<9} {folds:<10} {profile:<10} {status.path}")
        if status.labels:
            print(f"  labels: {', '.join(status.labels)}")
        if status.update_available:
            print(f"  update available: version {status.spec.version} (legsegnet models download {status.name} --yes)")
        if status.detail != status.state:
            print(f"  {status.detail}")
    return 0


def _download(args) -> int:
    spec = models.get_model_spec(args.name)
    replace = models.model_status(args.name).state == models.NOT_INSTALLED or _confirm(
        f"model {args.name!r} is already installed; download it again and replace it?", args.yes)
    if not replace:
        return 1
    print(f"{spec.title}\n  licence of the weights: {spec.licence.get('weights', 'unknown')}\n"
          f"  {spec.licence.get('advice', '')}\n  cite: {spec.citation.get('text', '')}", file=sys.stderr)
    if args.forget_checksums:
        models.forget_recorded_checksums(args.name)
    bar = _ProgressBar()
    try:
        folder = models.download_model(args.name, folds=models.parse_folds(args.folds), progress=bar,
                                       timeout=args.timeout, replace=True)
    except OSError as error:  # DownloadError and its kinds, no disk space, ...
        bar.finish()
        raise UserError(str(error)) from error
    except KeyboardInterrupt:
        bar.finish()
        print("download interrupted; run the same command again to resume", file=sys.stderr)
        raise
    bar.finish()
    print(f"installed {args.name} (folds {','.join(map(str, models.model_status(args.name).folds))}) in {folder}")
    return 0


def _install(args) -> int:
    models.check_install_source(args.source)  # a mistyped path is not worth a question about replacing
    replace = models.model_status(args.name).state == models.NOT_INSTALLED or _confirm(
        f"model {args.name!r} is already installed; replace it with {args.source}?", args.yes)
    if not replace:
        return 1
    try:
        folder = models.install_model_from(args.source, name=args.name, replace=True)
    except OSError as error:  # no disk space, unreadable source, ...
        raise UserError(str(error)) from error
    print(f"installed {args.name} (folds {','.join(map(str, models.model_status(args.name).folds))}) in {folder}")
    return 0


def _verify(args) -> int:
    names = args.names or [status.name for status in models.list_models()
                           if status.state in (models.INSTALLED, models.CORRUPT)]
    missing = [name for name in names if models.model_status(name).state == models.NOT_INSTALLED]
    if missing:
        raise UserError(f"not installed: {', '.join(missing)} (`legsegnet models list` shows the installed models)")
    bundled = [name for name in names if models.model_status(name).state == models.BUNDLED]
    if bundled:
        raise UserError(f"{', '.join(bundled)}: bundled with LegSegNet, read-only, with no install record to verify "
                        "against")
    if not names:
        print("no model is installed")
        return 0
    failed = False
    for name in names:
        problems = models.verify_model(name)
        print(f"{name}: {'OK' if not problems else 'DAMAGED'}")
        for problem in problems:
            print(f"  {problem}")
        failed |= bool(problems)
    if failed:
        print("reinstall damaged models: legsegnet models remove NAME, then download or install them again",
              file=sys.stderr)
    return 1 if failed else 0


def _remove(args) -> int:
    status = models.model_status(args.name)
    if not _confirm(f"delete model {args.name!r} ({status.state}) from {status.path}?", args.yes):
        return 1
    models.remove_model(args.name)
    print(f"removed {args.name}")
    return 0


def _confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("nothing changed (pass --yes to skip this question)", file=sys.stderr)
    return False


class _ProgressBar:
    """Download progress on stderr: a bar, bytes done/total, speed; one line per file when stderr is not a terminal."""

    def __init__(self):
        self._interactive = sys.stderr.isatty()
        self._started = time.monotonic()
        self._last_file = None

    def __call__(self, progress) -> None:
        if not self._interactive:
            if progress.file != self._last_file:
                print(f"downloading {progress.file} ({progress.file_index}/{progress.file_count})", file=sys.stderr)
            self._last_file = progress.file
            return
        if progress.total:
            fraction = progress.done / progress.total
        else:  # sizes of files not yet started are unknown: show the current file's share
            fraction = progress.file_done / progress.file_total if progress.file_total else 0.0
        filled = int(fraction * _BAR_WIDTH)
        total = f"{progress.total / 1e6:.1f}" if progress.total else "?"
        line = (f"\r[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {progress.done / 1e6:.1f}/{total} MB "
                f"{progress.bytes_per_second / 1e6:.1f} MB/s  {progress.file} ({progress.file_index}/{progress.file_count})")
        print(f"{line:<100}", end="", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self._interactive:
            print(file=sys.stderr)
