"""Immunoediting phases: label trajectories elimination / equilibrium / escape, and map them.

Criteria (on the tumour variable, default 'T', over the simulated horizon; `PhaseCriteria`):
- elimination: the tumour ends below `extinction` (default 1 cell);
- escape: the tumour ends above `escape_fold` x its initial size, or above `escape_size` (an
  absolute burden, when given), or is still growing at the end (log-slope over the last `window`
  fraction of the horizon above `growth_rate` per day) while larger than initially;
- equilibrium: anything else (the tumour persists, bounded and not growing);
- failed: the run's status is not 0 (see the result's status meanings).
'Sneaking through' is a statement about several inocula, see `sneaks_through` and
`inoculum_ladder`. A bounded tumour that keeps oscillating (limit cycles, as in Kirschner & Panetta
1998) is an equilibrium in this reading; `oscillation` measures its period and amplitude.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from scipy.signal import find_peaks

from .errors import SimulationError
from .spec.expressions import suggest

PHASES = ("elimination", "equilibrium", "escape", "failed")
COLOURS = ("#4daf4a", "#377eb8", "#e41a1c", "#999999")
#: How to name the tumour variable, in Python and on the command line.
TUMOUR_HINT = "name the tumour variable with PhaseCriteria(tumour=...) (CLI: --tumour)"


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
        raise SimulationError(f"no variable '{criteria.tumour}' in the result: {TUMOUR_HINT}")
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


def inoculum_ladder(model, inocula: Sequence[float], escape_size: float, tumour: str = "T",
                    days: float = 3650.0, initial: dict[str, float] | None = None,
                    params: dict[str, float] | None = None, regimen: Any = None, **solver: Any) -> xr.Dataset:
    """Challenge the model with each inoculum (tumour cells at day 0) and label each outcome.

    inocula: tumour sizes in the tumour state's unit, increasing. escape_size: the burden that
    counts as escape (e.g. a lethal or clinically detectable size): an inoculum settling above it
    escapes whatever its own size, and a small one growing into a bounded dormant state below it is
    held (escape_fold plays no part here). `initial` sets the other states and
    `params` the parameters of every run. Returns `phase` and `final_tumour` over `inoculum`, with
    attrs `sneaks_through` (1 when a small inoculum escapes while a larger one is held) and the
    criteria.
    """
    from .simulate import simulate_batch

    sizes = np.asarray(inocula, dtype=float)
    if sizes.ndim != 1 or sizes.size < 2 or np.any(np.diff(sizes) <= 0):
        raise SimulationError(f"inocula must be at least two increasing sizes, got {sizes.tolist()}")
    criteria = PhaseCriteria(tumour=tumour, escape_fold=np.inf, escape_size=escape_size)
    n = sizes.size
    table = pd.DataFrame({k: np.full(n, float(v)) for k, v in (params or {}).items()}, index=range(n))
    starts = pd.DataFrame({**{k: np.full(n, float(v)) for k, v in (initial or {}).items()}, tumour: sizes})
    batch = simulate_batch(model, table, np.linspace(0.0, days, 401), initial=starts, regimen=regimen, **solver)
    labels = phase(batch, criteria).values
    return xr.Dataset({"phase": (("inoculum",), labels.astype(object)),
                       "final_tumour": (("inoculum",), batch[tumour].values[:, -1])},
                      coords={"inoculum": sizes},
                      attrs={**batch.attrs, "sneaks_through": int(sneaks_through(list(labels))),
                             "criteria": repr(criteria), "days": days})


def oscillation(ds: xr.Dataset, variable: str = "T", log: bool = True, settle: float = 0.5,
                prominence: float = 1.0, drift_tolerance: float = 1e-3) -> xr.Dataset:
    """Period and amplitude of sustained oscillations of `variable` in each run.

    Only the part of the horizon after the first `settle` fraction is read (transients excluded).
    Peaks and troughs are those with at least `prominence` (in ln units when log=True); their times
    are refined by a parabola through the three grid points around each, so the output grid need
    only resolve the cycle. Returns over the batch dims: `period` (days, mean peak-to-peak),
    `peak` and `trough` (mean heights, in ln units when log), `amplitude` (peak - trough),
    `n_peaks`, `drift` (change of peak height per cycle) and `sustained` (at least 3 peaks and
    |drift| <= drift_tolerance); NaN where fewer than 2 peaks are found.
    """
    if variable not in ds:
        raise SimulationError(f"no variable '{variable}' in the result; oscillation(ds, variable=...) names one")
    values = ds[variable]
    time = ds["time"].values
    keep = time >= time[0] + settle * (time[-1] - time[0])
    batch_dims = [d for d in values.dims if d != "time"]
    stacked = values.transpose(*batch_dims, "time").values.reshape(-1, time.size)[:, keep]
    rows = [_cycle_statistics(time[keep], np.log(np.maximum(row, 1e-300)) if log else row, prominence,
                              drift_tolerance) for row in stacked]
    shape = [values.sizes[d] for d in batch_dims]
    coords = {d: values.coords[d] for d in batch_dims if d in values.coords}
    names = ("period", "peak", "trough", "amplitude", "n_peaks", "drift", "sustained")
    out = {name: (batch_dims, np.array([r[i] for r in rows]).reshape(shape)) for i, name in enumerate(names)}
    result = xr.Dataset(out, coords=coords, attrs={"variable": variable, "log": int(log), "settle": settle})
    result["period"].attrs["units"] = ds.attrs.get("time_unit", "day")
    return result


def _cycle_statistics(t: np.ndarray, y: np.ndarray, prominence: float,
                      drift_tolerance: float) -> tuple[float, float, float, float, int, float, bool]:
    peaks, _ = find_peaks(y, prominence=prominence)
    troughs, _ = find_peaks(-y, prominence=prominence)
    if peaks.size < 2:
        return (np.nan, np.nan, np.nan, np.nan, int(peaks.size), np.nan, False)
    times, heights = _refine(t, y, peaks)
    period = float(np.mean(np.diff(times)))
    drift = float((heights[-1] - heights[0]) / (peaks.size - 1))
    trough = float(np.mean(_refine(t, y, troughs)[1])) if troughs.size else np.nan
    peak = float(np.mean(heights))
    return (period, peak, trough, peak - trough, int(peaks.size), drift,
            bool(peaks.size >= 3 and abs(drift) <= drift_tolerance))


def _refine(t: np.ndarray, y: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertex of the parabola through each extremum and its two neighbours (times, heights).

    Hand-written: scipy's find_peaks returns grid indices only, and a three-point vertex is all
    that is needed to turn a grid-limited period into an accurate one.
    """
    i = np.clip(index, 1, t.size - 2)
    t0, t1, t2 = t[i - 1], t[i], t[i + 1]
    y0, y1, y2 = y[i - 1], y[i], y[i + 1]
    d0, d2 = t0 - t1, t2 - t1
    denom = d0 * d2 * (d0 - d2)
    a = (d2 * (y0 - y1) - d0 * (y2 - y1)) / denom
    b = (d0**2 * (y2 - y1) - d2**2 * (y0 - y1)) / denom
    shift = np.where(a != 0, -b / (2 * np.where(a != 0, a, 1.0)), 0.0)
    shift = np.clip(shift, d0, d2)
    return t1 + shift, y1 + b * shift + a * shift**2


def _axis(spec: Any, log: bool, which: str) -> tuple[str, float, float]:
    """One axis (NAME, LOW, HIGH), checked: finite low < high, and low > 0 when log-spaced."""
    try:
        name, lo, hi = spec
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        raise SimulationError(f"{which} must be (NAME, LOW, HIGH) (CLI: --{which} NAME:LOW:HIGH), "
                              f"got {spec!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise SimulationError(f"{which} axis '{name}': the range needs finite low < high, got [{lo:g}, {hi:g}]")
    if log and lo <= 0:
        raise SimulationError(f"{which} axis '{name}': a log-spaced axis needs low > 0, got [{lo:g}, {hi:g}]; "
                              f"space it linearly (log_{which}=False) or give a positive range")
    return name, lo, hi


def _spaced(axis: tuple[str, float, float], n: int, log: bool) -> np.ndarray:
    _, lo, hi = axis
    return np.geomspace(lo, hi, n) if log else np.linspace(lo, hi, n)


def _check_grid(model, xn: str, yn: str, n: Any, days: Any, tumour: str) -> None:
    """Refuse a phase map that could not be drawn or labelled, before any run."""
    if xn == yn:
        raise SimulationError(f"x and y must be different parameters, got '{xn}' for both")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise SimulationError(f"n (grid points per axis) must be an integer >= 2, got {n!r}")
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not (np.isfinite(days) and days > 0):
        raise SimulationError(f"days (the simulated horizon) must be a finite number > 0, got {days!r}")
    known = list(model.states) + list(model.output_names)
    if tumour not in known:
        hint = suggest(tumour, known)
        raise SimulationError(f"the tumour variable '{tumour}' is not a state, expression or observable of model "
                              f"'{model.name}'" + (f" ({hint})" if hint else f"; choose from {', '.join(known)}")
                              + f": {TUMOUR_HINT}")


def phase_map(model, x: tuple[str, float, float], y: tuple[str, float, float], n: int = 30,
              log_x: bool = False, log_y: bool = False, days: float = 3650.0,
              initial: dict[str, float] | None = None, regimen: Any = None,
              criteria: PhaseCriteria = PhaseCriteria(), **solver: Any) -> xr.Dataset:
    """Sweep two different parameters on an n x n grid (n >= 2) through the batch engine and label
    each run.

    x, y: (NAME, LOW, HIGH) with finite LOW < HIGH (LOW > 0 for a log-spaced axis). Returns a
    Dataset with `phase` (strings) and `phase_code` (index into PHASES) over (y, x), plus the
    final tumour size. `initial` sets the inoculum for every run. Inputs are checked before any run.
    """
    from .simulate import simulate_batch

    x_axis, y_axis = _axis(x, log_x, "x"), _axis(y, log_y, "y")
    xn, yn = x_axis[0], y_axis[0]
    _check_grid(model, xn, yn, n, days, criteria.tumour)
    xs, ys = _spaced(x_axis, n, log_x), _spaced(y_axis, n, log_y)
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
