"""Bad inputs to the sensitivity analyses, the phase map and `cite`: one typed error naming what is
wrong and the usual fix, raised before any simulation; trial sensitivity results record how
they were computed."""

from __future__ import annotations

import importlib
import json
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

import immunoedit_models as ie
from immunoedit_models import sensitivity as sa
from immunoedit_models.citations import cite
from immunoedit_models.cli import app
from immunoedit_models.errors import SimulationError
from immunoedit_models.phases import PhaseCriteria, phase_map
from immunoedit_models.sensitivity import indices, trial
from immunoedit_models.sensitivity.command import day_grid
from immunoedit_models.trials import run_trial

DESIGN = "tests/specs/trial_small.yaml"
FORMS = "'X' (time-resolved), 'X@365', 'auc(X)', 'auc(X, 0, 365)', 'max(X)', 'min(X, 0, 90)'"


@pytest.fixture(scope="module")
def model():
    return ie.compile_model("kuznetsov_1994", backend="numba")


@pytest.fixture(scope="module")
def trial_model():
    return ie.compile_model("tests/specs/trial_model.yaml")


@pytest.fixture
def no_runs(monkeypatch):
    """Fail the test if a design is simulated."""
    def refuse(*args, **kwargs):
        raise AssertionError("a design was simulated before the inputs were checked")
    monkeypatch.setattr(indices, "run_design", refuse)
    monkeypatch.setattr(trial, "run_trial_design", refuse)


def message(call) -> str:
    with pytest.raises(SimulationError) as err:
        call()
    return str(err.value)


# ---- output times ------------------------------------------------------------------------------
def test_negative_output_times_are_refused():
    assert message(lambda: sa.parse_output("T@-30")) == (
        "output 'T@-30': output times must be >= 0 (days after the simulation's start at day 0), got -30")
    assert message(lambda: sa.parse_output("auc(T, -10, 5)")) == (
        "output 'auc(T, -10, 5)': output times must be >= 0 (days after the simulation's start at day 0), got -10")
    at20 = [sa.parse_output("T@20")]
    assert message(lambda: sa.output_grid(at20, [-5.0, 0.0, 10.0])) == (
        "output times must be >= 0 (days after the simulation's start at day 0), got -5")
    assert message(lambda: sa.output_grid([sa.parse_output("T@5")], [10.0, 20.0])) == (
        "an output needs day 5, before the first output time 10 where the simulation starts: start the output "
        "times at or before day 5")


def test_daily_grids_are_bounded():
    assert message(lambda: sa.output_grid([sa.parse_output("T@1e9")])) == (
        "an output needs day 1e+09: a daily output grid to it would hold more than 100000 days; use an earlier "
        "time, or give the output times explicitly (times=...; CLI: --days)")
    np.testing.assert_array_equal(sa.output_grid([sa.parse_output("T@2.5")]), [0.0, 1.0, 2.0, 2.5])
    np.testing.assert_array_equal(day_grid(3.5), [0.0, 1.0, 2.0, 3.0, 3.5])
    assert day_grid(None) is None
    for days, shown in ((0.0, "0"), (-5.0, "-5"), (np.nan, "nan"), (np.inf, "inf"), (1e9, "1e+09")):
        assert message(lambda: day_grid(days)) == f"--days must be a number of days in (0, 100000], got {shown}"


def test_cli_days_and_on_failure_are_checked_first():
    base = ["sensitivity", "kuznetsov_1994", "-o", "T@10"]
    result = CliRunner().invoke(app, [*base, "--method", "morris", "-p", "a:0.1:0.3", "--days", "nan"])
    assert result.exit_code == 1 and "--days must be a number of days in (0, 100000], got nan" in result.output
    result = CliRunner().invoke(app, [*base, "--method", "local", "-p", "a", "--on-failure", "bogus"])
    assert result.exit_code == 1
    assert "on_failure must be 'raise' or 'drop' (CLI: --on-failure), got 'bogus'" in result.output
    result = CliRunner().invoke(app, [*base, "--method", "morris", "-p", "a:0.1:0.2", "-p", "a"])
    assert result.exit_code == 1 and "parameters named more than once: a (give each one range)" in result.output


# ---- the Python API ------------------------------------------------------------------------------
def test_log_takes_the_words_of_scale(model):
    ranges = [("g", 1e6, 1e7), ("a", 0.1, 0.3)]
    assert [r.scale for r in sa.parameter_ranges(model, ranges, log="linear")] == ["linear", "linear"]
    assert [r.scale for r in sa.parameter_ranges(model, ranges, log="log")] == ["log", "log"]
    assert [r.scale for r in sa.parameter_ranges(model, ranges, log="auto")] == ["log", "linear"]
    assert [r.scale for r in sa.parameter_ranges(model, ranges, log=["a"])] == ["linear", "log"]
    assert message(lambda: sa.parameter_ranges(model, ranges, log="lin")) == (
        "log must be 'auto', 'linear', 'log', True / False or a list of parameter names, got 'lin'")
    assert message(lambda: sa.parameter_ranges(model, ranges, log=["a", "zz"])) == (
        "log names zz, not among the parameters analysed (g, a)")


def test_local_sensitivity_takes_one_name():
    bench = ie.compile_model("benchmark_reference", backend="numba")
    assert list(sa.local_sensitivity(bench, "T@10", "rT", derivative="fd")["param"].values) == ["rT"]
    assert message(lambda: sa.local_sensitivity(bench, "T@10", ["rT", "rT"])) == (
        "parameters named more than once: rT")
    assert message(lambda: sa.local_sensitivity(bench, "T@10", [("rT", 0.1, 0.2)])) == (
        "params must be parameter names (local sensitivities are taken at the nominal values, without ranges), "
        "got [('rT', 0.1, 0.2)]")


@pytest.mark.parametrize("call, expected", [
    (lambda m: sa.sobol(m, "T@10", [], 8), "params is empty: name at least one parameter (NAME, or (NAME, LOW, HIGH))"),
    (lambda m: sa.parameter_ranges(m, {"a": 0.2}),
     "params['a'] must be None (the spec's range) or (low, high), got 0.2"),
    (lambda m: sa.parameter_ranges(m, ("a", 0.1, 0.3)),
     "cannot read parameter range 0.1: give a name, (name, low, high) or a ParameterRange (one range alone goes "
     "in a list: [(name, low, high)])"),
    (lambda m: sa.parameter_ranges(m, 5), "params must be parameter names, (name, low, high) tuples or "
                                          "ParameterRanges, or a mapping name -> (low, high) or None; got int"),
    (lambda m: sa.sobol(m, "T@10", [("a", 0.1, 0.3)], 8.0),
     "Sobol base sample size n must be an integer (a power of two >= 2), got 8.0"),
    (lambda m: sa.morris(m, "T@10", [("a", 0.1, 0.3)], 4.5),
     "Morris needs an integer n >= 2 of trajectories, got n=4.5 (10-50 is usual)"),
    (lambda m: sa.morris(m, "T@10", [("a", 0.1, 0.3)], 4, num_levels=4.0),
     "Morris num_levels must be an even integer >= 2, got 4.0 (4 is usual)"),
    (lambda m: sa.sobol(m, "T@10", [("a", 0.1, 0.3)], 8, seed=None),
     "seed must be an integer >= 0 (same seed, same result), got None"),
    (lambda m: sa.sobol(m, 5, [("a", 0.1, 0.3)], 8),
     f"outputs must be an output ({FORMS}), an Output or a list of them, got int"),
    (lambda m: sa.sobol(m, None, [("a", 0.1, 0.3)], 8),
     f"outputs must be an output ({FORMS}), an Output or a list of them, got NoneType"),
    (lambda m: sa.sobol(m, "T@10", [("a", 0.1, 0.2), "a"], 8),
     "parameters named more than once: a (give each one range)"),
    (lambda m: sa.sobol(m, "T@10", [("a", 0.1, 0.3)], 8, on_failure="bogus"),
     "on_failure must be 'raise' or 'drop' (CLI: --on-failure), got 'bogus'"),
    (lambda m: sa.morris(m, "T@10", [("a", 0.1, 0.3)], 4, on_failure="skip"),
     "on_failure must be 'raise' or 'drop' (CLI: --on-failure), got 'skip'"),
])
def test_bad_arguments_are_typed_errors_before_any_run(model, no_runs, call, expected):
    assert message(lambda: call(model)) == expected


def test_trial_on_failure_is_checked_before_any_trial(trial_model, no_runs):
    assert message(lambda: sa.trial_morris(DESIGN, "orr:COMBO", [("ab_EC50", 1.0, 100.0)], n=2, model=trial_model,
                                           patients_per_arm=10, on_failure="bogus")) == (
        "on_failure must be 'raise' or 'drop' (CLI: --on-failure), got 'bogus'")


# ---- trial sensitivity provenance ------------------------------------------------------------------
def test_trial_sensitivity_records_solver_survival_and_cohort(trial_model, tmp_path):
    fixed, survival = {"chemo_kmax": 0.6}, {"background_hazard_per_month": 0.002}
    ds = sa.trial_morris(DESIGN, "orr:COMBO", [("ab_EC50", 1.0, 100.0)], n=2, model=trial_model,
                         patients_per_arm=10, fixed=fixed, survival=survival)
    reference = run_trial(DESIGN, model=trial_model, patients_per_arm=10, fixed=fixed, survival=survival)
    for key in ("rtol", "atol", "cohort_source", "trial_design_path", "visits"):
        assert ds.attrs[key] == reference.attrs[key], key
    assert json.loads(ds.attrs["cohort_source"]) == {"priors": {}, "fixed": fixed}
    assert ds.attrs["solver"] == "rodas5p" and ds.attrs["max_steps"] == 100_000
    assert json.loads(ds.attrs["survival"])["background_hazard_per_month"] == 0.002
    assert json.loads(ds.attrs["survival"])["lethal_tumour_cells"] == 1e12
    assert json.loads(ds.attrs["survival_overrides"]) == survival
    ie.save_result(ds, tmp_path / "trial_morris.nc")
    assert ie.load_result(tmp_path / "trial_morris.nc").attrs["survival"] == ds.attrs["survival"]


def test_trial_settings_are_checked_before_any_trial(trial_model):
    design = sa.morris_design(sa.trial_ranges(trial_model, [("ab_EC50", 1.0, 100.0)]), 2)
    assert message(lambda: sa.run_trial_design(DESIGN, design, ["orr:COMBO"], model=trial_model,
                                               patients_per_arm=10, survival={"lethal": 1.0})).startswith(
        "survival has no parameter 'lethal'; its parameters are lethal_tumour_cells, ")
    assert message(lambda: sa.run_trial_design(DESIGN, design, ["orr:COMBO"], model=trial_model,
                                               patients_per_arm=4.5)) == (
        "patients_per_arm must be an integer >= 1, got 4.5")


# ---- phase map ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, expected", [
    (dict(x=("a", 0.1, -0.3)), "x axis 'a': the range needs finite low < high, got [0.1, -0.3]"),
    (dict(x=("a", np.nan, 0.3)), "x axis 'a': the range needs finite low < high, got [nan, 0.3]"),
    (dict(y=("d", 0.01, np.inf)), "y axis 'd': the range needs finite low < high, got [0.01, inf]"),
    (dict(x=("a", 0.3, 0.3)), "x axis 'a': the range needs finite low < high, got [0.3, 0.3]"),
    (dict(x=("a", 0.0, 0.3), log_x=True), "x axis 'a': a log-spaced axis needs low > 0, got [0, 0.3]; space it "
                                          "linearly (log_x=False) or give a positive range"),
    (dict(x=("a", 0.1)), "x must be (NAME, LOW, HIGH) (CLI: --x NAME:LOW:HIGH), got ('a', 0.1)"),
    (dict(y=("a", 0.2, 0.4)), "x and y must be different parameters, got 'a' for both"),
    (dict(n=1), "n (grid points per axis) must be an integer >= 2, got 1"),
    (dict(n=-3), "n (grid points per axis) must be an integer >= 2, got -3"),
    (dict(n=3.0), "n (grid points per axis) must be an integer >= 2, got 3.0"),
    (dict(days=0.0), "days (the simulated horizon) must be a finite number > 0, got 0.0"),
    (dict(days=np.nan), "days (the simulated horizon) must be a finite number > 0, got nan"),
    (dict(criteria=PhaseCriteria(tumour="X")),
     "the tumour variable 'X' is not a state, expression or observable of model 'kuznetsov_1994'; choose from "
     "E, T: name the tumour variable with PhaseCriteria(tumour=...) (CLI: --tumour)"),
])
def test_phase_map_inputs_are_checked_before_any_run(model, monkeypatch, kwargs, expected):
    simulate = importlib.import_module("immunoedit_models.simulate")     # the package, not ie.simulate
    monkeypatch.setattr(simulate, "simulate_batch", lambda *a, **k: pytest.fail("simulated before checking"))
    arguments = {"x": ("a", 0.1, 0.3), "y": ("d", 0.01, 0.05), "n": 3, **kwargs}
    assert message(lambda: phase_map(model, **arguments)) == expected


# ---- cite ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reference, problem", [
    ('authors: ["", "  "]', "'authors' must be a non-empty list of names (e.g. authors: [Kuznetsov VA, "
                            "Makalkin IA], or leave the field out)"),
    ("authors: []", "'authors' must be a non-empty list of names (e.g. authors: [Kuznetsov VA, Makalkin IA], "
                    "or leave the field out)"),
    ("journal: [a, b]", "'journal' must be text or a number, got a list (write one value, in quotes if it holds "
                        "[ ] { } or :)"),
    ("year: true", "'year' must be text or a number, got true/false (write one value, in quotes if it holds "
                   "[ ] { } or :)"),
])
def test_reference_fields_are_type_checked(tmp_path, reference, problem):
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: m
        kind: module
        references:
          - key: a1
            title: t
            {reference}
        states:
          X: {{unit: cell, initial: 1}}
        """))
    with pytest.raises(ie.SpecError) as err:
        cite(path)
    assert [str(i) for i in err.value.issues] == [f"{path}:4: reference 'a1': {problem}"]


@pytest.mark.parametrize("entry, problem", [
    ("title: [a, b]", "'title' must be text or a number, got a list (write one value, in quotes if it holds "
                      "[ ] { } or :)"),
    ("text: {a: 1}", "'text' must be text or a number, got a mapping (write one value, in quotes if it holds "
                     "[ ] { } or :)"),
    ('title: "  "', "has neither 'title' nor 'text' (give the work's title)"),
])
def test_a_reference_needs_a_title_as_text(tmp_path, entry, problem):
    path = tmp_path / "m.yaml"
    path.write_text(f"name: m\nkind: module\nreferences:\n  - key: a1\n    {entry}\n"
                    "states:\n  X: {unit: cell, initial: 1}\n")
    with pytest.raises(ie.SpecError) as err:
        cite(path, format="text")
    assert [str(i) for i in err.value.issues] == [f"{path}:4: reference 'a1': {problem}"]
