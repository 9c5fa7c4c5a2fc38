"""The trial fit's uncertainty stage end to end through the real trial runner, on the small test
trial (tests/specs/trial_small.yaml on tests/specs/trial_model.yaml): CMA-ES with a prevalence
target, the Laplace posterior from its evaluations, posterior predictive trials of the problem's
`predictions:`, their place in fit.nc / report.md, and a resumed fit that reuses the finished stage.

References: each predicted value against the same statistic read straight from an independent
`run_trial` call (same calibration, seed and size), and the Laplace covariance against a
quadratic surface refitted here with numpy least squares on the saved evaluations.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import immunoedit_models as ie
from immunoedit_models.fit import fit, load_problem
from immunoedit_models.fit.uncertainty import laplace_from_evaluations
from immunoedit_models.trials import load_trial, run_trial

from .trial_data import product_limit, write_censored_ipd

SPECS = Path(__file__).resolve().parent / "specs"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trial_predictive")
    write_censored_ipd(folder / "observed_pfs_combo.csv", np.random.default_rng(8), 6.0, 100, (6, 30))
    (folder / "problem.yaml").write_text(f"""
name: small_trial_predictive
kind: trial
model: {SPECS / 'trial_model.yaml'}
trial: {SPECS / 'trial_small.yaml'}
cohort: {{patients_per_arm: 25, seed: 9}}
parameters:
  post_progression_hazard_per_month: {{bounds: [0.02, 0.5], scale: log, start: 0.0877}}
populations:
  r: {{distribution: lognormal, median: {{bounds: [0.003, 0.03], scale: log, start: 0.01}},
       sigma: {{bounds: [0.2, 1.0], scale: log, start: 0.5}}}}
targets:
  - {{id: pfs_combo, kind: ipd, endpoint: pfs, arm: COMBO, data: observed_pfs_combo.csv,
     hazard_bins_months: [0, 3, 6, 9, 12, 18], smoothing_months: 0.5}}
  - {{id: os_12mo_chemo, kind: landmark, endpoint: os, arm: CHEMO, months: 12, value: 0.6, ci: [0.5, 0.7]}}
  - {{id: pdl1_high_all, kind: prevalence, biomarker: pdl1_high, value: 0.3, n: 200}}
predictions:
  - {{endpoint: os, arms: [COMBO], statistics: [median, landmark_12]}}
  - {{endpoint: os, comparisons: [COMBO_vs_CHEMO], statistics: [hazard_ratio], subgroups: [all, teff_high]}}
  - {{endpoint: os, arms: [COMBO], statistics: [landmark_12, landmark_42], data_cut_months: 48}}
fit: {{method: cmaes, seed: 3, max_iter: 4, popsize: 4, sigma0: 0.2,
       predictive: {{draws: 3, replicates: 2, patients_per_arm: 20, seed: 500}}}}
""")
    problem = load_problem(folder)
    out = folder / "out"
    return problem, out, fit(problem, out)


def test_predictive_stage_outputs(fitted, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    problem, out, result = fitted
    assert list(result["statistic"].values) == ["os_median:COMBO", "os_landmark_12:COMBO",
                                                 "os_hr:COMBO_vs_CHEMO:all", "os_hr:COMBO_vs_CHEMO:teff_high",
                                                 "os_landmark_12:COMBO@48mo", "os_landmark_42:COMBO@48mo"]
    assert result["evaluation_x"].shape == (16, 3) and result["posterior_draw"].shape == (3, 3)
    for name in ("predictive.nc", "predictive.pkl", "fit.nc", "report.md", "predictive_check.png"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "## Predictions (not fitted)" in report and "| os_hr:COMBO_vs_CHEMO:all |" in report
    assert "| observed inside |" in report and "Predictive check: " in report
    assert "![predictive_check](predictive_check.png)" in report
    # the KM grid of the check spans the design's data cut-off (trial_small.yaml: 36 months)
    assert result["ppc_month"].values[[0, -1]].tolist() == [0.0, 36.0]
    assert "| pdl1_high_all | prevalence | pdl1_high | all arms |" in report
    # every posterior draw lies inside the bounds; the Laplace CI brackets the estimate
    est = result["estimate"].values
    assert np.all(result["laplace_ci_lower"].values <= est * (1 + 1e-12))
    assert np.all(result["laplace_ci_upper"].values >= est * (1 - 1e-12))
    draws = result["posterior_draw"].values
    assert np.all(draws >= result["bound_lower"].values) and np.all(draws <= result["bound_upper"].values)
    # the Laplace covariance is the inverse curvature of the quadratic through the saved evaluations
    lap = laplace_from_evaluations(result["evaluation_x"].values, result["evaluation_objective"].values,
                                   problem.parameters.to_x(dict(zip(result["parameter"].values, est))),
                                   problem.parameters.x_bounds)
    np.testing.assert_allclose(result["laplace_covariance_x"].values, lap.covariance, rtol=1e-9)


def test_predicted_values_are_the_trials_own_statistics(fitted):
    problem, out, result = fitted
    settings = ie.fit.run.calibration_mapping(problem, result)
    model = ie.compile_model(SPECS / "trial_model.yaml")
    # replicate r at the estimate is the calibrated trial with cohort seed 500 + r, 20 patients per arm
    trial = run_trial(str(SPECS / "trial_small.yaml"), model=model, patients_per_arm=20, seed=501,
                      **{k: settings[k] for k in ("priors", "survival")})
    got = result["predictive_value"].sel(source="trial_only", draw=1)
    assert float(got.sel(statistic="os_median:COMBO")) == pytest.approx(float(trial.os_median_months.sel(arm="COMBO")))
    assert float(got.sel(statistic="os_landmark_12:COMBO")) == pytest.approx(
        float(trial.os_landmark.sel(arm="COMBO", landmark_month=12.0)))
    assert float(got.sel(statistic="os_hr:COMBO_vs_CHEMO:all")) == pytest.approx(
        float(trial.hr_os.sel(comparison="COMBO_vs_CHEMO")))
    # the predictive check of that trial: its KM curves and the fitted targets' statistics
    chemo, combo = trial.sel(arm="CHEMO"), trial.sel(arm="COMBO")
    check = result.sel(source="trial_only", draw=1)
    assert float(check["ppc_target"].sel(target="os_12mo_chemo")) == pytest.approx(
        product_limit(chemo.os_months, chemo.os_event, [12.0])[0], rel=1e-12)
    assert float(check["ppc_target"].sel(target="pdl1_high_all")) == pytest.approx(
        float(trial.pdl1_high.mean()), rel=1e-12)
    np.testing.assert_allclose(check["ppc_survival"].sel(ppc_endpoint="pfs", arm="COMBO").values,
                               product_limit(combo.pfs_months, combo.pfs_event, result["ppc_month"].values),
                               rtol=1e-12)
    # the same patients analysed at a later data cut-off (48 instead of the design's 36 months)
    design = load_trial(str(SPECS / "trial_small.yaml"))
    later = run_trial(replace(design, data_cut_months=48.0), model=model, patients_per_arm=20, seed=501,
                      **{k: settings[k] for k in ("priors", "survival")})
    assert float(got.sel(statistic="os_landmark_12:COMBO@48mo")) == pytest.approx(
        float(later.os_landmark.sel(arm="COMBO", landmark_month=12.0)))
    # a landmark the trial's summary does not report (12/24/36 months): the arm's KM, by hand
    combo_later = later.sel(arm="COMBO")
    assert float(got.sel(statistic="os_landmark_42:COMBO@48mo")) == pytest.approx(
        product_limit(combo_later.os_months, combo_later.os_event, [42.0])[0], rel=1e-12)


def test_resumed_fit_reuses_the_predictive_stage(fitted):
    problem, out, result = fitted
    again = fit(problem, out, resume=True)
    np.testing.assert_array_equal(again["predictive_value"].values, result["predictive_value"].values)
    assert float(again["objective"]) == float(result["objective"])
