"""Agreement statistics against published worked examples and values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from LegSegNetLib.measuring.agreement import agreement, icc_two_way, paired_dice_test, pearson_r

# Bland & Altman, Lancet 1986;i:307-310, Table 1: peak expiratory flow rate (l/min) of 17 subjects, first reading
# with the large Wright meter and with the mini Wright meter. Published: mean difference -2.1 l/min, SD 38.8 l/min,
# limits of agreement (mean -/+ 2 SD) -79.7 and 75.5 l/min.
WRIGHT = [494, 395, 516, 434, 476, 557, 413, 442, 650, 433, 417, 656, 267, 478, 178, 423, 427]
MINI_WRIGHT = [512, 430, 520, 428, 500, 600, 364, 380, 658, 445, 432, 626, 260, 477, 259, 350, 451]

# Shrout & Fleiss, Psychological Bulletin 1979;86:420-428, Table 2: 6 targets rated by 4 judges. Published (Table 4):
# ICC(1,1) = .17, ICC(2,1) = .29, ICC(3,1) = .71.
JUDGES = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]


def test_bland_altman_reproduces_the_published_peak_flow_example():
    result = agreement("PEFR", "l/min", WRIGHT, MINI_WRIGHT)
    assert result.n == 17
    assert round(result.bias, 1) == -2.1
    assert round(result.sd_difference, 1) == 38.8
    # The paper's limits use 2 SD (from the rounded mean and SD); ours 1.96 SD of the same differences.
    assert result.bias - 2 * result.sd_difference == pytest.approx(-79.7, abs=0.1)
    assert result.bias + 2 * result.sd_difference == pytest.approx(75.5, abs=0.1)
    assert result.loa_low == pytest.approx(-2.1 - 1.96 * 38.8, abs=0.15)
    assert result.loa_high == pytest.approx(-2.1 + 1.96 * 38.8, abs=0.15)
    assert result.mae == pytest.approx(np.mean(np.abs(np.subtract(WRIGHT, MINI_WRIGHT))))
    assert result.note == ""


def test_icc_reproduces_shrout_and_fleiss_table_2():
    absolute, consistency = icc_two_way(JUDGES)
    assert round(absolute, 2) == 0.29
    assert round(consistency, 2) == 0.71


def test_icc_absolute_agreement_is_lowered_by_an_offset_that_consistency_ignores():
    reference = np.array([10.0, 14.0, 9.0, 20.0, 16.0])
    result = agreement("v", "cm3", reference + 3.0, reference)
    assert result.icc_consistency == pytest.approx(1.0)
    assert result.icc < 0.9
    assert result.pearson_r == pytest.approx(1.0)
    assert result.bias == pytest.approx(3.0) and result.sd_difference == pytest.approx(0.0)


def test_pearson_r_of_a_hand_worked_example():
    # x deviations -1 0 1, y deviations -1 1 0: r = 1 / sqrt(2 * 2) = 0.5
    assert pearson_r([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert math.isnan(pearson_r([1, 2, 3], [4, 4, 4]))  # undefined for a constant side


def test_one_case_has_no_limits_of_agreement_and_says_so():
    result = agreement("SM_volume_cm3", "cm3", [101.0], [100.0])
    assert result.n == 1 and result.bias == pytest.approx(1.0) and result.mae == pytest.approx(1.0)
    assert all(math.isnan(value) for value in (result.loa_low, result.loa_high, result.pearson_r, result.icc))
    assert "at least two" in result.note


def test_cases_without_a_value_are_left_out_and_counted():
    result = agreement("SM_mean_HU", "HU", [40.0, math.nan, 42.0, 44.0], [41.0, 40.0, math.nan, 45.0])
    assert result.n == 2
    assert result.bias == pytest.approx(-1.0)
    assert "2 case(s) without a value" in result.note


def test_paired_dice_test_against_hand_computed_statistics():
    a = np.array([0.90, 0.92, 0.88, 0.95, 0.91, 0.93])
    differences = np.array([0.01, 0.03, 0.02, 0.05, 0.04, 0.06])
    result = paired_dice_test("SM", a, a - differences)
    expected_t = differences.mean() / (differences.std(ddof=1) / math.sqrt(6))
    assert result.t_statistic == pytest.approx(expected_t)
    # All six differences positive and distinct: the exact two-sided signed-rank p is 2 / 2**6.
    assert result.wilcoxon_p_value == pytest.approx(2 / 64)
    assert result.mean_difference == pytest.approx(differences.mean())


def test_paired_dice_test_needs_two_cases_and_a_difference():
    assert "at least two" in paired_dice_test("SM", [0.9], [0.8]).note
    same = paired_dice_test("SM", [0.9, 0.8], [0.9, 0.8])
    assert "same Dice" in same.note and math.isnan(same.t_p_value)
