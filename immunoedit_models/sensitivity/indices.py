"""Global sensitivity indices: Sobol first-order / total (with bootstrap CIs) and Morris screening.

Designs and estimators are SALib's: `SALib.analyze.sobol` (first order as Saltelli et al. 2010,
total order as Jansen 1999) and `SALib.analyze.morris` (mu, mu*, sigma; Morris 1991,
Campolongo et al. 2007). Each output, and each time of a time-resolved output, is analysed
separately; results are Datasets over (output, [time,] param).

Failed runs (status != 0, or a non-finite output value) are never dropped silently. With
on_failure='raise' (default) a `FailedRunsError` lists them. With on_failure='drop' every
design block holding a failed run (a Sobol base sample with its k + 2 runs, or a Morris
trajectory) is left out and the estimator runs on the remaining blocks, which are still a
valid (smaller) design; the result records which runs were used (`used`), their `status`, and
the counts in its attributes. Dropping is only unbiased when failures are unrelated to the
output, so narrowing the ranges is usually the better fix.
"""

from __future__ import annotations

import json
import warnings
from importlib import metadata
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ..compile import CompiledModel
from ..errors import SimulationError
from ..io.results import STATUS_MEANINGS
from ..simulate.core import require_compiled
from .designs import Design, morris_design, parameter_ranges, run_design, sobol_design
from .outputs import Output, evaluate_outputs, parse_outputs, split_kind

OnFailure = Literal["raise", "drop"]
#: Status of a run that raised instead of simulating (e.g. a whole trial: `trial.run_trial_design`).
STATUS_RAISED = -2
#: Failed runs listed in a FailedRunsError message (all are in its attributes).
_LISTED = 5


def check_on_failure(on_failure: Any) -> None:
    """Raise SimulationError unless `on_failure` is 'raise' or 'drop' (checked before any run)."""
    if on_failure not in ("raise", "drop"):
        raise SimulationError(f"on_failure must be 'raise' or 'drop' (CLI: --on-failure), got {on_failure!r}")


class FailedRunsError(SimulationError):
    """Runs of a sensitivity design failed; `runs` (indices), `status` and `parameters` (a
    DataFrame of their parameter values) say which."""

    def __init__(self, method: str, n_runs: int, runs: np.ndarray, status: np.ndarray,
                 parameters: pd.DataFrame, dropped_too_many: bool = False, errors: Sequence[str] = ()):
        self.runs, self.status, self.parameters = runs, status, parameters
        meanings = {**STATUS_MEANINGS, -1: "ok status but non-finite output",
                    STATUS_RAISED: "raised an error"}
        counts = ", ".join(f"{int((status == s).sum())} {meanings.get(int(s), 'unknown')}" for s in np.unique(status))
        shown = "; ".join(f"run {r} (status {s}): " + ", ".join(f"{k}={v:.4g}" for k, v in row.items())
                          for r, s, (_, row) in zip(runs[:_LISTED], status[:_LISTED], parameters.iterrows()))
        more = f"; ... ({len(runs) - _LISTED} more in .runs)" if len(runs) > _LISTED else ""
        fix = ("; fewer than 2 design blocks are left without a failure, so dropping them cannot help"
               if dropped_too_many else ", or pass on_failure='drop' (CLI: --on-failure drop) to leave out the "
                                        "design blocks holding a failed run (recorded in the result)")
        first_error = next((e for e in errors if e), "")
        if first_error:
            more += f"; the first error: {first_error}"
        super().__init__(
            f"{len(runs)} of {n_runs} runs of the {method} design failed ({counts}): {shown}{more}. The estimator "
            "needs every run of its design: narrow the parameter ranges, change the solver settings (method, "
            f"rtol/atol, max_steps){fix}")


def _bootstrap_seed(seed: int) -> int:
    """A non-zero seed for SALib's bootstrap (SALib.analyze.sobol treats seed 0 as 'unseeded')."""
    return int(np.random.SeedSequence([int(seed), 1]).generate_state(1)[0]) | 1


def _failures(batch: xr.Dataset, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-run failure mask (n_runs,) and status, non-finite outputs counting as status -1."""
    status = np.asarray(batch["status"].values, dtype=np.int64)
    nonfinite = ~np.isfinite(Y.reshape(len(Y), -1)).all(axis=1)
    status = np.where((status == 0) & nonfinite, -1, status)
    return status != 0, status


def _usable_runs(design: Design, batch: xr.Dataset, Y: np.ndarray, on_failure: OnFailure):
    """Mask of runs the estimator uses, the per-run status, and failure counts for the attributes."""
    if batch.sizes["sample"] != design.n_runs:
        raise SimulationError(f"the batch has {batch.sizes['sample']} samples but the {design.method} design has "
                              f"{design.n_runs} runs: simulate the design with run_design")
    failed, status = _failures(batch, Y)
    runs = np.flatnonzero(failed)
    blocks = design.block_of()
    bad_blocks = np.unique(blocks[runs])
    used = ~np.isin(blocks, bad_blocks)
    n_blocks = design.n_runs // design.block
    too_few = n_blocks - bad_blocks.size < 2
    if runs.size and (on_failure == "raise" or too_few):
        errors = [str(e) for e in batch["error"].values[runs]] if "error" in batch else []
        raise FailedRunsError(design.method, design.n_runs, runs, status[runs], design.table.iloc[runs],
                              dropped_too_many=on_failure == "drop" and too_few, errors=errors)
    if runs.size:
        warnings.warn(f"{runs.size} failed runs: dropped {bad_blocks.size} of {n_blocks} design blocks "
                      f"({int((~used).sum())} runs); see the result's 'used' and 'status'",
                      RuntimeWarning, stacklevel=3)
    counts = {"n_failed_runs": int(runs.size), "n_blocks": n_blocks, "n_blocks_dropped": int(bad_blocks.size)}
    return used, status, counts


def _analyse(Y: np.ndarray, one: Callable[[np.ndarray], dict[str, np.ndarray]], labels: list[str],
             progress: bool) -> dict[str, np.ndarray]:
    """Apply `one` to every output (and time) column of Y (runs, output[, time]) -> arrays
    (output[, time], ...)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = Y.reshape(Y.shape[0], -1)
    results = []
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), disable=not progress, transient=True) as bar:
        task = bar.add_task(f"indices of {', '.join(labels)}", total=columns.shape[1])
        for j in range(columns.shape[1]):
            results.append(one(columns[:, j]))
            bar.advance(task)
    return {key: np.stack([r[key] for r in results]).reshape(Y.shape[1:] + results[0][key].shape)
            for key in results[0]}


def _dataset(design: Design, batch: xr.Dataset, outputs: Sequence[Output], Y: np.ndarray, used: np.ndarray,
             status: np.ndarray, indices: Mapping[str, np.ndarray], meta: Mapping[str, str],
             attrs: Mapping[str, Any]) -> xr.Dataset:
    """Label indices over (output, [time,] param[, param2]) with the design, status and provenance."""
    time_resolved = outputs[0].time_resolved
    lead = ("output", "time", "param") if time_resolved else ("output", "param")
    data: dict[str, Any] = {}
    for key, values in indices.items():
        dims = lead + (("param2",) if values.ndim == len(lead) + 1 else ())
        data[key] = (dims, values, {"description": meta[key.removesuffix("_conf")] + (
            f" ({attrs['conf_level']:.0%} bootstrap half-width)" if key.endswith("_conf") else "")})
    data["X"] = (("run", "param"), design.values, {"description": "parameter values of each run of the design"})
    data["status"] = (("run",), status, {"description": "run status (attrs['status_meanings']); -1: ok status "
                                                        "but a non-finite output value"})
    data["used"] = (("run",), used, {"description": "run entered the estimator (False: its block held a failure)"})
    if not time_resolved:
        data["Y"] = (("run", "output"), Y, {"description": "output value of each run"})
    data["low"] = (("param",), [r.low for r in design.ranges], {"description": "lower end of the sampled range"})
    data["high"] = (("param",), [r.high for r in design.ranges], {"description": "upper end of the sampled range"})
    data["scale"] = (("param",), np.array([r.scale for r in design.ranges], dtype=str))
    data["range_source"] = (("param",), np.array([r.source for r in design.ranges], dtype=str))
    coords: dict[str, Any] = {"param": design.names, "output": [o.name for o in outputs],
                              "run": np.arange(design.n_runs)}
    if time_resolved:
        coords["time"] = ("time", batch["time"].values, batch["time"].attrs)
    if "S2" in indices:
        coords["param2"] = design.names
    merged = {**batch.attrs, **attrs, "n": design.n, "seed": design.seed, "n_runs": design.n_runs,
              "outputs": json.dumps([o.name for o in outputs]), "salib_version": metadata.version("SALib")}
    return xr.Dataset(data, coords=coords, attrs=merged)


def _prepare(design: Design, batch: xr.Dataset, outputs, on_failure: OnFailure):
    check_on_failure(on_failure)
    outputs = parse_outputs(outputs)
    split_kind(outputs)
    Y = evaluate_outputs(outputs, batch)
    used, status, counts = _usable_runs(design, batch, Y, on_failure)
    return outputs, Y, used, status, counts


_SOBOL_META = {"S1": "first-order Sobol index", "ST": "total-order Sobol index",
               "S2": "second-order Sobol index of (param, param2)"}
_MORRIS_META = {"mu": "mean elementary effect", "mu_star": "mean absolute elementary effect",
                "sigma": "standard deviation of the elementary effects"}


def sobol_indices(design: Design, batch: xr.Dataset, outputs: Sequence[str | Output] | str | Output, *,
                  num_resamples: int = 100, conf_level: float = 0.95, on_failure: OnFailure = "raise",
                  progress: bool = False) -> xr.Dataset:
    """Sobol indices of `outputs` from a simulated Saltelli design (see `sobol`).

    Indices are NaN for an output (or time) that does not vary across the design.
    """
    if design.method != "sobol":
        raise SimulationError(f"sobol_indices needs a Sobol design (sobol_design), got a {design.method} design")
    from SALib.analyze import sobol as sobol_analyze

    outputs, Y, used, status, counts = _prepare(design, batch, outputs, on_failure)
    problem, seed, k = design.problem, _bootstrap_seed(design.seed), len(design.ranges)
    keys = ("S1", "S1_conf", "ST", "ST_conf") + (("S2", "S2_conf") if design.second_order else ())

    def one(y: np.ndarray) -> dict[str, np.ndarray]:
        if np.ptp(y) == 0:  # no variance to apportion
            return {key: np.full((k, k) if key.startswith("S2") else k, np.nan) for key in keys}
        r = sobol_analyze.analyze(problem, y, calc_second_order=design.second_order,
                                  num_resamples=num_resamples, conf_level=conf_level, seed=seed)
        return {key: np.asarray(r[key], dtype=float) for key in keys}

    indices = _analyse(Y[used], one, [o.name for o in outputs], progress)
    attrs = {"analysis": "sobol", "second_order": int(design.second_order), "num_resamples": num_resamples,
             "conf_level": conf_level, "on_failure": on_failure, **counts,
             "estimator": "SALib.analyze.sobol: first order Saltelli et al. 2010, total order Jansen 1999; "
                          "bootstrap CIs"}
    return _dataset(design, batch, outputs, Y, used, status, indices, _SOBOL_META, attrs)


def morris_indices(design: Design, batch: xr.Dataset, outputs: Sequence[str | Output] | str | Output, *,
                   num_resamples: int = 100, conf_level: float = 0.95, on_failure: OnFailure = "raise",
                   progress: bool = False) -> xr.Dataset:
    """Morris mu, mu* (with bootstrap CI) and sigma of `outputs` from a simulated Morris design.

    Elementary effects are output changes per step over the full range of the design coordinate
    (ln p for log-scale parameters), so mu* has the output's unit.
    """
    if design.method != "morris":
        raise SimulationError(f"morris_indices needs a Morris design (morris_design), got a {design.method} design")
    from SALib.analyze import morris as morris_analyze

    outputs, Y, used, status, counts = _prepare(design, batch, outputs, on_failure)
    problem, X, seed = design.problem, design.X[used], _bootstrap_seed(design.seed)

    def one(y: np.ndarray) -> dict[str, np.ndarray]:
        r = morris_analyze.analyze(problem, X, y, num_resamples=num_resamples, conf_level=conf_level,
                                   num_levels=design.num_levels, seed=seed)
        return {key: np.asarray(r[key], dtype=float) for key in ("mu", "mu_star", "mu_star_conf", "sigma")}

    indices = _analyse(Y[used], one, [o.name for o in outputs], progress)
    attrs = {"analysis": "morris", "num_levels": design.num_levels, "num_resamples": num_resamples,
             "conf_level": conf_level, "on_failure": on_failure, **counts,
             "estimator": "SALib.analyze.morris: elementary effects (Morris 1991), mu* (Campolongo et al. 2007)"}
    return _dataset(design, batch, outputs, Y, used, status, indices, _MORRIS_META, attrs)


def sobol(model: CompiledModel, outputs: Sequence[str | Output] | str | Output,
          params: Iterable[Any] | Mapping[str, Any] | None = None, n: int = 1024, *, times: Any = None,
          log: Any = "auto", second_order: bool = False, seed: int = 0, num_resamples: int = 100,
          conf_level: float = 0.95, on_failure: OnFailure = "raise", progress: bool = False,
          **simulation: Any) -> xr.Dataset:
    """Sobol first-order and total indices (S1, ST, with bootstrap CIs; S2 if `second_order`).

    A Saltelli design of n base samples (a power of two; n (k + 2) runs for k parameters) is
    simulated with `simulate_batch` on the model's backend. params / log: see
    `parameter_ranges`; times: output days (see `output_grid`); simulation: keyword arguments
    of `run_design` (regimen, fixed, initial, rtol, atol, method, max_steps, chunk_size).
    Same seed, same result. Returns a Dataset over (output, [time,] param) with the design `X`,
    run `status` and `used`, scalar outputs `Y` per run, and provenance attributes.
    """
    model = require_compiled(model, "sobol")
    check_on_failure(on_failure)
    parsed = parse_outputs(outputs, model)
    split_kind(parsed)
    design = sobol_design(parameter_ranges(model, params, log), n, seed, second_order)
    batch = run_design(model, design, parsed, times, progress=progress, **simulation)
    return sobol_indices(design, batch, parsed, num_resamples=num_resamples, conf_level=conf_level,
                         on_failure=on_failure, progress=progress)


def morris(model: CompiledModel, outputs: Sequence[str | Output] | str | Output,
           params: Iterable[Any] | Mapping[str, Any] | None = None, n: int = 20, *, times: Any = None,
           log: Any = "auto", num_levels: int = 4, seed: int = 0, num_resamples: int = 100,
           conf_level: float = 0.95, on_failure: OnFailure = "raise", progress: bool = False,
           **simulation: Any) -> xr.Dataset:
    """Morris elementary effects (mu, mu*, sigma) from n trajectories (n (k + 1) runs).

    Arguments as for `sobol`; num_levels: grid levels per parameter (even).
    """
    model = require_compiled(model, "morris")
    check_on_failure(on_failure)
    parsed = parse_outputs(outputs, model)
    split_kind(parsed)
    design = morris_design(parameter_ranges(model, params, log), n, seed, num_levels)
    batch = run_design(model, design, parsed, times, progress=progress, **simulation)
    return morris_indices(design, batch, parsed, num_resamples=num_resamples, conf_level=conf_level,
                          on_failure=on_failure, progress=progress)
