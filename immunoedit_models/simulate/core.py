"""simulate and simulate_batch: dosed trajectories of a compiled model as xarray Datasets."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import sympy as sp
import xarray as xr

from ..compile import DEFAULT_METHOD, METHODS, CompiledModel
from ..errors import SimulationError
from ..io.results import STATUS_MEANINGS, provenance
from ..spec.expressions import ExpressionError, parse_expression, suggest
from ..spec.schema import ModelSpec
from ..spec.units import parse_unit
from .regimen import EventArrays, Regimen, event_arrays

RegimenLike = Regimen | str | Sequence[Regimen] | None
STEADY_STATE_FAILED = 4
NON_FINITE = 2      # status of a run whose state became (or started) non-finite


@dataclass(frozen=True)
class SolverSettings:
    """How trajectories are integrated (time in the model's unit, days)."""

    rtol: float = 1e-6
    atol: float = 1e-9
    method: str | None = None  # None: the backend's stiff default
    max_steps: int = 100_000

    def resolved(self, model: CompiledModel) -> "SolverSettings":
        method = self.method or DEFAULT_METHOD[model.backend]
        if method not in METHODS[model.backend]:
            raise SimulationError(f"backend '{model.backend}' has no method '{method}': choose one of "
                                  f"{', '.join(METHODS[model.backend])}")
        rtol, atol = (_real(self.rtol, "rtol"), _real(self.atol, "atol"))
        # rtol >= 1 lets an error as large as the state pass: the solvers then return nonsense as "ok"
        if not (0 < rtol < 1 and 0 < atol < math.inf):
            raise SimulationError(f"tolerances must satisfy 0 < rtol < 1 and 0 < atol < inf, got rtol={rtol}, "
                                  f"atol={atol} (1e-6 and 1e-9 are the defaults; 1e-3 is already loose)")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, (int, np.integer)) or self.max_steps < 1:
            raise SimulationError(f"max_steps must be a positive integer, got {self.max_steps!r}")
        return SolverSettings(rtol, atol, method, int(self.max_steps))


def _real(value: Any, what: str) -> float:
    """value as a float; SimulationError naming `what` if it is not one number."""
    if type(value) is float:
        return value
    if isinstance(value, (bool, str, bytes)) or np.ndim(value) != 0:
        raise SimulationError(f"{what} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SimulationError(f"{what} must be a number, got {value!r}") from None


def require_compiled(model: Any, caller: str) -> CompiledModel:
    """Nothing compiles behind the user's back: a spec must go through compile_model first."""
    if isinstance(model, CompiledModel):
        return model
    if isinstance(model, ModelSpec):
        raise TypeError(f"{caller}() needs a compiled model, got the spec '{model.name}': "
                        f"call ie.compile_model(spec, backend='numba') first")
    raise TypeError(f"{caller}() needs a CompiledModel from ie.compile_model(...), got {type(model).__name__}")


# ---- inputs -----------------------------------------------------------------------------------
def parameter_matrix(model: CompiledModel, table: pd.DataFrame | Mapping[str, Any] | None,
                     n: int) -> tuple[np.ndarray, list[str]]:
    """(n, n_par) parameter values: nominal, with the table's columns replacing theirs."""
    P = np.tile(np.asarray(model.symbolic.param_values, dtype=float), (n, 1))
    if table is None:
        return P, []
    columns = _columns(table, "params")
    for name in columns:
        if name not in model.parameters:
            hint = suggest(str(name), model.parameters)
            raise SimulationError(f"'{name}' is not a parameter of model '{model.name}'"
                                  + (f" ({hint})" if hint else f"; parameters: {', '.join(model.parameters)}"))
        P[:, model.parameters.index(name)] = column_values(table[name], n, f"parameter '{name}'")
    return P, [str(c) for c in columns]


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _columns(table: pd.DataFrame | Mapping[str, Any], what: str) -> list:
    """The names of a table's columns (a DataFrame or a mapping); no name twice."""
    if not isinstance(table, (pd.DataFrame, Mapping)):
        raise SimulationError(f"{what} must be a mapping of name -> value (a DataFrame for a batch), "
                              f"got {type(table).__name__}")
    columns = list(table.columns if isinstance(table, pd.DataFrame) else table)
    twice = sorted({str(c) for c in columns if columns.count(c) > 1})
    if twice:
        raise SimulationError(f"{what} gives {', '.join(twice)} more than once")
    return columns


def column_values(values: Any, n: int, what: str) -> np.ndarray:
    """(n,) floats of one column (n values, or one value for every run); SimulationError naming
    `what` otherwise."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        bad = next((v for v in np.ravel(np.asarray(values, dtype=object)) if not _is_number(v)), values)
        raise SimulationError(f"{what} must be {'a number' if n == 1 else 'numbers'}, got {bad!r}") from None
    if array.size == 1:
        return np.full(n, array.reshape(()))
    if n == 1:
        raise SimulationError(f"{what} must be one number, got {values!r}")
    if array.shape != (n,):
        raise SimulationError(f"{what} needs one value per run ({n}) or one for all, got shape {array.shape}")
    return array


def initial_matrix(model: CompiledModel, P: np.ndarray,
                   initial: pd.DataFrame | Mapping[str, Any] | None) -> np.ndarray:
    """(n, n_state) initial states: the spec's (functions of parameters), then overrides."""
    Y0 = np.array(model.kernels.initial(P), dtype=float)
    if initial is None:
        return Y0
    for name in _columns(initial, "initial"):
        if name not in model.states:
            hint = suggest(str(name), model.states)
            raise SimulationError(f"'{name}' is not a state of model '{model.name}'"
                                  + (f" ({hint})" if hint else f"; states: {', '.join(model.states)}"))
        value = column_values(initial[name], len(Y0), f"initial value of '{name}'")
        if name in model.symbolic.log_states:
            with np.errstate(divide="ignore", invalid="ignore"):
                value = np.log(value)  # the kernel integrates ln(state); <= 0 fails the run (status 2)
        Y0[:, model.states.index(name)] = value
    return Y0


def check_names(model: CompiledModel, names: Sequence[str], known: Sequence[str], what: str) -> None:
    """SimulationError for the first of `names` not in `known` ('x' is not <what> of model ...),
    with a did-you-mean hint or the list of choices."""
    for name in names:
        if name not in known:
            hint = suggest(str(name), known)
            raise SimulationError(f"'{name}' is not {what} of model '{model.name}'"
                                  + (f" ({hint})" if hint else f"; choose from: {', '.join(known)}"))


def regimen_list(model: CompiledModel, regimen: RegimenLike, n: int) -> list[Regimen]:
    """One Regimen per trajectory. None: the spec's default; a name: the spec's regimen."""
    if regimen is None or isinstance(regimen, (str, Regimen)):
        return [_one_regimen(model, regimen)] * n
    if not isinstance(regimen, Sequence):
        raise SimulationError(f"regimen must be a name, a Regimen or a list of them (one per run), "
                              f"got {type(regimen).__name__}")
    if len(regimen) != n:
        raise SimulationError(f"a list of regimens needs one per run ({n}), got {len(regimen)}")
    return [_one_regimen(model, r) for r in regimen]


def _one_regimen(model: CompiledModel, regimen: Regimen | str | None) -> Regimen:
    """A Regimen; None: the spec's default; a name: the spec's regimen, or 'none' / 'untreated'."""
    spec = model.spec
    regimen = spec.default_regimen or Regimen.none() if regimen is None else regimen
    if isinstance(regimen, Regimen):
        return regimen
    if not isinstance(regimen, str):
        raise SimulationError(f"a regimen is a name or a Regimen, got {regimen!r}")
    if regimen in spec.regimens:
        return _spec_regimen(model, regimen)
    if regimen in ("none", "untreated"):
        return Regimen.none()
    hint = suggest(regimen, spec.regimens)
    raise SimulationError(f"model '{model.name}' has no regimen '{regimen}'"
                          + (f" ({hint})" if hint else f"; regimens: {', '.join(spec.regimens) or 'none'}"))


@lru_cache(maxsize=256)
def _spec_regimen(model: CompiledModel, name: str) -> Regimen:
    """The spec's regimen `name`, built once per model (Regimens are immutable)."""
    return Regimen.from_spec(model.spec.regimens[name])


def time_grid(times: Any) -> np.ndarray:
    """Output times (n_time,) in days, checked: numbers, one dimension, finite, sorted."""
    raw = np.asarray(times) if not isinstance(times, np.ndarray) else times
    if raw.ndim > 1 or raw.dtype.kind not in "iuf":
        raise SimulationError(f"times must be a 1-d array of numbers (days), got {raw.ndim}-d {raw.dtype}"
                              + (" (give elapsed days, not dates)" if raw.dtype.kind == "M" else ""))
    t = np.asarray(raw, dtype=float).ravel()
    # non-decreasing (a NaN fails the comparison) between finite ends: all finite
    if t.size == 0 or not (math.isfinite(t[0]) and math.isfinite(t[-1]) and (np.diff(t) >= 0).all()):
        raise SimulationError("times must be a non-empty, finite, non-decreasing array of days")
    return t


@lru_cache(maxsize=256)
def parameter_expression(model: CompiledModel, text: str) -> sp.Expr:
    """A dose amount (or other expression of the parameters, e.g. 'dose_per_kg*weight') as sympy,
    parsed by the spec grammar; SimulationError naming the text otherwise."""
    units = dict(zip(model.parameters, (model.spec.parsed["symbols"].get(p) for p in model.parameters)))
    try:
        return parse_expression(text, units, parse_unit(model.spec.time_unit), check_units=False).expr
    except ExpressionError as exc:
        raise SimulationError(f"dose amount '{text}' of model '{model.name}': {exc.message}"
                              + (f" ({exc.hint})" if exc.hint else "")) from None


@lru_cache(maxsize=256)
def parameter_function(model: CompiledModel, text: str) -> Callable[[np.ndarray], np.ndarray]:
    """An expression of parameters (e.g. a dose amount 'Dose') -> f(P (n, n_par)) -> (n,)."""
    f = sp.lambdify(model.symbolic.param_symbols, parameter_expression(model, text), "numpy")  # from sympy
    return lambda P: np.broadcast_to(np.asarray(f(*P.T), dtype=float), (len(P),))


@lru_cache(maxsize=256)
def output_function(model: CompiledModel, name: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """One output of the model, alone: f(t (n_t,), Y (B, n_t, n_state) in kernel coordinates,
    P (B, n_par)) -> (B, n_t), the column `name` of `kernels.outputs(t, Y, P)`.

    The outputs kernel evaluates every output (108 for the NSCLC model); a trial reads one, the
    tumour burden, at every output day of every patient, where the full kernel took a quarter of
    a 3 x 3,000-patient trial. numpy evaluation of the output's own expression (sympy lambdify).
    """
    sym = model.symbolic
    if name not in sym.outputs:
        hint = suggest(name, sym.outputs) or f"its outputs: {', '.join(sym.outputs) or 'none'}"
        raise SimulationError(f"model '{model.name}' has no output '{name}' ({hint})")
    f = sp.lambdify((sym.time, *sym.state_symbols, *sym.param_symbols), sym.outputs[name], "numpy")

    def evaluate(t: np.ndarray, Y: np.ndarray, P: np.ndarray) -> np.ndarray:
        value = f(np.asarray(t, dtype=float)[None, :], *np.moveaxis(Y, -1, 0), *P.T[:, :, None])
        return np.broadcast_to(np.asarray(value, dtype=float), Y.shape[:2])
    return evaluate


# ---- running ----------------------------------------------------------------------------------
def run_arrays(model: CompiledModel, Y0: np.ndarray, P: np.ndarray, t0: float, times: np.ndarray,
               regimens: list[Regimen], settings: SolverSettings) -> dict[str, np.ndarray]:
    """Integrate a batch; returns Y (n, n_time, n_state), outputs, status, n_steps, n_rejected.

    Runs with a NaN parameter or a non-finite initial state (kernel coordinates: a log-state <= 0)
    fail at once with status 2 and NaN states, unsolved: an adaptive solver would shrink its
    steps on them until max_steps (JAX: seconds per run, and vmap keeps the whole batch waiting)."""
    if not (math.isfinite(Y0.sum()) and not math.isnan(P.sum())):     # two sums: the usual case in ~2 us
        doomed = np.isnan(P).any(axis=1) | ~np.isfinite(Y0).all(axis=1)
        if doomed.any():
            return _with_failed_runs(model, Y0, P, t0, times, regimens, settings, doomed)
    kernels = model.kernels
    if len(regimens) == 1:
        ev = _single_run_events(model, regimens[0], np.ascontiguousarray(P, dtype=float).tobytes())
    else:
        ev = _events(model, regimens, P)
    Y, status, n_steps, n_rejected = kernels.solve(
        Y0, P, float(t0), times, ev.time, ev.state, ev.kind, ev.value, settings.rtol, settings.atol,
        method=settings.method, max_steps=settings.max_steps)
    outputs = np.asarray(kernels.outputs(times, Y, P)) if kernels.output_names else np.zeros(Y.shape[:2] + (0,))
    Y = np.asarray(Y)
    if not Y.flags.writeable:   # JAX's arrays; numba's are fresh (copying 10^4 trajectories: ~0.5 s)
        Y = Y.copy()
    for i in model.symbolic.log_state_indices:  # kernel coordinates ln(state) -> the state
        Y[..., i] = np.exp(Y[..., i])
    return {"Y": Y, "outputs": outputs, "status": np.asarray(status, dtype=np.int64),
            "n_steps": np.asarray(n_steps, dtype=np.int64), "n_rejected": np.asarray(n_rejected, dtype=np.int64)}


def _with_failed_runs(model: CompiledModel, Y0: np.ndarray, P: np.ndarray, t0: float, times: np.ndarray,
                      regimens: list[Regimen], settings: SolverSettings, doomed: np.ndarray) -> dict[str, np.ndarray]:
    """`run_arrays` with the `doomed` runs (bool (n,)) not solved: status 2, NaN states and outputs."""
    n = len(P)
    got = {"Y": np.full((n, times.size, len(model.states)), np.nan),
           "outputs": np.full((n, times.size, len(model.output_names)), np.nan),
           "status": np.full(n, NON_FINITE, dtype=np.int64),
           "n_steps": np.zeros(n, dtype=np.int64), "n_rejected": np.zeros(n, dtype=np.int64)}
    ok = np.flatnonzero(~doomed)
    if ok.size:
        solved = run_arrays(model, Y0[ok], P[ok], t0, times, [regimens[i] for i in ok], settings)
        for key, values in solved.items():
            got[key][ok] = values
    return got


def _events(model: CompiledModel, regimens: list[Regimen], P: np.ndarray) -> EventArrays:
    """The dose events of each trajectory (regimens[b] with the parameters P[b])."""
    kernels = model.kernels
    dose_states = {d: model.states.index(t.state) for d, t in model.symbolic.dose_targets.items()}
    amounts: dict[str, np.ndarray] = {}     # each amount expression evaluated once, not per dose

    def amount_of(text: str) -> np.ndarray:
        if text not in amounts:
            amounts[text] = parameter_function(model, text)(P)
        return amounts[text]

    return event_arrays(regimens, np.asarray(kernels.dose_factors(P)), list(kernels.drug_names), dose_states,
                        amount_of=amount_of)


@lru_cache(maxsize=64)
def _single_run_events(model: CompiledModel, regimen: Regimen, params_bytes: bytes) -> EventArrays:
    """`_events` of one trajectory, cached: `simulate` in a loop (a scan over doses, a fit) often
    repeats the regimen and parameters, and building events costs as much as the xarray result.
    The cached arrays are read-only."""
    ev = _events(model, [regimen], np.frombuffer(params_bytes).reshape(1, -1))
    for a in (ev.time, ev.state, ev.kind, ev.value, ev.guard, ev.guard_confirmed):
        a.flags.writeable = False
    return ev


def preequilibrate(model: CompiledModel, Y0: np.ndarray, P: np.ndarray, settings: SolverSettings,
                   horizon: float = 1e4, steady_rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Run each trajectory untreated to steady state (no doses, up to `horizon` days).

    Steady means y(horizon) and y(horizon/2) agree within steady_rtol*|y| + atol; the others get
    status 4 and keep NaN states. Returns (steady states in kernel coordinates (n, n_state),
    status (n,)).
    """
    times = np.array([horizon / 2, horizon])
    got = run_arrays(model, Y0, P, 0.0, times, [Regimen.none()] * len(Y0), settings)
    half, end = got["Y"][:, 0], got["Y"][:, 1]
    steady = np.all(np.abs(end - half) <= steady_rtol * np.abs(end) + settings.atol, axis=1)
    status = np.where(got["status"] != 0, got["status"], np.where(steady, 0, STEADY_STATE_FAILED))
    start = np.where(status[:, None] == 0, end, np.nan)
    for i in model.symbolic.log_state_indices:  # back to kernel coordinates, ln(state)
        with np.errstate(divide="ignore", invalid="ignore"):
            start[:, i] = np.log(start[:, i])
    return start, status


def simulate_arrays(model, P, Y0, t0, times, regimens, settings, steady_state: bool) -> dict[str, np.ndarray]:
    """Pre-equilibrate (optional), then integrate with doses; failed pre-equilibrations are kept."""
    if not steady_state:
        return run_arrays(model, Y0, P, t0, times, regimens, settings)
    Y0, ss_status = preequilibrate(model, Y0, P, settings)
    got = run_arrays(model, np.nan_to_num(Y0), P, t0, times, regimens, settings)
    failed = ss_status != 0
    got["status"] = np.where(failed, ss_status, got["status"])
    got["Y"][failed] = np.nan
    got["outputs"][failed] = np.nan
    return got


def _named_values(values: Mapping[str, Any] | pd.Series | None, what: str) -> dict[str, Any]:
    """name -> one value of a single run (a mapping or a Series); None: none."""
    if values is None:
        return {}
    if isinstance(values, pd.DataFrame) or not isinstance(values, (Mapping, pd.Series)):
        raise SimulationError(f"simulate takes {what} as a mapping of name -> number, got "
                              f"{type(values).__name__} (for a table of runs use simulate_batch)")
    return dict(values.items())


# ---- results ----------------------------------------------------------------------------------
def to_dataset(model: CompiledModel, times: np.ndarray, got: Mapping[str, np.ndarray],
               batch_index: pd.Index | None, P: np.ndarray, varied: list[str], attrs: dict) -> xr.Dataset:
    """Label arrays: each state and output over ([sample,] time), per-run status and n_steps."""
    if batch_index is None:
        return _single_run_dataset(model, times, got, P, varied, attrs)
    return _build_dataset(model, times, got, batch_index, P, varied, attrs)


def _single_run_dataset(model: CompiledModel, times: np.ndarray, got: Mapping[str, np.ndarray], P: np.ndarray,
                        varied: list[str], attrs: dict) -> xr.Dataset:
    """`_build_dataset` of one run, with the time coordinate and its index built once per model and
    times.

    Written with xarray's constructors that skip checks (`Variable(fastpath=True)`,
    `Dataset._construct_direct`): the checked ones took 0.12 ms, a quarter of `simulate` for one
    trajectory; these take 0.04 ms. The data are ours and already valid, and
    `test_numba_solvers_lu` holds the result identical to `_build_dataset`'s."""
    coords, sizes, indexes = _single_run_coords(model, np.ascontiguousarray(times).tobytes())
    variables = {name: variable.copy(deep=False) for name, variable in coords.items()}  # own attrs
    for name, (dims, values, var_attrs) in _dataset_data(model, got, None, P, varied).items():
        variables[name] = xr.Variable(dims, values, var_attrs, fastpath=True)
    return xr.Dataset._construct_direct(variables, set(coords), dict(sizes), dict(attrs), dict(indexes))


@lru_cache(maxsize=32)
def _single_run_coords(model: CompiledModel, times_bytes: bytes) -> tuple[dict, dict, dict]:
    """(coordinate variables, sizes, indexes) of a single-run result over `times` (float64 bytes)."""
    times = np.frombuffer(times_bytes).copy()
    coords = xr.Coordinates({"time": ("time", times, {"units": model.symbolic.time_unit})})
    return dict(coords.variables), dict(coords.sizes), dict(coords.xindexes)


@lru_cache(maxsize=64)
def _variable_layout(model: CompiledModel, varied: tuple[str, ...]) -> tuple[tuple[str, str, int, dict], ...]:
    """(name, source in `got` or 'P', column, attrs) of every data variable of a result, in order."""
    units = model.symbolic.units
    layout = [(name, "Y", i, {"units": units.get(name, ""), "kind": "state"}) for i, name in enumerate(model.states)]
    for i, name in enumerate(model.output_names):
        kind = "observable" if name in model.spec.observables else "expression"
        layout.append((name, "outputs", i, {"units": units.get(name, ""), "kind": kind}))
    layout += [("status", "status", -1, {"meaning": str(STATUS_MEANINGS)}),
               ("n_steps", "n_steps", -1, {"description": "accepted solver steps"}),
               ("n_rejected", "n_rejected", -1, {"description": "rejected solver steps"})]
    layout += [(name, "P", model.parameters.index(name), {"units": units.get(name, ""), "kind": "parameter"})
               for name in varied]
    return tuple(layout)


def _dataset_data(model: CompiledModel, got: Mapping[str, np.ndarray], batch_index: pd.Index | None,
                  P: np.ndarray, varied: list[str]) -> dict[str, tuple[tuple[str, ...], Any, dict]]:
    """(dims, values, attrs) of every data variable of a result."""
    dims: tuple[str, ...] = ("time",) if batch_index is None else ("sample", "time")
    run_dims = dims[:-1]
    data: dict[str, Any] = {}
    for name, source, column, attrs in _variable_layout(model, tuple(varied)):
        if source in ("Y", "outputs"):
            values, var_dims = got[source][..., column], dims
        else:
            values, var_dims = (P[:, column] if source == "P" else got[source]), run_dims
        data[name] = (var_dims, values if batch_index is not None else np.asarray(values[0]), dict(attrs))
    return data


def _build_dataset(model: CompiledModel, times: np.ndarray, got: Mapping[str, np.ndarray],
                   batch_index: pd.Index | None, P: np.ndarray, varied: list[str], attrs: dict) -> xr.Dataset:
    """The Dataset of `to_dataset`, built from scratch."""
    coords: dict[str, Any] = {"time": ("time", times, {"units": model.symbolic.time_unit})}
    if batch_index is not None:
        coords["sample"] = ("sample", np.asarray(batch_index))
    return xr.Dataset(_dataset_data(model, got, batch_index, P, varied), coords=coords, attrs=attrs)


def _attrs(model, settings: SolverSettings, regimens: list[Regimen], steady_state: bool, **extra) -> dict:
    names = sorted({r.name for r in regimens})
    described = regimens[0].describe() if len(names) == 1 else f"{len(names)} regimens: {', '.join(names)}"
    return provenance(model, solver=settings.method, rtol=settings.rtol, atol=settings.atol,
                      max_steps=settings.max_steps, regimen=described,
                      preequilibrated=int(steady_state), **extra)


def simulate(model: CompiledModel, times: Any, params: Mapping[str, float] | None = None,
             initial: Mapping[str, float] | None = None, regimen: RegimenLike = None,
             rtol: float = 1e-6, atol: float = 1e-9, method: str | None = None,
             max_steps: int = 100_000, steady_state: bool = False, t0: float | None = None) -> xr.Dataset:
    """One dosed trajectory.

    times: output days (sorted); integration starts at t0 (default times[0]).
    params / initial: values replacing the spec's (by name). regimen: None for the spec's
    default, a regimen name from the spec, 'none', or a `Regimen`. steady_state: first run the
    untreated model to steady state and start from there. A failed run is returned with its
    `status` (and NaN states) and a warning, never an exception.
    """
    model = require_compiled(model, "simulate")
    settings = SolverSettings(rtol, atol, method, max_steps).resolved(model)
    times = time_grid(times)
    P, varied = parameter_matrix(model, _named_values(params, "params"), 1)
    Y0 = initial_matrix(model, P, _named_values(initial, "initial") or None)
    regimens = regimen_list(model, regimen, 1)
    start = times[0] if t0 is None else _real(t0, "t0")
    got = simulate_arrays(model, P, Y0, start, times, regimens, settings, steady_state)
    ds = to_dataset(model, times, got, None, P, [], _attrs(model, settings, regimens, steady_state))
    status = int(got["status"][0])
    if status != 0:
        warnings.warn(f"simulation of '{model.name}' failed: status {status} ({STATUS_MEANINGS[status]}) "
                      f"with parameters {_named_values(params, 'params')}; states after the failure are NaN. Try a "
                      "stiff method, tighter tolerances or more max_steps.", RuntimeWarning, stacklevel=2)
    return ds
