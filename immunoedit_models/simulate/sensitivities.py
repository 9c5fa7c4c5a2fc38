"""Forward sensitivities of dosed trajectories with the numba backend.

    fs = ForwardSensitivities(model, times, wrt=["kkill", "rT"])      # prepared once
    got = fs.solve(P)                  # P (B, n_par) -> states and d state / d p per trajectory
    ds = forward_sensitivities(model, times, wrt=[...], params={...})  # one labelled run

The sensitivity equations are integrated together with the model by Rodas5P with the exact
augmented Jacobian (`compile.numba_sensitivity`): derivatives of states, expressions and
observables with respect to parameters, at the solver's accuracy (rtol on the sensitivities
too unless sens_error=False), with initial states and dose amounts that depend on parameters
differentiated exactly (e.g. a bolus Dose/V1 gives jumps 1/V1 and -Dose/V1^2). The JAX backend
gets the same derivatives by autodiff (`differentiable_simulator`); this path is for numba models
(no JAX compile, no tracing) and is the fast gradient of time-course objectives.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import sympy as sp
import xarray as xr

from ..compile import CompiledModel
from ..compile.numba_sensitivity import output_derivatives, sensitivity_entry
from ..compile.numba_solvers import STATUS_NAMES
from ..compile.sensitivity_kernels import sensitivity_kernels
from ..errors import CompileError, SimulationError
from ..io.results import STATUS_MEANINGS, provenance
from .core import (SolverSettings, _real, check_names, parameter_expression, parameter_function, parameter_matrix,
                   regimen_list, require_compiled, time_grid)
from .regimen import Regimen, event_arrays


@dataclass(frozen=True)
class SensitivityArrays:
    """Raw results of `ForwardSensitivities.solve` for B trajectories (kernel coordinates: ln of
    log-scaled states). y (B, n_t, n), s (B, n_t, n, k) = d y_i / d p_m, status, n_steps,
    n_rejected (B,)."""

    y: np.ndarray
    s: np.ndarray
    status: np.ndarray
    n_steps: np.ndarray
    n_rejected: np.ndarray


def _amount_gradient(model: CompiledModel, text: str, index: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """d amount / d p[index] of a dose amount given as an expression: P (n_par,) -> (k,)."""
    p = model.symbolic.param_symbols
    expr = parameter_expression(model, text)
    grad = sp.lambdify([p], [sp.diff(expr, p[m]) for m in index], "numpy")  # from sympy, not user text
    return lambda P: np.asarray(grad(P), dtype=float).reshape(len(index))


def name_list(names: Any, what: str) -> list[str]:
    """Names as a list of str; SimulationError for a bare string, which would be read letter by letter."""
    if isinstance(names, str):
        raise SimulationError(f"{what} must be a list of names, got the string {names!r} (write [{names!r}])")
    return [str(n) for n in names]


def checked_solver(model: CompiledModel, rtol: Any, atol: Any, max_steps: Any, method: str | None = None
                   ) -> SolverSettings:
    """The solver settings checked as for `simulate` (0 < rtol < 1, 0 < atol < inf, integer max_steps >= 1)."""
    return SolverSettings(rtol, atol, method, max_steps).resolved(model)


def checked_t0(t0: Any, first_time: float) -> float:
    """The start of integration: first_time if None, else a finite number not after it."""
    start = first_time if t0 is None else _real(t0, "t0")
    if not np.isfinite(start):
        raise SimulationError(f"t0 must be a finite number of days, got {t0!r}")
    if start > first_time:
        raise SimulationError(f"t0 = {start} is after the first output time {first_time}")
    return float(start)


def checked_values(model: CompiledModel, values: Mapping[str, Any] | None, known: Sequence[str], what: str
                   ) -> dict[str, float]:
    """{name: finite float} for names among `known` (`what`: 'a parameter', 'a state'); log-scaled
    states must be positive."""
    values = dict(values or {})
    check_names(model, list(values), known, what)
    out = {name: _real(v, f"{what[2:]} '{name}'") for name, v in values.items()}
    for name, v in out.items():
        if not np.isfinite(v) or (name in model.symbolic.log_states and v <= 0):
            need = "a positive" if name in model.symbolic.log_states else "a finite"
            raise SimulationError(f"{what[2:]} '{name}' must be {need} number, got {values[name]!r}")
    return out


class ForwardSensitivities:
    """Forward sensitivities of one model, regimen and output grid w.r.t. parameters `wrt`.

    Prepared once (kernels generated and compiled on first use, cached on disk), then
    `solve(P)` for any parameter values. initial: fixed initial states (natural units) that
    replace the spec's (their sensitivities are zero). sens_error: include the sensitivities in
    the step-size control (more accurate derivatives, a few more steps; as CVODES' errconS),
    with absolute tolerance atol / |p_m| for d y / d p_m.
    """

    def __init__(self, model: CompiledModel, times: Any, wrt: Sequence[str], *, regimen: Any = None,
                 initial: Mapping[str, float] | None = None, rtol: float = 1e-6, atol: float = 1e-9,
                 sens_error: bool = True, max_steps: int = 100_000, t0: float | None = None):
        model = require_compiled(model, "ForwardSensitivities")
        if model.backend != "numba":
            raise CompileError(f"forward sensitivities run on backend 'numba', got '{model.backend}' for "
                               f"'{model.name}': compile with backend='numba', or use "
                               "differentiable_simulator for a JAX model")
        wrt = name_list(wrt, "wrt")
        if not wrt or len(set(wrt)) != len(wrt):
            raise SimulationError(f"wrt must name one or more distinct parameters, got {wrt}")
        check_names(model, wrt, model.parameters, "a parameter")
        initial = checked_values(model, initial, model.states, "a state")
        solver = checked_solver(model, rtol, atol, max_steps)
        self.model = model
        self.wrt = tuple(wrt)
        self.times = time_grid(times)
        self.t0 = checked_t0(t0, float(self.times[0]))
        self.regimen = regimen_list(model, regimen, 1)[0]
        if any(d.stoppable for d in self.regimen.doses):
            raise SimulationError(f"regimen '{self.regimen.name}' gives doses until progression, which is "
                                  "not a differentiable function of the parameters; use a fixed schedule")
        self.initial = {model.states.index(s): (np.log(v) if s in model.symbolic.log_states else float(v))
                        for s, v in initial.items()}
        self.rtol, self.atol, self.sens_error, self.max_steps = solver.rtol, solver.atol, bool(sens_error), solver.max_steps
        self.kernels = sensitivity_kernels(model.symbolic, self.wrt)
        index = self.kernels.index
        texts = sorted({d.amount for d in self.regimen.doses if isinstance(d.amount, str)})
        self._amount_grads = {t: _amount_gradient(model, t, index) for t in texts}
        # term d amount/dp * factor: constant amounts contribute nothing
        self._text_only = Regimen(tuple(d if isinstance(d.amount, str) else dataclasses.replace(d, amount=0.0)
                                        for d in self.regimen.doses), self.regimen.name)
        self._dose_states = {d: model.states.index(t.state) for d, t in model.symbolic.dose_targets.items()}

    # ---- inputs of the kernel -------------------------------------------------------------
    def _events(self, P: np.ndarray) -> tuple[Any, np.ndarray]:
        """Event arrays (B, n_ev) and d value / d p (B, n_ev, k) for parameter rows P (B, n_par)."""
        kernels = self.model.kernels
        drugs = list(kernels.drug_names)
        factors = np.asarray(kernels.dose_factors(P))
        amount_of = lambda text: parameter_function(self.model, text)(P)  # noqa: E731
        ev = event_arrays([self.regimen] * len(P), factors, drugs, self._dose_states, amount_of)
        k = len(self.wrt)
        dvalue = np.zeros(ev.value.shape + (k,))
        for b, row in enumerate(P):
            # value = amount(P) * factor(P) per event: the product rule, k parameters as k "rows"
            d_factor = self.kernels.factor_dp(row).T if drugs else np.zeros((k, 0))   # (k, n_drugs)
            amounts = lambda text: np.full(k, parameter_function(self.model, text)(row[None])[0])  # noqa: E731
            by_factor = event_arrays([self.regimen] * k, d_factor, drugs, self._dose_states, amounts).value
            by_amount = event_arrays([self._text_only] * k, np.tile(factors[b], (k, 1)), drugs,
                                     self._dose_states, lambda text: self._amount_grads[text](row)).value
            dvalue[b] = (by_factor + by_amount).T
        return ev, dvalue

    def _start(self, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Initial states (B, n) in kernel coordinates and their sensitivities (B, n k)."""
        y0 = np.array(self.model.kernels.initial(P), dtype=float)
        s0 = np.stack([self.kernels.initial_dp(row).ravel() for row in P])   # (B, n k), state-major
        k = len(self.wrt)
        for i, value in self.initial.items():
            y0[:, i] = value
            s0[:, i * k:(i + 1) * k] = 0.0
        return y0, s0

    def solve(self, P: Any) -> SensitivityArrays:
        """Integrate B trajectories with parameter rows P (B, n_par) (order `model.parameters`)."""
        P = np.require(self._rows(P), requirements=("C", "W"))
        model = self.model
        y0, s0 = self._start(P)
        ev, dvalue = self._events(P)
        n, k = model.symbolic.n_states, len(self.wrt)
        p_wrt = np.abs(P[:, self.kernels.index])        # atol / |p_m| for d y / d p_m, per row
        atol_s = np.ascontiguousarray(np.where(p_wrt > 0, self.atol / np.where(p_wrt > 0, p_wrt, 1.0), self.atol))
        kern = model.kernels
        out, status, n_acc, n_rej = sensitivity_entry()(
            kern.rhs.dispatcher, kern.jac.dispatcher, kern.tgrad.dispatcher, self.kernels.sens_rhs,
            self.kernels.sens_dir,
            self.kernels.sens_tgrad, kern.blocks, y0, np.ascontiguousarray(s0),
            kern.extended_parameters(P), self.t0, self.times,
            ev.time, ev.state, ev.kind, np.ascontiguousarray(ev.value), np.ascontiguousarray(dvalue),
            self.rtol, self.atol, atol_s, self.sens_error, self.max_steps, 0.0)
        B, n_t = len(P), self.times.size
        return SensitivityArrays(out[..., :n], out[..., n:].reshape(B, n_t, n, k), status, n_acc, n_rej)

    def _rows(self, P: Any) -> np.ndarray:
        """P as float rows (B >= 1, n_par); SimulationError otherwise."""
        raw = np.atleast_2d(np.asarray(P))
        n_par = len(self.model.parameters)
        if raw.dtype.kind not in "iuf" or raw.ndim != 2 or raw.shape[0] == 0 or raw.shape[1] != n_par:
            raise SimulationError(f"P must be numbers of shape (B, {n_par}) with B >= 1 (one row per trajectory, "
                                  f"columns in model.parameters order), got {raw.ndim}-d {raw.dtype} {raw.shape}")
        return raw.astype(float)

    # ---- readouts ---------------------------------------------------------------------------
    def outputs(self, got: SensitivityArrays, P: Any, names: Sequence[str] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Values (B, n_t, n_names) and derivatives (B, n_t, n_names, k) of states, expressions or
        observables `names` (default: the states), in natural units."""
        model = self.model
        names = list(model.states) if names is None else name_list(names, "names")
        check_names(model, names, list(model.states) + list(model.output_names), "a state or output")
        P = self._rows(P)
        B, n_t = got.y.shape[:2]
        if len(P) != B:
            raise SimulationError(f"P has {len(P)} rows but the solve has {B} trajectories: pass the P given to solve()")
        k = len(self.wrt)
        values = np.empty((B, n_t, len(names)))
        derivs = np.empty((B, n_t, len(names), k))
        need_outputs = any(name not in model.states for name in names)
        log_idx = set(model.symbolic.log_state_indices)
        for b in range(B):
            if need_outputs:
                o_val = model.kernels.outputs(self.times, got.y[b][None], P[b][None])[0]
                o_der = output_derivatives(self.kernels.outputs_dy, self.kernels.outputs_dp, self.times,
                                           np.ascontiguousarray(got.y[b]), np.ascontiguousarray(got.s[b]),
                                           np.ascontiguousarray(P[b]), len(model.output_names))
            for c, name in enumerate(names):
                if name in model.states:
                    i = model.states.index(name)
                    values[b, :, c] = np.exp(got.y[b, :, i]) if i in log_idx else got.y[b, :, i]
                    scale = values[b, :, c, None] if i in log_idx else 1.0   # d X = X d ln X
                    derivs[b, :, c] = scale * got.s[b, :, i, :]
                else:
                    o = model.output_names.index(name)
                    values[b, :, c] = o_val[:, o]
                    derivs[b, :, c] = o_der[:, o]
        return values, derivs


def forward_sensitivities(model: CompiledModel, times: Any, wrt: Sequence[str],
                          params: Mapping[str, float] | None = None, initial: Mapping[str, float] | None = None,
                          regimen: Any = None, outputs: Sequence[str] | None = None, rtol: float = 1e-6,
                          atol: float = 1e-9, sens_error: bool = True, max_steps: int = 100_000,
                          t0: float | None = None) -> xr.Dataset:
    """One dosed trajectory and its derivatives with respect to the parameters `wrt`.

    Returns a Dataset over `time` with each output (default: the states) as a variable, and
    `sensitivity` (time, output, param): d output / d param in output units per parameter unit;
    status, n_steps, n_rejected; provenance attributes. A failed run is returned with its status
    (NaN after the failure), never raised.
    """
    fs = ForwardSensitivities(model, times, wrt, regimen=regimen, initial=initial, rtol=rtol, atol=atol,
                              sens_error=sens_error, max_steps=max_steps, t0=t0)
    P, _ = parameter_matrix(fs.model, {k: [v] for k, v in (params or {}).items()}, 1)
    got = fs.solve(P)
    names = list(fs.model.states) if outputs is None else name_list(outputs, "outputs")
    values, derivs = fs.outputs(got, P, names)
    units = fs.model.symbolic.units
    data: dict[str, Any] = {name: ("time", values[0, :, c], {"units": units.get(name, "")})
                            for c, name in enumerate(names)}
    data["sensitivity"] = (("time", "output", "param"), derivs[0],
                           {"description": "d output / d param (output units per parameter unit)"})
    data["status"] = ((), int(got.status[0]), {"meaning": str(STATUS_MEANINGS)})
    data["n_steps"] = ((), int(got.n_steps[0]), {"description": "accepted solver steps"})
    data["n_rejected"] = ((), int(got.n_rejected[0]), {"description": "rejected solver steps"})
    coords = {"time": ("time", fs.times, {"units": fs.model.symbolic.time_unit}), "output": names,
              "param": list(fs.wrt),
              "param_value": ("param", P[0, fs.kernels.index], {"description": "parameter values"})}
    attrs = provenance(fs.model, solver="rodas5p (forward sensitivities)", rtol=fs.rtol, atol=fs.atol,
                       max_steps=fs.max_steps, regimen=fs.regimen.describe(),
                       sensitivity_error_control=int(fs.sens_error),
                       status_name=STATUS_NAMES.get(int(got.status[0]), "unknown"))
    return xr.Dataset(data, coords=coords, attrs=attrs)
