"""A dosed trajectory as a pure JAX function of chosen parameters (jit-, grad-, jacfwd-able).

`differentiable_simulator(model, times, params)` returns `f(theta (k,)) -> Y (n_times, n_outputs)`
for a model compiled with backend 'jax'. Everything that depends on the parameters is traced:
the right-hand side, the initial states (spec initial values may be expressions of parameters),
the dose conversion factors (e.g. 1/V1) and dose amounts given as expressions (e.g. "Dose" or
"15*weight"), so gradients flow through all of them. What stays fixed (static) is the schedule:
dose times, durations, target states and the output times.

Gradients are discretise-then-differentiate: reverse mode (`jax.grad`, `jax.jacrev`, `jax.vjp`)
through diffrax's recursive checkpointing by default, or forward mode (`jax.jacfwd`, `jax.jvp`)
with `forward_mode=True` (diffrax.ForwardMode), cheaper when the parameters are fewer than the
outputs x times. A failed solve (max_steps, non-finite state) returns NaN
everywhere, which optimisers treat as a rejected point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from ..compile import CompiledModel
from ..errors import CompileError, SimulationError
from .core import check_names, parameter_expression, regimen_list, require_compiled, time_grid
from .regimen import BOLUS, INFUSION_RATE, Regimen
from .sensitivities import checked_solver, checked_t0, checked_values, name_list


@dataclass(frozen=True)
class EventTemplate:
    """The static part of a regimen's events, sorted by time; values are computed from P.

    time, state, kind, drug, scale: (ne,); amount: per event a number or an expression text.
    An event adds scale * amount(P) * dose_factor(P)[drug] to state (kind BOLUS) or to the
    state's infusion rate (kind INFUSION_RATE; scale = +-1/duration).
    """

    time: np.ndarray
    state: np.ndarray
    kind: np.ndarray
    drug: np.ndarray
    scale: np.ndarray
    amount: tuple[float | str, ...]


def event_template(model: CompiledModel, regimen: Regimen) -> EventTemplate:
    """The events of `regimen` for `model` (raises SimulationError for an unknown drug)."""
    drugs = list(model.kernels.drug_names)
    rows: list[tuple[float, int, int, int, float, float | str]] = []
    for dose in regimen.doses:
        if dose.drug not in drugs:
            raise SimulationError(f"regimen '{regimen.name}' doses unknown drug '{dose.drug}' (this model's "
                                  f"drugs: {', '.join(drugs) or 'none'}); declare it under 'doses:' in the spec")
        state = model.states.index(model.symbolic.dose_targets[dose.drug].state)
        d = drugs.index(dose.drug)
        if dose.duration > 0:
            rows.append((dose.time, state, INFUSION_RATE, d, 1.0 / dose.duration, dose.amount))
            rows.append((dose.time + dose.duration, state, INFUSION_RATE, d, -1.0 / dose.duration, dose.amount))
        else:
            rows.append((dose.time, state, BOLUS, d, 1.0, dose.amount))
    rows.sort(key=lambda row: row[0])
    if not rows:  # one no-op event keeps the arrays non-empty
        rows = [(np.inf, 0, BOLUS, 0, 0.0, 0.0)]
    cols = list(zip(*rows))
    return EventTemplate(np.array(cols[0], float), np.array(cols[1], np.int64), np.array(cols[2], np.int64),
                         np.array(cols[3], np.int64), np.array(cols[4], float), tuple(cols[5]))


def jax_parameter_function(model: CompiledModel, text: str) -> Callable[[jax.Array], jax.Array]:
    """An expression of the model's parameters (e.g. a dose amount) -> f(P (n_par,)) -> scalar."""
    f = sp.lambdify(model.symbolic.param_symbols, parameter_expression(model, text), modules="jax")  # from sympy
    return lambda P: jnp.asarray(f(*P), dtype=jnp.float64)


def _event_values(model: CompiledModel, template: EventTemplate) -> Callable[[jax.Array], jax.Array]:
    """P (n_par,) -> event values (ne,) in state units (or state units per time for infusions)."""
    texts = sorted({a for a in template.amount if isinstance(a, str)})
    amount_fns = {t: jax_parameter_function(model, t) for t in texts}
    constant = np.array([0.0 if isinstance(a, str) else float(a) for a in template.amount])
    text_of = [a if isinstance(a, str) else None for a in template.amount]
    factors_fn = model.kernels._dose_factors  # jit(vmap(factors)) generated from sympy, traceable
    has_drugs = bool(model.kernels.drug_names)

    def values(P: jax.Array) -> jax.Array:
        evaluated = {t: f(P) for t, f in amount_fns.items()}
        amount = jnp.stack([evaluated[t] if t is not None else jnp.asarray(c)
                            for t, c in zip(text_of, constant)])
        factor = factors_fn(P[None])[0][template.drug] if has_drugs else jnp.zeros_like(amount)
        return template.scale * amount * factor

    return values


def differentiable_simulator(model: Any, times: Any, params: Sequence[str], *, regimen=None,
                             outputs: Sequence[str] | None = None, base: Mapping[str, float] | None = None,
                             log_params: bool = False, rtol: float = 1e-6, atol: float = 1e-9,
                             method: str = "kvaerno5", max_steps: int = 100_000,
                             initial: Mapping[str, float] | None = None,
                             t0: float | None = None,
                             forward_mode: bool = False) -> Callable[[jax.Array], jax.Array]:
    """Pure JAX function theta (k,) -> Y (n_times, n_outputs) for a model compiled with backend
    'jax' (CompileError otherwise), doses included; jit-, vmap-, grad- and jacrev-able, or
    jacfwd-able with forward_mode=True (see the module docstring).

    params: names of the k parameters in theta (the others: nominal, or `base`).
    outputs: names of states, expressions or observables (default: all states), in natural
        units (log-scaled states are exponentiated).
    log_params: theta are ln(parameter values).
    regimen: None (the spec's default), a regimen name, 'none' or a `Regimen`.
    initial: fixed initial values of states, replacing the spec's (which may depend on params).
    t0: start of integration in days (default times[0]).
    The returned function carries `.params`, `.outputs`, `.times` and `.theta0` (the nominal /
    `base` values of params, on the theta scale) as attributes. Failed solves return NaN.
    """
    model = require_compiled(model, "differentiable_simulator")
    if model.backend != "jax":
        raise CompileError(f"differentiable_simulator needs a model compiled with backend='jax', got "
                           f"'{model.backend}' for '{model.name}': call ie.compile_model(spec, backend='jax')")
    solver = checked_solver(model, rtol, atol, max_steps, method)
    rtol, atol, method, max_steps = solver.rtol, solver.atol, solver.method, solver.max_steps
    params = name_list(params, "params")
    outputs = list(model.states) if outputs is None else name_list(outputs, "outputs")
    check_names(model, params, model.parameters, "a parameter")
    base = checked_values(model, base, model.parameters, "a parameter")
    initial = checked_values(model, initial, model.states, "a state")
    check_names(model, outputs, list(model.states) + list(model.output_names), "a state or output")
    if len(set(params)) != len(params):
        raise SimulationError(f"params lists a parameter twice: {params}")

    t_out = jnp.asarray(time_grid(times))
    start = checked_t0(t0, float(t_out[0]))
    P_base = np.asarray(model.symbolic.param_values, dtype=float).copy()
    for name, value in base.items():
        P_base[model.parameters.index(name)] = float(value)
    idx = jnp.asarray([model.parameters.index(p) for p in params], dtype=jnp.int32)
    theta0 = P_base[np.asarray(idx, dtype=int)] if params else np.zeros(0)
    if log_params:
        if np.any(theta0 <= 0):
            bad = [p for p, v in zip(params, theta0) if v <= 0]
            raise SimulationError(f"log_params needs positive values, but {bad} are <= 0 in '{model.name}'")
        theta0 = np.log(theta0)

    fixed_initial = {model.states.index(s): (np.log(v) if s in model.symbolic.log_states else float(v))
                     for s, v in initial.items()}
    fixed_idx = jnp.asarray(list(fixed_initial), dtype=jnp.int32)
    fixed_val = jnp.asarray(list(fixed_initial.values()), dtype=jnp.float64)

    template = event_template(model, regimen_list(model, regimen, 1)[0])
    event_values = _event_values(model, template)
    ev_t, ev_state, ev_kind = (jnp.asarray(a) for a in (template.time, template.state, template.kind))

    state_pos = {s: i for i, s in enumerate(model.states)}
    out_pos = {o: i for i, o in enumerate(model.output_names)}
    log_idx = set(model.symbolic.log_state_indices)
    picks = [("state", state_pos[o]) if o in state_pos else ("output", out_pos[o]) for o in outputs]
    needs_outputs = any(kind == "output" for kind, _ in picks)
    kernels = model.kernels
    vector_field = kernels.vector_field
    from ..compile.jax_backend import solve_trajectory  # imported here: it enables float64 on import
    import diffrax

    adjoint = diffrax.ForwardMode() if forward_mode else None

    def simulate(theta: jax.Array) -> jax.Array:
        theta = jnp.asarray(theta, dtype=jnp.float64)
        if theta.shape != idx.shape:  # static under jit and vmap: checked when traced, not per call
            raise SimulationError(f"theta must have shape ({len(params)},), one value per name in params "
                                  f"{params}, got shape {theta.shape}")
        values = jnp.exp(theta) if log_params else theta
        P = jnp.asarray(P_base).at[idx].set(values)
        y0 = kernels._initial(P[None])[0]
        y0 = y0.at[fixed_idx].set(fixed_val)
        Y, _status, _n_acc, _n_rej = solve_trajectory(
            vector_field, y0, P, start, t_out, ev_t, ev_state, ev_kind, event_values(P),
            rtol, atol, method=method, max_steps=int(max_steps), adjoint=adjoint)
        O = kernels._outputs(t_out, Y[None], P[None])[0] if needs_outputs else None
        cols = [(jnp.exp(Y[:, i]) if i in log_idx else Y[:, i]) if kind == "state" else O[:, i]
                for kind, i in picks]
        return jnp.stack(cols, axis=1) if cols else jnp.zeros((t_out.shape[0], 0))

    simulate.params = tuple(params)
    simulate.outputs = tuple(outputs)
    simulate.times = np.asarray(t_out)
    simulate.theta0 = np.asarray(theta0, dtype=float)
    return simulate
