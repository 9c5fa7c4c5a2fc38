"""Trial figures render with the right content, and the report holds the numbers and the figures."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import LineCollection

from immunoedit_models.trials.analysis import summarise_trial
from immunoedit_models.trials.endpoints import Censoring, SurvivalParameters, patient_outcomes
from immunoedit_models.trials.plots import RESPONSE_COLOURS, plot_forest, plot_km, plot_spider, plot_waterfall
from immunoedit_models.trials.report import write_report

matplotlib.use("Agg")
SCANS = np.r_[0.0, np.arange(1, 9) * 42.0, 336.0 + np.arange(1, 13) * 63.0]


@pytest.fixture(scope="module")
def trial():
    """A small two-arm trial from analytic shrink-and-regrow SLD courses (mm) through patient_outcomes."""
    rng = np.random.default_rng(12)
    n = 300
    shrink = np.stack([rng.lognormal(np.log(0.012), 0.6, n), rng.lognormal(np.log(0.006), 0.6, n)])
    regrow = rng.lognormal(np.log(0.004), 0.5, (2, n))
    resistant = rng.uniform(0.02, 0.4, (2, n))
    fraction = resistant[..., None]
    rel = fraction * np.exp(regrow[..., None] * SCANS) + (1 - fraction) * np.exp(-shrink[..., None] * SCANS)
    sld = rng.uniform(20.0, 150.0, (2, n, 1)) * rel ** (1 / 3)
    ds = patient_outcomes(sld, SCANS, np.zeros((2, n, 2)), np.array([0.0, 1200.0]), rng, Censoring(18.0, 36.0),
                          survival=SurvivalParameters(np.inf, 0.005, 0.08))
    ds = ds.assign_coords(arm=["EXP", "CTL"])
    ds["pdl1_high"] = (("arm", "patient"), rng.random((2, n)) < 0.3)
    ds.attrs.update(seed=12, spec_hash="0123abcd", trial="synthetic",
                    versions=json.dumps({"numpy": np.__version__}))
    return ds


def test_km_plot_with_at_risk_table_and_observed_overlay(trial):
    observed = {"CTL": (np.array([1.0, 2.0, 5.0, 9.0]), np.array([1, 0, 1, 1]))}
    fig = plot_km(trial, "pfs", observed=observed, risk_months=[0, 6, 12])
    curves, table = fig.axes
    assert len(curves.lines) == 3 and len(curves.collections) == 2           # two arms + overlay, two CI bands
    counts = [int(t.get_text()) for t in table.texts]
    months = trial.pfs_months.values
    expected = [(months[a] >= m).sum() for a in range(2) for m in (0, 6, 12)]
    assert counts == expected and counts[0] == 300
    fig.canvas.draw()


def test_waterfall_bars_sorted_and_coloured_by_response(trial):
    fig = plot_waterfall(trial, "EXP")
    bars = fig.axes[0].patches
    heights = np.array([b.get_height() for b in bars])
    change = trial.best_pct_change.sel(arm="EXP").values
    assert len(bars) == np.isfinite(change).sum()
    np.testing.assert_allclose(heights, np.sort(change[np.isfinite(change)])[::-1])
    worst = np.nanargmax(change)
    worst_response = trial.best_response.sel(arm="EXP").values[worst]
    assert matplotlib.colors.to_hex(bars[0].get_facecolor()) == RESPONSE_COLOURS[worst_response]
    thinned = plot_waterfall(trial, "EXP", max_bars=50).axes[0].patches
    assert len(thinned) <= 50


def test_spider_plot_lines_stop_at_progression(trial):
    fig = plot_spider(trial, "CTL", max_patients=40)
    lines = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)][0]
    segments = lines.get_segments()
    assert len(segments) == 40
    pd_day = trial.pd_day.sel(arm="CTL").values
    first = np.flatnonzero(np.isfinite(trial.sld_mm.sel(arm="CTL").values[:, 1:]).any(axis=1))[:40]
    assert np.isfinite(pd_day[first]).sum() >= 5                               # the check below bites
    for seg, i in zip(segments, first):
        if np.isfinite(pd_day[i]):
            assert seg[-1, 0] == pytest.approx(pd_day[i] / 30.4375)          # last point: the PD visit


def test_forest_plot_has_one_row_per_subgroup(trial):
    summary = summarise_trial(trial, [("EXP", "CTL")])
    fig = plot_forest(summary, "pfs")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0].startswith("all (n=600)") and len(labels) == 3
    texts = [t.get_text() for t in ax.texts]
    hr = summary.hr_pfs.item()
    assert texts[0].startswith(f"{hr:.2f} (")


def test_report_writes_tables_figures_and_provenance(trial, tmp_path):
    summary = summarise_trial(trial, [("EXP", "CTL")])
    path = write_report(xr.merge([trial, summary], combine_attrs="override"), tmp_path / "report")
    text = path.read_text()
    for arm in ("EXP", "CTL"):
        median = summary.pfs_median_months.sel(arm=arm).item()
        assert f"| {arm} | 300 | {median:.1f} (" in text
        assert f"{summary.orr.sel(arm=arm).item():.1%}" in text
    hr, lower, upper = (summary[name].item() for name in ("hr_pfs", "hr_pfs_lower", "hr_pfs_upper"))
    assert f"{hr:.2f} ({lower:.2f} to {upper:.2f})" in text
    assert "| seed | 12 |" in text and "| spec_hash | 0123abcd |" in text and "version: numpy" in text
    html = (path.parent / "report.html").read_text()
    assert f"{summary.hr_pfs.item():.2f}" in html and html.count("<img") == text.count("![")
    for name in ("km_pfs.png", "km_os.png", "waterfall_EXP.png", "spider_CTL.png", "forest_pfs_EXP_vs_CTL.png"):
        assert f"]({name})" in text
        assert (path.parent / name).stat().st_size > 10_000
    with pytest.raises(ValueError, match="comparisons"):
        write_report(trial, tmp_path / "bare")
