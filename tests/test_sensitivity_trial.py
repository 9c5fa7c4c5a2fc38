"""Sensitivity of virtual-trial endpoints (tests/specs/trial_small.yaml on trial_model.yaml).

References: each run's endpoints recomputed from an independent `run_trial` (the parameter given
as `fixed`, so the cohort is drawn by the trial's own path) and analysed with lifelines; the
indices recomputed with SALib on the same outputs; a structural zero (the antibody's EC50
cannot change the chemotherapy-only arm, whose patients and random numbers are common to every
run, so its elementary effect is exactly 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from SALib.analyze import morris as morris_analyze
from SALib.analyze import sobol as sobol_analyze
from typer.testing import CliRunner

import immunoedit_models as ie
from immunoedit_models import sensitivity as sa
from immunoedit_models.cli import app
from immunoedit_models.errors import SimulationError
from immunoedit_models.sensitivity.trial import parse_endpoint
from immunoedit_models.trials import run_trial

DESIGN = "tests/specs/trial_small.yaml"
ENDPOINTS = ["pfs@12:CHEMO", "orr:COMBO", "hr_pfs:COMBO_vs_CHEMO", "os_median:COMBO"]
PARAMS = [("ab_EC50", 1.0, 100.0), ("chemo_EC50", 1.0, 50.0)]
PATIENTS = 60


@pytest.fixture(scope="module")
def model():
    return ie.compile_model("tests/specs/trial_model.yaml")


@pytest.fixture(scope="module")
def morris(model):
    return sa.trial_morris(DESIGN, ENDPOINTS, PARAMS, n=4, model=model, patients_per_arm=PATIENTS, seed=0)


def by_hand(trial, arm_exp="COMBO", arm_ctl="CHEMO") -> list[float]:
    """ENDPOINTS of a trial Dataset with lifelines and numpy alone."""
    def km(endpoint, arm):
        s = trial.sel(arm=arm)
        return KaplanMeierFitter().fit(s[f"{endpoint}_months"].values, s[f"{endpoint}_event"].values)

    pfs12 = float(km("pfs", arm_ctl).survival_function_at_times(12.0).iloc[0])
    orr = float(np.isin(trial["best_response"].sel(arm=arm_exp).values, ("CR", "PR")).mean())
    rows = {"t": [], "e": [], "x": []}
    for x, arm in ((1.0, arm_exp), (0.0, arm_ctl)):
        s = trial.sel(arm=arm)
        rows["t"] += list(s.pfs_months.values)
        rows["e"] += list(s.pfs_event.values.astype(int))
        rows["x"] += [x] * s.sizes["patient"]
    cox = CoxPHFitter().fit(pd.DataFrame(rows), "t", "e")
    hr = float(np.exp(cox.params_["x"]))
    os_median = float(km("os", arm_exp).median_survival_time_)
    return [pfs12, orr, hr, os_median]


def test_each_run_is_the_trial_run_trial_gives(model, morris):
    assert (morris["status"].values == 0).all() and morris["used"].values.all()
    for run in (0, 5, 11):
        values = dict(zip(morris["param"].values, morris["X"].values[run]))
        trial = run_trial(DESIGN, model=model, patients_per_arm=PATIENTS, seed=0, fixed=values)
        np.testing.assert_allclose(morris["Y"].values[run], by_hand(trial), rtol=1e-6)


def test_structural_zero_and_salib_recomputation(morris):
    mu_star = morris["mu_star"].to_pandas()
    assert mu_star.loc["pfs@12:CHEMO", "ab_EC50"] == 0.0      # no antibody in CHEMO
    assert mu_star.loc["pfs@12:CHEMO", "chemo_EC50"] > 0.0
    assert mu_star.loc["orr:COMBO", "ab_EC50"] > 0.0
    problem = {"num_vars": 2, "names": ["ab_EC50", "chemo_EC50"],
               "bounds": [[np.log(1.0), np.log(100.0)], [np.log(1.0), np.log(50.0)]]}
    for j, name in enumerate(ENDPOINTS):
        ref = morris_analyze.analyze(problem, np.log(morris["X"].values), morris["Y"].values[:, j],
                                     num_levels=4)
        np.testing.assert_allclose(morris["mu_star"].sel(output=name).values, ref["mu_star"], rtol=1e-12)
        np.testing.assert_allclose(morris["sigma"].sel(output=name).values, ref["sigma"], rtol=1e-12)


def test_sobol_indices_are_salibs_on_the_same_outputs(model):
    ds = sa.trial_sobol(DESIGN, "orr:COMBO", [("ab_EC50", 1.0, 100.0)], n=8, model=model,
                        patients_per_arm=40, seed=2)
    assert ds.sizes["run"] == 8 * 3 and ds.attrs["trial"] == "trial_small"
    problem = {"num_vars": 1, "names": ["ab_EC50"], "bounds": [[np.log(1.0), np.log(100.0)]]}
    ref = sobol_analyze.analyze(problem, ds["Y"].values[:, 0], calc_second_order=False, seed=1)
    np.testing.assert_allclose(ds["S1"].values[0, 0], ref["S1"][0], rtol=1e-12)
    np.testing.assert_allclose(ds["ST"].values[0, 0], ref["ST"][0], rtol=1e-12)


def test_endpoint_errors_name_the_form_and_the_arms():
    arms = ["COMBO", "CHEMO"]
    with pytest.raises(SimulationError) as err:
        parse_endpoint("pfs@12:COMBI", arms)
    assert str(err.value) == "trial endpoint 'pfs@12:COMBI': the trial has no arm 'COMBI' (did you mean 'COMBO'?)"
    with pytest.raises(SimulationError) as err:
        parse_endpoint("pfs12:COMBO", arms)
    assert str(err.value) == ("cannot read trial endpoint 'pfs12:COMBO': use 'pfs@12:ARM', 'os_median:ARM', "
                              "'orr:ARM', 'hr_pfs:EXPERIMENTAL_vs_CONTROL'")
    with pytest.raises(SimulationError) as err:
        parse_endpoint("hr_os:COMBO_vs_COMBO", arms)
    assert str(err.value) == "trial endpoint 'hr_os:COMBO_vs_COMBO': a hazard ratio compares two different arms"
    assert parse_endpoint(" os @ 24 : CHEMO", arms).months == 24.0


def test_a_parameter_the_cohort_samples_is_refused(model):
    with pytest.raises(SimulationError) as err:
        sa.trial_morris(DESIGN, "orr:COMBO", [("ab_boost", 1.0, 5.0)], n=2, model=model, patients_per_arm=10)
    assert str(err.value) == (
        "ab_boost varies between the patients of trial 'trial_small' (a prior samples it): one design value for "
        "every patient would remove the population's spread. Vary a value of the prior instead "
        "('ab_boost.median'), or a parameter every patient shares")


def test_population_values_redraw_the_cohort_as_run_trial_does(model):
    """A value of a population prior ('r.median') redraws each run's cohort from the same seed:
    every run equals run_trial with that prior, and the patients keep their ranks."""
    ds = sa.trial_morris(DESIGN, ["pfs@12:CHEMO", "orr:COMBO", "hr_pfs:COMBO_vs_CHEMO", "os_median:COMBO"],
                         [("r.median", 0.005, 0.02), ("ab_EC50", 1.0, 100.0)], n=2, model=model,
                         patients_per_arm=PATIENTS, seed=1)
    assert ds.sizes["run"] == 6 and (ds["status"].values == 0).all()
    assert list(ds["scale"].values) == ["linear", "log"]     # auto: log only for ranges spanning >= 10x
    for run in (0, 4):
        median, ec50 = ds["X"].values[run]
        trial = run_trial(DESIGN, model=model, patients_per_arm=PATIENTS, seed=1, fixed={"ab_EC50": ec50},
                          priors={"r": {"distribution": "lognormal", "median": median, "sigma": 0.5}})
        np.testing.assert_allclose(ds["Y"].values[run], by_hand(trial), rtol=1e-6)
    assert ds["mu_star"].sel(output="pfs@12:CHEMO", param="r.median") > 0
    assert ds["mu_star"].sel(output="pfs@12:CHEMO", param="ab_EC50") == 0


def test_population_value_errors(model):
    cases = {
        ("r.median",): "population value 'r.median' needs an explicit range: ('r.median', LOW, HIGH) "
                       "(CLI: --param r.median:LOW:HIGH)",
        (("r.mean", 0.01, 0.02),): "population value 'r.mean': the lognormal prior of 'r' has no number "
                                   "'mean' (it has median, sigma)",
        (("Kkill.median", 1e9, 1e11),): "population value 'Kkill.median': 'Kkill' has no prior, so no patient "
                                        "draws it; vary it as a shared parameter (without '.KEY')",
        (("rr.median", 0.01, 0.02),): "population value 'rr.median': 'rr' is not a parameter of model "
                                      "'trial_model' (did you mean 'r'?)",
    }
    for params, message in cases.items():
        with pytest.raises(SimulationError) as err:
            sa.trial_morris(DESIGN, "orr:COMBO", list(params), n=2, model=model, patients_per_arm=10)
        assert str(err.value) == message
    with pytest.raises(SimulationError) as err:
        sa.trial_morris(DESIGN, "orr:COMBO", [("r.median", 0.005, 0.02)], n=2, model=model, patients_per_arm=10,
                        fixed={"r": 0.01})
    assert str(err.value) == ("r is fixed for every patient of trial 'trial_small' (fixed=...), so its prior is "
                              "not drawn: vary the shared value instead (without '.KEY')")


def test_failed_patients_are_reported_per_run(model):
    """A negative chemotherapy EC50 makes the kill rate singular once the concentration falls to
    it: those trials keep their runs, with the failed patients counted."""
    design = sa.morris_design(sa.parameter_ranges(model, [("chemo_EC50", -5.0, 5.0)], log=False), 2, seed=0)
    batch = sa.run_trial_design(DESIGN, design, ["orr:COMBO"], model=model, patients_per_arm=10)
    negative = design.values[:, 0] < 0
    assert negative.any() and (~negative).any()
    assert (batch["status"].values[~negative] == 0).all()
    assert (batch["failed_patients"].values[negative] > 0).all()
    assert (batch["status"].values[negative] != 0).all()
    with pytest.raises(sa.FailedRunsError):
        sa.morris_indices(design, batch, [sa.Output("orr:COMBO", lambda b: b["orr:COMBO"].values)])


def test_a_trial_that_raises_keeps_its_run_and_its_message(model):
    """A median of 1e-7/day leaves the growth prior no mass inside its bounds: that run's cohort
    cannot be drawn. The run stays, with status -2 and the error; the others simulate."""
    design = sa.morris_design(sa.trial_ranges(model, [("r.median", 1e-7, 0.01)]), 2, seed=0)
    batch = sa.run_trial_design(DESIGN, design, ["orr:COMBO"], model=model, patients_per_arm=10)
    raised = design.values[:, 0] < 1e-6
    assert raised.sum() == 1
    assert (batch["status"].values[raised] == sa.STATUS_RAISED).all() and (batch["status"].values[~raised] == 0).all()
    assert batch["error"].values[raised][0].startswith("SimulationError: parameter 'r': bounds [0.0001, 0.2] "
                                                       "leave no probability under its prior")
    with pytest.raises(sa.FailedRunsError) as err:
        sa.morris_indices(design, batch, [sa.Output("orr:COMBO", lambda b: b["orr:COMBO"].values)])
    assert "1 of 4 runs of the morris design failed (1 raised an error): run 2 (status -2): r.median=1e-07; " \
           "the first error: SimulationError: parameter 'r': bounds" in str(err.value)


def test_a_backend_without_trials_is_refused_before_any_run():
    jax_model = ie.compile_model("tests/specs/trial_model.yaml", backend="jax")
    with pytest.raises(SimulationError) as err:
        sa.trial_morris(DESIGN, "orr:COMBO", [("ab_EC50", 1.0, 100.0)], n=2, model=jax_model, patients_per_arm=10)
    assert str(err.value) == ("trials need scans inside the kernel; the jax backend has none: compile the model "
                              "with backend='numba' (or 'cuda')")


def test_cli_trial_sensitivity(tmp_path):
    out = tmp_path / "trial_morris.nc"
    result = CliRunner().invoke(app, [
        "sensitivity", DESIGN, "--trial", "--method", "morris", "--n", "2", "--patients", "20",
        "--output", "orr:COMBO", "--param", "ab_EC50:1:100", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "orr:COMBO" in result.output and "ab_EC50" in result.output
    ds = ie.load_result(out)
    assert ds.attrs["trial"] == "trial_small" and ds.sizes["run"] == 4
    wrong = CliRunner().invoke(app, ["sensitivity", DESIGN, "--trial", "--days", "100", "--output", "orr:COMBO",
                                     "--param", "ab_EC50:1:100"])
    assert wrong.exit_code == 1
    assert "--days and --regimen do not apply with --trial" in wrong.output
