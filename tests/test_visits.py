"""Visit windows: visit days drawn around the scheduled scans, the design's `visits:` section, their
estimate from event times, and trials whose kernel scans each patient on their own visit days.

References: the generating values of synthetic data, the design's own schedule, the in-kernel
progression day against the Python RECIST readout, and the same trial without visit offsets.
"""

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import immunoedit_models as ie
from immunoedit_models.errors import FitError, SpecError
from immunoedit_models.trials import load_trial, run_trial
from immunoedit_models.trials.design import DAYS_PER_MONTH
from immunoedit_models.trials.visits import VisitTiming, fit_visit_offsets

DESIGN = "tests/specs/trial_small.yaml"


def test_visit_days_spread_around_the_schedule_and_keep_their_order():
    scan_day = np.r_[0.0, np.arange(1, 9) * 42.0, 336.0 + np.arange(1, 20) * 63.0]
    timing = VisitTiming(2.0, 5.0, 20.0)
    visit = timing.days(scan_day, (4, 5000), np.random.default_rng(1))
    assert visit.shape == (4, 5000, scan_day.size)
    np.testing.assert_array_equal(visit[..., 0], 0.0)                      # baseline: day 0
    offset = (visit - scan_day)[..., 1:]
    assert offset.mean() == pytest.approx(2.0, abs=0.02)                    # 0.5 million draws
    assert offset.std() == pytest.approx(5.0, rel=0.01)
    assert np.all(np.diff(visit, axis=-1) > 0)
    wide = VisitTiming(0.0, 30.0, 15.0).days(scan_day, (1000,), np.random.default_rng(2))
    assert np.abs(wide - scan_day).max() == 15.0                            # clipped at the limit
    unlimited = VisitTiming(0.0, 30.0).days(scan_day, (1000,), np.random.default_rng(2))
    assert np.abs(unlimited - scan_day).max() == 20.0       # at most half the 42-day interval, less a day
    np.testing.assert_array_equal(VisitTiming().days(scan_day, (3,), np.random.default_rng(3)),
                                  np.broadcast_to(scan_day, (3, scan_day.size)))


def test_offsets_are_recovered_from_synthetic_event_days():
    # half the events at visits (scheduled day + normal(3, 5)), half uniform within 21 days
    rng = np.random.default_rng(0)
    scan_day = np.r_[0.0, np.arange(1, 30) * 42.0]
    n = 4000
    nearest = scan_day[rng.integers(1, scan_day.size, n)]
    at_visit = rng.random(n) < 0.5
    event_day = nearest + np.where(at_visit, rng.normal(3.0, 5.0, n), rng.uniform(-21.0, 21.0, n))
    fit = fit_visit_offsets(event_day, scan_day)
    assert fit.n_events == n
    assert fit.mean_days == pytest.approx(3.0, abs=0.4)       # ~3 standard errors at n = 4000
    assert fit.sd_days == pytest.approx(5.0, abs=0.5)
    assert fit.weight == pytest.approx(0.5, abs=0.05)
    with pytest.raises(FitError, match=re.escape(
            "fit_visit_offsets: 3 events lie within 21 days of a scheduled scan; at least 10 are needed "
            "(pass event days, not months)")):
        fit_visit_offsets(np.array([40.0, 85.0, 130.0]), scan_day)


def write_design(tmp_path, visits: str) -> Path:
    path = tmp_path / "visits.yaml"
    text = Path(DESIGN).read_text().replace("recist:", visits + "recist:")
    path.write_text(text.replace("model: trial_model.yaml", f"model: {Path(DESIGN).parent.resolve()}/trial_model.yaml"))
    return path


def test_design_visits_are_read_and_checked(tmp_path):
    good = load_trial(write_design(tmp_path, "visits: {offset_mean_days: 1.5, offset_sd_days: 3, source: protocol}\n"))
    assert good.visits == VisitTiming(1.5, 3.0, 20.0, "protocol")
    assert load_trial(DESIGN).visits.on_schedule
    for visits, message in (
            ("visits: {offset_mean_days: 2, offset_sd_days: 7}\n",
             "visits.yaml:12: visits: offsets of 2 +- 3 x 7 days reach beyond +-20 days, half the shortest "
             "scan interval less a day, where visits would swap order (offsets are small next to the scan "
             "interval: a protocol window is typically a week)"),
            ("visits: {offset_mean_days: 0, offset_sd_days: -1}\n",
             "visits.yaml:12: visits: 'offset_sd_days' must be >= 0, got -1"),
            ("visits: {offset_sd_day: 2}\n", "visits.yaml:12: visits: unknown key 'offset_sd_day'")):
        with pytest.raises(SpecError) as err:
            load_trial(write_design(tmp_path, visits))
        assert message in str(err.value), str(err.value)


@pytest.fixture(scope="module")
def model():
    return ie.compile_model("tests/specs/trial_model.yaml")


@pytest.fixture(scope="module")
def trials(model):
    design = load_trial(DESIGN)
    return (run_trial(replace(design, visits=VisitTiming(2.0, 5.0, 20.0)), model=model, seed=3),
            run_trial(design, model=model, seed=3))


def test_trial_reads_each_patient_on_their_visit_days(model, trials):
    trial, on_schedule = trials
    assert "visit_day" not in on_schedule
    offset = trial.visit_day.values - trial.scan_day.values
    assert np.all(offset[..., 0] == 0.0) and np.abs(offset[..., 1:]).max() <= 20.0
    assert offset[..., 1:].std() > 3.0
    # the kernel's progression (where dosing stopped) is a visit day, and is the readout's
    pd_day = trial.pd_day.values
    seen = np.isfinite(pd_day)
    assert seen.sum() > 50
    np.testing.assert_array_equal(pd_day[seen], trial.progression_day_kernel.values[seen])
    pd_visit = (trial.visit_day.values == pd_day[..., None]).sum(axis=-1)
    np.testing.assert_array_equal(pd_visit[seen], 1)
    assert np.all(np.nanmax(trial.dose_day.values, axis=-1)[seen] < pd_day[seen])
    pfs_day = trial.pfs_months.values * DAYS_PER_MONTH
    np.testing.assert_allclose(pfs_day[seen], pd_day[seen], rtol=1e-12)
    # the same patients, arms and deaths' random numbers: visit offsets have their own stream
    for name in ("pdl1_high", "entry_months", "followup_months"):
        np.testing.assert_array_equal(trial[name].values, on_schedule[name].values)
    scheduled = np.isin(np.round(pfs_day[seen], 6), np.round(trial.scan_day.values, 6))
    assert scheduled.mean() < 0.1                   # progression is dated off the schedule now
    assert trial.attrs["visits"] == "scheduled day + normal(2, 5) days, clipped to +-20"
    assert on_schedule.attrs["visits"] == "on the scheduled scan days"
    again = run_trial(replace(load_trial(DESIGN), visits=VisitTiming(2.0, 5.0, 20.0)), model=model, seed=3)
    for name in ("visit_day", "pfs_months", "os_months", "best_response"):
        np.testing.assert_array_equal(trial[name].values, again[name].values)


def test_spider_plot_uses_visit_days(trials):
    from immunoedit_models.trials.plots import plot_spider
    trial = trials[0]
    fig = plot_spider(trial, "COMBO", max_patients=20)
    x = np.concatenate([segment[:, 0] for segment in fig.axes[0].collections[0].get_segments()])
    days = trial.visit_day.sel(arm="COMBO").values / DAYS_PER_MONTH
    assert np.all(np.isin(np.round(x, 9), np.round(days, 9)))
    assert not np.all(np.isin(np.round(x, 9), np.round(trial.scan_day.values / DAYS_PER_MONTH, 9)))
    assert re.match(r"COMBO: change in sum of diameters \(\d+ patients\)", fig.axes[0].get_title())
