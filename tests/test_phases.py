"""Phase labels and maps on kuznetsov_1994, against its analytic elimination boundary: the
tumour-free state is stable iff s/d > a/n (published_models.md §1.1: sigma/delta > alpha)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

import immunoedit_models as ie
from immunoedit_models.cli import app
from immunoedit_models.phases import PhaseCriteria, phase, phase_map, plot_phase_map, sneaks_through

A_OVER_N = 0.18 / 1.101e-7  # cells: s* = d * a / n


@pytest.fixture(scope="module")
def model():
    return ie.compile_model("kuznetsov_1994", backend="numba")


def test_single_runs_are_labelled(model):
    days = np.linspace(0, 3650, 201)
    held = ie.simulate(model, days, initial={"E": 1.5e6, "T": 1e7})  # spirals into B (8.2e6 cells)
    escaped = ie.simulate(model, days, params={"d": 0.2}, initial={"T": 1e6})  # grows to D
    cleared = ie.simulate(model, days, params={"s": 2e5}, initial={"T": 1e6})  # s/d > a/n
    assert [str(phase(ds).item()) for ds in (held, escaped, cleared)] == ["equilibrium", "escape", "elimination"]
    at_d = ie.simulate(model, days, initial={"E": 1e5, "T": 4e8})  # already large: settles at D
    assert str(phase(at_d).item()) == "equilibrium"
    assert str(phase(at_d, PhaseCriteria(escape_size=1e8)).item()) == "escape"


def test_elimination_boundary_matches_analytic_threshold(model):
    ds = phase_map(model, ("d", 0.01, 0.1), ("s", 1e3, 1e6), n=12, log_x=True, log_y=True,
                   days=3650, initial={"E": 3.2e5, "T": 1e6})
    s = ds["y"].values
    for j, d in enumerate(ds["x"].values):
        eliminated = ds["phase"].values[:, j] == "elimination"
        threshold = d * A_OVER_N
        assert not eliminated[s < threshold / 1.3].any(), f"d={d:.3g}"  # one grid step of slack
        assert eliminated[s > threshold * 1.3].all(), f"d={d:.3g}"
    fig = plot_phase_map(ds)
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_legend() is not None


def test_sneaking_through_is_read_from_increasing_inocula():
    assert sneaks_through(["escape", "equilibrium", "escape"])
    assert not sneaks_through(["elimination", "equilibrium", "escape"])


def test_failed_runs_are_labelled_failed(model):
    with pytest.warns(RuntimeWarning, match="1 of 2 runs failed"):
        ds = ie.simulate_batch(model, pd.DataFrame({"a": [0.18, np.nan]}), np.linspace(0, 10, 3))
    labels = phase(ds).values
    assert labels[1] == "failed" and labels[0] != "failed"


def test_phase_map_cli(tmp_path):
    out, data = tmp_path / "map.png", tmp_path / "map.nc"
    result = CliRunner().invoke(app, ["phase-map", "kuznetsov_1994", "--x", "d:0.01:0.5", "--y", "s:100:1e6",
                                      "--n", "8", "--initial", "T=1e6", "--out", str(out), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "elimination" in result.output and "escape" in result.output
    assert out.stat().st_size > 10_000
    grid = xr.open_dataset(data)
    assert grid["phase_code"].shape == (8, 8)
    grid.close()
    bad = CliRunner().invoke(app, ["phase-map", "kuznetsov_1994", "--x", "d-0.01-0.5", "--y", "s:1:2"])
    assert bad.exit_code == 1 and "must look like NAME:LOW:HIGH" in bad.output
