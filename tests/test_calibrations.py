"""The shipped trial calibrations (fitting/impower150, fitting/relativity047).

For each: calibration.yaml loads the way `immunoedit trial --calibration` reads it, belongs to the
current problem.yaml (same problem hash), holds every free parameter inside its bounds, and
drives `run_trial`; the calibrated parameter set scores a lower objective (the problem's own
likelihood terms) than the uncalibrated composed model on the same virtual cohort (common random
numbers: same seed, same arm size), and the saved CMA-ES trace (fit.nc) ends below its first
generation. Reference values: the published targets in each problem's published.csv (the terms),
the problem's bounds, and the uncalibrated model's objective.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ruamel.yaml import YAML

from immunoedit_models.cli import _calibration
from immunoedit_models.compile import compile_model
from immunoedit_models.fit import load_problem
from immunoedit_models.fit.run import problem_hash
from immunoedit_models.fit.trial import trial_terms
from immunoedit_models.io.results import load as load_result
from immunoedit_models.trials import run_trial

FITTING = Path(__file__).resolve().parents[1] / "fitting"
PATIENTS = 100          # per arm: small, but the same cohort for both parameter sets


@pytest.fixture(scope="module", params=["impower150", "relativity047"])
def shipped(request):
    folder = FITTING / request.param
    problem = load_problem(folder)
    seed = int(problem.cohort["seed"])

    def trial(model, **settings):
        return run_trial(problem.trial_path(), model=model, patients_per_arm=PATIENTS, seed=seed, **settings)

    return folder, problem, trial


def _estimates(calibration: dict) -> dict[str, float]:
    """Fit-vector name -> value of a calibration.yaml mapping."""
    out = {f"{name}.{part}": float(prior[part]) for name, prior in calibration.get("priors", {}).items()
           for part in ("median", "sigma")}
    for group in ("fixed", "survival"):
        out.update({name: float(v) for name, v in calibration.get(group, {}).items()})
    return out


def test_calibration_belongs_to_problem_and_is_within_bounds(shipped):
    folder, problem, _ = shipped
    data = YAML(typ="safe").load((folder / "calibration.yaml").read_text(encoding="utf-8"))
    assert data["problem"] == problem.name
    assert data["problem_hash"] == problem_hash(problem), (
        f"{folder}/calibration.yaml was fitted to another version of problem.yaml: re-run "
        f"`immunoedit fit {folder} --out DIR` and copy DIR/calibration.yaml here")
    values = _estimates(data)
    assert set(values) == set(problem.parameters.names)
    for p in problem.parameters.free:
        lo, hi = (float(np.exp(b)) for b in p.x_bounds) if p.scale == "log" else p.x_bounds
        assert lo * (1 - 1e-9) <= values[p.name] <= hi * (1 + 1e-9), p.name
    for name, prior in data.get("priors", {}).items():           # truncation = the spec's bounds
        pop = next(q for q in problem.parameters.populations if q.name == name)
        assert tuple(prior["bounds"]) == pop.bounds


def test_calibrated_trial_beats_uncalibrated_model(shipped):
    folder, problem, trial = shipped
    settings = _calibration(folder)                                # what `immunoedit trial --calibration` passes
    assert set(settings) <= {"priors", "fixed", "survival"} and settings["priors"]
    model = compile_model(problem.model_path(), backend=problem.backend)
    calibrated, uncalibrated = trial(model, **settings), trial(model)
    assert calibrated.attrs["failed_runs"] == 0
    assert np.all(np.isfinite(calibrated["pfs_months"].values))
    nll_cal = sum(trial_terms(calibrated, problem.targets).values())
    nll_unc = sum(trial_terms(uncalibrated, problem.targets).values())
    assert np.isfinite(nll_cal)
    # the fit must buy a clear improvement, not a Monte Carlo fluctuation: > 5 log-likelihood units
    assert nll_cal < nll_unc - 5.0, (nll_cal, nll_unc)


def test_saved_cmaes_trace_improved(shipped):
    folder, problem, _ = shipped
    fit = load_result(folder / "fit.nc")
    best = fit["trace_best"].values
    assert len(best) >= 5
    assert float(fit["objective"]) == pytest.approx(float(np.min(best)), rel=1e-12)
    assert float(fit["objective"]) < best[0]
    data = YAML(typ="safe").load((folder / "calibration.yaml").read_text(encoding="utf-8"))
    assert data["objective"] == pytest.approx(float(fit["objective"]), rel=1e-12)
