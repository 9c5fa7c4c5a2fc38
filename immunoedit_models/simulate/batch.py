"""simulate_batch: many trajectories, chunked in-process or over Dask workers, optionally to zarr."""

from __future__ import annotations

import math
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pandas as pd
import xarray as xr

from ..compile import CompiledModel
from ..errors import SimulationError
from ..io.results import _netcdf_safe, writable_target
from .core import (RegimenLike, SolverSettings, _attrs, initial_matrix, parameter_matrix, regimen_list,
                   require_compiled, simulate_arrays, time_grid, to_dataset)

DEFAULT_CHUNK = 20_000


def simulate_batch(model: CompiledModel, params: pd.DataFrame, times: Any,
                   initial: pd.DataFrame | None = None, regimen: RegimenLike = None,
                   rtol: float = 1e-6, atol: float = 1e-9, method: str | None = None,
                   max_steps: int = 100_000, steady_state: bool = False, t0: float | None = None,
                   chunk_size: int | None = None, scheduler: Any = None, zarr_path: str | Path | None = None,
                   progress: bool = False) -> xr.Dataset:
    """Simulate one trajectory per row of `params` (a DataFrame: one column per varied parameter).

    Returns a Dataset over (sample, time) with per-run `status`, `n_steps` and the varied parameters;
    a failed run is reported in `status` and never stops the batch. `initial` (DataFrame of states,
    same rows) and `regimen` (one for all, or a list with one per row) work as in `simulate`.
    Batches run in chunks of `chunk_size` rows: in this process (numba spreads a chunk over the
    cores), or on Dask when `scheduler` is 'local' (a LocalCluster), a scheduler address or a
    distributed.Client. With `zarr_path`, chunks are streamed to a zarr store, which is returned
    opened lazily.
    """
    model = require_compiled(model, "simulate_batch")
    if not isinstance(params, pd.DataFrame):
        raise SimulationError("simulate_batch needs params as a pandas DataFrame (one row per sample)")
    n = len(params)
    if n == 0:
        raise SimulationError("params has no rows: nothing to simulate")
    if isinstance(params.index, pd.MultiIndex):
        raise SimulationError("params has a MultiIndex: the batch's 'sample' coordinate needs one level "
                              "(params.reset_index() keeps the levels as columns)")
    if initial is not None:
        initial = pd.DataFrame(initial) if isinstance(initial, Mapping) else initial
        if not isinstance(initial, pd.DataFrame) or len(initial) != n:
            raise SimulationError(f"initial must be a DataFrame (or a mapping of columns) with one row per row "
                                  f"of params ({n}), got {len(initial)} rows" if isinstance(initial, pd.DataFrame)
                                  else f"initial must be a DataFrame of states, got {type(initial).__name__}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise SimulationError(f"chunk_size must be a positive integer (rows per chunk), got {chunk_size!r}")
    if zarr_path is not None:
        zarr_path = writable_target(zarr_path, fmt="zarr")
    settings = SolverSettings(rtol, atol, method, max_steps).resolved(model)
    times = time_grid(times)
    regimens = regimen_list(model, regimen, n)
    start = times[0] if t0 is None else float(t0)
    P, varied = parameter_matrix(model, params, n)
    Y0 = initial_matrix(model, P, initial)
    size = int(chunk_size or (DEFAULT_CHUNK if scheduler is None else math.ceil(n / 16)))
    chunks = [slice(a, min(a + size, n)) for a in range(0, n, size)]
    attrs = _attrs(model, settings, regimens, steady_state, n_samples=n)
    index = params.index.rename("sample")

    def piece(s: slice) -> xr.Dataset:
        return to_dataset(model, times, simulate_arrays(model, P[s], Y0[s], start, times, regimens[s],
                                                        settings, steady_state),
                          index[s], P[s], varied, attrs)

    with ExitStack() as stack:
        if scheduler is None:
            parts: Iterator[xr.Dataset] = (piece(s) for s in chunks)
        else:
            submit = _dask_submitter(stack, scheduler, model, P, Y0, start, times, regimens, settings,
                                     steady_state, index, varied, attrs)
            futures = [submit(s) for s in chunks]
            parts = (f.result() for f in futures)
        parts = _with_progress(parts, chunks, progress, f"simulating {n} runs of {model.name}")
        if zarr_path is None:
            result = xr.concat(list(parts), dim="sample") if len(chunks) > 1 else next(parts)
        else:
            result = _stream_to_zarr(parts, zarr_path, chunks, index)
    _warn_failures(result, model.name)
    return result


def _warn_failures(ds: xr.Dataset, name: str) -> None:
    failed = int((ds["status"].values != 0).sum())
    if failed:
        warnings.warn(f"{failed} of {ds.sizes['sample']} runs failed in the batch of '{name}': see the "
                      "per-run 'status' (meanings in attrs['status_meanings']); their states are NaN",
                      RuntimeWarning, stacklevel=3)


def _dask_submitter(stack: ExitStack, scheduler: Any, model, P, Y0, start, times, regimens, settings,
                 steady_state, index, varied, attrs) -> Callable[[slice], Any]:
    """A function that submits one chunk to Dask and returns its future."""
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        client = scheduler
    elif scheduler == "local":
        cluster = stack.enter_context(LocalCluster(threads_per_worker=1, processes=True,
                                                   dashboard_address=None))
        client = stack.enter_context(Client(cluster))
    else:
        client = stack.enter_context(Client(scheduler))
    model_future = client.scatter(model, broadcast=True)

    def submit(s: slice):
        return client.submit(_remote_chunk, model_future, P[s], Y0[s], start, times, regimens[s],
                             settings, steady_state, index[s], varied, attrs, pure=False)
    return submit


def _remote_chunk(model, P, Y0, start, times, regimens, settings, steady_state, index, varied, attrs):
    got = simulate_arrays(model, P, Y0, start, times, regimens, settings, steady_state)
    return to_dataset(model, times, got, index, P, varied, attrs)


def _with_progress(parts: Iterator[xr.Dataset], chunks: list[slice], show: bool,
                   label: str) -> Iterator[xr.Dataset]:
    """Pass chunk results through in order, advancing a rich progress bar by runs done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), disable=not show, transient=True) as bar:
        task = bar.add_task(label, total=chunks[-1].stop)
        for s, part in zip(chunks, parts):
            bar.advance(task, s.stop - s.start)
            yield part


def _stream_to_zarr(parts: Iterator[xr.Dataset], path: Path, chunks: list[slice],
                    index: pd.Index) -> xr.Dataset:
    """Write the first chunk's layout for the full batch (sample labels `index`), then each chunk
    into its region."""
    import dask.array as da

    first = next(parts)
    n = chunks[-1].stop
    size = chunks[0].stop - chunks[0].start
    template = xr.Dataset(
        {name: (var.dims, da.empty((n,) + var.shape[1:], dtype=var.dtype, chunks=(size,) + var.shape[1:]),
                var.attrs) if "sample" in var.dims else var for name, var in first.data_vars.items()},
        coords={"time": first["time"], "sample": index}, attrs=first.attrs)
    _netcdf_safe(template).to_zarr(path, mode="w", compute=False)
    for s, part in zip(chunks, _chain(first, parts)):
        region = part.drop_vars([v for v in part.variables if "sample" not in part[v].dims or v == "sample"])
        _netcdf_safe(region).to_zarr(path, region={"sample": s})
    return xr.open_zarr(path)


def _chain(first, rest):
    yield first
    yield from rest
