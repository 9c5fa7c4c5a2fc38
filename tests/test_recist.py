"""RECIST 1.1 readouts against hand-worked cases and a literal per-patient reference implementation.

Rules: Eisenhauer EA et al. Eur J Cancer 2009;45:228-247 (PD: >= 20 % and >= 5 mm above the nadir,
baseline included; PR: >= 30 % below baseline; CR/PR confirmation >= 4 weeks later).
"""

from __future__ import annotations

import math
import re

import numba
import numpy as np
import pytest

from immunoedit_models.errors import SimulationError
from immunoedit_models.trials.recist import (RecistCriteria, assess, confirmation_day, objective_response_rate,
                                             progression, running_nadir, visit_responses)

DAYS = np.array([0.0, 42.0, 84.0, 126.0, 168.0])


def one(sld, days=DAYS, **criteria):
    out = assess(np.array([sld], dtype=float), days[: len(sld)], RecistCriteria(**criteria))
    return out.best_response[0], int(out.pd_index[0]), float(out.best_pct_change[0])


@pytest.mark.parametrize("sld, nadir, expected", [
    (60.0, 50.0, True),     # +20 %, +10 mm
    (24.0, 20.0, False),    # +20 % but only 4 mm: the 5 mm rule
    (25.0, 20.0, True),     # +25 %, +5 mm: both thresholds met exactly
    (110.0, 100.0, False),  # +10 mm but only +10 %
    (59.9, 50.0, False),
    (math.nan, 50.0, False),
])
def test_progression_rule_hand_cases(sld, nadir, expected):
    assert bool(progression(sld, nadir)) is expected
    # the same function compiles for the in-kernel scans and gives the same answer
    assert bool(numba.njit(progression)(sld, nadir, 0.2, 5.0)) is expected


def test_nadir_is_the_smallest_previous_sum_baseline_included():
    sld = np.array([[100.0, 60.0, 80.0, 75.0, 40.0]])
    np.testing.assert_array_equal(running_nadir(sld)[0, 1:], [100.0, 60.0, 60.0, 60.0])
    # 80 mm is below baseline but +33 % / +20 mm above the 60 mm nadir: PD at the third visit
    best, pd_index, best_pct = one(sld[0])
    assert (best, pd_index, best_pct) == ("PR", 2, -40.0)


def test_visit_categories_at_their_boundaries():
    codes = visit_responses(np.array([[50.0, 35.0, 35.5, 5.0, 14.9]]))[0]
    # baseline NE(0); 35 = 0.7 x 50: PR(3); 35.5: SD(2); 5 mm: CR(4); 14.9 mm: +9.9 mm, +198 % over nadir 5: PD(1)
    np.testing.assert_array_equal(codes, [0, 3, 2, 4, 1])


def test_five_mm_rule_on_a_small_tumour():
    best, pd_index, _ = one([20.0, 16.0, 19.5, 21.5])   # 19.5: +22 % but +3.5 mm; 21.5: +5.5 mm
    assert (best, pd_index) == ("SD", 3)


def test_missed_visits_are_skipped_and_nan_never_progresses():
    best, pd_index, pct = one([50.0, 45.0, np.nan, np.nan])
    assert (best, pd_index, pct) == ("SD", -1, -10.0)
    best, pd_index, _ = one([50.0, np.nan, 65.0, 40.0])  # nadir stays 50 across the missed visit
    assert (best, pd_index) == ("PD", 2)
    best, pd_index, pct = one([50.0, np.nan])             # no post-baseline assessment
    assert best == "NE" and pd_index == -1 and np.isnan(pct)


def test_sd_needs_its_minimum_duration():
    assert one([50.0, 45.0, 70.0])[0] == "SD"                        # SD at day 42 >= 42
    assert one([50.0, 45.0, 70.0], sd_min_days=43.0)[0] == "PD"       # too early: PD decides
    assert one([50.0, 45.0, np.nan], sd_min_days=43.0)[0] == "NE"     # too early and no PD


def test_confirmation_of_responses():
    pr_then_sd = [50.0, 30.0, 40.0, 41.0]
    assert one(pr_then_sd)[0] == "PR"                                 # face value (default)
    assert one(pr_then_sd, confirm_days=28.0)[0] == "SD"              # unconfirmed PR counts as SD
    assert one([50.0, 30.0, 32.0], confirm_days=28.0)[0] == "PR"      # PR confirmed 42 days later
    assert one([50.0, 4.0, 3.0], confirm_days=28.0)[0] == "CR"
    assert one([50.0, 4.0, 6.0], confirm_days=28.0)[0] == "PR"        # CR confirmed only as PR (6 mm)
    assert one([50.0, 30.0, 46.0], confirm_days=28.0)[:2] == ("SD", 2)  # PD (+16 mm, +53 %) cannot confirm
    close = np.array([0.0, 42.0, 56.0, 100.0])                       # second PR only 14 days later
    assert one([50.0, 30.0, 30.0, 40.0], close, confirm_days=28.0)[0] == "SD"
    assert one([50.0, 30.0, 30.0, 40.0], close, confirm_days=14.0)[0] == "PR"


def test_best_pct_change_stops_at_first_pd_and_shows_early_pd():
    assert one([50.0, 40.0, 60.0, 20.0])[2] == -20.0     # the later 20 mm (after PD) does not count
    assert one([50.0, 70.0, 20.0])[2] == 40.0            # PD at the first visit shows its increase


def test_criteria_are_validated():
    with pytest.raises(ValueError, match="pr_rel"):
        RecistCriteria(pr_rel=30.0)
    with pytest.raises(ValueError, match="confirm_days"):
        RecistCriteria(confirm_days=0.0)


def test_bad_inputs_raise_with_the_fix():
    with pytest.raises(SimulationError, match="baseline sld_mm >= 10 mm"):
        assess(np.array([[50.0, 40.0], [0.0, 10.0]]), [0.0, 42.0])
    with pytest.raises(SimulationError, match=r"\(\.\.\., n_scan\)"):
        assess(np.ones((3, 4)), DAYS)
    with pytest.raises(SimulationError, match=re.escape(
            "RECIST readout: sld has shape (3, 4) but scan_day has shape (2, 4); pass sld as (..., n_scan) "
            "with scan_day (n_scan,) or each patient's visit days (..., n_scan), the first scan being the baseline")):
        assess(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(SimulationError, match="strictly increasing"):
        assess(np.ones((3, 3)), [0.0, 42.0, 42.0])


def reference_best_response(sld, days, c: RecistCriteria):
    """Literal per-patient RECIST 1.1 (independent of the vectorised code): loop over the visits."""
    baseline, nadir, visits, pd_index = sld[0], sld[0], [], -1
    for s in range(1, len(sld)):
        if math.isnan(sld[s]):
            continue
        if sld[s] >= (1 + c.pd_rel) * nadir and sld[s] - nadir >= c.pd_abs_mm:
            visits.append((days[s], "PD", sld[s]))
            pd_index = s
            break
        label = "CR" if sld[s] <= c.cr_mm else "PR" if sld[s] <= (1 - c.pr_rel) * baseline else "SD"
        visits.append((days[s], label, sld[s]))
        nadir = min(nadir, sld[s])
    rank = {"PD": 1, "SD": 2, "PR": 3, "CR": 4}

    def confirmed(i, level):
        if c.confirm_days is None:
            return True
        return any(d2 - visits[i][0] >= c.confirm_days and rank[r2] >= rank[level] for d2, r2, _ in visits[i + 1:])

    best = "NE"
    if any(r == "CR" and confirmed(i, "CR") for i, (_, r, _) in enumerate(visits)):
        best = "CR"
    elif any(rank[r] >= 3 and confirmed(i, "PR") for i, (_, r, _) in enumerate(visits)):
        best = "PR"
    elif any(rank[r] >= 2 and d >= c.sd_min_days for d, r, _ in visits):
        best = "SD"
    elif pd_index >= 0:
        best = "PD"
    pct = min((100 * (v - baseline) / baseline for _, _, v in visits), default=math.nan)
    return best, pd_index, pct


@pytest.mark.parametrize("confirm_days", [None, 28.0])
@pytest.mark.parametrize("own_days", [False, True])
def test_vectorised_readout_matches_the_literal_reference_on_random_courses(confirm_days, own_days):
    rng = np.random.default_rng(11)
    days = np.r_[0.0, np.arange(1, 12) * 42.0, 504.0 + np.arange(1, 6) * 63.0]
    n = 3000
    log_change = np.cumsum(rng.normal(0.0, 0.35, (n, days.size)), axis=1)
    sld = rng.uniform(10.0, 150.0, (n, 1)) * np.exp(log_change - log_change[:, :1])
    sld[:, 1:][rng.random((n, days.size - 1)) < 0.05] = np.nan        # missed visits
    sld = np.where(np.arange(days.size) > rng.integers(0, days.size + 1, (n, 1)), np.nan, sld)  # death/cut
    # own_days: each patient's visits up to 14 days off the schedule (around the 28-day
    # confirmation and the 42-day SD minimum)
    visit = days + np.where(own_days, np.c_[np.zeros(n), rng.uniform(-14.0, 14.0, (n, days.size - 1))], 0.0)
    criteria = RecistCriteria(confirm_days=confirm_days)
    out = assess(sld.reshape(3, 1000, days.size), visit.reshape(3, 1000, days.size) if own_days else days,
                 criteria)                                          # any leading dimensions
    reference = [reference_best_response(row, row_days, criteria) for row, row_days in zip(sld, visit)]
    assert list(out.best_response.ravel()) == [r[0] for r in reference]
    np.testing.assert_array_equal(out.pd_index.ravel(), [r[1] for r in reference])
    np.testing.assert_allclose(out.best_pct_change.ravel(), [r[2] for r in reference], rtol=1e-12, equal_nan=True)
    assert len(set(out.best_response.ravel())) == 5                  # every category exercised
    pd_index = out.pd_index.ravel()
    np.testing.assert_array_equal(out.pd_day.ravel()[pd_index >= 0],
                                  visit[pd_index >= 0, pd_index[pd_index >= 0]])
    assert np.isnan(out.pd_day.ravel()[pd_index < 0]).all()


def test_confirmation_day_reads_each_patients_visit_days():
    # PD at the 2nd visit (62 mm >= 1.2 x 50 and +12 mm); confirmed where the sum is >= 67 mm
    sld = np.array([[50.0, 62.0, 66.0, 70.0], [50.0, 62.0, 66.0, 70.0], [50.0, 45.0, 47.0, 49.0]])
    visit = np.array([[0.0, 44.0, 80.0, 131.0], [0.0, 40.0, 86.0, 122.0], [0.0, 42.0, 84.0, 126.0]])
    pd_day = assess(sld, visit).pd_day
    np.testing.assert_array_equal(pd_day, [44.0, 40.0, np.nan])
    np.testing.assert_array_equal(confirmation_day(sld, visit, pd_day), [131.0, 122.0, np.inf])
    for row in range(3):                        # shared days give the same per patient
        assert confirmation_day(sld[row], visit[row], pd_day[row]) == confirmation_day(sld, visit, pd_day)[row]


def test_objective_response_rate_counts_cr_and_pr_over_all_patients():
    best = np.array([["CR", "PR", "SD", "PD", "NE"], ["PR", "PR", "PR", "SD", "SD"]])
    np.testing.assert_allclose(objective_response_rate(best), [0.4, 0.6])
