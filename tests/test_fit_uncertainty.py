"""Laplace approximation from CMA-ES evaluations (fit/uncertainty.py) and the posterior predictive
stage (fit/predictive.py), on problems with known answers.

References: a quadratic negative log-likelihood 1/2 (x - mu)' A (x - mu) has the Gaussian
posterior N(mu, A^-1) exactly (A chosen here); chi2 quantiles from scipy; a direction the
objective ignores has the flat prior over its bounds, variance span^2 / 12; lognormal quantiles of
exp(x) for x ~ N(m, s^2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from immunoedit_models.errors import FitError
from immunoedit_models.fit.optimize import cmaes
from immunoedit_models.fit.parameters import FreeParameter, ParameterSet
from immunoedit_models.fit.predictive import (PredictiveSettings, prediction_statistics,
                                              predictive_trials)
from immunoedit_models.fit.problem import Target
from immunoedit_models.fit.report import target_table
from immunoedit_models.fit.trial import PredictiveCheck
from immunoedit_models.fit.uncertainty import (FLAT_PRECISION, Laplace, QuadraticSurface, default_window,
                                               draw_parameters, fit_quadratic, laplace_from_evaluations)

A = np.array([[4.0, 1.2, 0.0], [1.2, 2.0, -0.5], [0.0, -0.5, 9.0]])
MU = np.array([0.3, -0.4, 1.1])
BOUNDS = np.array([[-5.0, 5.0]] * 3)


def given(mean, cov, bounds) -> Laplace:
    """A Laplace posterior with a given mean and covariance (its surface: the matching quadratic)."""
    k = len(mean)
    surface = QuadraticSurface(np.asarray(mean), np.ones(k), 0.0, np.zeros(k), np.linalg.inv(cov), 0, 1.0)
    return Laplace(np.asarray(mean), np.asarray(cov), np.asarray(bounds), surface, 1.0, 0)


def quadratic(x):
    d = np.asarray(x) - MU
    return 0.5 * d @ A @ d + 17.0


def test_quadratic_surface_is_exact_on_a_quadratic():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (30, 3))
    f = np.array([quadratic(x) for x in X])
    center, scale = np.zeros(3), np.full(3, 10.0)
    s = fit_quadratic(X, f, center, scale)
    np.testing.assert_allclose(s.hessian / np.outer(scale, scale), A, rtol=1e-9, atol=1e-12)   # back to x units
    np.testing.assert_allclose(s.gradient / scale, A @ (center - MU), rtol=1e-9)
    assert s.value == pytest.approx(quadratic(center), rel=1e-12)
    assert s.r_squared == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(s(X[:5]), f[:5], rtol=1e-10)
    with pytest.raises(FitError, match="10 coefficients"):
        fit_quadratic(X[:9], f[:9], center, scale)


def test_laplace_from_cmaes_evaluations_recovers_the_inverse_hessian():
    params = ParameterSet(tuple(FreeParameter(f"p{i}", (-5.0, 5.0), "lin") for i in range(3)))
    res = cmaes(quadratic, params, np.zeros(3), sigma0=0.2, seed=4, max_iter=30, popsize=8)
    assert len(res.values) == 240 and res.points.shape == (240, 3)
    np.testing.assert_allclose([quadratic(x) for x in res.points[:5]], res.values[:5], rtol=1e-12)
    lap = laplace_from_evaluations(res.points, res.values, res.x, params.x_bounds)
    np.testing.assert_allclose(lap.covariance, np.linalg.inv(A), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(lap.mean, res.x)
    assert lap.n_flat == 0 and lap.window == pytest.approx(stats.chi2.ppf(0.99, 3) / 2)
    # with evaluation noise (sd 0.05 on the objective) the curvature is still recovered to ~10 %
    noise = np.random.default_rng(1).normal(0, 0.05, res.values.size)
    noisy = laplace_from_evaluations(res.points, res.values + noise, res.x, params.x_bounds)
    np.testing.assert_allclose(np.sqrt(np.diag(noisy.covariance)), np.sqrt(np.diag(np.linalg.inv(A))), rtol=0.1)


def test_unconstrained_direction_gets_the_flat_prior_width():
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, (40, 2))
    f = 0.5 * 25.0 * X[:, 0] ** 2                       # x1 does not enter the objective
    bounds = np.array([[-1.0, 1.0], [0.0, 3.0]])
    lap = laplace_from_evaluations(X, f, np.zeros(2), bounds, min_points=40)
    assert lap.n_flat == 1
    assert lap.covariance[0, 0] == pytest.approx(1 / 25.0, rel=1e-9)
    assert lap.covariance[1, 1] == pytest.approx(3.0**2 / FLAT_PRECISION, rel=1e-9)   # uniform: span^2 / 12


def test_negative_curvature_is_not_trusted():
    """A saddle (curvature -4 along x1): the positive-semi-definite surface gives x1 no curvature,
    so it gets the flat-prior width; the unconstrained fit would have a negative variance."""
    rng = np.random.default_rng(5)
    X = rng.uniform(-1, 1, (60, 2))
    f = 0.5 * 25.0 * X[:, 0] ** 2 - 0.5 * 4.0 * X[:, 1] ** 2
    bounds = np.array([[-1.0, 1.0], [-1.0, 1.0]])
    free = fit_quadratic(X, f, np.zeros(2), np.ones(2))
    assert free.hessian[1, 1] == pytest.approx(-4.0, rel=1e-9)
    lap = laplace_from_evaluations(X, f, np.zeros(2), bounds, min_points=60)
    assert lap.n_flat == 1
    assert np.linalg.eigvalsh(lap.surface.hessian).min() >= -1e-9
    assert lap.covariance[1, 1] == pytest.approx(2.0**2 / FLAT_PRECISION, rel=0.01)   # flat-prior width


def test_window_and_point_selection():
    assert default_window(1) == pytest.approx(6.634897 / 2, rel=1e-6)     # chi2(1) 99 % quantile
    f = np.array([0.0, 1.0, 50.0, np.nan, 2.0, 80.0])
    X = np.arange(6.0)[:, None]
    lap = laplace_from_evaluations(X[[0, 1, 2, 4, 5]], f[[0, 1, 2, 4, 5]], np.zeros(1), np.array([[-10.0, 10.0]]),
                                   window=3.0, min_points=3)
    assert lap.surface.n_points == 3                   # 0, 1, 2 are inside the window; the NaN never


def test_draws_follow_the_truncated_posterior():
    cov = np.linalg.inv(A)
    lap = given(MU, cov, BOUNDS)
    D = draw_parameters(lap, 20000, np.random.default_rng(3))
    np.testing.assert_allclose(np.cov(D.T), cov, atol=0.01)
    np.testing.assert_allclose(D.mean(axis=0), MU, atol=0.01)
    tight = given(MU, cov, np.array([[0.3, 5.0], [-5.0, 5.0], [-5.0, 5.0]]))
    Dt = draw_parameters(tight, 4000, np.random.default_rng(3))
    assert Dt[:, 0].min() >= 0.3
    # half-normal: the mean of a normal truncated at its mean is mu + sd sqrt(2 / pi)
    assert Dt[:, 0].mean() == pytest.approx(0.3 + np.sqrt(cov[0, 0] * 2 / np.pi), abs=0.01)
    np.testing.assert_allclose(lap.interval()[0], MU[0] + np.array([-1, 1]) * 1.959964 * np.sqrt(cov[0, 0]), rtol=1e-6)


def test_prediction_statistics_from_problem_entries():
    stats_ = prediction_statistics([
        {"endpoint": "os", "arms": ["A", "B"], "statistics": ["median", "landmark_12"]},
        {"endpoint": "OS", "comparisons": ["A_vs_B"], "statistics": ["hazard_ratio"], "subgroups": ["all", "pdl1_high"]},
        {"endpoint": "os", "arms": ["A"], "statistics": ["landmark_36"], "data_cut_months": 68}])
    assert [s.name for s in stats_] == ["os_median:A", "os_median:B", "os_landmark_12:A", "os_landmark_12:B",
                                        "os_hr:A_vs_B:all", "os_hr:A_vs_B:pdl1_high", "os_landmark_36:A@68mo"]
    assert stats_[2].months == 12.0 and stats_[5].subgroup == "pdl1_high"
    assert stats_[6].data_cut_months == 68.0 and stats_[0].data_cut_months is None
    with pytest.raises(FitError, match="unknown statistic 'mean'"):
        prediction_statistics([{"endpoint": "os", "arms": ["A"], "statistics": ["mean"]}])
    with pytest.raises(FitError, match="unknown statistic 'landmark_x'"):
        prediction_statistics([{"endpoint": "os", "arms": ["A"], "statistics": ["landmark_x"]}])


def _summary_trial(median_a: float, hr: float) -> xr.Dataset:
    """A trial Dataset holding only the summaries Statistic reads."""
    return xr.Dataset({"os_median_months": ("arm", [median_a, 10.0]),
                       "os_landmark": (("arm", "landmark_month"), [[0.7, 0.4], [0.6, 0.3]]),
                       "hr_os": ("comparison", [hr]),
                       "hr_os_subgroup": (("comparison", "subgroup"), [[hr, np.nan]])},
                      coords={"arm": ["A", "B"], "landmark_month": [12.0, 24.0], "comparison": ["A_vs_B"],
                              "subgroup": ["all", "tiny"]})


def test_predictive_trials_combine_parameter_and_trial_uncertainty(tmp_path):
    """A 'trial' whose OS median is exp(x0) times a seed-dependent sampling factor: the trial-only
    interval is the sampling spread alone, the posterior one adds the lognormal spread of exp(x0)."""
    params = ParameterSet((FreeParameter("m", (1.0, 100.0), "log"), FreeParameter("h", (0.2, 2.0), "log")))
    mean = np.log([20.0, 0.7])
    lap = given(mean, np.diag([0.1**2, 0.05**2]), params.x_bounds)
    stats_ = prediction_statistics([{"endpoint": "os", "arms": ["A"], "statistics": ["median"]},
                                    {"endpoint": "os", "comparisons": ["A_vs_B"], "statistics": ["hazard_ratio"],
                                     "subgroups": ["all", "tiny"]}])

    def simulate_at(x, seed, data_cut_months):
        assert data_cut_months is None
        sampling = np.exp(0.02 * np.random.default_rng(seed).standard_normal())
        return _summary_trial(float(np.exp(x[0])) * sampling, float(np.exp(x[1])))

    settings = PredictiveSettings(draws=2000, replicates=50, seed=7)
    ds = predictive_trials(simulate_at, params, lap, stats_, settings)
    post = ds["predictive_value"].sel(source="parameter_and_trial", statistic="os_median:A").values
    # ln median ~ N(ln 20, 0.1^2 + 0.02^2): the 95 % interval of a lognormal
    s = np.hypot(0.1, 0.02)
    lo, hi = float(ds["predictive_lower"].sel(source="parameter_and_trial", statistic="os_median:A")), \
        float(ds["predictive_upper"].sel(source="parameter_and_trial", statistic="os_median:A"))
    assert lo == pytest.approx(20 * np.exp(-1.959964 * s), rel=0.03)
    assert hi == pytest.approx(20 * np.exp(1.959964 * s), rel=0.03)
    assert np.isfinite(post).all() and post.size == 2000
    trial_only = ds["predictive_value"].sel(source="trial_only", statistic="os_median:A").values[:50]
    assert np.std(np.log(trial_only)) == pytest.approx(0.02, rel=0.25)
    np.testing.assert_allclose(ds["predictive_value"].sel(source="trial_only", statistic="os_hr:A_vs_B:all").values[:50],
                               0.7, rtol=1e-12)            # no parameter spread at the estimate
    assert int(ds["predictive_n"].sel(source="parameter_and_trial", statistic="os_hr:A_vs_B:tiny")) == 0
    np.testing.assert_allclose(ds["laplace_ci_lower"].values, np.exp(mean - 1.959964 * np.array([0.1, 0.05])), rtol=1e-6)
    assert ds["posterior_draw"].shape == (2000, 2)

    # a stage killed after some trials resumes from its checkpoint to the same result
    small = PredictiveSettings(draws=6, replicates=4, seed=7)
    full = predictive_trials(simulate_at, params, lap, stats_, small)
    ckpt = tmp_path / "predictive.pkl"
    with pytest.raises(Killed):
        predictive_trials(dying_after(5, simulate_at), params, lap, stats_, small, checkpoint=ckpt)
    resumed = predictive_trials(simulate_at, params, lap, stats_, small, checkpoint=ckpt)
    xr.testing.assert_identical(resumed, full)


class Killed(Exception):
    """A predictive stage killed part-way (`dying_after`)."""


def dying_after(n: int, simulate_at):
    """simulate_at that raises Killed on its (n + 1)-th call."""
    calls = []

    def dying(x, seed, data_cut_months):
        if len(calls) == n:
            raise Killed
        calls.append(seed)
        return simulate_at(x, seed, data_cut_months)
    return dying


def _patient_trial(seed: int, scale: float) -> xr.Dataset:
    """A trial of 30 patients per arm with exponential OS and PFS (medians 12 and 6 months x
    scale), censored at 20 months, and the summaries Statistic reads."""
    rng = np.random.default_rng(seed)
    data = {}
    for ep, median in (("os", 12.0), ("pfs", 6.0)):
        t = rng.exponential(scale * median / np.log(2), (2, 30))
        data[f"{ep}_months"] = (("arm", "patient"), np.minimum(t, 20.0))
        data[f"{ep}_event"] = (("arm", "patient"), (t <= 20.0).astype(np.int8))
    summary = _summary_trial(12.0 * scale, 0.7).drop_vars(["os_landmark", "landmark_month"])
    return summary.merge(xr.Dataset(data, coords={"arm": ["A", "B"]}))


def test_predictive_check_reads_targets_and_km_curves_of_every_trial(tmp_path):
    """ppc_survival is the KM curve of each trial (against a hand-written product-limit
    estimator), ppc_target each target's statistic, and their quantiles are numpy's."""
    from .trial_data import product_limit

    params = ParameterSet((FreeParameter("s", (0.1, 10.0), "log"),))
    lap = given(np.log([1.0]), np.diag([0.2**2]), params.x_bounds)
    ipd = pd.DataFrame({"time_months": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "event": [1, 1, 0, 1, 1, 0]})
    targets = (Target("os_b", "landmark", "os", arm="B", months=12.0, value=0.5, ci=(0.4, 0.6)),
               Target("pfs_a", "ipd", "pfs", arm="A", data=ipd))
    check = PredictiveCheck(targets, ("A", "B"), (0.0, 3.0, 6.0, 12.0, 19.5))
    stats_ = prediction_statistics([{"endpoint": "os", "arms": ["A"], "statistics": ["median"]}])

    def simulate_at(x, seed, data_cut_months):
        return _patient_trial(seed, float(np.exp(x[0])))

    settings = PredictiveSettings(draws=5, replicates=3, seed=40)
    ds = predictive_trials(simulate_at, params, lap, stats_, settings, check=check)
    draws = ds["posterior_draw"].values[:, 0]
    for source, m, scale in [("parameter_and_trial", 4, draws[4]), ("trial_only", 2, 1.0)]:
        trial = _patient_trial(40 + m, scale)
        got = ds["ppc_survival"].sel(source=source, draw=m)
        for ep in ("pfs", "os"):
            for arm in ("A", "B"):
                one = trial.sel(arm=arm)
                np.testing.assert_allclose(got.sel(ppc_endpoint=ep, arm=arm).values,
                                           product_limit(one[f"{ep}_months"], one[f"{ep}_event"], check.months),
                                           rtol=1e-12)
        b, a = trial.sel(arm="B"), trial.sel(arm="A")
        assert float(ds["ppc_target"].sel(source=source, draw=m, target="os_b")) == pytest.approx(
            product_limit(b.os_months, b.os_event, [12.0])[0], rel=1e-12)
        # an ipd target's statistic is the simulated arm's KM median: the first time S <= 0.5
        times = np.unique(a.pfs_months.values)
        median = times[product_limit(a.pfs_months, a.pfs_event, times) <= 0.5 + 1e-12][0]   # S = 0.5 in rounding
        assert float(ds["ppc_target"].sel(source=source, draw=m, target="pfs_a")) == pytest.approx(median, rel=1e-12)
    # the observed value of an ipd target is the data's KM median: S(2) = 4/6, S(4) = 4/6 x 2/3
    assert float(ds["ppc_observed"].sel(target="pfs_a")) == 4.0
    assert float(ds["ppc_observed"].sel(target="os_b")) == 0.5
    values = ds["ppc_target"].sel(source="parameter_and_trial", target="os_b").values
    assert float(ds["ppc_target_upper"].sel(source="parameter_and_trial", target="os_b")) == pytest.approx(
        np.quantile(values, 0.975))
    # the replicates at the estimate fill draws 0-2; draws 3-4 exist only for the posterior draws
    assert np.isnan(ds["ppc_survival"].sel(source="trial_only", draw=[3, 4]).values).all()

    # the check is part of the checkpoint: a stage killed after some trials resumes to the same result
    # no trials at all: the check has NaN intervals, and the report says so instead of "no"
    empty = predictive_trials(simulate_at, params, lap, stats_, PredictiveSettings(draws=0, replicates=0), check=check)
    assert empty["ppc_survival"].shape == (2, 0, 2, 2, 5) and np.isnan(empty["ppc_target_lower"]).all()
    table = target_table(targets, {"os_b": 0.5, "pfs_a": 4.0}, {"os_b": 1.0, "pfs_a": 2.0}, empty)
    assert "| 0.5 (0.4–0.6) | 0.5 | – (–––) | – | 1 |" in "\n".join(table)
    assert "Predictive check: 0 of 0 observed values (2 target(s) without an interval)" in "\n".join(table)

    ckpt = tmp_path / "predictive.pkl"
    with pytest.raises(Killed):
        predictive_trials(dying_after(4, simulate_at), params, lap, stats_, settings, checkpoint=ckpt, check=check)
    xr.testing.assert_identical(predictive_trials(simulate_at, params, lap, stats_, settings, checkpoint=ckpt,
                                                  check=check), ds)
