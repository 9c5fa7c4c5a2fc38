"""The work behind `immunoedit sensitivity`: read the options, run the analysis, print a summary."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr
from rich.console import Console
from rich.table import Table

from ..errors import SimulationError
from .designs import LOG_WORDS
from .indices import check_on_failure
from .outputs import MAX_DAILY_DAYS, daily_grid

METHODS = ("sobol", "morris", "local")
SCALES = tuple(LOG_WORDS)
#: Default n per method: Sobol base samples (a power of two), Morris trajectories.
DEFAULT_N = {"sobol": 1024, "morris": 20}
#: ... when every run is a whole trial.
DEFAULT_TRIAL_N = {"sobol": 64, "morris": 10}


def parse_param(text: str) -> str | tuple[str, float, float]:
    """'NAME' (range from the spec) or 'NAME:LOW:HIGH'."""
    parts = text.split(":")
    if len(parts) == 1 and parts[0].strip():
        return parts[0].strip()
    try:
        name, low, high = parts
        return name.strip(), float(low), float(high)
    except ValueError:
        raise SimulationError(f"--param '{text}' must look like NAME or NAME:LOW:HIGH") from None


def day_grid(days: float | None) -> np.ndarray | None:
    """The daily output grid of --days (None: from the outputs)."""
    if days is None:
        return None
    if not (np.isfinite(days) and 0 < days <= MAX_DAILY_DAYS):
        raise SimulationError(f"--days must be a number of days in (0, {MAX_DAILY_DAYS}], got {days:g}")
    return daily_grid(days)


def run(spec: str, method: str, outputs: Sequence[str], params: Sequence[str], n: int | None, backend: str,
        seed: int, scale: str, days: float | None, regimen: str | None, rtol: float, atol: float,
        on_failure: str) -> xr.Dataset:
    """Compile `spec` and run one analysis (see `immunoedit sensitivity --help`)."""
    from .. import compile_model
    from .indices import morris, sobol
    from .local import local_sensitivity

    if method not in METHODS:
        raise SimulationError(f"--method must be one of {', '.join(METHODS)}, got '{method}'")
    if scale not in SCALES:
        raise SimulationError(f"--scale must be one of {', '.join(SCALES)}, got '{scale}'")
    check_on_failure(on_failure)
    parsed = [parse_param(p) for p in params]
    times = day_grid(days)
    model = compile_model(spec, backend=backend)
    if method == "local":
        if any(not isinstance(p, str) for p in parsed):
            raise SimulationError("local sensitivities are taken at the nominal values: give --param NAME "
                                  "without a range")
        return local_sensitivity(model, list(outputs) or None, parsed or None, times=times, regimen=regimen,
                                 rtol=rtol, atol=atol)
    if not outputs:
        raise SimulationError(f"{method} needs at least one --output (e.g. --output 'T@365')")
    run_analysis = sobol if method == "sobol" else morris
    return run_analysis(model, list(outputs), parsed or None, DEFAULT_N[method] if n is None else n, times=times,
                        log=scale, seed=seed, on_failure=on_failure, progress=True, regimen=regimen,
                        rtol=rtol, atol=atol)


def run_trial(design: str, method: str, endpoints: Sequence[str], params: Sequence[str], n: int | None,
              backend: str, seed: int, scale: str, patients: int | None, on_failure: str,
              calibration: dict) -> xr.Dataset:
    """Sobol or Morris indices of trial endpoints (`immunoedit sensitivity DESIGN --trial`); every
    run is a whole trial of `patients` per arm on one cohort; calibration: run_trial keywords."""
    from .trial import design_and_model, trial_morris, trial_sobol

    if method not in ("sobol", "morris"):
        raise SimulationError(f"--trial analyses are sobol or morris, got '{method}'")
    if scale not in SCALES:
        raise SimulationError(f"--scale must be one of {', '.join(SCALES)}, got '{scale}'")
    check_on_failure(on_failure)
    if not endpoints or not params:
        raise SimulationError("--trial needs at least one --output endpoint (e.g. 'pfs@12:ABCP') and one --param "
                              "NAME:LOW:HIGH (a parameter every patient shares)")
    trial_design, model = design_and_model(design, backend=backend)
    analyse = trial_sobol if method == "sobol" else trial_morris
    return analyse(trial_design, list(endpoints), [parse_param(p) for p in params],
                   DEFAULT_TRIAL_N[method] if n is None else n, log=scale, seed=seed,
                   on_failure=on_failure, progress=True, model=model, patients_per_arm=patients,
                   **calibration)


def summary(ds: xr.Dataset, console: Console) -> None:
    """One table per output (time-resolved results at their last time)."""
    kind = ds.attrs["analysis"]
    if "time" in ds.dims:
        ds = ds.isel(time=-1)
        console.print(f"time-resolved: indices at day {float(ds['time']):g} shown", highlight=False)
    columns = {"sobol": ["S1", "S1_conf", "ST", "ST_conf"], "morris": ["mu_star", "mu_star_conf", "mu", "sigma"],
               "local": ["S", "dy_dlnp"]}[kind]
    sort_by = {"sobol": "ST", "morris": "mu_star", "local": "S"}[kind]
    runs = f", {ds.attrs['n_runs']} runs, {ds.attrs['n_failed_runs']} failed" if "n_runs" in ds.attrs else ""
    trial = (f" | trial {ds.attrs['trial']}, {ds.attrs['patients_per_arm']} patients per arm"
             if "trial" in ds.attrs else "")
    console.print(f"[bold]{ds.attrs['model']}[/]{trial} | {kind} | backend {ds.attrs['backend']}{runs}",
                  highlight=False)
    for out in ds["output"].values:
        row = ds.sel(output=out)
        table = Table("param", *columns, title=str(out), box=None, header_style="bold", title_justify="left")
        order = np.argsort(-np.nan_to_num(np.abs(row[sort_by].values), nan=-1.0))
        for j in order:
            table.add_row(str(ds["param"].values[j]), *(f"{row[c].values[j]:.4g}" for c in columns))
        console.print(table)
