"""Local sensitivities: normalised coefficients S = d ln y / d ln p = (p / y) dy/dp at nominal values.

Three ways to the derivative:
- 'forward' (models compiled with backend='numba'): the sensitivity equations integrated with
  the model by Rodas5P (`simulate.sensitivities.ForwardSensitivities`), doses included; exact up
  to the solver's discretisation. Outputs that reduce a trajectory (a value at a time, an AUC, a
  maximum) get their derivatives by the chain rule through the reduction (`jax.jvp` of the same
  code that evaluates them).
- 'autodiff' (models compiled with backend='jax'): forward-mode JAX (`jax.jacfwd`, one tangent
  per parameter, diffrax.ForwardMode) through the diffrax solve built by
  `differentiable_simulator`, doses included; exact up to the solver's discretisation. Forward
  mode because the parameters (k) are few against outputs x times.
- 'fd' (any backend, and user-defined outputs): central differences in ln p,
  dy/d ln p ~ (y(p e^h) - y(p e^-h)) / 2h, from 2k + 1 runs of `simulate_batch`. The default step
  h = rtol^(1/3) (clipped to [1e-4, 0.05]) balances the O(h^2) truncation error against the
  solver error ~rtol/h (the usual optimum for central differences of a function known to ~rtol).

dy/d ln p = p dy/dp is reported too (`dy_dlnp`); it stays finite where y = 0, where S is NaN.
A parameter at 0 has dy/d ln p = 0.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ..compile import CompiledModel
from ..errors import SimulationError
from ..io.results import STATUS_MEANINGS, provenance
from ..simulate import simulate_batch
from ..simulate.core import parameter_matrix, regimen_list, require_compiled
from .designs import check_parameter
from .outputs import Output, evaluate_outputs, output_grid, parse_outputs, split_kind

Derivative = Literal["auto", "forward", "autodiff", "fd"]


def default_step(rtol: float) -> float:
    """Central-difference step in ln p for a solver relative tolerance `rtol`."""
    return float(np.clip(rtol ** (1.0 / 3.0), 1e-4, 0.05))


def _nominal(model: CompiledModel, names: Sequence[str], base: Mapping[str, float]) -> np.ndarray:
    values = dict(zip(model.parameters, model.symbolic.param_values))
    for name in list(names) + list(base):
        check_parameter(model, name)
    values.update({k: float(v) for k, v in base.items()})
    return np.array([values[n] for n in names], dtype=float)


def _autodiff(model: CompiledModel, outputs: list[Output], names: list[str], grid: np.ndarray,
              base: Mapping[str, float], initial: Mapping[str, float], regimen: Any, rtol: float, atol: float,
              method: str | None, max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(y (output[, time]), dy/d ln p (output[, time], param)) by jax.jacfwd through the solve."""
    import jax
    import jax.numpy as jnp

    from ..simulate.differentiable import differentiable_simulator

    _require_differentiable(outputs, "autodiff")
    variables = list(dict.fromkeys(o.variable for o in outputs))
    f = differentiable_simulator(model, grid, names, regimen=regimen, outputs=variables, base=base,
                                 initial=initial, rtol=rtol, atol=atol, method=method or "kvaerno5",
                                 max_steps=max_steps, forward_mode=True)

    def quantities(theta):
        Y = f(theta)
        return jnp.stack([o.on_trajectory(Y[:, variables.index(o.variable)], grid, jnp) for o in outputs])

    def value_and_jacobian(theta):
        # one traced solve serves the value and the Jacobian (jax.jacfwd would trace it again for y)
        pushforward = lambda tangent: jax.jvp(quantities, (theta,), (tangent,))
        y, J = jax.vmap(pushforward, out_axes=(None, -1))(jnp.eye(theta.size, dtype=theta.dtype))
        return y, J

    y, J = jax.jit(value_and_jacobian)(jnp.asarray(f.theta0))
    return np.asarray(y), np.asarray(J) * np.asarray(f.theta0)


def _reduce_with_tangents(outputs: list[Output], variables: list[str], grid: np.ndarray, Y: Any,
                          dY: Any) -> tuple[np.ndarray, np.ndarray]:
    """(y (output[, time]), dy (output[, time], param)): the outputs of trajectories Y (n_t, n_var)
    and their pushforward of the tangents dY (n_t, n_var, param) through each output's reduction."""
    import jax
    import jax.numpy as jnp

    # float64, as everywhere in immunoedit (`compile.jax_backend`): without it, a process that
    # has not used the JAX backend yet reduced numba's float64 trajectories in float32
    jax.config.update("jax_enable_x64", True)

    def quantities(values):
        return jnp.stack([o.on_trajectory(values[:, variables.index(o.variable)], grid, jnp) for o in outputs])

    pushforward = lambda tangent: jax.jvp(quantities, (jnp.asarray(Y),), (tangent,))  # noqa: E731
    y, J = jax.vmap(pushforward, in_axes=-1, out_axes=(None, -1))(jnp.asarray(dY))
    return np.asarray(y), np.asarray(J)


def _forward(model: CompiledModel, outputs: list[Output], names: list[str], grid: np.ndarray,
             base: Mapping[str, float], initial: Mapping[str, float], regimen: Any, rtol: float, atol: float,
             max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, dy/d ln p) from the numba backend's forward sensitivities."""
    from ..simulate.sensitivities import ForwardSensitivities

    _require_differentiable(outputs, "forward")
    variables = list(dict.fromkeys(o.variable for o in outputs))
    fs = ForwardSensitivities(model, grid, names, regimen=regimen, initial=initial, rtol=rtol, atol=atol,
                              max_steps=max_steps)
    P, _ = parameter_matrix(model, {k: [v] for k, v in base.items()}, 1)
    got = fs.solve(P)
    if got.status[0] != 0:
        status = int(got.status[0])
        raise SimulationError(f"the nominal simulation of '{model.name}' with sensitivities failed (status {status}: "
                              f"{STATUS_MEANINGS.get(status)}): check the nominal values, or change rtol/atol, "
                              "max_steps")
    values, derivs = fs.outputs(got, P, variables)
    y, dy = _reduce_with_tangents(outputs, variables, grid, values[0], derivs[0])
    return y, dy * P[0, fs.kernels.index]


def _require_differentiable(outputs: list[Output], derivative: str) -> None:
    undifferentiable = [o.name for o in outputs if not o.differentiable]
    if undifferentiable:
        raise SimulationError(f"outputs {undifferentiable} are user functions of the batch, which derivative="
                              f"'{derivative}' cannot differentiate: use derivative='fd'")


def _finite_differences(model: CompiledModel, outputs: list[Output], names: list[str], grid: np.ndarray,
                        base: Mapping[str, float], initial: Mapping[str, float], regimen: Any, rtol: float,
                        atol: float, method: str | None, max_steps: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(y, dy/d ln p) by central differences in ln p over 2k + 1 runs of simulate_batch."""
    k = len(names)
    p0 = _nominal(model, names, base)
    factors = np.ones((2 * k + 1, k))
    factors[1 + 2 * np.arange(k), np.arange(k)] = math.exp(step)
    factors[2 + 2 * np.arange(k), np.arange(k)] = math.exp(-step)
    table = pd.DataFrame(factors * p0, columns=names)
    for name, value in base.items():
        if name not in table:
            table[name] = float(value)
    start = pd.DataFrame({s: np.full(len(table), float(v)) for s, v in initial.items()}) if initial else None
    batch = simulate_batch(model, params=table, times=grid, initial=start, regimen=regimen, rtol=rtol, atol=atol,
                           method=method, max_steps=max_steps)
    status = batch["status"].values
    if np.any(status != 0):
        runs = np.flatnonzero(status != 0)
        what = ["nominal" if r == 0 else f"{names[(r - 1) // 2]} x exp({'+' if r % 2 else '-'}{step:g})"
                for r in runs]
        raise SimulationError(f"{len(runs)} finite-difference runs of '{model.name}' failed: "
                              + ", ".join(f"{w} (status {status[r]}: {STATUS_MEANINGS.get(int(status[r]))})"
                                          for w, r in zip(what, runs))
                              + "; check the nominal values, or change the solver settings or the step")
    Y = evaluate_outputs(outputs, batch)
    dy = (Y[1::2] - Y[2::2]) / (2.0 * step)  # (param, output[, time])
    return Y[0], np.moveaxis(dy, 0, -1)


def _parameter_names(model: CompiledModel, params: Sequence[str] | str | None) -> list[str]:
    """The parameters to differentiate by: every one (None), one name, or distinct names."""
    if params is None:
        return list(model.parameters)
    names = [params] if isinstance(params, str) else list(params) if isinstance(params, Iterable) else [params]
    if not names or not all(isinstance(name, str) for name in names):
        raise SimulationError(f"params must be parameter names (local sensitivities are taken at the nominal "
                              f"values, without ranges), got {params!r}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SimulationError(f"parameters named more than once: {', '.join(repeated)}")
    return names


def local_sensitivity(model: CompiledModel, outputs: Sequence[str | Output] | str | Output | None = None,
                      params: Sequence[str] | str | None = None, *, times: Any = None,
                      base: Mapping[str, float] | None = None, initial: Mapping[str, float] | None = None,
                      regimen: Any = None, derivative: Derivative = "auto", step: float | None = None,
                      rtol: float = 1e-6, atol: float = 1e-9, method: str | None = None,
                      max_steps: int = 100_000) -> xr.Dataset:
    """Normalised local sensitivity coefficients d ln y / d ln p at the nominal parameters.

    outputs: see `parse_output` (default: every state, time-resolved); params: a name or names
    (default all); times: output days (see `output_grid`); base / initial: nominal parameter values and
    initial states replacing the spec's; derivative: 'forward' (numba backend: sensitivity
    equations), 'autodiff' (JAX backend), 'fd' (central differences, any backend) or 'auto'
    (autodiff on JAX models, forward on numba models, fd for user-function outputs or other
    backends); step: fd step in ln p.
    Returns a Dataset with `S` and `dy_dlnp` over (output, [time,] param), `value` (y) and the
    `nominal` parameter values.
    """
    model = require_compiled(model, "local_sensitivity")
    parsed = parse_outputs(list(model.states) if outputs is None else outputs, model)
    time_resolved = split_kind(parsed)
    names = _parameter_names(model, params)
    base, initial = dict(base or {}), dict(initial or {})
    nominal = _nominal(model, names, base)
    grid = output_grid(parsed, times)
    if derivative == "auto":
        exact = {"jax": "autodiff", "numba": "forward"}.get(model.backend)
        derivative = exact if exact and all(o.differentiable for o in parsed) else "fd"
    if derivative == "forward":
        if model.backend != "numba":
            raise SimulationError(f"derivative='forward' needs a model compiled with backend='numba', got "
                                  f"'{model.backend}': use derivative='autodiff' (jax) or 'fd'")
        y, dy = _forward(model, parsed, names, grid, base, initial, regimen, rtol, atol, max_steps)
    elif derivative == "autodiff":
        if model.backend != "jax":
            raise SimulationError(f"derivative='autodiff' needs a model compiled with backend='jax', got "
                                  f"'{model.backend}': compile with ie.compile_model(spec, backend='jax') "
                                  "or use derivative='fd'")
        y, dy = _autodiff(model, parsed, names, grid, base, initial, regimen, rtol, atol, method, max_steps)
        if not np.all(np.isfinite(y)):
            raise SimulationError(f"the nominal simulation of '{model.name}' failed (non-finite outputs): check the "
                                  "nominal values, or change the solver settings (method, rtol/atol, max_steps)")
    elif derivative == "fd":
        step = default_step(rtol) if step is None else float(step)
        if not 0 < step < 1:
            raise SimulationError(f"the finite-difference step in ln p must be in (0, 1), got {step:g}")
        y, dy = _finite_differences(model, parsed, names, grid, base, initial, regimen, rtol, atol, method,
                                    max_steps, step)
    else:
        raise SimulationError(f"derivative must be 'auto', 'forward', 'autodiff' or 'fd', got {derivative!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        S = np.where(y[..., None] != 0, dy / y[..., None], np.nan)
    lead = ("output", "time") if time_resolved else ("output",)
    coords: dict[str, Any] = {"param": names, "output": [o.name for o in parsed]}
    if time_resolved:
        coords["time"] = ("time", grid, {"units": model.symbolic.time_unit})
    solver = method or {"autodiff": "kvaerno5", "forward": "rodas5p"}.get(derivative)
    attrs = provenance(model, analysis="local", derivative=derivative, step=step if derivative == "fd" else None,
                       rtol=rtol, atol=atol, solver=solver, max_steps=max_steps,
                       regimen=regimen_list(model, regimen, 1)[0].describe(),
                       outputs=[o.name for o in parsed], base=base or None, initial=initial or None)
    return xr.Dataset({
        "S": (lead + ("param",), S, {"description": "normalised sensitivity coefficient d ln y / d ln p"}),
        "dy_dlnp": (lead + ("param",), dy, {"description": "p dy/dp, in the output's unit"}),
        "value": (lead, y, {"description": "output at the nominal parameters"}),
        "nominal": (("param",), nominal, {"description": "nominal parameter values"}),
    }, coords=coords, attrs=attrs)
