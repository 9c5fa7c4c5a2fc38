"""Plots render: single trajectory and batch bands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

import immunoedit_models as ie
from immunoedit_models.plots import plot_trajectories, save_figure


def test_single_and_batch_plots_render(tmp_path):
    model = ie.compile_model("benchmark_reference", backend="numba")
    days = np.arange(0.0, 91.0, 3.0)
    single = ie.simulate(model, days)
    batch = ie.simulate_batch(model, pd.DataFrame({"kkill": np.linspace(1.5, 4.5, 8)}), days)
    for ds, name in ((single, "single.png"), (batch, "batch.png")):
        fig = plot_trajectories(ds)
        assert len([ax for ax in fig.axes if ax.get_visible()]) == 10
        save_figure(fig, tmp_path / name)
        assert (tmp_path / name).stat().st_size > 20_000
    tumour_axis = plot_trajectories(batch, ["T"]).axes[0]
    assert len(tumour_axis.collections) == 2 and len(tumour_axis.lines) == 1  # two quantile bands, median
    assert tumour_axis.get_yscale() == "linear"  # T spans less than two decades here


def test_quantities_spanning_decades_get_a_log_axis():
    ds = xr.Dataset({"T": ("time", np.logspace(6, 10, 5), {"units": "cell", "kind": "state"})},
                    coords={"time": np.arange(5.0)})
    assert plot_trajectories(ds).axes[0].get_yscale() == "log"


def test_states_at_zero_throughout_are_named_not_drawn():
    """The melanoma model under nivolumab alone: the depots of relatlimab, aldesleukin and
    bempegaldesleukin and the IL-2 toxicity stay 0, so they get a footnote, not a panel."""
    model = ie.compile_model("immunoediting_melanoma", backend="numba")
    ds = ie.simulate(model, np.arange(0.0, 57.0, 7.0), regimen="nivolumab_q4w")
    states = [v for v in ds.data_vars if ds[v].attrs.get("kind") == "state"]
    zero = [v for v in states if not np.any(ds[v].values != 0)]
    assert "relatlimab_A1" in zero and "nivolumab_A1" not in zero
    fig = plot_trajectories(ds)
    drawn = [ax.get_title().split(" [")[0] for ax in fig.axes if ax.get_visible()]
    assert drawn == [v for v in states if v not in zero]
    assert fig.get_supxlabel() == f"0 throughout, not drawn: {', '.join(zero)}"
    assert len([ax for ax in plot_trajectories(ds, zero).axes if ax.get_visible()]) == len(zero)
