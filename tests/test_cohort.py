"""Virtual populations (trials/cohort.py) and baseline biomarker covariates (trials/biomarkers.py).

References: scipy.stats distributions with the spec's stated parameters (KS tests, p > 0.01,
fixed seeds), an independent re-simulation with simulate_batch, the exact Spearman -> normal
correlation of the Gaussian copula, Wan et al. 2014 Table 1 (xi(50) = 4.498), binomial
tolerances for inclusion frequencies, and hand-worked biomarker cases.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

import immunoedit_models as ie
from immunoedit_models.trials.biomarkers import IMPOWER150, RELATIVITY047, baseline_covariates, resolve_rules
from immunoedit_models.trials.cohort import (JointPrior, Target, inclusion_probabilities, pool_density,
                                              sample_cohort, sd_from_range, systematic_pps)

SLD_RANGE = {"output": "sld_mm", "time": 0, "low": 10, "high": 317}
GROWTH = {"kind": "growth", "output": "sld_mm", "from": 0, "to": 56, "min_ratio": 1.0}
# RELATIVITY-047 NIVO+RELA arm: baseline sum of diameters median 59 mm, range 10-317, n 355
# (Tawbi et al. N Engl J Med 2022;386:24-34, Table 1; ../shared/data/trials/relativity047/published.csv).
SLD_TARGET = {"output": "sld_mm", "time": 0, "distribution": "lognormal", "median": 59, "range": [10, 317],
              "n": 355}


@pytest.fixture(scope="module")
def model(specs_dir):
    return ie.compile_model(ie.load_spec(specs_dir / "cohort_model.yaml"), backend="numba")


def _log_truncnorm(median: float, sigma: float, low: float, high: float):
    """ln X for X lognormal(median, sigma) truncated to [low, high]."""
    mu = math.log(median)
    return stats.truncnorm((math.log(low) - mu) / sigma, (math.log(high) - mu) / sigma, loc=mu, scale=sigma)


# ---- priors, truncation, copula ---------------------------------------------------------------
def test_prior_draws_follow_the_spec_priors_truncated_to_bounds(model):
    cohort = sample_cohort(model, 3000, seed=0)  # no constraints: the first 3000 prior draws
    p = cohort.params
    assert len(cohort) == 3000 and cohort.acceptance_rate == 1.0
    references = {  # the spec's priors and bounds (tests/specs/cohort_model.yaml)
        "T0": (np.log(p["T0"]), _log_truncnorm(1.2e10, 2.4, 1e8, 5e12)),
        "r": (np.log(p["r"]), _log_truncnorm(0.01, 0.5, 1e-4, 0.2)),
        "kkill": (p["kkill"], stats.truncnorm((0 - 0.05) / 0.03, (1 - 0.05) / 0.03, loc=0.05, scale=0.03)),
        "E0": (p["E0"], stats.loguniform(1e6, 1e10)),
        "tc_pdl1_max": (p["tc_pdl1_max"], stats.uniform(0, 1)),
        "ic_pdl1_max": (p["ic_pdl1_max"], stats.uniform(0, 0.3)),
        "lag3_max": (p["lag3_max"], stats.uniform(0, 0.2)),
    }
    assert set(p.columns) == set(references)
    for name, (x, dist) in references.items():
        assert stats.kstest(x, dist.cdf).pvalue > 0.01, name
    assert p["kkill"].min() >= 0.0 and p["T0"].min() >= 1e8 and p["T0"].max() <= 5e12


def test_prior_overrides_truncate_to_given_bounds_including_far_upper_tails(model):
    priors = {"kkill": {"distribution": "normal", "mean": 0.05, "sd": 0.1, "bounds": [0.02, 0.08]},
              # [0.1, 0.2] lies above the 0.999998 quantile of this lognormal: the survival-function branch
              "r": {"distribution": "lognormal", "median": 0.01, "sigma": 0.5, "bounds": [0.1, 0.2]}}
    draws = JointPrior.from_model(model, priors=priors, fixed={"T0": 3e10}).draw(np.random.default_rng(3), 4000)
    assert draws["kkill"].between(0.02, 0.08).all() and draws["r"].between(0.1, 0.2).all()
    assert (draws["T0"] == 3e10).all()
    ref_k = stats.truncnorm((0.02 - 0.05) / 0.1, (0.08 - 0.05) / 0.1, loc=0.05, scale=0.1)
    assert stats.kstest(draws["kkill"], ref_k.cdf).pvalue > 0.01
    assert stats.kstest(np.log(draws["r"]), _log_truncnorm(0.01, 0.5, 0.1, 0.2).cdf).pvalue > 0.01


def test_gaussian_copula_reproduces_spearman_correlations_and_keeps_marginals(model):
    wanted = {"r": {"kkill": 0.6}, "T0": {"E0": -0.4}}
    draws = JointPrior.from_model(model, correlations=wanted).draw(np.random.default_rng(11), 40_000)
    # sampling sd of Spearman's rho at n = 40,000 is <= 0.0034: tolerance 0.011 (> 3 sd), tight
    # enough to catch a copula that skipped the 2 sin(pi rho / 6) conversion (off by 0.013-0.02)
    assert stats.spearmanr(draws["r"], draws["kkill"]).statistic == pytest.approx(0.6, abs=0.011)
    assert stats.spearmanr(draws["T0"], draws["E0"]).statistic == pytest.approx(-0.4, abs=0.011)
    assert abs(stats.spearmanr(draws["r"], draws["E0"]).statistic) < 0.011
    ref_k = stats.truncnorm((0 - 0.05) / 0.03, (1 - 0.05) / 0.03, loc=0.05, scale=0.03)
    assert stats.kstest(draws["kkill"], ref_k.cdf).pvalue > 0.01
    # the same matrix as a labelled DataFrame gives the same draws
    frame = pd.DataFrame(np.eye(4), index=["T0", "r", "kkill", "E0"], columns=["T0", "r", "kkill", "E0"])
    frame.loc["r", "kkill"] = frame.loc["kkill", "r"] = 0.6
    frame.loc["T0", "E0"] = frame.loc["E0", "T0"] = -0.4
    again = JointPrior.from_model(model, correlations=frame).draw(np.random.default_rng(11), 40_000)
    pd.testing.assert_frame_equal(draws, again)


def test_inconsistent_or_unknown_correlations_are_clear_errors(model):
    with pytest.raises(ie.SimulationError, match="not a valid correlation matrix"):
        JointPrior.from_model(model, correlations={"r": {"kkill": 0.9, "E0": 0.9}, "kkill": {"E0": -0.9}})
    with pytest.raises(ie.SimulationError, match="'K', which is not a sampled parameter"):
        JointPrior.from_model(model, correlations={"r": {"K": 0.5}})
    with pytest.raises(ie.SimulationError, match="did you mean 'kkill'"):
        JointPrior.from_model(model, fixed={"k_kill": 0.1})


# ---- plausibility constraints -----------------------------------------------------------------
def test_constraints_accept_only_plausible_patients_and_report_the_acceptance_rate(model):
    constraints = [{"output": "sld_mm", "time": 0, "low": 20, "high": 150}, GROWTH]
    cohort = sample_cohort(model, 600, seed=5, constraints=constraints)
    # independent check: re-simulate the accepted patients untreated
    ds = ie.simulate_batch(model, cohort.params, times=[0.0, 56.0], regimen="untreated")
    sld0, sld56 = ds["sld_mm"].sel(time=0.0).values, ds["sld_mm"].sel(time=56.0).values
    assert np.all((sld0 >= 20) & (sld0 <= 150) & (sld56 > sld0))
    np.testing.assert_allclose(cohort.baseline["sld_mm"], sld0, rtol=1e-12)
    np.testing.assert_allclose(cohort.baseline["pdl1_tumour"], ds["pdl1_tumour"].sel(time=0.0), rtol=1e-12)
    sel = cohort.selection
    assert cohort.acceptance_rate == sel["n_plausible"] / sel["n_drawn"] < 0.95
    # the reported rate agrees with an independent estimate from fresh prior draws (3 binomial sd)
    fresh = JointPrior.from_model(model).draw(np.random.default_rng(99), 3000)
    check = ie.simulate_batch(model, fresh, times=[0.0, 56.0], regimen="untreated")["sld_mm"].values
    rate = np.mean((check[:, 0] >= 20) & (check[:, 0] <= 150) & (check[:, 1] > check[:, 0]))
    se = math.sqrt(rate * (1 - rate) * (1 / 3000 + 1 / sel["n_drawn"]))
    assert cohort.acceptance_rate == pytest.approx(rate, abs=3 * se)
    assert set(sel["pass_rates"]) == {"20 <= sld_mm(day 0) <= 150", "sld_mm(day 56) / sld_mm(day 0) > 1"}


def test_impossible_constraints_raise_with_the_acceptance_rate(model):
    impossible = r"acceptance rate 0\.000%.*1000 <= sld_mm\(day 0\) <= 2000: 0\.00%"
    with pytest.raises(ie.SimulationError, match=impossible):
        sample_cohort(model, 20, seed=1, constraints=[{"output": "sld_mm", "low": 1000, "high": 2000}],
                      max_rounds=2)
    with pytest.raises(ie.SimulationError, match="did you mean 'sld_mm'"):
        sample_cohort(model, 20, seed=1, constraints=[{"output": "sld", "low": 10}])
    with pytest.raises(ie.SimulationError, match="takes kind, output, from, to"):
        sample_cohort(model, 20, seed=1, constraints=[{"kind": "growth", "output": "sld_mm", "form": 0, "to": 56}])


# ---- prevalence selection to a target ---------------------------------------------------------
def test_spread_from_range_matches_wan_2014_table_1():
    # Wan et al. BMC Med Res Methodol 2014;14:135, Table 1 (3 decimals): xi(50) = 4.498, xi(10) = 3.078
    assert sd_from_range(0.0, 4.498, 50) == pytest.approx(1.0, rel=2e-4)
    assert sd_from_range(0.0, 3.078, 10) == pytest.approx(1.0, rel=2e-4)
    z = stats.norm.ppf([0.1, 0.5, 0.9])
    fitted = Target.from_mapping({"output": "x", "distribution": "lognormal",
                                  "quantiles": dict(zip([0.1, 0.5, 0.9], 59 * np.exp(0.6 * z)))})
    assert fitted.dist.median() == pytest.approx(59, rel=1e-12)
    assert fitted.dist.std() == pytest.approx(stats.lognorm(s=0.6, scale=59).std(), rel=1e-9)


def _expected_normal_range(n: int) -> float:
    """2 E[max of n standard normals] from the density of the maximum, n phi Phi^(n-1) (trapezoid)."""
    x = np.linspace(-10, 10, 200_001)
    return 2 * np.trapezoid(x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1), x)


def test_prevalence_selection_matches_the_relativity047_baseline_sld(model):
    n = 2000
    cohort = sample_cohort(model, n, seed=2, constraints=[SLD_RANGE, GROWTH], target=SLD_TARGET, oversample=5)
    sel = cohort.selection
    sigma = math.log(317 / 10) / _expected_normal_range(355)  # Wan et al. 2014 on the log scale
    target = stats.lognorm(s=sigma, scale=59.0)
    assert sel["target"].startswith(f"sld_mm(day 0) ~ lognormal(median 59, sigma {sigma:.4g})")
    sld = cohort.baseline["sld_mm"].to_numpy()
    # the pool (prior median ~45 mm, wider) is far from the target; the cohort passes a KS test
    # against it at the 1 % level: D < 1.628 / sqrt(n) = 0.036
    assert sel["ks_pool"] > 0.10
    assert sel["ks_cohort"] == pytest.approx(stats.kstest(sld, target.cdf).statistic, rel=1e-6)
    assert sel["ks_cohort"] < 1.628 / math.sqrt(n)
    assert np.median(sld) == pytest.approx(59, rel=0.05)
    assert sel["pool_size"] == 5 * n and n < sel["ess"] <= 5 * n
    assert sel["target_mass_outside_pool"] < 0.01
    assert len(np.unique(cohort.pool_index)) == n  # no patient twice


def test_binned_pool_density_matches_scipy_gaussian_kde():
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(0.0, 1.0, 3000), rng.normal(3.0, 0.5, 2000)])  # bimodal
    reference = stats.gaussian_kde(y, bw_method="scott")(y)
    np.testing.assert_allclose(pool_density(y), reference, rtol=0.01)


def test_systematic_pps_gives_inclusion_probabilities_proportional_to_weights():
    w = np.array([0.2, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 12.0])
    pi = inclusion_probabilities(w, 3)
    assert pi.sum() == pytest.approx(3) and pi[-1] == 1.0  # capped, the rest rescaled to 2 picks
    np.testing.assert_allclose(pi[:-1], 2 * w[:-1] / w[:-1].sum(), rtol=1e-12)
    rng = np.random.default_rng(4)
    reps = 20000
    counts = np.zeros(len(w))
    for _ in range(reps):
        picked = systematic_pps(w, 3, rng)
        assert len(np.unique(picked)) == 3
        counts[picked] += 1
    freq = counts / reps
    np.testing.assert_array_less(np.abs(freq - pi), 4 * np.sqrt(pi * (1 - pi) / reps) + 1e-12)


# ---- reproducibility and export ---------------------------------------------------------------
def test_same_seed_same_cohort_different_seed_different_cohort(model, tmp_path):
    kwargs = dict(constraints=[SLD_RANGE, GROWTH], target=SLD_TARGET, correlations={"r": {"kkill": 0.5}})
    a = sample_cohort(model, 300, seed=7, **kwargs)
    b = sample_cohort(model, 300, seed=7, **kwargs)
    c = sample_cohort(model, 300, seed=8, **kwargs)
    pd.testing.assert_frame_equal(a.params, b.params)
    pd.testing.assert_frame_equal(a.baseline, b.baseline)
    np.testing.assert_array_equal(a.pool_index, b.pool_index)
    assert not np.any(np.isin(a.params["T0"].to_numpy(), c.params["T0"].to_numpy()))
    saved = ie.load_result(ie.save_result(a.to_dataset(), tmp_path / "cohort.nc"))
    np.testing.assert_array_equal(saved["T0"].values, a.params["T0"].to_numpy())
    assert saved.attrs["seed"] == 7 and "Wan et al. 2014" in saved.attrs["target"]


# ---- biomarkers -------------------------------------------------------------------------------
HAND = pd.DataFrame({  # hand-worked cases, including values exactly at the cut-offs
    "pdl1_tumour": [60.0, 49.9, 0.5, 0.5, 1.0, 20.0],
    "pdl1_immune": [0.0, 10.0, 0.9, 1.0, 0.0, 5.0],
    "teff_signature": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    "lag3_immune": [0.99, 1.0, 5.0, 0.0, 0.0, 100.0],
}, index=pd.Index(list("abcdef"), name="patient"))


def test_impower150_sp142_rules_on_hand_cases():
    got = baseline_covariates(HAND, "impower150")
    assert list(got.index) == list("abcdef")
    assert got["pdl1_high"].tolist() == [True, True, False, False, False, False]      # TC3 or IC3
    assert got["pdl1_negative"].tolist() == [False, False, True, False, False, False]  # TC0 and IC0
    assert got["teff_high"].tolist() == [False, False, False, True, True, True]        # > median 3.5
    assert got["lag3_positive"].tolist() == [False, True, True, False, False, True]


def test_relativity047_rules_reference_population_and_dataset_form():
    reference = {"teff_signature": np.array([0.0, 2.5, 100.0]), "pdl1_tumour": np.zeros(3),
                 "lag3_immune": np.zeros(3)}
    got = baseline_covariates(HAND, RELATIVITY047, reference=reference)
    assert got["pdl1_high"].tolist() == [True, True, False, False, True, True]        # TC >= 1 %
    assert got["pdl1_negative"].tolist() == [False, False, True, True, False, False]
    assert got["teff_high"].tolist() == [False, False, True, True, True, True]        # > reference median 2.5
    ds = xr.Dataset({k: (("arm", "patient"), HAND[k].to_numpy().reshape(2, 3)) for k in HAND},
                    coords={"arm": ["A", "B"], "patient": [0, 1, 2]})
    flags = baseline_covariates(ds, IMPOWER150)
    assert flags["pdl1_high"].dims == ("arm", "patient")
    np.testing.assert_array_equal(flags["pdl1_high"].values.ravel(), [True, True, False, False, False, False])
    assert resolve_rules(IMPOWER150, HAND)["teff_high"]["value"] == 3.5


def test_custom_rules_and_their_errors():
    rules = {"not_high": {"not": {"output": "pdl1_tumour", "op": ">=", "value": {"quantile": 0.5}}}}
    assert baseline_covariates(HAND, rules)["not_high"].tolist() == [False, False, True, True, True, False]
    with pytest.raises(ie.SimulationError, match="did you mean 'pdl1_tumour'"):
        baseline_covariates(HAND, {"x": {"output": "pdl1_tumor", "op": ">=", "value": 1}})
    with pytest.raises(ie.SimulationError, match="op one of"):
        baseline_covariates(HAND, {"x": {"output": "pdl1_tumour", "op": "=>", "value": 1}})
    with pytest.raises(ie.SimulationError, match="non-finite"):
        baseline_covariates(HAND.assign(pdl1_tumour=np.nan), "relativity047")


def test_covariates_of_a_sampled_cohort(model):
    cohort = sample_cohort(model, 400, seed=3, constraints=[SLD_RANGE])
    got = baseline_covariates(cohort, "impower150")
    b = cohort.baseline
    assert got["teff_high"].sum() == 200  # above the median of 400 continuous values
    expected_high = (b["pdl1_tumour"] >= 50) | (b["pdl1_immune"] >= 10)
    assert got["pdl1_high"].equals(expected_high.rename("pdl1_high"))
    assert 0 < got["pdl1_high"].mean() < 1 and 0 < got["lag3_positive"].mean() < 1
