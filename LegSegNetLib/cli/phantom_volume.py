"""`legsegnet phantom`: write a synthetic two-leg CT and its exact tissue labels (for trying things out)."""

from __future__ import annotations

from pathlib import Path

from LegSegNetLib.reading.volume_files import write_volume
from LegSegNetLib.writing.outputs import atomic_output, extension_of
from LegSegNetLib.synthetic.leg_phantom import ORIENTATIONS_HELP, REGIONS, make_leg_phantom
from LegSegNetLib.cli import UserError

FILE_TYPES = (".nii.gz", ".nii", ".nrrd", ".mha")


def register(subparsers) -> None:
    parser = subparsers.add_parser("phantom", help="write a synthetic leg CT with known tissue labels",
                                   description=__doc__)
    parser.add_argument("output", type=Path, help="CT file to write (.nii.gz, .nrrd, .mha)")
    parser.add_argument("--truth", type=Path, required=True, help="label map file to write (labels 1..4)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same phantom (default 0)")
    parser.add_argument("--region", choices=sorted(REGIONS), default="calf", help="(default calf)")
    parser.add_argument("--slices", type=int, default=40, help="number of axial slices (default 40)")
    parser.add_argument("--matrix", type=int, default=256, help="rows and columns per slice (default 256)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("SLICE", "ROW", "COLUMN"),
                        help="voxel size in mm (default: 2.5 mm slices, the region's field of view in-plane)")
    parser.add_argument("--orientation", default="LPS", help=f"storage orientation: {ORIENTATIONS_HELP}")
    parser.add_argument("--noise", type=float, default=12.0, help="noise standard deviation, HU (default 12)")
    parser.add_argument("--blur", type=float, default=0.6, help="partial-volume blur (Gaussian sigma), mm (default 0.6)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(handler=run)


def run(args) -> int:
    if args.output.resolve() == args.truth.resolve():
        raise UserError("the CT and --truth need two different file names")
    for path in (args.output, args.truth):
        if extension_of(path) not in FILE_TYPES:
            raise UserError(f"cannot write {path.name!r}: name it with one of {', '.join(FILE_TYPES)}")
        if path.exists() and not args.overwrite:
            raise UserError(f"{path} already exists; choose another name or pass --overwrite")
    ct, truth = make_leg_phantom(seed=args.seed, region=args.region, shape=(args.slices, args.matrix, args.matrix),
                                 spacing=args.spacing, orientation=args.orientation, noise=args.noise, blur=args.blur)
    for volume, path in ((ct, args.output), (truth, args.truth)):
        with atomic_output(path, args.overwrite) as temporary:  # its folder made if missing
            write_volume(volume, temporary)
    print(f"wrote {args.output} and {args.truth} ({args.region}, seed {args.seed}, shape {ct.array.shape})")
    return 0
