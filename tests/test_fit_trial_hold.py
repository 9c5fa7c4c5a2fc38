"""A staged trial calibration (`fit.hold`) end to end on the small test trial
(tests/specs/trial_small.yaml on tests/specs/trial_model.yaml): the tumour population is held at
its start while CMA-ES fits the burden-linked death model, with its predictive stage.

References: the held values are the problem's `start`s (to rounding), in every evaluation and in the
calibration; the PFS terms of an independent `run_trial` at the start and at the estimate are
identical (the post-progression death model cannot move PFS), and the objective re-simulated
from the calibration equals the fit's (common random numbers).
"""

from __future__ import annotations

from pathlib import Path

import re

import numpy as np
import pytest
from rich.console import Console

import immunoedit_models as ie
from immunoedit_models.cli import _calibration
from immunoedit_models.errors import FitError
from immunoedit_models.fit import fit, load_problem
from immunoedit_models.fit.command import summary
from immunoedit_models.fit.trial import trial_terms
from immunoedit_models.trials import run_trial

from .trial_data import write_censored_ipd

SPECS = Path(__file__).resolve().parent / "specs"
PROBLEM = """
name: small_trial_hold
kind: trial
model: {model}
trial: {trial}
cohort: {{patients_per_arm: 30, seed: 4}}
parameters:
  post_progression_hazard_per_month: {{bounds: [0.01, 0.5], scale: log, start: 0.05}}
  post_progression_burden_exponent: {{bounds: [0.0, 2.0], scale: lin, start: 0.5}}
populations:
  r: {{distribution: lognormal, median: {{bounds: [0.003, 0.03], scale: log, start: 0.012}},
       sigma: {{bounds: [0.2, 1.0], scale: log, start: 0.45}}}}
targets:
  - {{id: pfs_combo, kind: ipd, endpoint: pfs, arm: COMBO, data: observed.csv,
     hazard_bins_months: [0, 3, 6, 9, 12, 18], smoothing_months: 0.5}}
  - {{id: os_combo, kind: ipd, endpoint: os, arm: COMBO, data: observed_os.csv,
     hazard_bins_months: [0, 6, 12, 18, 24], smoothing_months: 1.0}}
predictions:
  - {{endpoint: os, arms: [CHEMO], statistics: [median]}}
fit: {{method: cmaes, seed: 2, max_iter: 3, popsize: 4, sigma0: 0.2, hold: {hold},
       predictive: {{draws: 2, replicates: 1, patients_per_arm: 20, seed: 60}}}}
"""


def write_problem(folder: Path, hold: str) -> Path:
    rng = np.random.default_rng(1)
    for name, median in (("observed.csv", 5.0), ("observed_os.csv", 14.0)):
        write_censored_ipd(folder / name, rng, median, 80, (8, 30))
    (folder / "problem.yaml").write_text(PROBLEM.format(model=SPECS / "trial_model.yaml",
                                                        trial=SPECS / "trial_small.yaml", hold=hold))
    return folder


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    folder = write_problem(tmp_path_factory.mktemp("hold"), "[r.median, r.sigma]")
    problem = load_problem(folder)
    return problem, folder / "out", fit(problem, folder / "out")


def test_held_parameters_stay_at_their_start_and_the_death_model_is_fitted(staged, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    problem, out, result = staged
    assert problem.fit.hold == ("r.median", "r.sigma")
    est = dict(zip(result["parameter"].values, result["estimate"].values))
    assert [est["r.median"], est["r.sigma"]] == pytest.approx([0.012, 0.45], rel=1e-14)   # the starts
    x = result["evaluation_x"].sel(parameter=["r.median", "r.sigma"]).values
    np.testing.assert_array_equal(x, np.broadcast_to(np.log([0.012, 0.45]), x.shape))
    searched = result["evaluation_x"].sel(parameter="post_progression_burden_exponent").values
    assert result.sizes["evaluation"] == 12 and np.ptp(searched) > 0    # 3 generations of 4 over 2 parameters
    # predictive stage: draws of the searched parameters only, held columns at their values
    draws = result["posterior_draw"]
    np.testing.assert_allclose(draws.sel(parameter="r.median").values, [0.012, 0.012], rtol=1e-14)
    assert np.all(np.isnan(result["laplace_sd_x"].sel(parameter=["r.median", "r.sigma"]).values))
    assert np.all(np.isfinite(result["laplace_sd_x"].sel(
        parameter=["post_progression_hazard_per_month", "post_progression_burden_exponent"]).values))
    assert result.attrs["held"] == "r.median, r.sigma"
    report = (out / "report.md").read_text()
    assert report.count("held at its start (fit.hold)") == 2
    # the command's summary says "held" where the Laplace posterior has no interval, and gives the
    # predictive check's count as the report does
    console = Console(record=True, width=200)
    summary(result, console, 1.0)
    text = console.export_text()
    assert len(re.findall(r"│ r\.(median|sigma) +│ [0-9.]+ +│ held +│", text)) == 2
    k, n = re.search(r"Predictive check: (\d+) of (\d+) observed values", report).groups()
    assert f"predictive check: {k} of {n} targets inside the 95 % interval of 1 trials at the estimate" in text


def test_staged_calibration_leaves_pfs_unchanged_and_reproduces_the_objective(staged):
    problem, out, result = staged
    model = ie.compile_model(SPECS / "trial_model.yaml")
    settings = _calibration(out)
    assert set(settings["survival"]) == {"post_progression_hazard_per_month", "post_progression_burden_exponent"}

    def terms(**kw):
        trial = run_trial(str(SPECS / "trial_small.yaml"), model=model, patients_per_arm=30, seed=4, **kw)
        return trial_terms(trial, problem.targets)

    at_estimate = terms(**settings)
    at_start = terms(priors=settings["priors"], survival={"post_progression_hazard_per_month": 0.05,
                                                          "post_progression_burden_exponent": 0.5})
    assert at_estimate["pfs_combo"] == at_start["pfs_combo"]
    assert sum(at_estimate.values()) == pytest.approx(float(result["objective"]), rel=1e-10)


@pytest.mark.parametrize("hold, message", [
    ("[r.medain]", "hold: 'r.medain' is not a free parameter"),
    ("[r.median, r.sigma, post_progression_hazard_per_month, post_progression_burden_exponent]",
     "every free parameter is held"),
])
def test_hold_mistakes_are_reported(tmp_path, hold, message):
    with pytest.raises(FitError, match=message):
        load_problem(write_problem(tmp_path, hold))
