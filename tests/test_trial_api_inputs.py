"""Bad input to the trial analysis, report, plot, visit, cohort and KM APIs gives one typed error
with a clear message, before any long computation, and never replaces a user's files."""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr

import immunoedit_models as ie
from immunoedit_models.errors import FitError, ResultError, SimulationError
from immunoedit_models.fit.km import (cox_hazard_ratio, km_curve, km_median, km_survival, numbers_at_risk,
                                      reconstruct_ipd)
from immunoedit_models.trials import sample_cohort, summarise_trial, trial_replicates
from immunoedit_models.trials.plots import plot_forest, plot_km, plot_spider, plot_waterfall
from immunoedit_models.trials.report import write_report
from immunoedit_models.trials.visits import VisitTiming, fit_visit_offsets

ARMS = "its arms are COMBO, CHEMO"


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


@pytest.fixture(scope="module")
def trial():
    return ie.trials.run_trial("tests/specs/trial_small.yaml", patients_per_arm=20, seed=1)


def altered(trial: xr.Dataset, name: str, value) -> xr.Dataset:
    out = trial.copy(deep=True)
    out[name].values[0, 0] = value
    return out


# ---- trial_replicates and summarise_trial ----------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"comparison": "X_vs_CHEMO"}, f"arm 'X' is not in this trial; {ARMS}"),
    ({"comparison": "COMBOvsCHEMO"}, "comparison 'COMBOvsCHEMO': write it as 'EXPERIMENTAL_vs_CONTROL' or a pair "
                                     "('EXPERIMENTAL', 'CONTROL') of arm names"),
    ({"comparison": "CHEMO_vs_CHEMO"}, "comparison 'CHEMO_vs_CHEMO' compares arm 'CHEMO' with itself: name two "
                                       "different arms"),
    ({"n_per_arm": 0}, "trial_replicates: n_per_arm must be an integer >= 1 or a pair (experimental, control) of "
                       "them, got 0"),
    ({"n_per_arm": (5, 5, 5)}, "trial_replicates: n_per_arm must be an integer >= 1 or a pair (experimental, "
                               "control) of them, got (5, 5, 5)"),
    ({"n_replicates": 0}, "trial_replicates: n_replicates must be an integer >= 1, got 0"),
    ({"rng": 0}, "trial_replicates: rng must be a numpy Generator, e.g. np.random.default_rng(0), got int"),
    ({"endpoint": "PFS"}, "trial_replicates: unknown endpoint 'PFS'; choose one of pfs, os"),
    ({"alpha": 95}, "trial_replicates: alpha must lie in (0, 1), got 95 (0.05 gives 95 % intervals)"),
    ({"success": "x"}, "success='x': use 'hr_upper' (HR upper CI < 1) or 'logrank' (p < alpha, HR < 1)"),
])
def test_trial_replicates_rejects_bad_requests(trial, kwargs, message):
    args = {"comparison": "COMBO_vs_CHEMO", "n_per_arm": 10, "n_replicates": 3, "rng": np.random.default_rng(0)}
    with pytest.raises(SimulationError, match=exact(message)):
        trial_replicates(trial, **{**args, **kwargs})


@pytest.mark.parametrize("change, message", [
    (("pfs_months", -3.0), "trial_replicates: pfs_months must be months since randomisation, >= 0; arm 'COMBO' "
                           "patient 0 has -3.0 (1 such value in all)"),
    (("pfs_event", 2), "trial_replicates: pfs_event must be 0 (censored) or 1 (event); arm 'COMBO' patient 0 has 2 "
                       "(1 such value in all)"),
])
def test_trial_replicates_rejects_impossible_outcomes(trial, change, message):
    with pytest.raises(SimulationError, match=exact(message)):
        trial_replicates(altered(trial, *change), "COMBO_vs_CHEMO", 10, 3, np.random.default_rng(0))


def test_analysis_rejects_trials_without_patients_or_variables(trial):
    empty = trial.copy(deep=True)
    empty["pfs_months"].values[0] = np.nan
    with pytest.raises(SimulationError, match=exact(
            "summarise_trial: arm 'COMBO' has no patient with a pfs_months value (all NaN or none): nothing to "
            "estimate; every arm needs patients")):
        summarise_trial(empty, ["COMBO_vs_CHEMO"])
    with pytest.raises(SimulationError, match=exact(
            "summarise_trial: the trial needs os_months and os_event over (arm, patient), as run_trial writes "
            "them; it lacks os_event")):
        summarise_trial(trial.drop_vars("os_event"), ["COMBO_vs_CHEMO"])
    with pytest.raises(SimulationError, match=exact(
            "trial_replicates takes a trial Dataset over (arm, patient), as run_trial returns; got dict")):
        trial_replicates({}, "COMBO_vs_CHEMO", 10, 3, np.random.default_rng(0))


@pytest.mark.parametrize("kwargs, message", [
    ({"comparisons": "COMBO_vs_CHEMO"}, "summarise_trial: comparisons must be a list, e.g. "
                                       "['EXPERIMENTAL_vs_CONTROL'] ([] for none), got 'COMBO_vs_CHEMO'"),
    ({"comparisons": ["COMBO_vs_CHEMO"] * 2}, "summarise_trial: comparison COMBO_vs_CHEMO is listed twice; list "
                                              "each once"),
    ({"comparisons": [("COMBO", "X")]}, f"arm 'X' is not in this trial; {ARMS}"),
    ({"subgroups": "biomarker"}, "summarise_trial: subgroups='biomarker': pass 'biomarkers', None or a mapping "
                                 "name -> (arm, patient) boolean mask"),
    ({"subgroups": {"x": np.ones(5, bool)}}, "summarise_trial: subgroup 'x' has shape (5,); a mask must cover the "
                                             "trial's (arm, patient) = (2, 20)"),
    ({"landmarks": [-5]}, "summarise_trial: landmarks must be a list of months >= 0, e.g. (12.0, 24.0), got [-5]"),
    ({"landmarks": 12}, "summarise_trial: landmarks must be a list of months >= 0, e.g. (12.0, 24.0), got 12"),
    ({"alpha": 0}, "summarise_trial: alpha must lie in (0, 1), got 0 (0.05 gives 95 % intervals)"),
])
def test_summarise_trial_rejects_bad_arguments(trial, kwargs, message):
    args = {"comparisons": ["COMBO_vs_CHEMO"], **kwargs}
    with pytest.raises(SimulationError, match=exact(message)):
        summarise_trial(trial, **args)


# ---- write_report ------------------------------------------------------------------------------------
def test_report_refuses_a_file_and_a_folder_of_user_files(trial, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with pytest.raises(ResultError, match=exact(
            f"write_report: '{path}' is a file, not a folder: give a folder for report.md, report.html and the "
            "figures")):
        write_report(trial, path)
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "report.md").write_text("my notes")
    (folder / "km_pfs.png").write_text("my figure")
    with pytest.raises(ResultError, match=exact(
            f"write_report: '{folder}' holds files that are not an earlier trial report's (report.md): not "
            "writing there, so none is replaced; choose a new or empty folder")):
        write_report(trial, folder)
    assert (folder / "report.md").read_text() == "my notes" and (folder / "km_pfs.png").read_text() == "my figure"
    (folder / "data.csv").write_text("1,2")
    with pytest.raises(ResultError, match="holds files that are not an earlier trial report's \\(data.csv\\)"):
        write_report(trial, folder)


def test_report_rewrites_its_own_folder(trial, tmp_path):
    first = write_report(trial, tmp_path / "report")
    assert write_report(trial, tmp_path / "report") == first


def test_report_rejects_bad_observed_data_and_empty_trials(trial, tmp_path):
    with pytest.raises(ResultError, match=exact(
            "write_report: observed has endpoint 'PFS'; its keys are endpoints (pfs, os), each mapping a label to "
            "(months, events)")):
        write_report(trial, tmp_path / "a", observed={"PFS": {"COMBO": ([1.0, 2.0], [1, 1])}})
    with pytest.raises(SimulationError, match=exact(
            "write_report: observed['COMBO'] must be a pair (months, events) of equal, non-zero length, got 2 "
            "item(s) of sizes [1, 2]")):
        write_report(trial, tmp_path / "b", observed={"pfs": {"COMBO": ([1.0, 2.0], [1])}})
    empty = trial.copy(deep=True)
    empty["os_months"].values[1] = np.nan
    with pytest.raises(SimulationError, match=exact(
            "write_report: arm 'CHEMO' has no patient with a os_months value (all NaN or none): nothing to "
            "estimate; every arm needs patients")):
        write_report(empty, tmp_path / "c")
    assert not any(tmp_path.iterdir())                       # refused before any folder is made


# ---- plots -------------------------------------------------------------------------------------------
def test_plots_name_bad_arms_endpoints_and_comparisons(trial):
    cases = [
        (lambda: plot_km(trial, "PFS"), "plot_km: unknown endpoint 'PFS'; choose one of pfs, os"),
        (lambda: plot_km(trial, arms=["X"]), f"arm 'X' is not in this trial; {ARMS}"),
        (lambda: plot_km(trial, arms=[]), "no arms to plot: name some of the trial's arms (COMBO, CHEMO)"),
        (lambda: plot_km(trial, risk_months=[-6, 0]), "plot_km: risk_months must be a list of months >= 0, e.g. "
                                                      "[0, 6, 12], got [-6, 0]"),
        (lambda: plot_waterfall(trial, "X"), f"arm 'X' is not in this trial; {ARMS}"),
        (lambda: plot_waterfall(trial, "COMBO", max_bars=0), "plot_waterfall: max_bars must be an integer >= 1, "
                                                             "got 0"),
        (lambda: plot_spider(trial.drop_vars("sld_mm"), "COMBO"), "plot_spider: the trial lacks sld_mm; a Dataset "
                                                                  "from run_trial has them"),
        (lambda: plot_forest(trial, "pfs", "X_vs_Y"), "plot_forest: comparison 'X_vs_Y' is not in the summary; its "
                                                      "comparisons are COMBO_vs_CHEMO"),
        (lambda: plot_forest(trial.drop_vars("hr_os_subgroup"), "os"),
         "plot_forest needs a summary with hr_os_subgroup over (comparison, subgroup): summarise_trial(trial, "
         "comparisons) with subgroups"),
    ]
    for call, message in cases:
        with pytest.raises(SimulationError, match=exact(message)):
            call()
    empty = trial.isel(patient=slice(0, 0))
    with pytest.raises(SimulationError, match="plot_km: arm 'COMBO' has no patient with a pfs_months value"):
        plot_km(empty)


# ---- fit.km --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("time, event, message", [
    ([-1.0, 2.0], [1, 1], "kaplan_meier: times must be finite and >= 0 (months since randomisation; drop patients "
                          "without a time first); got -1 at position 0"),
    ([np.nan, 2.0], [1, 1], "kaplan_meier: times must be finite and >= 0 (months since randomisation; drop "
                            "patients without a time first); got nan at position 0"),
    ([1.0, 2.0], [2, 1], "kaplan_meier: events must be 0 (censored) or 1 (event); got 2 at position 0"),
    ([1.0, 2.0], [0.5, 1], "kaplan_meier: events must be 0 (censored) or 1 (event); got 0.5 at position 0"),
    ([1.0, 2.0, 3.0], [1, 1], "kaplan_meier: times and events differ in length (3 and 2): one event flag per "
                              "patient"),
    ([], [], "kaplan_meier: times is empty: no patients or points to work with"),
])
def test_km_functions_reject_bad_outcomes(time, event, message):
    for call in (km_median, km_curve):
        with pytest.raises(FitError, match=exact(message)):
            call(time, event)


def test_km_helpers_reject_bad_times_and_groups():
    t, e = np.array([1.0, 2.0, 3.0]), np.array([1, 0, 1])
    with pytest.raises(FitError, match=exact("km_survival: the times 'at' must be finite and >= 0, got [-1.0]")):
        km_survival(t, e, [-1.0])
    with pytest.raises(FitError, match=exact("numbers_at_risk: at must be a 1-D array, got shape ()")):
        numbers_at_risk(t, 3.0)
    with pytest.raises(FitError, match=exact(
            "numbers_at_risk: times must be finite and >= 0 (months since randomisation; drop patients without a "
            "time first); got nan at position 0")):
        numbers_at_risk([np.nan, 2.0], [0.0])
    np.testing.assert_array_equal(numbers_at_risk([3.0, 1.0, 2.0, 2.0], [0.0, 2.0, 2.5, 9.0]), [4, 3, 1, 0])
    with pytest.raises(FitError, match=exact(
            "cox_hazard_ratio (group b): events must be 0 (censored) or 1 (event); got 2 at position 0")):
        cox_hazard_ratio(t, e, t, 2 * e)
    with pytest.raises(FitError, match=exact(
            "cox_hazard_ratio (group a): times is empty: no patients or points to work with")):
        cox_hazard_ratio([], [], t, e)


CURVE_T, CURVE_S = np.array([0.0, 1.0, 2.0, 3.0, 4.0]), np.array([1.0, 0.8, 0.6, 0.5, 0.4])
RISK_T, RISK_N = np.array([0.0, 2.0]), np.array([50, 30])


@pytest.mark.parametrize("args, message", [
    ((CURVE_T, 100 * CURVE_S, RISK_T, RISK_N), "reconstruct_ipd: curve_survival reaches 100; survival is a "
                                               "fraction in [0, 1] (divide percentages by 100)"),
    ((CURVE_T, CURVE_S[::-1], RISK_T, RISK_N), "reconstruct_ipd: the curve rises by 0.6 to 1 at time 4; a KM "
                                               "curve never rises: check that the points belong to one curve and "
                                               "that times and survival are paired"),
    ((CURVE_T, CURVE_S - 0.5, RISK_T, RISK_N), "reconstruct_ipd: curve_survival must be finite and >= 0, got -0.1"),
    ((CURVE_T - 1, CURVE_S, RISK_T, RISK_N), "reconstruct_ipd: curve_time must be finite and >= 0 (the digitised "
                                             "times, from 0); got -1 at position 0"),
    ((CURVE_T, CURVE_S[:3], RISK_T, RISK_N), "reconstruct_ipd: curve_time and curve_survival differ in length (5 "
                                             "and 3): one survival value per digitised point"),
    ((CURVE_T, CURVE_S, RISK_T, [50]), "reconstruct_ipd: risk_time and risk_n differ in length (2 and 1): one "
                                       "number at risk per time"),
    ((CURVE_T, CURVE_S, RISK_T, [0, 0]), "reconstruct_ipd: the numbers at risk must be whole numbers >= 0 with at "
                                         "least 1 patient at time 0, got [0.0, 0.0]"),
    ((CURVE_T, CURVE_S, RISK_T, [50.5, 30]), "reconstruct_ipd: the numbers at risk must be whole numbers >= 0 with "
                                             "at least 1 patient at time 0, got [50.5, 30.0]"),
    (([], [], RISK_T, RISK_N), "reconstruct_ipd: curve_time is empty: no patients or points to work with"),
    (([0.0, 1.0, 2.0], [1.0, 0.5, 0.0], [0.0, 2.5], [10, 5]),
     "reconstruct_ipd: the curve has reached 0 by time 2.5, where the at-risk table still has 5 patients: the "
     "curve and the table do not match (same arm? same time unit?)"),
])
def test_reconstruction_rejects_inconsistent_curves_and_tables(args, message):
    with pytest.raises(FitError, match=exact(message)):
        reconstruct_ipd(*args)


def test_reconstruction_checks_total_events_and_accepts_shuffled_points():
    with pytest.raises(FitError, match=exact(
            "reconstruct_ipd: total_events must be a whole number from 0 to the 50 patients at risk at time 0, "
            "got 80")):
        reconstruct_ipd(CURVE_T, CURVE_S, RISK_T, RISK_N, total_events=80)
    order = np.array([3, 0, 4, 1, 2])                         # clicked out of order, pairs intact
    shuffled = reconstruct_ipd(CURVE_T[order], CURVE_S[order], RISK_T, RISK_N)
    np.testing.assert_array_equal(shuffled, reconstruct_ipd(CURVE_T, CURVE_S, RISK_T, RISK_N))


# ---- visits ----------------------------------------------------------------------------------------------
SCANS = np.arange(0.0, 400.0, 42.0)


@pytest.mark.parametrize("args, message", [
    ((np.r_[SCANS[1:], np.nan], SCANS), "fit_visit_offsets: event_day must be a 1-D array of finite days >= 0 "
                                        "(one per event; drop patients without an event)"),
    ((SCANS[1:], SCANS[::-1]), "fit_visit_offsets: scan_day must list at least 2 scheduled scan days in increasing "
                               "order, baseline first"),
    ((SCANS[1:], SCANS, 100.0), "fit_visit_offsets: half_width_days must lie in (0, 21], half the shortest scan "
                                "interval (wider windows overlap the next visit's), got 100.0"),
    ((np.linspace(1.0, 14.0, 40), SCANS), "fit_visit_offsets: most event days lie before day 21, nearer the "
                                          "baseline scan than any later visit: pass event days, not months"),
])
def test_fit_visit_offsets_rejects_bad_inputs(args, message):
    with pytest.raises(FitError, match=exact(message)):
        fit_visit_offsets(*args)


def test_visit_timing_rejects_bad_offsets_and_schedules():
    rng = np.random.default_rng(0)
    with pytest.raises(SimulationError, match=exact(
            "visit offsets need a finite mean, an sd >= 0 and a limit > 0 days, got mean 0, sd -3, limit inf")):
        VisitTiming(0.0, -3.0).days(SCANS, (2,), rng)
    with pytest.raises(SimulationError, match=exact(
            "scan_day must be the scheduled scan days in increasing order, baseline first, got [42.0, 0.0]")):
        VisitTiming(1.0, 2.0).days(np.array([42.0, 0.0]), (2,), rng)
    with pytest.raises(SimulationError, match=exact(
            "rng must be a numpy Generator, e.g. np.random.default_rng(0), got int")):
        VisitTiming(1.0, 2.0).days(SCANS, (2,), 0)
    close = VisitTiming(1.0, 2.0).days(np.array([0.0, 1.0, 2.0]), (2,), rng)
    np.testing.assert_array_equal(close, [[0.0, 1.0, 2.0]] * 2)   # no room to move: on schedule


# ---- sample_cohort ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    return ie.compile_model("tests/specs/trial_model.yaml")


@pytest.mark.parametrize("args, kwargs, message", [
    ((True, 0), {}, "a cohort needs n > 0 patients, got True"),
    ((3, -1), {}, "sample_cohort needs an integer seed >= 0 and an integer max_rounds >= 1, got seed=-1, "
                  "max_rounds=8"),
    ((3, 0), {"max_rounds": 2.5}, "sample_cohort needs an integer seed >= 0 and an integer max_rounds >= 1, got "
                                  "seed=0, max_rounds=2.5"),
    ((3, 0), {"fixed": {"T0": np.nan}}, "fixed value of 'T0' must be a finite number, got nan"),
    ((3, 0), {"constraints": {"output": "sld_mm"}}, "constraints must be a list of constraints, e.g. [{'output': "
                                                    "'sld_mm', 'time': 0, 'low': 10, 'high': 150}] (wrap a single "
                                                    "one in a list), got {'output': 'sld_mm'}"),
    ((3, 0), {"target": "sld_mm"}, "target must be a Target or its mapping (output, time, distribution, ...), got "
                                   "'sld_mm'"),
    ((3, 0), {"target": {"output": "sld_mm", "time": 0, "distribution": "lognormal", "median": 50, "sigma": 0.5},
              "oversample": float("nan")},
     "oversample must be a number >= 1 (the plausible pool is oversample x n), got nan"),
])
def test_sample_cohort_rejects_bad_arguments(model, args, kwargs, message):
    with pytest.raises(SimulationError, match=exact(message)):
        sample_cohort(model, *args, **kwargs)
