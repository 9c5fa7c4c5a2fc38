"""Plots render: single trajectory and batch bands."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
    assert tumour_axis.get_yscale() == "log" and len(tumour_axis.collections) == 2  # two quantile bands
