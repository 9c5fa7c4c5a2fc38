"""The `immunoedit fit` command's work: run a problem with progress and print a summary."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import xarray as xr
from rich.console import Console
from rich.table import Table

from .problem import load_problem
from .run import fit


def run(problem: Path, out: Path, resume: bool, console: Console) -> xr.Dataset:
    """Load, announce, fit (rich progress bars) and summarise; errors propagate (ImmunoeditError)."""
    loaded = load_problem(problem)
    console.print(f"[bold]{loaded.name}[/] ({loaded.kind}): model {loaded.model}, {len(loaded.parameters.free)} "
                  f"free parameters, method {loaded.fit.method}, seed {loaded.fit.seed}"
                  + (", resuming" if resume else ""), highlight=False)
    start = time.perf_counter()
    result = fit(loaded, out, resume=resume, progress=True)
    summary(result, console, time.perf_counter() - start)
    console.print(f"wrote {out / 'fit.nc'}, {out / 'calibration.yaml'}, {out / 'report.md'}")
    return result


def summary(result: xr.Dataset, console: Console, seconds: float) -> None:
    table = Table(title=f"{result.attrs['problem']}: objective {float(result['objective']):.6g} "
                        f"({seconds:.1f} s)", header_style="bold")
    laplace = "laplace_ci_lower" in result
    for col in ("parameter", "estimate", "95 % CI (Laplace)" if laplace else "95 % CI (profile)", "bounds"):
        table.add_column(col)
    for name in result["parameter"].values:
        s = result.sel(parameter=name)
        ci = "–"
        if "profiled" in result.coords and name in result["profiled"].values:  # NaN (open): never crossed
            lo, hi = float(s["ci_lower"]), float(s["ci_upper"])
            ci = (f"{lo:.4g}" if np.isfinite(lo) else "(open)") + " – " + (f"{hi:.4g}" if np.isfinite(hi) else "(open)")
        elif laplace:   # NaN: a held parameter (fit.hold), outside the posterior
            lo, hi = float(s["laplace_ci_lower"]), float(s["laplace_ci_upper"])
            ci = f"{lo:.4g} – {hi:.4g}" if np.isfinite(lo) and np.isfinite(hi) else "held"
        table.add_row(str(name), f"{float(s['estimate']):.4g}", ci,
                      f"[{float(s['bound_lower']):.3g}, {float(s['bound_upper']):.3g}]")
    console.print(table)
    if "ppc_target_lower" in result:
        console.print(predictive_check_line(result), highlight=False)


def predictive_check_line(result: xr.Dataset) -> str:
    """One line on the posterior predictive check: how many observed target values lie inside
    the 95 % interval of the trials at the estimate, and which do not."""
    at = result.sel(source="trial_only")
    lo, hi, observed = (at["ppc_target_lower"].values, at["ppc_target_upper"].values,
                        result["ppc_observed"].values)
    has = np.isfinite(lo) & np.isfinite(hi)
    inside = has & (lo <= observed) & (observed <= hi)
    outside = [str(t) for t, h, i in zip(result["target"].values, has, inside) if h and not i]
    return (f"predictive check: {int(inside.sum())} of {int(has.sum())} targets inside the 95 % interval of "
            f"{result.attrs.get('predictive_replicates')} trials at the estimate"
            + (f"; outside: {', '.join(outside)}" if outside else "") + " (report: predictive_check)")
