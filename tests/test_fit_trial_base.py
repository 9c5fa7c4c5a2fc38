"""A trial fit on top of an earlier calibration (`calibration:`) with a longer follow-up than the
design's (`cohort: data_cut_months`), end to end on the small test trial (tests/specs/trial_small.yaml
on tests/specs/trial_model.yaml): the base calibration's population is held while CMA-ES fits the
death model to an OS landmark read after the design's data cut-off.

References: an independent `run_trial` of the design with the base priors, the estimated survival
values and the longer cut-off reproduces the fit's objective (common random numbers) and follows
patients past the design's cut; the written calibration is the base's priors plus the estimates.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import immunoedit_models as ie
from immunoedit_models.cli import _calibration
from immunoedit_models.errors import FitError
from immunoedit_models.fit import fit, load_problem
from immunoedit_models.fit.run import problem_hash
from immunoedit_models.fit.trial import trial_terms
from immunoedit_models.trials import load_trial, run_trial

SPECS = Path(__file__).resolve().parent / "specs"
DESIGN_CUT = 36.0        # tests/specs/trial_small.yaml
LONG_CUT = 54.0          # accrual 12 + 42 months: every patient followed >= 42 months
BASE = """problem: small_base
priors:
  r: {distribution: lognormal, median: 0.011, sigma: 0.4}
"""
PROBLEM = f"""
name: small_trial_on_base
kind: trial
model: {SPECS / 'trial_model.yaml'}
trial: {SPECS / 'trial_small.yaml'}
calibration: base
cohort: {{patients_per_arm: 30, seed: 4, data_cut_months: {LONG_CUT}}}
parameters:
  post_progression_hazard_per_month: {{bounds: [0.01, 0.5], scale: log, start: 0.05}}
  post_progression_burden_exponent: {{bounds: [0.0, 2.0], scale: lin, start: 0.5}}
targets:
  - {{id: os_40mo_combo, kind: landmark, endpoint: os, arm: COMBO, months: 40, value: 0.3, ci: [0.2, 0.4]}}
fit: {{method: cmaes, seed: 2, max_iter: 2, popsize: 4, sigma0: 0.2}}
"""


def write_problem(folder: Path, problem: str = PROBLEM, base: str | None = BASE) -> Path:
    if base is not None:
        (folder / "base").mkdir(exist_ok=True)
        (folder / "base" / "calibration.yaml").write_text(base)
    (folder / "problem.yaml").write_text(problem)
    return folder


@pytest.fixture(scope="module")
def on_base(tmp_path_factory):
    folder = write_problem(tmp_path_factory.mktemp("base"))
    problem = load_problem(folder)
    return problem, folder / "out", fit(problem, folder / "out")


def test_fit_on_a_base_calibration_with_a_longer_follow_up(on_base, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    problem, out, result = on_base
    assert problem.calibration == {"priors": {"r": {"distribution": "lognormal", "median": 0.011, "sigma": 0.4}}}
    assert problem.cohort["data_cut_months"] == LONG_CUT
    settings = _calibration(out)
    assert settings["priors"] == problem.calibration["priors"]          # the base, carried over
    est = dict(zip(map(str, result["parameter"].values), result["estimate"].values))
    assert settings["survival"] == pytest.approx({k: est[k] for k in ("post_progression_hazard_per_month",
                                                                     "post_progression_burden_exponent")}, rel=1e-15)
    assert "based_on: base" in (out / "calibration.yaml").read_text()
    assert "built on the calibration `base`" in (out / "report.md").read_text()

    design = replace(load_trial(str(SPECS / "trial_small.yaml")), data_cut_months=LONG_CUT)
    trial = run_trial(design, model=ie.compile_model(SPECS / "trial_model.yaml"), patients_per_arm=30, seed=4,
                      **settings)
    assert float(trial["followup_months"].max()) > DESIGN_CUT + 5.0   # followed past the design's cut-off
    assert np.nanmax(trial["os_months"].values) > 40.0                  # so a 40-month landmark is read
    assert sum(trial_terms(trial, problem.targets).values()) == pytest.approx(float(result["objective"]), rel=1e-10)


def test_the_base_calibration_is_part_of_the_problem_hash(tmp_path):
    first = problem_hash(load_problem(write_problem(tmp_path)))
    again = problem_hash(load_problem(write_problem(tmp_path)))
    moved = problem_hash(load_problem(write_problem(tmp_path, base=BASE.replace("0.011", "0.012"))))
    assert first == again != moved


@pytest.mark.parametrize("edit, base, message", [
    (("calibration: base", "calibration: ../nowhere"), BASE,
     "problem.yaml:6: calibration: no calibration at {folder}/../nowhere (give a folder holding a "
     "calibration.yaml, as `immunoedit fit PROBLEM --out FOLDER` writes)"),
    (("calibration: base", "calibration: base"), "- just a list\n",
     "problem.yaml:6: calibration: {folder}/base/calibration.yaml is not a calibration.yaml (a mapping of "
     "priors, fixed, survival)"),
    (("patients_per_arm: 30", "patient_per_arm: 30"), BASE,
     "problem.yaml:7: cohort: unknown key 'patient_per_arm' (did you mean 'patients_per_arm'?)"),
    ((f"data_cut_months: {LONG_CUT}", "data_cut_months: -5"), BASE,
     "problem.yaml:7: cohort: data_cut_months must be > 0, got -5.0"),
])
def test_base_and_cohort_mistakes_are_reported(tmp_path, edit, base, message):
    with pytest.raises(FitError) as info:
        load_problem(write_problem(tmp_path, PROBLEM.replace(*edit), base))
    assert message.format(folder=tmp_path) in str(info.value)


def test_only_trial_problems_build_on_a_calibration(tmp_path):
    (tmp_path / "problem.yaml").write_text(
        "name: tc\nkind: timecourse\nmodel: benchmark_reference\ncalibration: base\n"
        "parameters:\n  rT: {bounds: [0.01, 1], scale: log}\n")
    with pytest.raises(FitError) as info:
        load_problem(tmp_path)
    assert ("problem.yaml:4: calibration: only a trial problem builds on a calibration (remove 'calibration:' "
            "or make the problem 'kind: trial')") in str(info.value)
