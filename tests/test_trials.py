"""In-silico trials end to end on a small test model (tests/specs/trial_model.yaml, trial_small.yaml).

References are independent of the code under test: the design's own schedule (q21d, 4 or 6
induction cycles), the in-kernel progression day against the Python RECIST readout, lifelines
re-analysis of the exported event times, and reruns with the same seed.
"""

import re
from pathlib import Path

import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from typer.testing import CliRunner

import immunoedit_models as ie
from immunoedit_models.cli import app
from immunoedit_models.errors import SimulationError, SpecError
from immunoedit_models.trials import load_trial, run_trial
from immunoedit_models.trials.design import DAYS_PER_MONTH
from immunoedit_models.trials.recist import confirmation_day
from immunoedit_models.trials.report import write_report

DESIGN = "tests/specs/trial_small.yaml"


@pytest.fixture(scope="module")
def model():
    return ie.compile_model("tests/specs/trial_model.yaml")


@pytest.fixture(scope="module")
def trial(model):
    return run_trial(DESIGN, model=model, seed=3)


def test_same_seed_same_trial_other_seed_differs(model, trial):
    again = run_trial(DESIGN, model=model, seed=3)
    for name in ("pfs_months", "os_months", "best_response", "dose_day", "pdl1_high"):
        np.testing.assert_array_equal(trial[name].values, again[name].values)
    other = run_trial(DESIGN, model=model, seed=4)
    assert not np.array_equal(trial.pfs_months.values, other.pfs_months.values)


def test_no_dose_on_or_after_progression(trial):
    pd_day = trial.progression_day_kernel.values
    last = np.nanmax(trial.dose_day.values, axis=-1)
    progressed = np.isfinite(pd_day)
    assert progressed.sum() > 50                    # the test is not vacuous
    assert np.all(last[progressed] < pd_day[progressed])


def test_maintenance_continues_until_progression_death_or_cutoff(trial):
    combo = trial.sel(arm="COMBO")
    ab = np.where(combo.dose_drug.values == "antibody", combo.dose_day.values, np.nan)
    end = np.fmin(combo.progression_day_kernel.values, combo.os_months.values * DAYS_PER_MONTH)
    last_ab = np.nanmax(ab, axis=-1)
    # the next q21d dose would have fallen at or after the end of treatment
    assert np.all(last_ab + 21 >= end - 1e-9)
    spacing = np.diff(ab, axis=-1)
    np.testing.assert_allclose(spacing[np.isfinite(spacing)], 21.0)


def test_induction_has_four_or_six_cycles(trial):
    chemo = (trial.dose_drug.values == "chemo").sum(axis=-1)
    end = np.fmin(trial.progression_day_kernel.values, trial.os_months.values * DAYS_PER_MONTH)
    full = end > 6 * 21                                  # patients who could finish 6 cycles
    assert set(np.unique(chemo[full])) == {4, 6}


def test_kernel_progression_matches_the_recist_readout(trial):
    # pd_day: first PD among the visits that happened (before death and the cut-off)
    seen = np.isfinite(trial.pd_day.values)
    np.testing.assert_array_equal(trial.pd_day.values[seen], trial.progression_day_kernel.values[seen])


def test_progression_is_detected_at_visits_only(trial):
    pd_event = np.isfinite(trial.pd_day.values)
    pfs_day = trial.pfs_months.values[pd_event] * DAYS_PER_MONTH
    assert np.all(np.isin(np.round(pfs_day, 6), np.round(trial.scan_day.values, 6)))


def test_medians_and_orr_agree_with_an_independent_reanalysis(trial):
    for arm in trial.arm.values:
        s = trial.sel(arm=arm)
        km = KaplanMeierFitter().fit(s.pfs_months.values, s.pfs_event.values)
        assert float(s.pfs_median_months) == pytest.approx(km.median_survival_time_, rel=1e-12)
        orr = np.isin(s.best_response.values, ("CR", "PR")).mean()
        assert float(s.orr) == pytest.approx(orr)


def test_subgroup_counts(trial):
    n = trial.n_subgroup.sel(comparison="COMBO_vs_CHEMO")
    assert set(n.subgroup.values) == {"all", "pdl1_high", "not_pdl1_high", "pdl1_negative",
                                      "not_pdl1_negative", "teff_high", "not_teff_high"}
    for g in ("pdl1_high", "pdl1_negative", "teff_high"):
        assert int(n.sel(subgroup=g)) == int(trial[g].sum())
        assert int(n.sel(subgroup="not_" + g)) == 2 * trial.sizes["patient"] - int(trial[g].sum())


def test_treatment_beyond_progression_until_confirmation(tmp_path, model, trial):
    text = open(DESIGN).read().replace("  COMBO:\n", "  COMBO:\n    treat_beyond_progression: [antibody]\n")
    (tmp_path / "beyond.yaml").write_text(text)
    (tmp_path / "trial_model.yaml").symlink_to(Path("tests/specs/trial_model.yaml").resolve())
    beyond = run_trial(load_trial(tmp_path / "beyond.yaml"), model=model, seed=3)
    combo = beyond.sel(arm="COMBO")
    pd_day, cpd_day = combo.progression_day_kernel.values, combo.confirmed_progression_day.values
    day, drug = combo.dose_day.values, combo.dose_drug.values
    ab_after = np.nansum((drug == "antibody") & (day >= pd_day[:, None]), axis=-1)
    assert (ab_after > 0).sum() > 20                                  # the test is not vacuous
    assert np.all(np.where(drug == "antibody", day, -np.inf) < cpd_day[:, None])   # none from iCPD on
    assert np.all(np.where(drug == "chemo", day, -np.inf) < pd_day[:, None])       # chemo stops at PD
    # the confirmation day, recomputed from the observed scans, where they reach it
    seen = confirmation_day(combo.sld_mm.values, combo.scan_day.values, pd_day, 5.0)
    np.testing.assert_array_equal(seen[np.isfinite(seen)], cpd_day[np.isfinite(seen)])
    assert np.all(cpd_day[np.isfinite(pd_day)] > pd_day[np.isfinite(pd_day)])
    # doses after progression change neither progression nor response: same seed, same PFS and ORR
    for name in ("pfs_months", "pfs_event", "best_response"):
        np.testing.assert_array_equal(beyond[name].values, trial[name].values)
    assert not np.array_equal(beyond.os_months.values, trial.os_months.values)
    # the report counts them: patients progressed, and those given the antibody on or after it
    text = write_report(beyond, tmp_path / "report").read_text()
    progressed = int(np.isfinite(pd_day).sum())
    assert f"| COMBO | {progressed} | {int((ab_after > 0).sum())} | " in text
    assert "| CHEMO |" not in text.split("## Treatment beyond progression")[1].split("##")[0]


@pytest.mark.parametrize("value, beyond", [("true", {"antibody", "chemo"}), ("false", set()),
                                           ("[antibody]", {"antibody"})])
def test_treat_beyond_progression_values(tmp_path, value, beyond):
    path = tmp_path / "d.yaml"
    path.write_text(open(DESIGN).read().replace("  COMBO:\n", f"  COMBO:\n    treat_beyond_progression: {value}\n"))
    arm = load_trial(path).arms["COMBO"]
    assert set(arm.treat_beyond_progression) == beyond
    doses = [d for regimen in arm.regimens(365.0).values() for d in regimen.doses]
    assert {d.drug for d in doses if d.until_confirmed_progression} == beyond
    assert {d.drug for d in doses if d.until_progression} == {"antibody", "chemo"} - beyond


def test_bad_designs_are_reported(tmp_path, model):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmodel: trial_model\ndata_cut_months: 12\n"
                   "scans: [{from_week: 0, every_weeks: 6}]\ncomparisons: [A vs B]\n"
                   "arms:\n  A:\n    phases: [{cycle_days: 21, cycles: 0, doses: [{drug: chemo, amount: 1}]}]\n")
    with pytest.raises(SpecError) as err:
        load_trial(bad)
    text = str(err.value)
    assert "bad.yaml:5: comparison 'A vs B': no arm 'B'" in text
    assert "'cycles' must be a positive integer" in text
    unknown = tmp_path / "unknown_drug.yaml"
    unknown.write_text(open(DESIGN).read().replace("drug: antibody", "drug: antibodie"))
    with pytest.raises(SimulationError, match=r"doses \['antibodie'\], which model 'trial_model' does not declare"):
        run_trial(load_trial(unknown), model=model, patients_per_arm=5)
    beyond = tmp_path / "beyond.yaml"
    beyond.write_text(open(DESIGN).read().replace("  COMBO:\n", "  COMBO:\n    treat_beyond_progression: [antibodie]\n"))
    with pytest.raises(SpecError) as err:
        load_trial(beyond)
    assert str(err.value).endswith(f"{beyond}:22: arm 'COMBO': treats 'antibodie' beyond progression but gives no "
                                   "'antibodie' (did you mean 'antibody'?)")


@pytest.mark.parametrize("value", ["0", "-3", "2.5", "many"])
def test_patient_counts_must_be_positive_integers(tmp_path, model, value):
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(DESIGN).read().replace("patients_per_arm: 150", f"patients_per_arm: {value}")
                   .replace("data_cut_months:", "solver: {max_steps: 0}\ndata_cut_months:"))
    with pytest.raises(SpecError) as err:
        load_trial(bad)
    shown = repr(2.5) if value == "2.5" else (repr(value) if value == "many" else value)
    assert (f"bad.yaml:6: trial: 'patients_per_arm' must be an integer >= 1, got {shown} "
            "(e.g. 'patients_per_arm: 100')") in str(err.value)
    assert "solver: 'max_steps' must be an integer >= 1, got 0 (e.g. 'max_steps: 100000')" in str(err.value)


def test_zero_patients_is_an_error_not_the_default(model):
    with pytest.raises(SimulationError, match="patients_per_arm must be an integer >= 1, got 0"):
        run_trial(load_trial(DESIGN), model=model, patients_per_arm=0)
    result = CliRunner().invoke(app, ["trial", DESIGN, "--patients", "0"])
    assert result.exit_code == 2 and "greater than or equal to 1" in " ".join(result.output.split())


def test_cli_trial_writes_results_and_report(tmp_path):
    out, report = tmp_path / "trial.nc", tmp_path / "report"
    result = CliRunner().invoke(app, ["trial", DESIGN, "--patients", "40", "--seed", "1",
                                      "--out", str(out), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "COMBO_vs_CHEMO: HR PFS" in result.output
    assert "patients drawn from the spec's priors (uncalibrated)" in " ".join(result.output.split())
    ds = ie.load_result(out)
    assert ds.attrs["cohort_source"] == "the spec's priors (uncalibrated)"
    assert ds.sizes["patient"] == 40 and set(ds.arm.values) == {"COMBO", "CHEMO"}
    assert (report / "report.md").is_file()
    for arm in ds.arm.values:       # the printed medians are the saved ones, NR where not reached
        pfs, os_ = (float(ds[f"{e}_median_months"].sel(arm=arm)) for e in ("pfs", "os"))
        shown = ["NR" if np.isinf(v) else f"{v:.1f}" for v in (pfs, os_)]
        assert re.search(rf"{arm}\s*│\s*{re.escape(shown[0])}\s*│\s*{re.escape(shown[1])}\s*│", result.output), arm


def test_medians_not_reached_print_as_nr():
    from immunoedit_models.trials.report import number_text

    assert [number_text(np.inf), number_text(np.nan), number_text(12.345), number_text(0.5, "{:.0%}")] == [
        "NR", "NA", "12.3", "50%"]


def test_single_arm_trial_runs_and_reports(tmp_path, model):
    """A single-arm design (like high_dose_il2): per-arm summaries, no comparisons, a report."""
    from immunoedit_models.trials.report import write_report

    text = open(DESIGN).read().replace("comparisons: [COMBO vs CHEMO]", "comparisons: []")
    text = text[:text.index("  COMBO:")] + text[text.index("  CHEMO:"):]
    design = tmp_path / "single.yaml"
    design.write_text(text.replace("model: trial_model.yaml",
                                   f"model: {Path('tests/specs/trial_model.yaml').resolve()}"))
    trial = run_trial(load_trial(design), model=model, patients_per_arm=40, seed=1)
    assert list(trial.arm.values) == ["CHEMO"] and "hr_pfs" not in trial
    km = KaplanMeierFitter().fit(trial.pfs_months.values[0], trial.pfs_event.values[0])
    assert float(trial.pfs_median_months.sel(arm="CHEMO")) == pytest.approx(km.median_survival_time_)
    assert write_report(trial, tmp_path / "report").is_file()
