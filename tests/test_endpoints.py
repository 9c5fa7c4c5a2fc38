"""PFS / OS endpoints: scan-only detection, competing causes of death, administrative censoring."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from immunoedit_models.errors import SimulationError
from immunoedit_models.trials.endpoints import (DAYS_PER_MONTH, Censoring, SurvivalParameters, burden_death_day,
                                                patient_outcomes, truncate_doses)

SCANS = np.r_[0.0, np.arange(1, 9) * 42.0, 336.0 + np.arange(1, 17) * 63.0]   # q6w to week 48, then q9w
DAY = np.arange(0.0, 1461.0)
NO_DEATH = SurvivalParameters(lethal_tumour_cells=np.inf, background_hazard_per_month=0.0,
                              post_progression_hazard_per_month=0.0)


def v_shaped_sld(nadir_day, base=60.0, shrink=0.01, grow=0.01):
    """SLD falling exponentially to nadir_day then regrowing: an analytic course (mm) at any days."""
    def sld(t):
        t = np.asarray(t, float)
        return base * np.exp(np.where(t < nadir_day, -shrink * t, -shrink * nadir_day + grow * (t - nadir_day)))
    return sld


def outcomes(sld_at, n=1, cells=None, survival=NO_DEATH, censoring=Censoring(0.0, 47.0), seed=0):
    sld = np.broadcast_to(sld_at(SCANS), (n, SCANS.size))
    day = DAY if cells is not None else DAY[[0, -1]]                # no burden: a two-point grid will do
    cells = np.zeros((n, 2)) if cells is None else cells
    return patient_outcomes(sld, SCANS, cells, day, np.random.default_rng(seed), censoring,
                            survival=survival, dims=("patient",))


def test_burden_death_day_interpolates_the_first_crossing():
    burden = np.array([[1.0, 2.0, 4.0, 8.0], [1.0, 1.0, 1.0, 1.0], [9.0, 1.0, 1.0, 9.0]])
    np.testing.assert_allclose(burden_death_day(burden, np.arange(4.0), 5.0), [2.25, np.inf, 0.0])
    # exponential growth N0 exp(g t): analytic crossing ln(L / N0) / g; linear interpolation on a
    # daily grid is within g/8 day (convexity) of it
    n0, g = np.array([1e9, 3e9]), 0.02
    cells = n0[:, None] * np.exp(g * DAY)
    exact = np.log(1e12 / n0) / g
    got = burden_death_day(cells, DAY, 1e12)
    assert np.all(got <= exact) and np.all(exact - got < g / 8 + 1e-9)


def test_pd_is_seen_only_at_the_next_visit():
    # nadir at day 30; the true sum crosses 1.2 x nadir (and +5 mm) at day 30 + ln(1.2)/0.01 = 48.2
    sld = v_shaped_sld(30.0)
    nadir = sld(30.0)
    true_crossing = 30.0 + np.log(1.2) / 0.01
    assert sld(true_crossing) - nadir >= 5.0
    ds = outcomes(sld)
    # scans at 42 (not yet) and 84: PFS is the visit day, not the crossing day
    assert ds.pfs_event.item() == 1 and ds.pfs_months.item() == pytest.approx(84.0 / DAYS_PER_MONTH, abs=1e-12)
    assert ds.pd_day.item() == 84.0 and ds.best_response.item() == "SD"
    assert ds.os_event.item() == 0 and ds.os_months.item() == pytest.approx(47.0, abs=1e-9)


def test_pfs_event_days_are_visit_days_across_a_population():
    rng = np.random.default_rng(5)
    nadir_day = rng.uniform(0.0, 500.0, 400)
    sld = v_shaped_sld(nadir_day[:, None], grow=rng.uniform(0.002, 0.03, (400, 1)))(SCANS)
    ds = patient_outcomes(sld, SCANS, np.zeros((400, 2)), DAY[[0, -1]], rng, Censoring(0.0, 47.0),
                          survival=NO_DEATH, dims=("patient",))
    pfs_day = ds.pfs_months.values * DAYS_PER_MONTH
    assert ds.pfs_event.sum() > 300
    np.testing.assert_allclose(pfs_day[ds.pfs_event.values == 1],
                               SCANS[np.abs(pfs_day[ds.pfs_event.values == 1, None] - SCANS).argmin(1)], atol=1e-9)


def test_censoring_hand_case_accrual_and_cutoff():
    # accrual 0 => every follow-up = cut-off = 10 months = 304.375 days; no PD, no death
    ds = outcomes(v_shaped_sld(1000.0, grow=0.0), censoring=Censoring(0.0, 10.0))
    assert ds.os_event.item() == 0 and ds.os_months.item() == pytest.approx(10.0)
    # PFS censored at the last visit before the cut-off: the q6w visit at day 294
    last_visit = SCANS[SCANS <= 304.375].max()
    assert last_visit == 294.0
    assert ds.pfs_event.item() == 0 and ds.pfs_months.item() == pytest.approx(294.0 / DAYS_PER_MONTH)
    # flat to day 300, then growing: PD at the day-336 visit, after this cut-off: not seen
    late = v_shaped_sld(300.0, shrink=0.0, grow=0.01)
    assert outcomes(late, censoring=Censoring(0.0, 10.0)).pfs_event.item() == 0
    assert outcomes(late, censoring=Censoring(0.0, 12.0)).pd_day.item() == 336.0


def test_entry_is_uniform_over_accrual_and_sets_each_follow_up():
    ds = outcomes(v_shaped_sld(2000.0, grow=0.0), n=20000, censoring=Censoring(20.0, 44.0))
    entry = ds.entry_months.values
    assert entry.min() >= 0.0 and entry.max() <= 20.0
    assert abs(entry.mean() - 10.0) < 4 * 20.0 / np.sqrt(12 * 20000)          # uniform mean, 4 SE
    np.testing.assert_allclose(ds.os_months, 44.0 - entry, rtol=1e-12)      # all alive: censored at follow-up
    followup_day = (44.0 - entry) * DAYS_PER_MONTH
    expected_pfs = np.max(np.where(SCANS <= followup_day[:, None], SCANS, 0.0), axis=1) / DAYS_PER_MONTH
    np.testing.assert_allclose(ds.pfs_months, expected_pfs, rtol=1e-12)


def test_background_and_post_progression_hazards_are_exponential():
    n = 20000
    lam0 = 0.05                                                               # per month
    ds = outcomes(v_shaped_sld(5000.0, grow=0.0), n=n, censoring=Censoring(0.0, 47.9),
                  survival=SurvivalParameters(np.inf, lam0, 0.0))
    # a constant hazard censored at a fixed time: the MLE events / exposure estimates it (4 SE)
    est = ds.os_event.sum().item() / ds.os_months.sum().item()
    assert abs(est - lam0) < 4 * lam0 / np.sqrt(ds.os_event.sum().item())
    assert set(np.unique(ds.death_cause)) == {"", "background"}
    # post-progression: PD at the day-84 visit for everyone, then hazard 0.2 / month
    ds = outcomes(v_shaped_sld(30.0), n=n, survival=SurvivalParameters(np.inf, 0.0, 0.2), seed=1)
    after = ds.os_months.values - 84.0 / DAYS_PER_MONTH
    est = ds.os_event.sum().item() / after.sum()
    assert abs(est - 0.2) < 4 * 0.2 / np.sqrt(ds.os_event.sum().item())
    assert np.all(ds.pfs_months.values == 84.0 / DAYS_PER_MONTH)


def test_burden_death_before_the_pd_visit_ends_pfs_at_death():
    sld = v_shaped_sld(30.0)                                       # PD would be seen at day 84
    cells = np.where(DAY >= 70.0, 2e12, 1e10)[None, :]             # lethal burden reached at day 69-70
    ds = outcomes(sld, cells=cells, survival=SurvivalParameters(1e12, 0.0, 0.0))
    death = 69.0 + (1e12 - 1e10) / (2e12 - 1e10)
    assert ds.os_event.item() == 1 and ds.os_months.item() == pytest.approx(death / DAYS_PER_MONTH)
    assert ds.pfs_event.item() == 1 and ds.pfs_months.item() == ds.os_months.item()
    assert np.isnan(ds.pd_day.item()) and ds.death_cause.item() == "tumour_burden"
    assert np.isnan(ds.sld_mm.values[0, 2:]).all() and np.isfinite(ds.sld_mm.values[0, :2]).all()


def test_same_seed_same_outcomes_and_shapes_follow_dims():
    rng = np.random.default_rng(2)
    sld = rng.uniform(20, 80, (2, 50, 1)) * np.exp(np.cumsum(rng.normal(0, 0.2, (2, 50, SCANS.size)), -1))
    cells = np.full((2, 50, DAY.size), 1e9)
    survival = SurvivalParameters(1e12, 0.01, 0.1)
    runs = [patient_outcomes(sld, SCANS, cells, DAY, np.random.default_rng(7), Censoring(12.0, 40.0),
                             survival=survival) for _ in range(2)]
    xr.testing.assert_identical(runs[0], runs[1])
    other = patient_outcomes(sld, SCANS, cells, DAY, np.random.default_rng(8), Censoring(12.0, 40.0), survival=survival)
    assert not np.array_equal(runs[0].os_months.values, other.os_months.values)
    assert runs[0].pfs_months.dims == ("arm", "patient") and runs[0].sld_mm.dims == ("arm", "patient", "scan")
    assert np.all(runs[0].pfs_months <= runs[0].os_months)


def test_follow_up_past_the_simulated_horizon_is_an_error():
    with pytest.raises(SimulationError, match="simulate at least cutoff_months"):
        outcomes(v_shaped_sld(30.0), censoring=Censoring(0.0, 60.0))
    with pytest.raises(ValueError, match="accrual_months < cutoff_months"):
        Censoring(24.0, 20.0)


def test_doses_after_death_or_cut_off_are_blanked():
    day = np.array([[0.0, 21.0, 42.0, 63.0, np.nan], [0.0, 21.0, 42.0, 63.0, 84.0]])
    drug = np.array([["a", "a", "b", "a", ""], ["a", "a", "a", "a", "a"]])
    # patient 0 died on day 42 (a dose that day is not given); patient 1 censored at day 63 (given)
    kept_day, kept_drug = truncate_doses(day, drug, np.array([42.0, 63.0]) / DAYS_PER_MONTH, np.array([1, 0]))
    np.testing.assert_array_equal(kept_day, [[0, 21, np.nan, np.nan, np.nan], [0, 21, 42, 63, np.nan]])
    assert kept_drug.tolist() == [["a", "a", "", "", ""], ["a", "a", "a", "a", ""]]
