"""The time-course objective: PEtab-style measurements against a compiled model.

`TimecourseObjective(problem)` compiles the problem's model with the problem's backend:
- 'jax': per simulation condition a `differentiable_simulator` at the condition's measurement
  times; the negative log-likelihood is a pure JAX function of the fit vector x (fit scale: ln
  value for `scale: log` parameters), and `value_and_grad` is autodiff through the solver;
- 'numba': per condition a `ForwardSensitivities` run (Rodas5P with the sensitivity equations),
  giving the predictions and their exact derivatives; the gradient is the chain rule through
  the same JAX likelihood code (`nll_from_predictions`), so both backends share one noise model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..compile import CompiledModel, compile_model
from ..errors import FitError
from ..simulate.core import parameter_matrix, time_grid
from ..simulate.differentiable import differentiable_simulator
from ..simulate.sensitivities import ForwardSensitivities
from .likelihoods import NOISE, transform
from .optimize import check_finite, fit_vector, vector_message
from .problem import FitProblem, check_free_parameters

#: Value (and zero gradient) returned where the solver fails, so line searches back off.
FAILED_VALUE = 1e12


@dataclass(frozen=True)
class _Group:
    """Rows sharing one (transformation, noise model): where their predictions and sigmas come from."""

    transformation: str
    noise: str
    rows: np.ndarray        # positions in the measurement table
    flat: np.ndarray        # positions in the concatenated prediction vector
    y: np.ndarray
    sigma_const: np.ndarray
    sigma_param: np.ndarray  # index into x, or -1 for a fixed sigma


class TimecourseObjective:
    """Negative log-likelihood of a timecourse problem; `value(x)`, `value_and_grad(x)` on the fit scale.

    model: the compiled model (default: the problem's model compiled with the problem's backend,
    'jax' or 'numba'). use_priors: add -ln prior(x) (MAP estimation).
    """

    def __init__(self, problem: FitProblem, model: CompiledModel | None = None, use_priors: bool | None = None):
        if problem.kind != "timecourse":
            raise FitError(f"problem '{problem.name}' is a {problem.kind} problem, not a timecourse")
        self.problem = problem
        self.model = model if model is not None else compile_model(problem.model_path(), backend=problem.backend)
        if self.model.backend not in ("jax", "numba"):
            raise FitError(f"problem '{problem.name}': time courses are fitted with backend 'jax' (autodiff) or "
                           f"'numba' (forward sensitivities), got '{self.model.backend}'")
        if self.model.backend == "numba" and problem.solver.method not in (None, "rodas5p"):
            raise FitError(f"problem '{problem.name}': backend 'numba' fits with forward sensitivities of "
                           f"Rodas5P; solver method '{problem.solver.method}' is a JAX method (remove it or "
                           "set backend: jax)")
        self.params = problem.parameters
        self.use_priors = problem.fit.use_priors if use_priors is None else use_priors
        names = self.params.names
        self.model_params = [n for n in names if problem.roles.get(n, "model") == "model"]
        check_free_parameters(problem, self.model.name, self.model.parameters)
        self._model_idx = np.array([names.index(n) for n in self.model_params], dtype=int)
        self._build(problem.measurements)

    def _build(self, table: pd.DataFrame) -> None:
        p, names = self.problem, self.params.names
        sims, flat_index, offset = [], np.zeros(len(table), dtype=int), 0
        for cond in p.conditions.values():
            rows = np.flatnonzero(table["simulationConditionId"].to_numpy() == cond.name)
            if rows.size == 0:
                continue
            sub = table.iloc[rows]
            times = np.unique(sub["time"].to_numpy(float))
            outputs = sorted({p.observables[o].output for o in sub["observableId"]})
            sims.append(self._condition_simulator(cond, times, outputs))
            t_idx = np.searchsorted(times, sub["time"].to_numpy(float))
            o_idx = np.array([outputs.index(p.observables[o].output) for o in sub["observableId"]])
            flat_index[rows] = offset + t_idx * len(outputs) + o_idx
            offset += len(times) * len(outputs)
        self._sims = sims
        groups = []
        obs = table["observableId"].to_numpy()
        for key in sorted({(p.observables[o].transformation, p.observables[o].noise) for o in set(obs)}):
            rows = np.flatnonzero([(p.observables[o].transformation, p.observables[o].noise) == key for o in obs])
            sig_const = np.array([p.observables[o].sigma if not isinstance(p.observables[o].sigma, str) else 1.0
                                  for o in obs[rows]], dtype=float)
            if "noise" in table:
                sig_const = table["noise"].to_numpy(float)[rows]
            sig_param = np.array([names.index(p.observables[o].sigma) if isinstance(p.observables[o].sigma, str)
                                  else -1 for o in obs[rows]], dtype=int)
            groups.append(_Group(key[0], key[1], rows, flat_index[rows], table["measurement"].to_numpy(float)[rows],
                                 sig_const, sig_param))
        self._groups = groups
        self.n_measurements = len(table)

    def _condition_simulator(self, cond, times: np.ndarray, outputs: list[str]):
        """JAX: theta -> outputs (n_t, n_o); numba: (ForwardSensitivities, parameter row, outputs)."""
        p = self.problem
        t0 = min(p.t0, times[0])
        if self.model.backend == "jax":
            return differentiable_simulator(
                self.model, times, self.model_params, regimen=cond.regimen, outputs=outputs,
                base=cond.parameters, initial=cond.initial, rtol=p.solver.rtol, atol=p.solver.atol,
                method=p.solver.method or "kvaerno5", max_steps=p.solver.max_steps, t0=t0)
        fs = ForwardSensitivities(self.model, times, self.model_params, regimen=cond.regimen,
                                  initial=cond.initial, rtol=p.solver.rtol, atol=p.solver.atol,
                                  max_steps=p.solver.max_steps, t0=t0)
        row, _ = parameter_matrix(self.model, {k: [v] for k, v in cond.parameters.items()}, 1)
        return fs, row[0], outputs

    # ---- pure JAX functions of x ---------------------------------------------------------------
    def _traced_vector(self, x) -> jax.Array:
        """x as a float64 JAX vector (k,); its shape is static, so this check costs nothing per call under jit."""
        x = jnp.asarray(x, dtype=jnp.float64)
        if x.shape != (len(self.params.free),):
            raise FitError(vector_message(self.params, "x", x))
        return x

    def _point(self, x) -> np.ndarray:
        """x checked at a numpy entry point: k finite numbers (O(k))."""
        x = fit_vector(self.params, x, "x")
        check_finite(self.params, x, "x")
        return x

    def predictions(self, x) -> jax.Array:
        """Model outputs (before transformation) at every measurement row, (n_measurements,)."""
        x = self._traced_vector(x)
        theta = self.params.natural_jax(x)[self._model_idx]
        flat = jnp.concatenate([sim(theta).reshape(-1) for sim in self._sims])
        out = jnp.zeros(self.n_measurements)
        for g in self._groups:
            out = out.at[g.rows].set(flat[g.flat])
        return out

    def nll(self, x, constants: bool = True) -> jax.Array:
        """Negative log-likelihood (plus -ln prior with use_priors); constants: see likelihoods.
        JAX backend only (the numba backend's predictions are not JAX functions)."""
        return self.nll_from_predictions(x, self.predictions(x), constants)

    def nll_from_predictions(self, x, pred, constants: bool = True) -> jax.Array:
        """The negative log-likelihood given the model outputs pred (n_measurements,) at x."""
        x = self._traced_vector(x)
        values = self.params.natural_jax(x)
        total = jnp.asarray(0.0)
        for g in self._groups:
            sigma = jnp.where(g.sigma_param >= 0, values[jnp.maximum(g.sigma_param, 0)], g.sigma_const)
            total = total + NOISE[g.noise](g.y, transform(pred[g.rows], g.transformation), sigma, constants)
        if self.use_priors:
            total = total - self.params.log_prior_x(x)
        return total

    # ---- numba backend: predictions and their Jacobian by forward sensitivities -----------------
    def predictions_and_jacobian(self, x) -> tuple[np.ndarray, np.ndarray] | None:
        """(pred (n_measurements,), d pred / d theta (n_measurements, k)) with the numba backend,
        theta the model parameters among the free ones; None if a solve fails."""
        theta = self.params.natural(fit_vector(self.params, x, "x"))[self._model_idx]
        k = len(theta)
        flats, jacs = [], []
        for fs, row, outputs in self._sims:
            P = row.copy()
            P[fs.kernels.index] = theta
            got = fs.solve(P[None])
            if got.status[0] != 0:
                return None
            values, derivs = fs.outputs(got, P[None], outputs)
            flats.append(values[0].reshape(-1))
            jacs.append(derivs[0].reshape(-1, k))
        flat, jac = np.concatenate(flats), np.concatenate(jacs)
        pred, dpred = np.zeros(self.n_measurements), np.zeros((self.n_measurements, k))
        for g in self._groups:
            pred[g.rows] = flat[g.flat]
            dpred[g.rows] = jac[g.flat]
        return pred, dpred

    @cached_property
    def _jit_nll_pred_grad(self) -> Callable:
        return jax.jit(jax.value_and_grad(self.nll_from_predictions, argnums=(0, 1)))

    @cached_property
    def _jit_theta_vjp(self) -> Callable:
        """(x, cotangent on theta (k,)) -> cotangent on x: the chain rule through theta(x)."""
        idx = jnp.asarray(self._model_idx)
        return jax.jit(lambda x, ct: jax.vjp(lambda z: self.params.natural_jax(z)[idx], x)[1](ct)[0])

    def _numba_value_and_grad(self, x) -> tuple[float, np.ndarray]:
        got = self.predictions_and_jacobian(x)
        if got is None:
            return float("nan"), np.full(len(self.params.free), np.nan)
        pred, dpred = got
        xj = jnp.asarray(x, dtype=jnp.float64)
        v, (g_x, g_pred) = self._jit_nll_pred_grad(xj, jnp.asarray(pred))
        g_theta = dpred.T @ np.asarray(g_pred)
        g = np.asarray(g_x) + np.asarray(self._jit_theta_vjp(xj, jnp.asarray(g_theta)))
        return float(v), g

    # ---- numpy interface for optimisers ----------------------------------------------------------
    @cached_property
    def _jit_value(self) -> Callable:
        return jax.jit(self.nll)

    @cached_property
    def _jit_value_and_grad(self) -> Callable:
        return jax.jit(jax.value_and_grad(self.nll))

    def value(self, x) -> float:
        """J(x); FAILED_VALUE where the solver fails. FitError unless x is k finite numbers."""
        x = self._point(x)
        if self.model.backend == "numba":
            v = self._numba_value_and_grad(x)[0]
        else:
            v = float(self._jit_value(jnp.asarray(x, dtype=jnp.float64)))
        return v if np.isfinite(v) else FAILED_VALUE

    def raw_value_and_grad(self, x) -> tuple[float, np.ndarray]:
        """(J, dJ/dx) as computed: NaN where the solver fails (samplers treat it as a divergence).

        A failed forward solve leaves NaN states, and the adjoint's Newton linear solves (lineax)
        then raise a runtime error instead of returning NaN; that is a failed point too. FitError
        unless x is k numbers (NaN allowed: a sampler's diverged point)."""
        x = fit_vector(self.params, x, "x")
        if self.model.backend == "numba":
            return self._numba_value_and_grad(x)
        try:
            v, g = self._jit_value_and_grad(jnp.asarray(x, dtype=jnp.float64))
        except (ValueError, RuntimeError) as exc:
            if "non-finite" not in str(exc):
                raise
            return float("nan"), np.full(len(self.params.free), np.nan)
        return float(v), np.asarray(g, dtype=float)

    def value_and_grad(self, x) -> tuple[float, np.ndarray]:
        """(J, dJ/dx); a failed solve gives (FAILED_VALUE, 0). FitError unless x is k finite numbers."""
        v, g = self.raw_value_and_grad(self._point(x))
        if not (np.isfinite(v) and np.all(np.isfinite(g))):
            return FAILED_VALUE, np.zeros_like(g)
        return v, g

    def _outputs_at(self, sim, theta: np.ndarray) -> np.ndarray:
        """Outputs (n_t, n_o) of one condition's simulator (from `_condition_simulator`) at theta."""
        if self.model.backend == "jax":
            return np.asarray(sim(jnp.asarray(theta)))
        fs, row, outputs = sim
        P = row.copy()
        P[fs.kernels.index] = theta
        return fs.outputs(fs.solve(P[None]), P[None], outputs)[0][0]

    def simulate(self, x, times: np.ndarray | None = None) -> dict[str, pd.DataFrame]:
        """Dense trajectories of every observable's output per condition (for plots): condition ->
        DataFrame(time, <output>...)."""
        p = self.problem
        theta = self.params.natural(self._point(x))[self._model_idx]
        times = None if times is None else time_grid(times)
        if times is not None and times[0] < p.t0:
            raise FitError(f"simulate: times start at {times[0]:g}, before the problem's t0 = {p.t0:g} where "
                           "the initial states hold; give times >= t0")
        out = {}
        table = p.measurements
        for cond in p.conditions.values():
            sub = table[table["simulationConditionId"] == cond.name]
            if sub.empty:
                continue
            t_end = float(sub["time"].max())
            grid = np.linspace(p.t0, t_end, 200) if times is None else times
            outputs = sorted({p.observables[o].output for o in sub["observableId"]})
            Y = self._outputs_at(self._condition_simulator(cond, grid, outputs), theta)
            out[cond.name] = pd.DataFrame({"time": grid, **{o: Y[:, i] for i, o in enumerate(outputs)}})
        return out


_OBJECTIVES: dict[tuple, TimecourseObjective] = {}


def timecourse_objective(problem: FitProblem, use_priors: bool | None = None) -> TimecourseObjective:
    """The objective of a problem, memoised by its content (file text, measurements, priors flag), so
    the optimisers, profiles, sampler and CLI of one process share one XLA compilation."""
    key = (problem.source_text, str(problem.folder.resolve()), problem.measurements.to_csv(),
           problem.fit.use_priors if use_priors is None else use_priors)
    if key not in _OBJECTIVES:
        _OBJECTIVES[key] = TimecourseObjective(problem, use_priors=key[-1])
    return _OBJECTIVES[key]

