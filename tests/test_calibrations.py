"""The shipped trial calibrations (fitting/impower150, fitting/relativity047, fitting/checkmate067_os).

For each: calibration.yaml loads the way `immunoedit trial --calibration` reads it, belongs to the
current problem.yaml (same problem hash), holds every free parameter inside its bounds, and
drives `run_trial`; the calibrated parameter set scores a lower objective (the problem's own
likelihood terms) than the uncalibrated composed model on the same virtual cohort (common random
numbers: same seed, same arm size), and the saved CMA-ES trace (fit.nc) ends below its first
generation. A calibration built on another (`calibration:` of the problem) carries the base's
values unchanged, and is compared with the base at the problem's start values. Reference values:
the published targets in each problem's published.csv (the terms), the problem's bounds, and the
uncalibrated model's objective.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from immunoedit_models.cli import _calibration, app
from immunoedit_models.compile import compile_model
from immunoedit_models.fit import load_problem
from immunoedit_models.fit.run import problem_hash
from immunoedit_models.fit.trial import trial_terms
from immunoedit_models.io.results import load as load_result
from immunoedit_models.trials import load_trial, run_trial

FITTING = Path(__file__).resolve().parents[1] / "fitting"
PATIENTS = 100          # per arm: small, but the same cohort for both parameter sets


@pytest.fixture(scope="module", params=["impower150", "relativity047", "checkmate067_os"])
def shipped(request):
    folder = FITTING / request.param
    problem = load_problem(folder)
    seed = int(problem.cohort["seed"])
    design = load_trial(problem.trial_path())
    if problem.cohort.get("data_cut_months"):
        design = replace(design, data_cut_months=problem.cohort["data_cut_months"])

    def trial(model, **settings):
        return run_trial(design, model=model, patients_per_arm=PATIENTS, seed=seed, **settings)

    return folder, problem, trial


def _uncalibrated(problem) -> dict:
    """The reference settings: none (the composed model), or the base calibration with the free
    parameters at their starts (a problem built on another calibration)."""
    if not problem.calibration:
        return {}
    out = {group: dict(values) for group, values in problem.calibration.items()}
    for p in problem.parameters.free:
        group = {"survival": "survival", "model": "fixed"}[problem.roles[p.name]]   # (no population here)
        out.setdefault(group, {})[p.name] = p.start
    return out


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
    base = _estimates(problem.calibration)
    assert {k: values[k] for k in base.keys() - set(problem.parameters.names)} == {
        k: v for k, v in base.items() if k not in problem.parameters.names}     # the base, carried unchanged
    assert set(values) == set(problem.parameters.names) | set(base)
    for p in problem.parameters.free:
        lo, hi = (float(np.exp(b)) for b in p.x_bounds) if p.scale == "log" else p.x_bounds
        assert lo * (1 - 1e-9) <= values[p.name] <= hi * (1 + 1e-9), p.name
    for pop in problem.parameters.populations:                    # truncation = the spec's bounds
        assert tuple(data["priors"][pop.name]["bounds"]) == pop.bounds


def test_calibrated_trial_beats_uncalibrated_model(shipped):
    folder, problem, trial = shipped
    settings = _calibration(folder)                                # what `immunoedit trial --calibration` passes
    assert set(settings) <= {"priors", "fixed", "survival"} and settings["priors"]
    model = compile_model(problem.model_path(), backend=problem.backend)
    calibrated, uncalibrated = trial(model, **settings), trial(model, **_uncalibrated(problem))
    assert calibrated.attrs["failed_runs"] == 0
    source = json.loads(calibrated.attrs["cohort_source"])          # the saved trial names its priors
    assert source == {"priors": settings["priors"], "fixed": settings.get("fixed", {})}
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


def test_cli_trial_records_its_calibration(tmp_path):
    folder, out = FITTING / "relativity047", tmp_path / "trial.nc"
    result = CliRunner().invoke(app, ["trial", "relativity047", "--patients", "20", "--out", str(out),
                                      "--calibration", str(folder)])
    assert result.exit_code == 0, result.output
    assert "uncalibrated" not in result.output
    ds = load_result(out)
    assert ds.attrs["calibration_path"] == str(folder.resolve())
    assert json.loads(ds.attrs["cohort_source"])["priors"] == _calibration(folder)["priors"]
