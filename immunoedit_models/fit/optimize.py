"""Optimisers on the fit scale x: gradient multistart (L-BFGS-B), CMA-ES, profile likelihoods.

All work within the free parameters' bounds, write their state atomically after every start /
iteration when given a checkpoint path, and resume from it exactly: a resumed fit gives the same
result as an uninterrupted one with the same seed.

- `multistart`: Latin-hypercube starts (scipy.stats.qmc, seeded) plus an optional first start
  (the nominal values); each start runs scipy's L-BFGS-B with exact gradients. Checkpoint: the
  finished starts.
- `cmaes`: the `cma` package's CMA-ES in the unit box (x scaled to [0, 1] per coordinate, so one
  sigma0 suits parameters of any range), for stochastic / non-smooth objectives such as
  virtual-population trials. Checkpoint: the pickled strategy plus numpy's global random state
  (cma draws from it), so a resumed run samples exactly what the uninterrupted run would. Every
  evaluated point is kept (`CmaResult.points`, `.values`): the material of the approximate
  posterior (`uncertainty.laplace_from_evaluations`).
- `profile_likelihood`: for each parameter, the minimum of the objective over the others on a
  grid around the optimum, and the 95 % confidence bounds where it rises by chi2(1, 0.95)/2 =
  1.92 (found by Brent's method between grid points).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cma
import numpy as np
import xarray as xr
from rich.progress import Progress
from scipy import optimize, stats
from scipy.stats import qmc

from ..errors import FitError
from .checkpoint import load_state, save_state
from .parameters import ParameterSet

ValueAndGrad = Callable[[np.ndarray], tuple[float, np.ndarray]]
PROFILE_THRESHOLD = float(stats.chi2.ppf(0.95, 1) / 2)  # 1.9207: 95 % pointwise, one parameter


#: Largest seed: cma's seeds are 32-bit, and cma reads 0 as "seed from the clock" (see `_cma_seed`).
MAX_SEED = 2**32 - 2


def _progress(enabled: bool) -> Progress:
    return Progress(disable=not enabled, transient=True)


# ---- argument checks of the public functions (once per call, outside the optimiser loops) --------
def check_count(value: Any, what: str, minimum: int, example: str) -> int:
    """value as an int >= minimum; FitError naming `what` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FitError(f"{what} must be an integer >= {minimum}, got {value!r} (e.g. {example})")
    return int(value)


def check_seed(seed: Any, what: str) -> int:
    """A seed: an integer in [0, MAX_SEED] (None would make the fit irreproducible and unresumable)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise FitError(f"{what}: seed must be an integer in [0, {MAX_SEED}], got {seed!r} (a fixed seed makes "
                       "the fit reproducible and resumable, e.g. seed=0)")
    return int(seed)


def check_positive(value: Any, what: str, example: str) -> float:
    """value as a finite float > 0; FitError naming `what` otherwise."""
    if isinstance(value, (bool, str, bytes)) or np.ndim(value) != 0 or not np.isfinite(value) or value <= 0:
        raise FitError(f"{what} must be a finite number > 0, got {value!r} (e.g. {example})")
    return float(value)


def require_free(params: ParameterSet, what: str) -> None:
    """FitError if there is nothing to fit."""
    if not params.free:
        raise FitError(f"{what}: the parameter set has no free parameters (list at least one under 'parameters:')")


def fit_vector(params: ParameterSet, x: Any, what: str) -> np.ndarray:
    """x as a float array (k,) on the fit scale; FitError for another shape or non-numbers."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf" or arr.shape != (len(params.free),):
        raise FitError(vector_message(params, what, arr))
    return arr.astype(float)


def vector_message(params: ParameterSet, what: str, arr: Any) -> str:
    """What a fit vector must be, and what arr is."""
    return (f"{what} must be {len(params.free)} numbers on the fit scale, one per free parameter "
            f"({', '.join(params.names)}), got a {arr.ndim}-d {arr.dtype} array of shape {arr.shape}")


def check_finite(params: ParameterSet, x: np.ndarray, what: str) -> None:
    """FitError naming the parameters where x is NaN or infinite."""
    if not np.all(np.isfinite(x)):
        bad = [n for n, v in zip(params.names, x) if not np.isfinite(v)]
        raise FitError(f"{what} is not finite for {bad}: give finite fit-scale values (ln value for "
                       "scale 'log')")


def check_point(params: ParameterSet, x: Any, what: str) -> np.ndarray:
    """A starting point or estimate: fit_vector, finite, and within the bounds (to rounding)."""
    x = fit_vector(params, x, what)
    check_finite(params, x, what)
    bounds = params.x_bounds
    slack = 1e-9 * (bounds[:, 1] - bounds[:, 0])
    outside = [n for n, v, (lo, hi), e in zip(params.names, x, bounds, slack) if not lo - e <= v <= hi + e]
    if outside:
        raise FitError(f"{what} is outside the bounds for {outside}: the values are on the fit scale (ln value "
                       "for scale 'log'; ParameterSet.to_x converts natural values); start inside the bounds "
                       "or widen them")
    return np.clip(x, bounds[:, 0], bounds[:, 1])


# ---- multistart ---------------------------------------------------------------------------------
@dataclass
class StartResult:
    x0: np.ndarray
    x: np.ndarray
    fun: float
    nit: int
    nfev: int
    success: bool
    message: str
    trace: list[float] = field(default_factory=list)


def start_points(params: ParameterSet, n_starts: int, seed: int, first: np.ndarray | None = None) -> np.ndarray:
    """(n_starts, k) starting points on the fit scale: `first` (if given), then a seeded Latin
    hypercube over the bounds."""
    bounds = params.x_bounds
    n_lhs = n_starts - (first is not None)
    lhs = qmc.scale(qmc.LatinHypercube(d=len(bounds), seed=seed).random(max(n_lhs, 0)), bounds[:, 0], bounds[:, 1]) \
        if n_lhs > 0 else np.zeros((0, len(bounds)))
    return np.vstack([np.asarray(first, float)[None, :], lhs]) if first is not None else lhs


def _one_start(fun: ValueAndGrad, x0: np.ndarray, bounds: np.ndarray, max_iter: int) -> StartResult:
    trace: list[float] = []
    res = optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": max_iter},
                            callback=lambda intermediate_result: trace.append(float(intermediate_result.fun)))
    return StartResult(np.asarray(x0, float), np.asarray(res.x, float), float(res.fun), int(res.nit),
                       int(res.nfev), bool(res.success), str(res.message), trace)


def multistart(fun: ValueAndGrad, params: ParameterSet, n_starts: int = 8, seed: int = 0, max_iter: int = 200,
               first: np.ndarray | None = None, checkpoint: str | Path | None = None,
               settings_key: dict[str, Any] | None = None, on_start: Callable[[int, StartResult], None] | None = None,
               progress: bool = False) -> list[StartResult]:
    """Minimise `fun` (value, gradient) from n_starts points; results in start order.

    checkpoint: file to write after every finished start and to resume from; settings_key:
    extra values the checkpoint must match (e.g. the problem hash). on_start(i, result) is called
    after each start (after the checkpoint is written).
    """
    require_free(params, "multistart")
    n_starts = check_count(n_starts, "multistart n_starts", 1, "n_starts=8")
    max_iter = check_count(max_iter, "multistart max_iter", 1, "max_iter=200")
    seed = check_seed(seed, "multistart")
    first = None if first is None else check_point(params, first, "multistart first")
    X0 = start_points(params, n_starts, seed, first)
    key = {"method": "multistart", "n_starts": n_starts, "seed": seed, "max_iter": max_iter,
           "x0_hash": hashlib.sha256(X0.tobytes()).hexdigest(), **(settings_key or {})}
    state = load_state(checkpoint, key) if checkpoint else None
    done: list[StartResult] = state["finished"] if state else []
    with _progress(progress) as bar:
        task = bar.add_task("multistart", total=n_starts, completed=len(done))
        for i in range(len(done), n_starts):
            result = _one_start(fun, X0[i], params.x_bounds, max_iter)
            done.append(result)
            if checkpoint:
                save_state(checkpoint, {"settings": key, "finished": done})
            bar.update(task, advance=1, description=f"multistart: best {min(r.fun for r in done):.6g}")
            if on_start:
                on_start(i, result)
    return done


def multistart_dataset(results: Sequence[StartResult], params: ParameterSet, attrs: dict | None = None) -> xr.Dataset:
    """Starts as a Dataset over (start, parameter[, iteration]); natural parameter values."""
    n_iter = max([len(r.trace) for r in results] + [1])
    trace = np.full((len(results), n_iter), np.nan)
    for i, r in enumerate(results):
        trace[i, :len(r.trace)] = r.trace
    best = int(np.argmin([r.fun for r in results]))
    return xr.Dataset(
        {"start_value": (("start", "parameter"), np.array([params.natural(r.x0) for r in results])),
         "estimate": (("start", "parameter"), np.array([params.natural(r.x) for r in results])),
         "objective": ("start", np.array([r.fun for r in results]), {"description": "negative log-likelihood"}),
         "iterations": ("start", np.array([r.nit for r in results])),
         "evaluations": ("start", np.array([r.nfev for r in results])),
         "converged": ("start", np.array([r.success for r in results])),
         "message": ("start", np.array([r.message for r in results])),
         "trace": (("start", "iteration"), trace, {"description": "objective after each L-BFGS-B iteration"})},
        coords={"start": np.arange(len(results)), "parameter": params.names},
        attrs={"optimizer": "multistart L-BFGS-B (scipy), Latin-hypercube starts", "best_start": best,
               **(attrs or {})})


# ---- CMA-ES -------------------------------------------------------------------------------------
@dataclass
class CmaResult:
    x: np.ndarray          # best point found (fit scale)
    fun: float
    trace: list[dict[str, float]]
    iterations: int
    stop: dict[str, Any]
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))   # (n_eval, k) every candidate, fit scale
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))        # (n_eval,) its objective (NaN: failed)


def cmaes(fun: Callable[[np.ndarray], float], params: ParameterSet, x0: np.ndarray | None = None,
          sigma0: float = 0.25, seed: int = 0, max_iter: int = 100, popsize: int | None = None,
          checkpoint: str | Path | None = None, settings_key: dict[str, Any] | None = None,
          on_iteration: Callable[[int, CmaResult], None] | None = None, progress: bool = False) -> CmaResult:
    """Minimise a (possibly stochastic-but-seeded) objective `fun(x) -> float` with CMA-ES.

    Search runs in the unit box u = (x - low) / (high - low); sigma0 is in those units.
    Non-finite objective values are replaced by the worst finite value of the generation + 1.
    """
    require_free(params, "cmaes")
    sigma0 = check_positive(sigma0, "cmaes sigma0", "sigma0=0.25, a quarter of the unit box")
    seed = check_seed(seed, "cmaes")
    max_iter = check_count(max_iter, "cmaes max_iter", 1, "max_iter=100")
    popsize = None if popsize is None else check_count(popsize, "cmaes popsize", 2, "popsize=8, or None for cma's default")
    x0 = None if x0 is None else check_point(params, x0, "cmaes x0")
    bounds = params.x_bounds
    lo, span = bounds[:, 0], bounds[:, 1] - bounds[:, 0]
    u0 = np.full(len(lo), 0.5) if x0 is None else (x0 - lo) / span
    key = {"method": "cmaes", "seed": seed, "sigma0": sigma0, "popsize": popsize, "max_iter": max_iter,
           "u0": tuple(np.round(u0, 12)), **(settings_key or {})}
    state = load_state(checkpoint, key) if checkpoint else None
    if state:
        es, trace, archive = state["es"], state["trace"], state["archive"]
        np.random.set_state(state["numpy_random_state"])
    else:
        opts = {"bounds": [0.0, 1.0], "seed": _cma_seed(seed), "maxiter": max_iter, "verbose": -9}
        if popsize:
            opts["popsize"] = popsize
        es = cma.CMAEvolutionStrategy(u0, sigma0, opts)  # seeds numpy's global generator with `seed`
        trace, archive = [], []
    with _progress(progress) as bar:
        task = bar.add_task("CMA-ES", total=max_iter, completed=len(trace))
        while not es.stop():
            U = es.ask()
            f = _generation_values(fun, [lo + span * np.asarray(u) for u in U])
            archive.append((lo + span * np.asarray(U, float), np.where(np.isfinite(f), f, np.nan)))
            if not np.any(np.isfinite(f)):
                raise FitError("every point of a CMA-ES generation failed (non-finite objective); check the "
                               "bounds and that the model simulates there")
            f = np.where(np.isfinite(f), f, np.nanmax(np.where(np.isfinite(f), f, -np.inf)) + 1.0)
            es.tell(U, f.tolist())
            trace.append({"best": float(f.min()), "median": float(np.median(f)), "sigma": float(es.sigma),
                          "evaluations": int(es.countevals)})
            if checkpoint:
                save_state(checkpoint, {"settings": key, "es": es, "trace": trace, "archive": archive,
                                        "numpy_random_state": np.random.get_state()})
            bar.update(task, completed=len(trace), description=f"CMA-ES: best {es.result.fbest:.6g}")
            current = _cma_result(es, lo, span, trace, archive)
            if on_iteration:
                on_iteration(len(trace), current)
    return _cma_result(es, lo, span, trace, archive)


def _cma_seed(seed: int) -> int:
    """cma's seed for `seed`: cma reads 0 as "seed from the clock" (a different run each time), so 0
    maps to the one seed the check leaves unused, 2**32 - 1."""
    return seed if seed > 0 else MAX_SEED + 1


def _generation_values(fun: Callable[[np.ndarray], float], X: list[np.ndarray]) -> np.ndarray:
    """fun at each point of a generation, (popsize,); FitError if fun does not return one number."""
    values = [fun(x) for x in X]
    odd = [v for v in values if isinstance(v, (tuple, list)) or np.ndim(v) != 0]
    if odd:
        raise FitError(f"cmaes needs fun(x) -> one number (the objective), got a {type(odd[0]).__name__}; pass "
                       "the objective's value, e.g. objective.value, not value_and_grad")
    return np.array(values, dtype=float)


def _cma_result(es, lo, span, trace, archive) -> CmaResult:
    points = np.concatenate([a[0] for a in archive]) if archive else np.zeros((0, len(lo)))
    values = np.concatenate([a[1] for a in archive]) if archive else np.zeros(0)
    return CmaResult(lo + span * np.asarray(es.result.xbest, float), float(es.result.fbest), list(trace),
                     int(es.countiter), dict(es.stop()), points, values)


def cmaes_dataset(result: CmaResult, params: ParameterSet, attrs: dict | None = None) -> xr.Dataset:
    t = result.trace
    return xr.Dataset(
        {"estimate": ("parameter", params.natural(result.x)),
         "objective": ((), result.fun, {"description": "best objective value found"}),
         "trace_best": ("iteration", np.array([r["best"] for r in t])),
         "trace_median": ("iteration", np.array([r["median"] for r in t])),
         "trace_sigma": ("iteration", np.array([r["sigma"] for r in t]), {"description": "step size (unit box)"}),
         "trace_evaluations": ("iteration", np.array([r["evaluations"] for r in t])),
         "evaluation_x": (("evaluation", "parameter"), result.points.reshape(-1, len(params.names)),
                          {"description": "every candidate CMA-ES evaluated, on the fit scale (ln value for log scale)"}),
         "evaluation_objective": ("evaluation", result.values, {"description": "its objective (NaN: failed)"})},
        coords={"parameter": params.names, "iteration": np.arange(1, len(t) + 1),
                "evaluation": np.arange(result.values.size)},
        attrs={"optimizer": f"CMA-ES (cma {cma.__version__}) in the unit box", "iterations": result.iterations,
               "stop": str(result.stop), **(attrs or {})})


# ---- profile likelihoods ------------------------------------------------------------------------
def _hessian_diag_se(fun: ValueAndGrad, x: np.ndarray, bounds: np.ndarray, rel: float = 1e-4) -> np.ndarray:
    """Approximate standard errors sqrt(diag(H^-1)) from central differences of the gradient."""
    k = len(x)
    H = np.zeros((k, k))
    for i in range(k):
        h = rel * max(1.0, abs(x[i]))
        up, down = x.copy(), x.copy()
        up[i] = min(x[i] + h, bounds[i, 1])
        down[i] = max(x[i] - h, bounds[i, 0])
        H[:, i] = (fun(up)[1] - fun(down)[1]) / (up[i] - down[i])
    H = 0.5 * (H + H.T)
    try:
        cov = np.linalg.inv(H)
        se = np.sqrt(np.where(np.diag(cov) > 0, np.diag(cov), np.nan))
    except np.linalg.LinAlgError:
        se = np.full(k, np.nan)
    span = bounds[:, 1] - bounds[:, 0]
    return np.where(np.isfinite(se) & (se > 0), np.minimum(se, span / 4), span / 20)


def _fixed(fun: ValueAndGrad, i: int, value: float, x_start: np.ndarray, bounds: np.ndarray,
           max_iter: int) -> tuple[float, np.ndarray]:
    """min over the other coordinates of fun with x[i] = value; returns (min, argmin full x)."""
    others = np.array([j for j in range(len(x_start)) if j != i], dtype=int)

    def sub(z):
        x = np.insert(z, i, value) if others.size else np.array([value])
        v, g = fun(x)
        return v, g[others]

    if others.size == 0:
        return fun(np.array([value]))[0], np.array([value])
    res = optimize.minimize(sub, x_start[others], jac=True, method="L-BFGS-B", bounds=bounds[others],
                            options={"maxiter": max_iter})
    return float(res.fun), np.insert(res.x, i, value)


def profile_likelihood(fun: ValueAndGrad, params: ParameterSet, x_best: np.ndarray, f_best: float,
                       names: Sequence[str] | None = None, n_points: int = 12, max_iter: int = 100,
                       threshold: float = PROFILE_THRESHOLD, progress: bool = False) -> xr.Dataset:
    """Profiles of `fun` around its optimum and the confidence bounds where they cross f_best + threshold.

    Steps of 0.5 standard errors (from a finite-difference Hessian), growing by 1.5x per step, up
    to n_points / 2 steps each side (about 10 standard errors for 12 points), until the profile
    exceeds the threshold; the crossing is then located to 1e-4 standard errors by Brent's method.
    A side that stays below the threshold (reaching the bound or the last step) has a NaN bound:
    not identifiable there. Returns a Dataset with `profile_value` (natural units) and
    `profile_objective` over (parameter, point), and `estimate`, `ci_lower`, `ci_upper`.
    """
    require_free(params, "profile_likelihood")
    names = profile_names(params, names)
    x_best = check_point(params, x_best, "profile_likelihood x_best")
    if isinstance(f_best, (bool, str, bytes)) or np.ndim(f_best) != 0 or not np.isfinite(f_best):
        raise FitError(f"profile_likelihood f_best must be a finite number (the objective at x_best), got {f_best!r}")
    n_points = check_count(n_points, "profile_likelihood n_points", 3, "n_points=12")
    max_iter = check_count(max_iter, "profile_likelihood max_iter", 1, "max_iter=100")
    threshold = check_positive(threshold, "profile_likelihood threshold", f"the 95 % level {PROFILE_THRESHOLD:.4f}")
    bounds = params.x_bounds
    se = _hessian_diag_se(fun, x_best, bounds)
    n_side = max(n_points // 2, 2)
    values = np.full((len(names), 2 * n_side + 1), np.nan)
    objective = np.full_like(values, np.nan)
    ci = np.full((len(names), 2), np.nan)
    with _progress(progress) as bar:
        task = bar.add_task("profiles", total=len(names) * 2 * n_side)
        for r, name in enumerate(names):
            i = params.names.index(name)
            values[r, n_side], objective[r, n_side] = x_best[i], f_best
            for side, sign in enumerate((-1.0, 1.0)):
                x_prev, v_prev, f_prev = x_best, x_best[i], f_best
                step = 0.5 * se[i]
                for k in range(1, n_side + 1):
                    v = float(np.clip(v_prev + sign * step, *bounds[i]))
                    f, x_at = _fixed(fun, i, v, x_prev, bounds, max_iter)
                    col = n_side + int(sign) * k
                    values[r, col], objective[r, col] = v, f
                    bar.advance(task)
                    if f - f_best >= threshold:
                        ci[r, side] = _crossing(fun, i, (v_prev, f_prev, x_prev), (v, f), bounds, max_iter,
                                                f_best + threshold, xtol=1e-4 * se[i])
                        break
                    if v in bounds[i]:
                        break
                    x_prev, v_prev, f_prev, step = x_at, v, f, step * 1.5
                bar.advance(task, n_side - k)
    free = [params.free[params.names.index(n)] for n in names]

    def natural(x_rows):  # fit scale (n_names, m) -> natural values; NaN stays NaN
        return np.array([np.exp(row) if p.scale == "log" else row for p, row in zip(free, x_rows)])

    x_hat = x_best[[params.names.index(n) for n in names]]
    return xr.Dataset(
        {"profile_value": (("parameter", "point"), natural(values)),
         "profile_objective": (("parameter", "point"), objective,
                               {"threshold": threshold, "description": "min of the objective over the others"}),
         "estimate": ("parameter", natural(x_hat[:, None])[:, 0]),
         "ci_lower": ("parameter", natural(ci[:, :1])[:, 0]),
         "ci_upper": ("parameter", natural(ci[:, 1:])[:, 0])},
        coords={"parameter": names, "point": np.arange(-n_side, n_side + 1)},
        attrs={"threshold": threshold, "confidence": "95 % profile-likelihood (chi2(1)/2 = 1.92)",
               "note": "NaN bound: the profile stays below the threshold over the profiled range"})


def profile_names(params: ParameterSet, names: Sequence[str] | None) -> list[str]:
    """The parameters to profile: all free ones for None, else distinct free parameter names."""
    if names is None:
        return list(params.names)
    if isinstance(names, str):
        raise FitError(f"profile_likelihood names must be a list of free parameter names, got the string "
                       f"{names!r} (write [{names!r}])")
    names = list(names)
    unknown = [n for n in names if n not in params.names]
    if not names or unknown or len(set(names)) != len(names):
        what = f"{unknown} are not free parameters" if unknown else ("is empty" if not names else f"repeat a name: {names}")
        raise FitError(f"profile_likelihood names {what}; give distinct names among the free parameters "
                       f"({', '.join(params.names)}), or None for all")
    return names


def _crossing(fun, i, inside, outside, bounds, max_iter, level, xtol) -> float:
    """x[i] where the profile equals `level`, between an inside and an outside grid point (Brent,
    to xtol on the fit scale)."""
    v_in, f_in, x_in = inside
    v_out, f_out = outside

    def g(v):
        return _fixed(fun, i, v, x_in, bounds, max_iter)[0] - level

    return float(optimize.brentq(g, v_in, v_out, xtol=xtol))
