"""`legsegnet compare`: validate predicted label maps against reference ones (say, manual segmentations).

PRED and REF are label-map files (.seg.nrrd .nii.gz .nii .nrrd .mha .mhd, or a DICOM SEG .dcm) or folders of them;
folders are paired by case name (the file name without its extensions) and cases found on one side only are
listed, not compared.
Writes into --out: per_case.csv (Dice, HD95, ASSD, volumes per case and tissue), agreement.csv (Pearson r, ICC,
Bland-Altman bias and limits, MAE per measurement), each with a .json twin giving units; pictures and
report.html. --against adds a second prediction of the same cases and paired tests of the two predictions' Dice.
A case that cannot be compared is reported and the rest go on (exit status 1).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Optional

from LegSegNetLib.cli import UserError
from LegSegNetLib.cli.segment import input_name
from LegSegNetLib.measuring.agreement import paired_dice_test
from LegSegNetLib.measuring.comparison import (
    MissingPackageError, agreement_columns, cohort_agreement, compare_case, require_package,
)
from LegSegNetLib.reading.label_files import DEFAULT_LABEL_SET, LABEL_SET_HELP, parse_label_set, read_label_map
from LegSegNetLib.reading.volume_files import read_volume
from LegSegNetLib.writing.comparison_report import report_paths, write_comparison_report
from LegSegNetLib.writing.labelmaps import LABELMAP_EXTENSIONS
from LegSegNetLib.writing.outputs import (
    OutputExistsError, OutputWriteError, check_writable_folder, extension_of, refuse_existing,
)

log = logging.getLogger("legsegnet")

LABEL_FILE_EXTENSIONS = LABELMAP_EXTENSIONS + (".mhd", ".dcm")  # .dcm: a DICOM SEG
CT_FILE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="validate label maps against a reference: Dice, HD95, Bland-Altman, ICC, report",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pred", type=Path, metavar="PRED", help="predicted label map, or a folder of them")
    parser.add_argument("ref", type=Path, metavar="REF", help="reference label map, or a folder of them")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the tables and report")
    parser.add_argument("--ct", type=Path, help="the CT (or a folder of CTs, paired by case name) the predictions "
                                                "were made from: adds mean HU to the comparison")
    parser.add_argument("--labels", type=_label_set_argument, default=DEFAULT_LABEL_SET,
                        help=f"tissues compared and their values in plain label maps: {LABEL_SET_HELP}; .seg.nrrd "
                             "and DICOM SEG segments are matched by name")
    parser.add_argument("--against", type=Path, metavar="PRED_B",
                        help="a second prediction (file or folder) of the same cases: paired tests of the Dice")
    parser.add_argument("--overwrite", action="store_true", help="replace existing report files")
    parser.set_defaults(handler=compare_command)


def _label_set_argument(text: str):
    try:
        return parse_label_set(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def compare_command(args) -> int:
    try:
        require_package("monai", "legsegnet compare")
        require_package("matplotlib", "legsegnet compare")
    except MissingPackageError as error:
        raise UserError(str(error)) from None
    predictions, references = label_files(args.pred), label_files(args.ref)
    pairs = pair_cases(predictions, references, by_name=not (args.pred.is_file() and args.ref.is_file()))
    if not pairs:
        raise UserError(f"no case of {args.pred} has a reference of the same name in {args.ref} (cases are paired "
                        f"by file name without extensions; predictions: {_names(predictions)}; references: "
                        f"{_names(references)})")
    paired = {file for pair in pairs.values() for file in pair}  # two single files pair whatever their names
    unpaired_pred, unpaired_ref = ([name for name, file in sorted(files.items()) if file not in paired]
                                   for files in (predictions, references))
    for names, what in ((unpaired_pred, "without a reference"), (unpaired_ref, "without a prediction")):
        if names:
            log.warning("%d case(s) %s, not compared: %s", len(names), what, ", ".join(names))
    cts = _optional_files(args.ct, pairs, CT_FILE_EXTENSIONS)
    second = _optional_files(args.against, pairs, LABEL_FILE_EXTENSIONS)
    columns = agreement_columns(args.labels, with_ct=args.ct is not None)
    _refuse_existing_outputs(args, [column.name for column in columns])

    compared, second_rows, failed = [], [], {}
    for case in _progress(sorted(pairs)):
        try:
            ct = read_volume(cts[case]) if cts is not None else None
            reference = read_label_map(pairs[case][1], args.labels)
            compared.append(_compare(case, pairs[case][0], reference, args.labels, ct, "pred"))
            if second is not None and case in second:
                second_rows += _compare(case, second[case], reference, args.labels, ct, "against").rows
        except (ValueError, OSError, RuntimeError) as error:  # one bad case must not stop a cohort
            log.debug("details", exc_info=True)
            log.error("%s: not compared: %s", case, error)
            failed[case] = str(error)
    if not compared:
        raise UserError(f"no case could be compared ({len(failed)} failed, see above)")
    agreements = cohort_agreement(compared, columns)
    rows = [row for case in compared for row in case.rows] + second_rows
    paired = _paired_tests(rows, args.labels) if second is not None else []
    write_comparison_report(
        args.out, rows, agreements, paired,
        {"pairs": sorted(pairs), "unpaired_pred": unpaired_pred, "unpaired_ref": unpaired_ref, "failed": failed},
        {column.name: ([case.pred_summary[column.name] for case in compared],
                       [case.ref_summary[column.name] for case in compared]) for column in columns},
        args.overwrite)
    _log_summary(rows, agreements, args.out)
    return 1 if failed else 0


def label_files(path: Path) -> dict:
    """{case name: file} of a label-map file or of the label maps in a folder."""
    if not path.exists():
        raise UserError(f"not found: {path}")
    if path.is_file():
        return {input_name(path): path}
    found = {}
    for child in sorted(path.iterdir()):
        if child.is_file() and not child.name.startswith(".") and extension_of(child) in LABEL_FILE_EXTENSIONS:
            name = input_name(child)
            if name in found:
                raise UserError(f"{found[name].name} and {child.name} in {path} are both case '{name}'; "
                                "keep one label map per case")
            found[name] = child
    if not found:
        raise UserError(f"{path} holds no label map ({' '.join(LABEL_FILE_EXTENSIONS)})")
    return found


def pair_cases(predictions: dict, references: dict, by_name: bool = True) -> dict:
    """{case: (prediction file, reference file)} of the cases named alike; not by_name: the one file of each."""
    if not by_name:
        (name, prediction), = predictions.items()
        return {name: (prediction, next(iter(references.values())))}
    return {name: (predictions[name], references[name]) for name in predictions if name in references}


def _optional_files(path: Optional[Path], pairs: dict, extensions) -> Optional[dict]:
    """{case: file} of --ct or --against: one file for one case, else a folder paired by case name."""
    if path is None:
        return None
    if path.is_file():
        if len(pairs) > 1:
            raise UserError(f"{path} is one file for {len(pairs)} cases: give a folder of files named after them")
        return {next(iter(pairs)): path}
    if not path.is_dir():
        raise UserError(f"not found: {path}")
    found = {input_name(child): child for child in sorted(path.iterdir())
             if child.is_file() and extension_of(child) in extensions}
    missing = sorted(set(pairs) - set(found))
    if missing:
        raise UserError(f"{path} has no file for case(s) {', '.join(missing)} (files are paired by name)")
    return found


def _compare(case: str, prediction_path: Path, reference, label_set, ct, prediction_name: str):
    prediction = read_label_map(prediction_path, label_set)
    notes = [f"prediction: {note}" for note in prediction.notes] + [f"reference: {note}" for note in reference.notes]
    comparison = compare_case(case, prediction.labels, reference.labels, label_set, ct, prediction_name, notes)
    for note in comparison.notes:
        log.warning("%s (%s): %s", case, prediction_name, note)
    for row in comparison.rows:
        if not math.isfinite(row["hd95_mm"]):  # a tissue missing on one side or both: its note says which
            log.info("%s (%s) %s: %s", case, prediction_name, row["tissue"], row["note"].split("; ")[0])
    return comparison


def _paired_tests(rows: list, label_set) -> list:
    """Paired tests of pred against --against Dice, per tissue, over the cases both have."""
    dice = {(row["prediction"], row["case"], row["tissue"]): row["dice"] for row in rows}
    tests = []
    for tissue in label_set.keys:
        cases = sorted(case for prediction, case, key in dice if prediction == "against" and key == tissue)
        tests.append(paired_dice_test(tissue, [dice["pred", case, tissue] for case in cases],
                                      [dice["against", case, tissue] for case in cases]))
    return tests


def _refuse_existing_outputs(args, metrics: list) -> None:
    try:
        for path in report_paths(args.out, metrics, paired=args.against is not None):
            refuse_existing(path, args.overwrite)
        check_writable_folder(args.out)
    except (OutputExistsError, OutputWriteError) as error:
        raise UserError(str(error)) from None


def _progress(cases: list):
    """The cases, with a tqdm bar on stderr when it is a terminal and the cohort is more than one case."""
    if len(cases) < 2 or not sys.stderr.isatty():
        return cases
    from tqdm import tqdm

    return tqdm(cases, desc="comparing", unit="case", file=sys.stderr)


def _names(files: dict) -> str:
    names = sorted(files)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _log_summary(rows: list, agreements: list, folder: Path) -> None:
    for tissue in dict.fromkeys(row["tissue"] for row in rows):
        values = [row["dice"] for row in rows if row["tissue"] == tissue and row["prediction"] == "pred"
                  and row["dice"] is not None and math.isfinite(row["dice"])]
        if values:
            log.info("%s: mean Dice %.3f over %d case(s)", tissue, sum(values) / len(values), len(values))
    if agreements and agreements[0].n < 2:
        log.warning("one case only: no limits of agreement, correlation or ICC (they need at least two cases)")
    log.info("report: %s", folder / "report.html")
