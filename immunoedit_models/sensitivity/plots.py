"""Figures for sensitivity results: tornado (local, Morris), Sobol bars with CIs, indices over time."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ..errors import SimulationError


def _panels(n: int, ncols: int, width: float, height: float, title: str) -> tuple[Figure, np.ndarray]:
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return fig, axes


def _at_time(ds: xr.Dataset, time: float | None) -> tuple[xr.Dataset, str]:
    """Time-resolved results at `time` (default the last), and a label for it."""
    if "time" not in ds.dims:
        return ds, ""
    t = float(ds["time"].values[-1]) if time is None else float(time)
    return ds.sel(time=t, method="nearest"), f" at day {float(ds['time'].sel(time=t, method='nearest')):g}"


def _title(ds: xr.Dataset, what: str) -> str:
    return f"{ds.attrs.get('model', '')}: {what}"


def plot_tornado(ds: xr.Dataset, time: float | None = None, top: int = 15, ncols: int = 2) -> Figure:
    """Horizontal bars per output, largest first: local `S` (signed) or Morris `mu_star` (with its
    CI as error bars and sigma as a marker). Time-resolved results are shown at `time` (default the
    last output time). `top` limits the parameters shown per output."""
    kind = ds.attrs.get("analysis")
    if kind not in ("local", "morris"):
        raise SimulationError(f"a tornado plot shows local or Morris results, got '{kind}' (use plot_sobol)")
    ds, when = _at_time(ds, time)
    value = "S" if kind == "local" else "mu_star"
    label = "d ln y / d ln p" if kind == "local" else "mu* (|elementary effect|)"
    outputs = list(ds["output"].values)
    fig, axes = _panels(len(outputs), ncols, 5.0, 0.35 * min(top, ds.sizes["param"]) + 1.4,
                        _title(ds, f"{'local sensitivities' if kind == 'local' else 'Morris screening'}{when}"))
    for ax, out in zip(axes, outputs):
        row = ds.sel(output=out)
        v = row[value].values
        order = np.argsort(-np.nan_to_num(np.abs(v), nan=-1.0))[:top][::-1]
        y = np.arange(len(order))
        colours = np.where(v[order] >= 0, "C0", "C3")
        xerr = row["mu_star_conf"].values[order] if kind == "morris" else None
        ax.barh(y, v[order], xerr=xerr, color=colours, alpha=0.85, capsize=2)
        if kind == "morris":
            ax.plot(row["sigma"].values[order], y, "k|", ms=10, label="sigma")
            ax.legend(fontsize=8, loc="lower right")
        ax.set_yticks(y, [str(p) for p in ds["param"].values[order]], fontsize=8)
        ax.axvline(0.0, color="k", lw=0.6)
        ax.set_xlabel(label)
        ax.set_title(str(out), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    return fig


def plot_sobol(ds: xr.Dataset, time: float | None = None, ncols: int = 2) -> Figure:
    """Grouped bars of first-order (S1) and total (ST) Sobol indices per output with their
    bootstrap CIs; time-resolved results at `time` (default the last output time)."""
    if ds.attrs.get("analysis") != "sobol":
        raise SimulationError(f"plot_sobol shows Sobol results, got '{ds.attrs.get('analysis')}'")
    ds, when = _at_time(ds, time)
    outputs = list(ds["output"].values)
    params = [str(p) for p in ds["param"].values]
    fig, axes = _panels(len(outputs), ncols, max(4.0, 0.6 * len(params) + 2.0), 3.2,
                        _title(ds, f"Sobol indices (n = {ds.attrs.get('n')}, "
                                   f"{ds.attrs.get('conf_level', 0.95):.0%} CI){when}"))
    x = np.arange(len(params))
    for ax, out in zip(axes, outputs):
        row = ds.sel(output=out)
        for shift, key, colour in ((-0.2, "S1", "C0"), (0.2, "ST", "C1")):
            ax.bar(x + shift, row[key].values, width=0.4, yerr=row[f"{key}_conf"].values, color=colour,
                   capsize=2, label=key)
        ax.set_xticks(x, params, rotation=45 if len(params) > 6 else 0, ha="right" if len(params) > 6 else "center",
                      fontsize=8)
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_title(str(out), fontsize=10)
        ax.set_ylabel("index")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    return fig


def plot_time_resolved(ds: xr.Dataset, variable: str | None = None, ncols: int = 2, top: int = 8) -> Figure:
    """Indices over time, one panel per output and one line per parameter (the `top` largest by
    peak magnitude), with CI bands where the result has them. variable: default ST (Sobol),
    mu_star (Morris) or S (local)."""
    if "time" not in ds.dims:
        raise SimulationError("this result has no time dimension: analyse a time-resolved output (e.g. 'T')")
    kind = ds.attrs.get("analysis")
    variable = variable or {"sobol": "ST", "morris": "mu_star", "local": "S"}.get(kind, "S")
    if variable not in ds:
        raise SimulationError(f"the result has no variable '{variable}'; it has {', '.join(ds.data_vars)}")
    outputs = list(ds["output"].values)
    fig, axes = _panels(len(outputs), ncols, 5.0, 3.2, _title(ds, f"{variable} over time"))
    t = ds["time"].values
    for ax, out in zip(axes, outputs):
        block = ds[variable].sel(output=out).transpose("time", "param").values
        peak = np.nanmax(np.abs(np.where(np.isfinite(block), block, np.nan)), axis=0, initial=0.0)
        for j in np.argsort(-np.nan_to_num(peak, nan=-1.0))[:top]:
            line, = ax.plot(t, block[:, j], lw=1.4, label=str(ds["param"].values[j]))
            if f"{variable}_conf" in ds:
                half = ds[f"{variable}_conf"].sel(output=out).transpose("time", "param").values[:, j]
                ax.fill_between(t, block[:, j] - half, block[:, j] + half, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(str(out), fontsize=10)
        ax.set_xlabel(f"time [{ds['time'].attrs.get('units', 'day')}]")
        ax.set_ylabel({"S": "S = d ln y / d ln p", "mu_star": "mu*"}.get(variable, variable))
        ax.legend(fontsize=7, ncols=2)
        ax.grid(alpha=0.3)
    return fig


def plot_sensitivity(ds: xr.Dataset) -> Figure:
    """The natural figure for a result: indices over time when time-resolved, else Sobol bars or
    a tornado."""
    if "time" in ds.dims:
        return plot_time_resolved(ds)
    return plot_sobol(ds) if ds.attrs.get("analysis") == "sobol" else plot_tornado(ds)
