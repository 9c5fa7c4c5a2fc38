"""matplotlib figures for simulation results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import xarray as xr
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure

from .errors import ResultError


def plot_trajectories(ds: xr.Dataset, variables: Sequence[str] | None = None, ncols: int = 3) -> Figure:
    """One panel per variable over time; a batch is drawn as median with 5-95 % and 25-75 % bands.

    variables: default every state, less those that stay 0 throughout (e.g. the depots of drugs
    the regimen does not give), which a footnote names. Cell counts and other quantities spanning
    decades are drawn on a log axis.
    """
    if variables:
        names, zero = list(variables), []
    else:
        states = [v for v in ds.data_vars if ds[v].attrs.get("kind") == "state"]
        names = [v for v in states if np.any(ds[v].values != 0)] or states
        zero = [v for v in states if v not in names]
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 2.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    t = ds["time"].values
    for ax, name in zip(axes, names):
        da = ds[name]
        if "sample" in da.dims:
            q = np.nanquantile(da.values, [0.05, 0.25, 0.5, 0.75, 0.95], axis=da.dims.index("sample"))
            ax.fill_between(t, q[0], q[4], alpha=0.2, color="C0", lw=0, label="5-95 %")
            ax.fill_between(t, q[1], q[3], alpha=0.35, color="C0", lw=0, label="25-75 %")
            ax.plot(t, q[2], color="C0", lw=1.5, label="median")
            values = q[2]
        else:
            ax.plot(t, da.values, color="C0", lw=1.5)
            values = da.values
        finite = values[np.isfinite(values)]
        if finite.size and np.all(finite > 0) and finite.max() / max(finite.min(), 1e-300) > 100:
            ax.set_yscale("log")
        unit = da.attrs.get("units", "")
        ax.set_title(f"{name} [{unit}]" if unit else name, fontsize=10)
        ax.set_xlabel(f"time [{ds['time'].attrs.get('units', 'day')}]")
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle(f"{ds.attrs.get('model', '')} — {ds.attrs.get('regimen', '')}", fontsize=11)
    if zero:
        fig.supxlabel(f"0 throughout, not drawn: {', '.join(zero)}", fontsize=9, color="0.35")
    return fig


def figure_target(path: str | Path) -> Path:
    """path, checked before any work: its suffix must name a format matplotlib writes."""
    path = Path(path)
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in formats:
        raise ResultError(f"cannot write a figure to '{path}': name it *.png, *.pdf or *.svg "
                          f"(matplotlib writes {', '.join(sorted(formats))})")
    if path.is_dir():
        raise ResultError(f"'{path}' is a directory: give a file name for the figure")
    return path


def save_figure(fig: Figure, path: str | Path) -> None:
    """Write a figure (PNG/PDF/SVG by suffix) at 120 dpi."""
    fig.savefig(figure_target(path), dpi=120)
