"""Burden-linked post-progression hazard (TGI-OS link): h(t) = h_pp (N(t) / N_ref)^beta after PD.

References: the closed-form event day of an exponentially growing (or shrinking) burden, whose
hazard is then Gompertz-shaped; scipy quad + brentq on a shrink-then-regrow course; the
exponential model (beta = 0) of the earlier sessions; the MLE of a constant hazard.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ruamel.yaml import YAML
from scipy import integrate, optimize

from immunoedit_models.errors import SimulationError
from immunoedit_models.fit import load_problem
from immunoedit_models.trials import load_trial
from immunoedit_models.trials.endpoints import (DAYS_PER_MONTH, Censoring, SurvivalParameters,
                                                burden_linked_event_day, death_day, patient_outcomes)

FITTING = Path(__file__).resolve().parents[1] / "fitting"
WEEKS = np.arange(0.0, 1463.0, 7.0)                       # the trials' weekly output grid, 4 years
SCANS = np.r_[0.0, np.arange(1, 9) * 42.0, 336.0 + np.arange(1, 16) * 63.0]
LOG_REF = np.log(1e10)


def exponential_event_day(start, n_start, g, h, beta, draw):
    """Closed form for N(t) = n_start e^{g (t - start)}: H(t) = a (e^{beta g (t - start)} - 1) / (beta g)
    with a = h (n_start / 1e10)^beta; inf where H never reaches the draw (shrinking tumour)."""
    a = h * np.exp(beta * (np.log(n_start) - LOG_REF))
    arg = 1.0 + draw * beta * g / a
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(arg > 0, start + np.log(arg) / (beta * g), np.inf)


@pytest.mark.parametrize("g", [0.02, -0.004])
def test_event_day_matches_the_closed_form_for_exponential_burden(g):
    # starts between grid days, draws spread over (0, 3]; log-linear interpolation is exact here
    start = np.array([0.0, 10.5, 84.0, 100.3, 250.9])
    draw = np.array([0.05, 0.4, 1.0, 2.0, 3.0])
    n0, h, beta = 3e9, 0.002, 0.8                                    # per day at 1e10 cells
    log_burden = np.log(n0) + g * WEEKS
    got = burden_linked_event_day(np.broadcast_to(log_burden, (5, WEEKS.size)), WEEKS, start, h, beta, LOG_REF, draw)
    exact = exponential_event_day(start, n0 * np.exp(g * start), g, h, beta, draw)
    exact = np.where(exact <= WEEKS[-1], exact, np.inf)               # beyond the grid: no event
    assert np.isinf(got).tolist() == np.isinf(exact).tolist()
    if g < 0:
        assert np.isinf(got).any()                                   # a shrinking tumour's bounded hazard
    np.testing.assert_allclose(got[np.isfinite(got)], exact[np.isfinite(exact)], rtol=1e-12, atol=1e-9)


def test_event_day_matches_numerical_integration_of_a_shrink_regrow_course():
    # ln N falls 0.03/day to day 120, then regrows 0.015/day, sampled on the weekly grid; the
    # reference integrates the same log-linear interpolant with quad and solves H(t) = draw with brentq
    log_burden = np.log(5e10) + np.where(WEEKS < 120, -0.03 * WEEKS, -0.03 * 120 + 0.015 * (WEEKS - 120))
    h, beta, start = 0.004, 1.3, 41.0

    def hazard(t):
        return h * np.exp(beta * (np.interp(t, WEEKS, log_burden) - LOG_REF))

    def cumulative(t):
        knots = [start, *WEEKS[(WEEKS > start) & (WEEKS < t)], t]
        return sum(integrate.quad(hazard, a, b, epsabs=1e-13, epsrel=1e-12)[0] for a, b in zip(knots[:-1], knots[1:]))

    draws = np.array([0.01, 0.3, 0.9, 1.5, 4.0])
    got = burden_linked_event_day(np.broadcast_to(log_burden, (5, WEEKS.size)), WEEKS, np.full(5, start),
                                  h, beta, LOG_REF, draws)
    for g, e in zip(got, draws):
        ref = optimize.brentq(lambda t: cumulative(t) - e, start, WEEKS[-1], xtol=1e-10)
        assert g == pytest.approx(ref, abs=1e-6)


def test_event_day_is_smooth_and_monotone_in_the_parameters():
    # common random numbers: the same draw moves the event day continuously; d t / d h against
    # the derivative of the closed form, by central differences
    n0, g, beta, start, draw = 2e9, 0.01, 0.7, 84.0, 1.2
    log_burden = (np.log(n0) + g * WEEKS)[None]

    def t_of(h, b=beta):
        return burden_linked_event_day(log_burden, WEEKS, np.array([start]), h, b, LOG_REF, np.array([draw]))[0]

    h = 0.003
    a0 = h * np.exp(beta * (np.log(n0) + g * start - LOG_REF))
    k = draw * beta * g / a0 * h                                     # t = start + ln(1 + k / h) / (beta g)
    analytic = -(k / h**2) / (1 + k / h) / (beta * g)
    step = 1e-6 * h
    assert (t_of(h + step) - t_of(h - step)) / (2 * step) == pytest.approx(analytic, rel=1e-5)
    hs = np.geomspace(0.001, 0.01, 7)
    assert np.all(np.diff([t_of(x) for x in hs]) < 0)                # more hazard, earlier death
    assert np.all(np.diff([t_of(h, b) for b in (0.5, 0.7, 0.9)]) < 0)  # burden above 1e10 after day 84


def outcomes(survival, cells, n, seed=3):
    """PD seen at the day-84 visit for every patient (nadir at day 30, then +1 %/day)."""
    sld = 60.0 * np.exp(np.where(SCANS < 30, -0.01 * SCANS, -0.3 + 0.01 * (SCANS - 30)))
    return patient_outcomes(np.broadcast_to(sld, (n, SCANS.size)), SCANS, cells, WEEKS,
                            np.random.default_rng(seed), Censoring(0.0, 47.0), survival=survival, dims=("patient",))


def test_exponent_zero_is_the_exponential_model_and_the_link_is_continuous_at_zero():
    rng = np.random.default_rng(0)
    cells = np.exp(np.log(1e9) + np.cumsum(rng.normal(0, 0.05, (400, WEEKS.size)), axis=1))
    exponential = outcomes(SurvivalParameters(np.inf, 0.0, 0.1), cells, 400)
    # the exponential model: death = PD day + draw / hazard, the draws after the entry draws
    draws = np.random.default_rng(3)
    draws.uniform(size=400), draws.exponential(size=400)
    expected = np.minimum(84.0 + draws.exponential(size=400) * DAYS_PER_MONTH / 0.1, 47.0 * DAYS_PER_MONTH)
    np.testing.assert_allclose(exponential.os_months * DAYS_PER_MONTH, expected, rtol=1e-12)
    assert SurvivalParameters().burden_linked is False
    near_zero = outcomes(SurvivalParameters(np.inf, 0.0, 0.1, 1e-9), cells, 400)
    np.testing.assert_array_equal(near_zero.os_event, exponential.os_event)
    np.testing.assert_allclose(near_zero.os_months, exponential.os_months, rtol=1e-6)


def test_constant_burden_scales_the_post_progression_hazard():
    # burden held at 4e10 cells: after PD an exponential hazard 0.05 x 4^0.6 per month (MLE, 4 SE)
    n = 20000
    ds = outcomes(SurvivalParameters(np.inf, 0.0, 0.05, 0.6), np.full((n, WEEKS.size), 4e10), n)
    expected = 0.05 * 4.0**0.6
    events = ds.os_event.sum().item()
    est = events / (ds.os_months.values - 84.0 / DAYS_PER_MONTH).sum()
    assert abs(est - expected) < 4 * expected / np.sqrt(events)
    assert set(np.unique(ds.death_cause)) == {"", "post_progression"}
    assert np.all(ds.pfs_months.values == 84.0 / DAYS_PER_MONTH)     # the link never moves PFS here


def test_death_model_settings_are_checked_and_read_from_designs():
    with pytest.raises(ValueError, match="post_progression_burden_exponent must be >= 0"):
        SurvivalParameters(post_progression_burden_exponent=-0.5)
    with pytest.raises(ValueError, match="post_progression_reference_cells must be > 0"):
        SurvivalParameters(post_progression_reference_cells=0.0)
    with pytest.raises(SimulationError, match="needs the tumour_cells"):
        death_day(np.full(3, np.inf), np.full(3, 84.0), SurvivalParameters(post_progression_burden_exponent=1.0),
                  np.random.default_rng(0))
    assert load_trial("impower150").survival.burden_linked                      # the linked death model
    # RELATIVITY-047 carries the melanoma link anchored on CheckMate 067's nivolumab OS
    calibration = YAML(typ="safe").load((FITTING / "checkmate067_os" / "calibration.yaml").read_text(encoding="utf-8"))
    melanoma = load_trial("relativity047").survival
    assert melanoma.burden_linked
    assert melanoma.post_progression_hazard_per_month == calibration["survival"]["post_progression_hazard_per_month"]
    assert melanoma.post_progression_burden_exponent == calibration["survival"]["post_progression_burden_exponent"]
    assert melanoma.post_progression_frailty_sd == calibration["survival"]["post_progression_frailty_sd"] > 0
    assert not load_trial("high_dose_il2").survival.burden_linked              # still exponential
    roles = load_problem(FITTING / "impower150").roles
    assert roles["post_progression_burden_exponent"] == roles["post_progression_hazard_per_month"] == "survival"
    assert load_problem(FITTING / "checkmate067_os").roles["post_progression_frailty_sd"] == "survival"
