"""Immunoediting phases: label trajectories elimination / equilibrium / escape, and map them.

Criteria (on the tumour variable, default 'T', over the simulated horizon; `PhaseCriteria`):
- elimination: the tumour ends below `extinction` (default 1 cell);
- escape: the tumour ends above `escape_fold` x its initial size, or above `escape_size` (an
  absolute burden, when given), or is still growing at the end (log-slope over the last `window`
  fraction of the horizon above `growth_rate` per day) while larger than initially;
- equilibrium: anything else (the tumour persists, bounded and not growing);
- failed: the run's status is not 0 (see the result's status meanings).
'Sneaking through' is a statement about several inocula, see `sneaks_through`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from .errors import SimulationError

PHASES = ("elimination", "equilibrium", "escape", "failed")
COLOURS = ("#4daf4a", "#377eb8", "#e41a1c", "#999999")


@dataclass(frozen=True)
class PhaseCriteria:
    """Thresholds of the phase labels (tumour in the state's unit, rates per day)."""

    tumour: str = "T"
    extinction: float = 1.0
    escape_fold: float = 10.0
    escape_size: float | None = None
    window: float = 0.2
    growth_rate: float = 1e-3


def phase(ds: xr.Dataset, criteria: PhaseCriteria = PhaseCriteria()) -> xr.DataArray:
    """Phase label of each run in a simulate/simulate_batch result (strings over the batch dims)."""
    if criteria.tumour not in ds:
        raise SimulationError(f"no variable '{criteria.tumour}' in the result: set PhaseCriteria(tumour=...)")
    tumour = ds[criteria.tumour]
    time = ds["time"].values
    start_late = time[-1] - criteria.window * (time[-1] - time[0])
    late = tumour.sel(time=time[time >= start_late][0])
    first, last = tumour.isel(time=0), tumour.isel(time=-1)
    span = max(time[-1] - start_late, np.finfo(float).tiny)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (np.log(np.maximum(last, 1e-300)) - np.log(np.maximum(late, 1e-300))) / span
    large = last > (np.inf if criteria.escape_size is None else criteria.escape_size)
    code = xr.where(last < criteria.extinction, 0,
                    xr.where((last > criteria.escape_fold * first) | large
                             | ((slope > criteria.growth_rate) & (last > first)), 2, 1))
    code = xr.where(ds["status"] != 0, 3, code)
    return xr.DataArray(np.asarray(PHASES, dtype=object)[code.values], dims=code.dims, coords=code.coords,
                        name="phase", attrs={"criteria": repr(criteria)})


def sneaks_through(labels_by_inoculum: Sequence[str]) -> bool:
    """True when a small inoculum escapes while a larger one is held (inocula in increasing size)."""
    labels = list(labels_by_inoculum)
    for i, low in enumerate(labels):
        if low == "escape" and any(h in ("elimination", "equilibrium") for h in labels[i + 1:]):
            return True
    return False


def _axis(spec: tuple[str, float, float], n: int, log: bool) -> tuple[str, np.ndarray]:
    name, lo, hi = spec
    return name, (np.geomspace(lo, hi, n) if log else np.linspace(lo, hi, n))


def phase_map(model, x: tuple[str, float, float], y: tuple[str, float, float], n: int = 30,
              log_x: bool = False, log_y: bool = False, days: float = 3650.0,
              initial: dict[str, float] | None = None, regimen: Any = None,
              criteria: PhaseCriteria = PhaseCriteria(), **solver: Any) -> xr.Dataset:
    """Sweep two parameters on an n x n grid through the batch engine and label each run.

    Returns a Dataset with `phase` (strings) and `phase_code` (index into PHASES) over (y, x),
    plus the final tumour size. `initial` sets the inoculum for every run.
    """
    from .simulate import simulate_batch

    (xn, xs), (yn, ys) = _axis(x, n, log_x), _axis(y, n, log_y)
    gx, gy = np.meshgrid(xs, ys)
    params = pd.DataFrame({xn: gx.ravel(), yn: gy.ravel()})
    init = None if not initial else pd.DataFrame({k: np.full(len(params), v) for k, v in initial.items()})
    times = np.linspace(0.0, days, 201)
    batch = simulate_batch(model, params, times, initial=init, regimen=regimen, **solver)
    labels = phase(batch, criteria).values.reshape(n, n)
    codes = np.vectorize(PHASES.index)(labels)
    final = batch[criteria.tumour].isel(time=-1).values.reshape(n, n)
    return xr.Dataset({"phase": (("y", "x"), labels), "phase_code": (("y", "x"), codes),
                       "final_tumour": (("y", "x"), final)},
                      coords={"x": (("x",), xs, {"name": xn}), "y": (("y",), ys, {"name": yn})},
                      attrs={**batch.attrs, "x_name": xn, "y_name": yn, "days": days,
                             "log_x": int(log_x), "log_y": int(log_y), "criteria": repr(criteria)})


def plot_phase_map(ds: xr.Dataset) -> Figure:
    """The phase map as coloured regions with a legend of the phases present."""
    fig = Figure(figsize=(6.0, 4.8), layout="constrained")
    ax = fig.subplots()
    x, y = ds["x"].values, ds["y"].values
    ax.pcolormesh(x, y, ds["phase_code"].values, cmap=ListedColormap(COLOURS), vmin=-0.5,
                  vmax=len(PHASES) - 0.5, shading="nearest")
    for axis in ("x", "y"):
        if ds.attrs.get(f"log_{axis}"):
            getattr(ax, f"set_{axis}scale")("log")
    present = sorted(set(ds["phase_code"].values.ravel().tolist()))
    for code in present:
        ax.scatter([], [], color=COLOURS[code], marker="s", label=PHASES[code])
    ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(ds.attrs["x_name"])
    ax.set_ylabel(ds.attrs["y_name"])
    ax.set_title(f"{ds.attrs.get('model', '')}: phases after {ds.attrs['days']:g} days", fontsize=10)
    return fig
