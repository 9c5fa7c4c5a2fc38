"""Likelihood terms, trial targets, problem files and KM reconstruction, against hand computations.

References: closed-form densities (scipy.stats), the exponential likelihood, the product-limit
estimator (lifelines), and the published rows of ../shared/data/trials/*/published.csv.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from immunoedit_models.errors import FitError
from immunoedit_models.fit import likelihoods as L
from immunoedit_models.fit.km import (cox_hazard_ratio, km_curve, km_median, numbers_at_risk,
                                      reconstruct_ipd)
from immunoedit_models.fit.parameters import (FreeParameter, ParameterSet, PopulationParameter,
                                              log_prior_density)
from immunoedit_models.fit.problem import load_problem
from immunoedit_models.fit.trial import TrialObjective, target_nll, trial_terms

FITTING = Path(__file__).resolve().parent.parent / "fitting"


# ---- time-course noise models ------------------------------------------------------------------
def test_normal_nll_by_hand():
    y, h, s = np.array([1.0, 2.0]), np.array([1.5, 1.5]), 0.5
    hand = 0.5 * (1 + 1) + 2 * math.log(0.5) + 2 * 0.5 * math.log(2 * math.pi)
    assert float(L.normal_nll(y, h, s)) == pytest.approx(hand, rel=1e-14)
    assert float(L.normal_nll(y, h, s, constants=False)) == pytest.approx(1.0 + 2 * math.log(0.5), rel=1e-14)


def test_lognormal_and_laplace_match_scipy():
    y, h = np.array([0.5, 2.0, 7.0]), np.array([1.0, 2.5, 5.0])
    assert float(L.lognormal_nll(y, h, 0.3)) == pytest.approx(
        -stats.lognorm.logpdf(y, s=0.3, scale=h).sum(), rel=1e-12)
    assert float(L.laplace_nll(y, h, 0.7)) == pytest.approx(-stats.laplace.logpdf(y, loc=h, scale=0.7).sum(), rel=1e-12)


def test_priors_are_densities_of_the_fit_scale():
    # lognormal prior on a log-scale parameter = normal density of x = ln value
    p = FreeParameter("k", (0.01, 100.0), "log", prior={"distribution": "lognormal", "median": 2.0, "sigma": 0.5})
    x = 0.3
    assert float(log_prior_density(p, x)) == pytest.approx(stats.norm.logpdf(x, math.log(2.0), 0.5), rel=1e-12)
    q = FreeParameter("r", (-1.0, 1.0), "lin", prior={"distribution": "normal", "mean": 0.1, "sd": 0.2})
    assert float(log_prior_density(q, 0.25)) == pytest.approx(stats.norm.logpdf(0.25, 0.1, 0.2), rel=1e-12)
    u = FreeParameter("u", (1.0, 10.0), "log", prior={"distribution": "loguniform", "low": 1.0, "high": 10.0})
    # loguniform on the value is uniform on ln value: density 1 / ln(10)
    assert float(log_prior_density(u, 1.2)) == pytest.approx(-math.log(math.log(10.0)), rel=1e-12)


def test_free_parameter_errors_say_what_is_wrong():
    with pytest.raises(FitError, match="scale 'log' needs positive bounds"):
        FreeParameter("r", (-1.0, 1.0), "log")
    with pytest.raises(FitError, match="start 5.0 is outside the bounds"):
        FreeParameter("r", (0.1, 1.0), "log", start=5.0)


# ---- survival likelihood -------------------------------------------------------------------------
def test_one_bin_survival_nll_is_the_exponential_likelihood():
    rng = np.random.default_rng(1)
    t = rng.exponential(5.0, 200)
    e = (rng.uniform(size=200) < 0.8).astype(int)
    lam = 0.17
    assert L.survival_nll(t, e, [0.0], np.array([lam])) == pytest.approx(lam * t.sum() - e.sum() * math.log(lam), rel=1e-12)


def test_piecewise_hazard_hard_bins_are_events_over_exposure():
    t = np.array([0.5, 1.5, 2.5, 3.0, 4.0])
    e = np.array([1, 0, 1, 1, 0])
    edges = [0.0, 1.0, 3.0]
    # exposure per bin: [0,1): 0.5+1+1+1+1 = 4.5; [1,3): 0.5+1.5+2+2 = 6; [3,inf): 0+1 = 1
    # events: 0.5 -> bin 0; 2.5 -> bin 1; 3.0 -> bin 2
    got = L.piecewise_hazard(t, e, edges, width=0.0, prior_events=0.0)
    np.testing.assert_allclose(got, [1 / 4.5, 1 / 6, 1 / 1], rtol=1e-14)
    np.testing.assert_allclose(L.exposure(t, edges).sum(axis=0), [4.5, 6.0, 1.0], rtol=1e-14)


def test_smoothed_ipd_likelihood_is_smooth_under_common_random_numbers():
    """With fixed draws the simulated event times move continuously with the parameter; kernel
    smoothing of the event counts makes the objective smooth (second differences small against
    first differences), where hard bin counts jump each time an event crosses a bin edge."""
    z = np.random.default_rng(3).standard_normal(1000)
    obs_t = np.random.default_rng(4).exponential(8.0, 300)
    obs_e = np.ones(300, int)

    def roughness(width):
        grid = np.linspace(5.9, 6.1, 101)
        values = np.array([L.ipd_nll(obs_t, obs_e, m * np.exp(0.4 * z), np.ones(1000),
                                     [0, 2, 4, 6, 9, 12, 18], width=width) for m in grid])
        d = np.diff(values)
        return np.abs(np.diff(d)).max() / np.abs(d).max()

    assert roughness(0.5) < 0.2     # measured 0.066
    assert roughness(0.0) > 0.5     # measured 1.2: hard bins are not smooth


def test_summary_statistic_terms_by_hand():
    se = (math.log(0.92) - math.log(0.62)) / (2 * 1.959963984540054)
    assert L.se_from_ci(0.62, 0.92) == pytest.approx(se, rel=1e-12)
    hand = 0.5 * ((math.log(0.8) - math.log(0.75)) / se) ** 2 + math.log(se) + 0.5 * math.log(2 * math.pi)
    assert L.gaussian_nll(0.8, 0.75, se, "log") == pytest.approx(hand, rel=1e-12)
    g = lambda s: math.log(-math.log(s))  # noqa: E731
    se_c = (g(0.418) - g(0.532)) / (2 * 1.959963984540054)
    assert L.se_from_ci(0.418, 0.532, "cloglog") == pytest.approx(se_c, rel=1e-12)
    assert L.gaussian_nll(0.5, 0.477, se_c, "cloglog") == pytest.approx(
        -stats.norm.logpdf(g(0.477), g(0.5), se_c), rel=1e-12)
    assert L.binomial_nll(153, 355, 0.4) == pytest.approx(-stats.binom.logpmf(153, 355, 0.4), rel=1e-12)


# ---- trial targets on a simulated trial Dataset ---------------------------------------------------
def _trial(median_a=10.0, median_b=6.0, n=800, seed=0, with_summaries=False):
    """A contract-shaped trial Dataset with exponential PFS/OS and random responses."""
    rng = np.random.default_rng(seed)
    arms = ["A", "B"]
    pfs = np.stack([rng.exponential(m / math.log(2), n) for m in (median_a, median_b)])
    cens = rng.uniform(12, 36, (2, n))
    resp = np.where(rng.uniform(size=(2, n)) < np.array([[0.45], [0.3]]), "PR", "SD")
    ds = xr.Dataset({"pfs_months": (("arm", "patient"), np.minimum(pfs, cens)),
                     "pfs_event": (("arm", "patient"), (pfs <= cens).astype(int)),
                     "best_response": (("arm", "patient"), resp)},
                    coords={"arm": arms, "patient": np.arange(n)})
    if with_summaries:
        ds["hr_pfs"] = ("comparison", [0.7])
        ds = ds.assign_coords(comparison=["A_vs_B"])
    return ds


def _target(**kw):
    from immunoedit_models.fit.problem import Target
    return Target(**kw)


def test_trial_targets_against_direct_computations():
    ds = _trial()
    tA, eA = ds.pfs_months.sel(arm="A").values, ds.pfs_event.sel(arm="A").values
    tB, eB = ds.pfs_months.sel(arm="B").values, ds.pfs_event.sel(arm="B").values
    med = _target(id="m", kind="median", arm="A", value=8.3, ci=(7.0, 9.8))
    se = (math.log(9.8) - math.log(7.0)) / (2 * 1.959963984540054)
    assert target_nll(ds, med) == pytest.approx(
        -stats.norm.logpdf(math.log(8.3), math.log(km_median(tA, eA)), se), rel=1e-10)
    hr_target = _target(id="h", kind="hazard_ratio", comparison="A_vs_B", value=0.62, ci=(0.52, 0.74))
    hr = cox_hazard_ratio(tA, eA, tB, eB)[0]
    assert 0.5 < hr < 0.75  # exponential arms with a true HR of 0.6
    se = (math.log(0.74) - math.log(0.52)) / (2 * 1.959963984540054)
    assert target_nll(ds, hr_target) == pytest.approx(-stats.norm.logpdf(math.log(0.62), math.log(hr), se), rel=1e-8)
    # the simulated trial's own Cox HR is used when the Dataset carries it
    assert target_nll(_trial(with_summaries=True), hr_target) == pytest.approx(
        -stats.norm.logpdf(math.log(0.62), math.log(0.7), se), rel=1e-12)
    orr = float((ds.best_response.sel(arm="B").values == "PR").mean())
    resp = _target(id="r", kind="response", arm="B", value=0.326, n=359)
    assert target_nll(ds, resp) == pytest.approx(-stats.binom.logpmf(117, 359, orr), rel=1e-12)
    ipd = _target(id="i", kind="ipd", arm="A", data=pd.DataFrame({"time_months": tA[:100], "event": eA[:100]}),
                  hazard_bins_months=(0, 3, 6, 12), smoothing_months=0.5)
    assert target_nll(ds, ipd) == pytest.approx(
        L.ipd_nll(tA[:100], eA[:100], tA, eA, [0, 3, 6, 12], 0.5), rel=1e-12)
    terms = trial_terms(ds, [med, resp])
    assert set(terms) == {"m", "r"}


def test_trial_objective_groups_parameters_and_penalises_failures():
    free = (FreeParameter("post_progression_hazard_per_month", (0.01, 1.0), "log"),
            FreeParameter("g.median", (0.01, 1.0), "log"), FreeParameter("g.sigma", (0.05, 2.0), "log"))
    params = ParameterSet(free, (PopulationParameter("g", free[1], free[2]),))
    from immunoedit_models.fit.problem import FitProblem, FitSettings
    problem = FitProblem("toy", "trial", Path("."), "m", params, FitSettings(),
                         roles={"post_progression_hazard_per_month": "survival", "g.median": "population",
                                "g.sigma": "population"},
                         targets=(_target(id="m", kind="median", arm="A", value=8.0, ci=(7.0, 9.0)),))
    seen = {}

    def simulate(groups):
        seen.update(groups)
        return _trial(median_a=10.0 * groups["population"]["g"]["median"] / 0.1)

    obj = TrialObjective(problem, simulate)
    x = params.to_x([0.1, 0.1, 0.5])
    value = obj(x)
    assert seen["survival"] == {"post_progression_hazard_per_month": pytest.approx(0.1)}
    assert seen["population"]["g"] == {"median": pytest.approx(0.1), "sigma": pytest.approx(0.5)}
    assert value == pytest.approx(target_nll(_trial(), problem.targets[0]), rel=1e-12)
    failing = TrialObjective(problem, lambda g: _trial().drop_vars("pfs_event").assign(
        pfs_event=(("arm", "patient"), np.zeros((2, 800), int))))
    assert failing(x) == failing.penalty  # no events: KM median undefined -> a rejected point


# ---- Guyot reconstruction ----------------------------------------------------------------------
def test_guyot_reconstruction_round_trip():
    """Simulated exponential IPD -> KM curve + at-risk table -> reconstructed IPD: same medians
    (within 0.3 month) and HR (within 0.03). Guyot et al. BMC Med Res Methodol 2012;12:9."""
    rng = np.random.default_rng(2012)
    risk_t = np.arange(0.0, 37.0, 3.0)
    arms = []
    for median, n in ((8.0, 350), (5.5, 340)):
        t = rng.exponential(median / math.log(2), n)
        c = rng.uniform(12, 36, n)  # administrative censoring: staggered entry, cut-off at 36 months
        time, event = np.minimum(t, c), (t <= c).astype(int)
        curve_t, curve_s = km_curve(time, event)
        rec = reconstruct_ipd(curve_t, curve_s, risk_t, numbers_at_risk(time, risk_t))
        assert len(rec) == n
        assert abs(km_median(rec["time"], rec["event"]) - km_median(time, event)) < 0.3
        np.testing.assert_array_equal(numbers_at_risk(rec["time"], risk_t[:-1]), numbers_at_risk(time, risk_t[:-1]))
        arms.append(((time, event), (rec["time"].to_numpy(), rec["event"].to_numpy())))
    hr_true = cox_hazard_ratio(*arms[0][0], *arms[1][0])[0]
    hr_rec = cox_hazard_ratio(*arms[0][1], *arms[1][1])[0]
    assert abs(hr_rec - hr_true) < 0.03


def test_guyot_reconstruction_of_the_impower150_bcp_curve(shared_dir):
    """Reconstruct the BCP PFS pseudo-IPD from its own KM curve and at-risk table: the median and
    the ABCP-vs-BCP HR are preserved (published: median 6.8 months, HR 0.62; published.csv)."""
    folder = shared_dir / "data" / "trials" / "impower150"
    bcp = pd.read_csv(folder / "pfs_reconstructed_ipd_bcp.csv")
    abcp = pd.read_csv(folder / "pfs_reconstructed_ipd_abcp.csv")
    risk_t = np.arange(0.0, 24.0, 3.0)
    t, e = bcp["time_months"].to_numpy(), bcp["event"].to_numpy()
    rec = reconstruct_ipd(*km_curve(t, e), risk_t, numbers_at_risk(t, risk_t), total_events=int(e.sum()))
    assert abs(km_median(rec["time"], rec["event"]) - 6.8) < 0.3
    hr = cox_hazard_ratio(abcp["time_months"], abcp["event"], rec["time"], rec["event"])[0]
    assert abs(hr - 0.62) < 0.03


def test_reconstruction_rejects_a_bad_at_risk_table():
    with pytest.raises(FitError, match="at-risk table must start at time 0"):
        reconstruct_ipd([0, 1, 2], [1, 0.9, 0.8], [1.0, 2.0], [10, 8])


# ---- problem files -----------------------------------------------------------------------------
def test_trial_problem_files_load_with_published_targets():
    imp = load_problem(FITTING / "impower150")
    assert imp.kind == "trial" and imp.trial == "impower150"
    sizes = {t.id: len(t.data) for t in imp.targets if t.kind == "ipd"}
    assert sizes == {"pfs_abcp": 356, "pfs_bcp": 336, "pfs_acp": 402, "os_bcp": 338}  # shared README
    rel = load_problem(FITTING / "relativity047")
    by_id = {t.id: t for t in rel.targets}
    assert by_id["pfs_hr"].value == 0.75 and by_id["pfs_hr"].ci == (0.62, 0.92)          # Tawbi 2022
    assert by_id["pfs_12mo_nivo"].value == 0.36 and by_id["pfs_12mo_nivo"].months == 12
    assert by_id["orr_nivo_rela"].value == 0.431 and by_id["orr_nivo_rela"].n == 355   # Long 2023
    assert "Tawbi" in by_id["pfs_median_nivo"].source


def test_problem_errors_are_collected_with_lines(tmp_path):
    (tmp_path / "problem.yaml").write_text(
        "name: bad\nkind: timecourse\nmodel: benchmark_reference\nfitt: {}\n"
        "observables:\n  o: {output: T, noise: gaussian}\n"
        "measurements: missing.tsv\n"
        "parameters:\n  rT: {bounds: [-1, 1], scale: log}\n  kkill: {scale: log}\n")
    with pytest.raises(FitError) as info:
        load_problem(tmp_path)
    text = str(info.value)
    assert "5 problems in fitting problem" in text
    assert "problem.yaml:4: problem: unknown key 'fitt' (did you mean 'fit'?)" in text
    assert "noise must be one of normal, lognormal, laplace" in text
    assert "problem.yaml:7: measurements: no such file" in text
    assert "scale 'log' needs positive bounds" in text
    assert "problem.yaml:10: parameter 'kkill': needs 'bounds: [low, high]'" in text


def test_problem_counts_must_be_integers(tmp_path):
    text = (Path("fitting/relativity047/problem.yaml").read_text()
            .replace("patients_per_arm: 300", "patients_per_arm: 0")
            .replace("max_iter: 40", "max_iter: 1.5"))
    for name in Path("fitting/relativity047").iterdir():
        (tmp_path / name.name).write_bytes(name.read_bytes())
    (tmp_path / "problem.yaml").write_text(text)
    with pytest.raises(FitError) as info:
        load_problem(tmp_path)
    lines = [line.strip().replace(f"{tmp_path}/", "") for line in str(info.value).splitlines()]
    assert lines[0] == "2 problems in fitting problem:"
    assert "problem.yaml:14: cohort: 'patients_per_arm' must be an integer >= 1, got 0 " \
           "(e.g. 'patients_per_arm: 1')" in lines[1:]
    assert "problem.yaml:117: fit: 'max_iter' must be an integer >= 1, got 1.5 (e.g. 'max_iter: 200')" in lines[1:]
