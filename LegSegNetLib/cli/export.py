"""`legsegnet export-pairs`: a CT and its corrected label map -> training pairs (NIfTI pairs or nnU-Net dataset)."""

from __future__ import annotations

import logging
from pathlib import Path

from LegSegNetLib.cli import UserError
from LegSegNetLib.reading.volume_files import read_volume
from LegSegNetLib.cli.segment import parse_index_range
from LegSegNetLib.training.options import EXPORT_FORMATS

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-pairs",
        help="export CT slices and their labels as training pairs",
        description="Export the labelled axial slices of a CT and its (corrected) label map as training pairs: "
                    "an nnU-Net v2 raw dataset of LegSegNet's 8-bit 256x256 slices (appended to, never "
                    "overwritten) or NIfTI *-image.nii.gz / *-label.nii.gz pairs. Slices with no tissue "
                    "labelled are skipped.",
    )
    parser.add_argument("ct", type=Path, help="CT volume (NIfTI, NRRD, MHA or a DICOM series folder)")
    parser.add_argument("labels", type=Path, help="label map on the CT's grid (0 background, 1 SAT, 2 SM, 3 IMAT, 4 Bone)")
    parser.add_argument("out", type=Path, help="output folder (an nnU-Net dataset folder is appended to)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="nnunet", help="output layout (default: nnunet)")
    parser.add_argument("--range", dest="slice_range", type=parse_index_range, default=None, metavar="A:B",
                        help="display slice indices A (included) to B (excluded), either end may be left out")
    parser.add_argument("--slices", choices=("all", "edited"), default="all",
                        help="'edited': only slices whose labels differ from --reference")
    parser.add_argument("--reference", type=Path, help="the original (uncorrected) label map, for --slices edited")
    parser.add_argument("--name", help="name recorded for these cases (default: the CT file name)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    if (args.slices == "edited") != (args.reference is not None):
        raise UserError("--slices edited and --reference ORIGINAL_LABELS go together: give both or neither")
    from LegSegNetLib.training.export import export_training_pairs  # imported here: it loads torch, which --help need not wait for

    reference = read_volume(args.reference) if args.reference else None
    name = args.name or _stem(args.ct)
    result = export_training_pairs(
        read_volume(args.ct), read_volume(args.labels), args.out, format=args.format,
        slice_range=args.slice_range, reference=reference, name=name,
    )
    if result.skipped_empty:
        log.info("skipped %d selected slices with no tissue labelled", len(result.skipped_empty))
    print(f"exported {len(result.slices)} slices ({len(result.files)} files) to {args.out}")
    return 0


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
