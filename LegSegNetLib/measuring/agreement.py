"""Agreement of paired measurements (a prediction against a reference, case by case) and a paired test of two
predictions' Dice.

- Pearson r (scipy.stats.pearsonr).
- Intraclass correlation from the two-way ANOVA of the n cases x k methods table (Shrout & Fleiss 1979):
  ICC(2,1), two-way random effects, absolute agreement, single measurement (`icc`: a constant offset between
  the methods lowers it), and ICC(3,1), two-way mixed effects, consistency (`icc_consistency`: offsets ignored).
- Bland-Altman (1986): bias = mean of pred - ref; 95% limits of agreement = bias -/+ 1.96 x the sample SD of the
  differences (n - 1 in the denominator). They need at least two cases; with one they are NaN and the note says so.
- MAE: mean absolute difference.
Pairs where either value is undefined (NaN) are left out, and the note counts them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from LegSegNetLib.measuring.measurements import ColumnInfo, ratio

LIMITS_Z = 1.96  # 95% limits of agreement, normal differences


@dataclass(frozen=True)
class Agreement:
    metric: str
    unit: str
    n: int
    mean_pred: float
    mean_ref: float
    pearson_r: float
    icc: float  # ICC(2,1), absolute agreement
    icc_consistency: float  # ICC(3,1)
    bias: float
    sd_difference: float
    loa_low: float
    loa_high: float
    mae: float
    note: str


AGREEMENT_COLUMNS = (
    ColumnInfo("metric", "", "measurement compared (as named in measurements.csv)"),
    ColumnInfo("unit", "", "unit of the measurement and of bias, limits and MAE"),
    ColumnInfo("n", "1", "cases where both values are defined"),
    ColumnInfo("mean_pred", "see unit", "mean over the cases, prediction"),
    ColumnInfo("mean_ref", "see unit", "mean over the cases, reference"),
    ColumnInfo("pearson_r", "1", "Pearson correlation of prediction and reference"),
    ColumnInfo("icc", "1", "ICC(2,1): two-way random effects, absolute agreement, single measurement "
                           "(Shrout & Fleiss 1979)"),
    ColumnInfo("icc_consistency", "1", "ICC(3,1): two-way mixed effects, consistency, single measurement "
                                       "(Shrout & Fleiss 1979)"),
    ColumnInfo("bias", "see unit", "Bland-Altman bias: mean of prediction - reference"),
    ColumnInfo("sd_difference", "see unit", "sample standard deviation of prediction - reference"),
    ColumnInfo("loa_low", "see unit", "lower 95% limit of agreement: bias - 1.96 SD"),
    ColumnInfo("loa_high", "see unit", "upper 95% limit of agreement: bias + 1.96 SD"),
    ColumnInfo("mae", "see unit", "mean absolute difference"),
    ColumnInfo("note", "", "why a value is missing or doubtful"),
)


def agreement(metric: str, unit: str, pred, ref) -> Agreement:
    """Agreement of paired values pred[i], ref[i] of one measurement over the cases."""
    pred, ref = np.asarray(pred, dtype=float), np.asarray(ref, dtype=float)
    defined = np.isfinite(pred) & np.isfinite(ref)
    notes = []
    if not defined.all():
        notes.append(f"{int((~defined).sum())} case(s) without a value on one side left out")
    pred, ref = pred[defined], ref[defined]
    n = len(pred)
    if n < 2:
        notes.append(f"{n} case(s): limits of agreement, correlation and ICC need at least two")
    difference = pred - ref
    bias = float(difference.mean()) if n else math.nan
    sd = float(difference.std(ddof=1)) if n > 1 else math.nan
    icc_a, icc_c = icc_two_way(np.column_stack([pred, ref])) if n > 1 else (math.nan, math.nan)
    return Agreement(
        metric, unit, n, _mean(pred), _mean(ref), pearson_r(pred, ref), icc_a, icc_c, bias, sd,
        bias - LIMITS_Z * sd, bias + LIMITS_Z * sd, _mean(np.abs(difference)), "; ".join(notes),
    )


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else math.nan


def pearson_r(x, y) -> float:
    """Pearson r; NaN with fewer than two pairs or when either side is constant (r is undefined then)."""
    from scipy.stats import pearsonr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(pearsonr(x, y)[0])


def icc_two_way(ratings) -> tuple:
    """(ICC(2,1), ICC(3,1)) of an n targets x k raters table, from its two-way ANOVA mean squares."""
    ratings = np.asarray(ratings, dtype=float)
    n, k = ratings.shape
    grand = ratings.mean()
    between_targets = k * ((ratings.mean(axis=1) - grand) ** 2).sum()
    between_raters = n * ((ratings.mean(axis=0) - grand) ** 2).sum()
    residual = ((ratings - grand) ** 2).sum() - between_targets - between_raters
    ms_targets, ms_raters = between_targets / (n - 1), between_raters / (k - 1)
    ms_error = residual / ((n - 1) * (k - 1))
    absolute = ratio(ms_targets - ms_error, ms_targets + (k - 1) * ms_error + k * (ms_raters - ms_error) / n)
    consistency = ratio(ms_targets - ms_error, ms_targets + (k - 1) * ms_error)
    return absolute, consistency


@dataclass(frozen=True)
class PairedTest:
    tissue: str
    n: int
    mean_dice_a: float
    mean_dice_b: float
    mean_difference: float  # a - b
    t_statistic: float
    t_p_value: float
    wilcoxon_statistic: float
    wilcoxon_p_value: float
    note: str


PAIRED_TEST_COLUMNS = (
    ColumnInfo("tissue", "", "tissue key"),
    ColumnInfo("n", "1", "cases where both predictions have a Dice"),
    ColumnInfo("mean_dice_a", "1", "mean Dice of the first prediction (PRED)"),
    ColumnInfo("mean_dice_b", "1", "mean Dice of the second prediction (--against)"),
    ColumnInfo("mean_difference", "1", "mean of Dice A - Dice B"),
    ColumnInfo("t_statistic", "1", "paired t-test statistic (scipy.stats.ttest_rel)"),
    ColumnInfo("t_p_value", "1", "two-sided p value of the paired t-test"),
    ColumnInfo("wilcoxon_statistic", "1", "Wilcoxon signed-rank statistic (scipy.stats.wilcoxon)"),
    ColumnInfo("wilcoxon_p_value", "1", "two-sided p value of the Wilcoxon signed-rank test"),
    ColumnInfo("note", "", "why a value is missing"),
)


def paired_dice_test(tissue: str, dice_a, dice_b) -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test of two predictions' per-case Dice (cases with both defined)."""
    from scipy.stats import ttest_rel, wilcoxon

    dice_a, dice_b = np.asarray(dice_a, dtype=float), np.asarray(dice_b, dtype=float)
    defined = np.isfinite(dice_a) & np.isfinite(dice_b)
    a, b = dice_a[defined], dice_b[defined]
    n = len(a)
    t = w = (math.nan, math.nan)
    if n < 2:
        note = f"{n} case(s): a paired test needs at least two"
    elif np.all(a == b):
        note = "the two predictions have the same Dice in every case: nothing to test"
    else:
        note = ""
        t = tuple(map(float, ttest_rel(a, b)))
        w = tuple(map(float, wilcoxon(a, b)))
    return PairedTest(tissue, n, _mean(a), _mean(b), _mean(a - b), *t, *w, note)
