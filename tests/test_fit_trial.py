"""A trial problem fitted end to end through the real trial runner, on the small test trial
(tests/specs/trial_small.yaml on tests/specs/trial_model.yaml), then its calibration fed back to
`run_trial` the way `immunoedit trial --calibration` does.

The targets are a synthetic exponential PFS curve (median 5 months), an OS hazard ratio, a
response count, a median and a landmark rate: enough to exercise every wiring path (population priors, survival parameters,
common random numbers, outputs); the optimiser runs two CMA-ES generations only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ruamel.yaml import YAML

import immunoedit_models as ie
from immunoedit_models.cli import _calibration
from immunoedit_models.fit import fit, load_problem
from immunoedit_models.trials import run_trial

from .trial_data import write_censored_ipd

SPECS = Path(__file__).resolve().parent / "specs"


@pytest.fixture(scope="module")
def trial_problem(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trial_fit")
    write_censored_ipd(folder / "observed_pfs_combo.csv", np.random.default_rng(5), 5.0, 120, (6, 30))
    (folder / "problem.yaml").write_text(f"""
name: small_trial_fit
kind: trial
model: {SPECS / 'trial_model.yaml'}
trial: {SPECS / 'trial_small.yaml'}
cohort: {{patients_per_arm: 60, seed: 5}}
parameters:
  post_progression_hazard_per_month: {{bounds: [0.02, 0.5], scale: log, start: 0.0877}}
populations:
  r: {{distribution: lognormal, median: {{bounds: [0.003, 0.03], scale: log, start: 0.01}},
       sigma: {{bounds: [0.2, 1.0], scale: log, start: 0.5}}}}
targets:
  - {{id: pfs_combo, kind: ipd, endpoint: pfs, arm: COMBO, data: observed_pfs_combo.csv,
     hazard_bins_months: [0, 3, 6, 9, 12, 18], smoothing_months: 0.5}}
  - {{id: os_hr, kind: hazard_ratio, endpoint: os, comparison: COMBO_vs_CHEMO, value: 0.8, ci: [0.6, 1.07]}}
  - {{id: orr_combo, kind: response, arm: COMBO, value: 0.3, n: 100}}
  - {{id: pfs_median_chemo, kind: median, endpoint: pfs, arm: CHEMO, value: 4.0, ci: [3.2, 5.0]}}
  - {{id: os_12mo_chemo, kind: landmark, endpoint: os, arm: CHEMO, months: 12, value: 0.6, ci: [0.5, 0.7]}}
fit: {{method: cmaes, seed: 3, max_iter: 2, popsize: 3, sigma0: 0.2}}
""")
    return load_problem(folder)


def test_trial_fit_end_to_end_and_calibrated_trial(trial_problem, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out = tmp_path / "out"
    result = fit(trial_problem, out)
    assert result.sizes["iteration"] == 2
    assert float(result["objective"]) == pytest.approx(float(result["trace_best"].min()), rel=1e-12)
    # common random numbers: re-simulating the best point gives exactly the objective it had
    assert float(result["target_nll"].sum()) == pytest.approx(float(result["objective"]), rel=1e-10)
    for name in ("fit.nc", "calibration.yaml", "report.md", "fitted_vs_data.png", "convergence.png",
                 "trial_at_estimate.nc", "cmaes.pkl"):
        assert (out / name).stat().st_size > 0
    assert "| pfs_combo |" in (out / "report.md").read_text()
    calibration = YAML(typ="safe").load((out / "calibration.yaml").read_text())
    est = dict(zip(result["parameter"].values, result["estimate"].values))
    assert calibration["priors"]["r"] == {"distribution": "lognormal", "median": pytest.approx(est["r.median"]),
                                          "sigma": pytest.approx(est["r.sigma"])}
    assert calibration["survival"]["post_progression_hazard_per_month"] == pytest.approx(
        est["post_progression_hazard_per_month"])
    # `immunoedit trial --calibration out` turns it into run_trial keywords; the calibrated trial runs
    settings = _calibration(out)
    assert set(settings) == {"priors", "survival"}
    trial = run_trial(str(SPECS / "trial_small.yaml"), model=ie.compile_model(SPECS / "trial_model.yaml"),
                      patients_per_arm=60, seed=5, **settings)
    saved = ie.load_result(out / "trial_at_estimate.nc")
    np.testing.assert_array_equal(trial["pfs_months"].values, saved["pfs_months"].values)
