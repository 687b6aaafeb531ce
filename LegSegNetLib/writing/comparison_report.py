"""The files of `legsegnet compare`: tables (CSV with JSON twins holding units and descriptions), pictures
(matplotlib PNGs) and one HTML page showing both.

    per_case.csv       one row per case, prediction and tissue (measuring.comparison.PER_CASE_COLUMNS)
    agreement.csv      one row per measurement (measuring.agreement.AGREEMENT_COLUMNS)
    paired_dice.csv    with a second prediction: paired tests of the per-case Dice, per tissue
    dice_boxplot.png   per-tissue Dice over the cases
    plots/METRIC.png   scatter of prediction against reference, and Bland-Altman plot, per measurement
    report.html        all of the above on one page
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from LegSegNetLib.measuring.agreement import AGREEMENT_COLUMNS, PAIRED_TEST_COLUMNS
from LegSegNetLib.measuring.comparison import PER_CASE_COLUMNS, require_package
from LegSegNetLib.writing.tables import json_twin_path, write_table_with_twin
from LegSegNetLib.writing.outputs import atomic_output, write_text

PER_CASE, AGREEMENT, PAIRED = "per_case.csv", "agreement.csv", "paired_dice.csv"
DICE_BOXPLOT, REPORT, PLOTS = "dice_boxplot.png", "report.html", "plots"


def report_paths(folder, metrics, paired: bool) -> list:
    """Every file the report writes in `folder` (to refuse existing ones before any work)."""
    folder = Path(folder)
    tables = [PER_CASE, AGREEMENT] + ([PAIRED] if paired else [])
    return ([folder / name for name in tables] + [json_twin_path(folder / name) for name in tables]
            + [folder / DICE_BOXPLOT, folder / REPORT] + [metric_plot_path(folder, metric) for metric in metrics])


def metric_plot_path(folder, metric: str) -> Path:
    return Path(folder) / PLOTS / f"{metric}.png"


def write_comparison_report(folder, per_case_rows: list, agreements: list, paired_tests: list, pairs: dict,
                            summary_values: dict, overwrite: bool = False) -> None:
    """pairs: {"pairs": [...], "unpaired_pred": [...], "unpaired_ref": [...], "failed": {case: error}}.
    summary_values: {metric: (pred values, ref values)} over the compared cases, for the plots."""
    require_package("matplotlib", "The comparison's pictures")
    folder = Path(folder)
    write_table_with_twin(PER_CASE_COLUMNS, per_case_rows, folder / PER_CASE, overwrite)
    write_table_with_twin(AGREEMENT_COLUMNS, [asdict(item) for item in agreements], folder / AGREEMENT, overwrite)
    if paired_tests:
        write_table_with_twin(PAIRED_TEST_COLUMNS, [asdict(test) for test in paired_tests], folder / PAIRED,
                              overwrite)
    _save(_dice_boxplot(per_case_rows), folder / DICE_BOXPLOT, overwrite)
    for item in agreements:
        pred, ref = summary_values[item.metric]
        _save(_agreement_figure(item, pred, ref), metric_plot_path(folder, item.metric), overwrite)
    write_text(folder / REPORT, _html(per_case_rows, agreements, paired_tests, pairs), overwrite)


def _figure(width: float, height: float):
    """A matplotlib figure outside pyplot (no global state, no display needed)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure, path: Path, overwrite: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite) as temporary:
        figure.savefig(temporary, format="png")


def _dice_boxplot(rows: list):
    figure = _figure(6.5, 4)
    axes = figure.add_subplot()
    groups = {}
    for row in rows:
        if row["dice"] is not None and math.isfinite(row["dice"]):
            groups.setdefault((row["tissue"], row["prediction"]), []).append(row["dice"])
    labels = [f"{tissue}\n{prediction}" if prediction != "pred" else tissue for tissue, prediction in groups]
    if groups:
        axes.boxplot(list(groups.values()))
        axes.set_xticks(range(1, len(groups) + 1), labels)
    axes.set_ylabel("Dice")
    axes.set_ylim(min([0.5] + [min(values) - 0.05 for values in groups.values()]), 1.01)
    axes.set_title("Dice per tissue over the cases" if groups else "no Dice defined")
    return figure


def _agreement_figure(item, pred, ref):
    pred, ref = np.asarray(pred, dtype=float), np.asarray(ref, dtype=float)
    defined = np.isfinite(pred) & np.isfinite(ref)
    pred, ref = pred[defined], ref[defined]
    unit = f" ({item.unit})" if item.unit not in ("", "1") else ""
    figure = _figure(10, 4.2)
    scatter, bland_altman = figure.subplots(1, 2)
    scatter.scatter(ref, pred, s=18)
    if len(pred):
        low, high = min(pred.min(), ref.min()), max(pred.max(), ref.max())
        scatter.plot([low, high], [low, high], color="grey", linewidth=1, label="identity")
        scatter.legend(loc="upper left")
    scatter.set_xlabel(f"reference{unit}")
    scatter.set_ylabel(f"prediction{unit}")
    scatter.set_title(f"{item.metric}: r = {_text(item.pearson_r)}, ICC(2,1) = {_text(item.icc)}")
    bland_altman.scatter((pred + ref) / 2, pred - ref, s=18)
    lines = ((item.bias, "-", "bias"), (item.loa_low, "--", "95% limits"), (item.loa_high, "--", None))
    for value, style, label in lines:
        if math.isfinite(value):
            bland_altman.axhline(value, color="tab:red", linestyle=style, linewidth=1, label=label)
    bland_altman.set_xlabel(f"mean of prediction and reference{unit}")
    bland_altman.set_ylabel(f"prediction - reference{unit}")
    limits = (f"limits {_text(item.loa_low)} to {_text(item.loa_high)}" if math.isfinite(item.loa_low)
              else "no limits of agreement (fewer than two cases)")
    bland_altman.set_title(f"Bland-Altman: bias {_text(item.bias)}, {limits}")
    if math.isfinite(item.bias):
        bland_altman.legend(loc="upper left")
    return figure


def _text(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(columns, rows: list) -> str:
    head = "".join(f"<th title='{html.escape(column.description)}'>{html.escape(column.name)}"
                   f"{'<br><small>' + html.escape(column.unit) + '</small>' if column.unit not in ('', '1') else ''}"
                   "</th>" for column in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_text(row.get(column.name)))}</td>" for column in columns)
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(per_case_rows: list, agreements: list, paired_tests: list, pairs: dict) -> str:
    lines = [f"<p>{len(pairs['pairs'])} case(s) compared.</p>"]
    for key, what in (("unpaired_pred", "Predictions without a reference"),
                      ("unpaired_ref", "References without a prediction")):
        if pairs[key]:
            lines.append(f"<p>{what} (not compared): {html.escape(', '.join(pairs[key]))}</p>")
    for case, error in pairs["failed"].items():
        lines.append(f"<p class='error'>{html.escape(case)}: not compared: {html.escape(error)}</p>")
    sections = ["<h2>Agreement of the measurements (prediction - reference)</h2>",
                "<p>icc: ICC(2,1), two-way random effects, absolute agreement; icc_consistency: ICC(3,1), two-way "
                "mixed effects, consistency (Shrout &amp; Fleiss 1979). Limits of agreement: bias &plusmn; 1.96 "
                "sample SD of the differences (Bland &amp; Altman 1986).</p>",
                _table(AGREEMENT_COLUMNS, [asdict(item) for item in agreements])]
    if paired_tests:
        sections += ["<h2>Paired tests of the per-case Dice (PRED against --against)</h2>",
                     _table(PAIRED_TEST_COLUMNS, [asdict(test) for test in paired_tests])]
    sections += [f"<h2>Dice per tissue</h2><img src='{DICE_BOXPLOT}' alt='Dice box plot'>",
                 "<h2>Scatter and Bland-Altman plots</h2>"]
    sections += [f"<img src='{PLOTS}/{html.escape(item.metric)}.png' alt='{html.escape(item.metric)}'>"
                 for item in agreements]
    sections += ["<h2>Per case</h2>", _table(PER_CASE_COLUMNS, per_case_rows)]
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:small}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}.error{color:#b00}")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>LegSegNet comparison</title>"
            f"<style>{style}</style></head><body><h1>Prediction against reference</h1>"
            + "".join(lines + sections) + "</body></html>\n")
