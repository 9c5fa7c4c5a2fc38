"""Free parameters of a fit: bounds, scales, priors, and population (virtual-patient) parameters.

Optimisers work on the *fit scale* x: ln(value) for `scale: log`, the value for `scale: lin`.
Priors are densities of the natural value (the spec's prior language: lognormal median/sigma,
normal mean/sd, uniform low/high, loguniform low/high); `log_prior_x` adds the Jacobian so it is
the log-density of x, which is what samplers see.

A population parameter (`populations:` in a trial problem) is distributed over virtual patients
as value_i = median * exp(sigma * z_i); the fit estimates its `median` and `sigma` (two entries of
x, named `<name>.median` and `<name>.sigma`), which reach the trial runner as a lognormal prior.
The cohort's seed is fixed, so the z_i are the same at every evaluation (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from ..errors import FitError

PRIOR_ARGS: dict[str, tuple[str, ...]] = {
    "lognormal": ("median", "sigma"),
    "normal": ("mean", "sd"),
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
}
SCALES = ("lin", "log")


@dataclass(frozen=True)
class FreeParameter:
    """One entry of the fit vector x.

    name: a model parameter, a noise parameter of the problem, or `<population>.median|sigma`.
    bounds: (low, high) of the natural value. scale: 'log' (x = ln value) or 'lin'.
    start: natural starting value (None: the model's nominal value or the bounds' centre on x).
    prior: {distribution: ..., <args>} of the natural value, or None (flat on x within bounds).
    """

    name: str
    bounds: tuple[float, float]
    scale: str = "log"
    start: float | None = None
    prior: Mapping[str, float] | None = None
    source: str = ""

    def __post_init__(self):
        lo, hi = self.bounds
        problems = []
        if self.scale not in SCALES:
            problems.append(f"scale must be one of {SCALES}, got '{self.scale}'")
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            problems.append(f"bounds must be finite with low < high, got {self.bounds}")
        if self.scale == "log" and lo <= 0:
            problems.append(f"scale 'log' needs positive bounds, got {self.bounds} (use scale: lin)")
        if self.start is not None and not lo <= self.start <= hi:
            problems.append(f"start {self.start} is outside the bounds {self.bounds}")
        if self.prior is not None:
            problems += prior_problems(self.prior)
        if problems:
            raise FitError(f"free parameter '{self.name}': " + "; ".join(problems))

    @property
    def x_bounds(self) -> tuple[float, float]:
        lo, hi = self.bounds
        return (float(np.log(lo)), float(np.log(hi))) if self.scale == "log" else (float(lo), float(hi))

    def to_x(self, value):
        return np.log(value) if self.scale == "log" else np.asarray(value, dtype=float)

    def from_x(self, x):
        """Natural value of x (numpy or JAX)."""
        return jnp.exp(x) if self.scale == "log" else x


PRIOR_RULES = {"lognormal": "median > 0 and sigma > 0", "normal": "sd > 0", "uniform": "low < high",
               "loguniform": "0 < low < high"}


def prior_problems(prior: Mapping[str, Any]) -> list[str]:
    """What is wrong with a prior of the spec language: its distribution, keys and values."""
    dist = prior.get("distribution")
    if dist not in PRIOR_ARGS:
        return [f"prior distribution must be one of {list(PRIOR_ARGS)}, got '{dist}'"]
    args = PRIOR_ARGS[dist]
    problems = [f"{dist} prior has no '{key}' (it takes {', '.join(args)})"
                for key in prior if key not in ("distribution", *args)]
    missing = [a for a in args if a not in prior]
    if missing:
        return problems + [f"{dist} prior needs {', '.join(missing)}"]
    values = [prior[a] for a in args]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values):
        return problems + [f"{dist} prior {', '.join(f'{a} {v!r}' for a, v in zip(args, values))}: "
                           "each must be a finite number"]
    a, b = values
    valid = {"lognormal": a > 0 and b > 0, "normal": b > 0, "uniform": a < b, "loguniform": 0 < a < b}[dist]
    if not valid:
        problems.append(f"{dist} prior needs {PRIOR_RULES[dist]}, got {args[0]} {a:g}, {args[1]} {b:g}")
    return problems


@dataclass(frozen=True)
class PopulationParameter:
    """A model parameter drawn per virtual patient: value = median * exp(sigma * z), z ~ N(0, 1)."""

    name: str
    median: FreeParameter
    sigma: FreeParameter
    bounds: tuple[float, float] | None = None  # natural-value truncation per patient (clipped)


@dataclass(frozen=True)
class ParameterSet:
    """The fit vector: free parameters in order, and which of them describe populations."""

    free: tuple[FreeParameter, ...]
    populations: tuple[PopulationParameter, ...] = field(default=())

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.free]

    @property
    def x_bounds(self) -> np.ndarray:
        """(k, 2) bounds on the fit scale."""
        return np.array([p.x_bounds for p in self.free], dtype=float).reshape(-1, 2)

    def natural(self, x) -> np.ndarray:
        """Natural values (k,) of a fit vector x (k,) (numpy)."""
        x = np.asarray(x, dtype=float)
        return np.array([np.exp(v) if p.scale == "log" else v for p, v in zip(self.free, x)])

    def natural_jax(self, x):
        """Natural values of x, traceable (JAX)."""
        is_log = jnp.asarray([p.scale == "log" for p in self.free])
        return jnp.where(is_log, jnp.exp(x), x)

    def to_x(self, values: Mapping[str, float] | Sequence[float]) -> np.ndarray:
        if isinstance(values, Mapping):
            values = [values[p.name] for p in self.free]
        return np.array([float(p.to_x(v)) for p, v in zip(self.free, values)])

    def log_prior_x(self, x):
        """log p(x) on the fit scale (JAX-traceable; flat within bounds where no prior)."""
        total = jnp.asarray(0.0)
        for i, p in enumerate(self.free):
            total = total + log_prior_density(p, x[i])
        return total


def log_prior_density(p: FreeParameter, x):
    """log-density of the fit-scale coordinate x of parameter p (JAX-traceable, up to a constant
    only for the flat case: a flat prior on x within bounds is 0)."""
    if p.prior is None:
        return jnp.asarray(0.0)
    value = p.from_x(x)
    log_jac = x if p.scale == "log" else 0.0  # d value / d x = value for the log scale
    dist, a = p.prior["distribution"], p.prior
    if dist == "lognormal":
        lv = jnp.log(value)
        m, s = jnp.log(a["median"]), a["sigma"]
        logpdf = -0.5 * ((lv - m) / s) ** 2 - jnp.log(s * jnp.sqrt(2 * jnp.pi)) - lv
    elif dist == "normal":
        logpdf = -0.5 * ((value - a["mean"]) / a["sd"]) ** 2 - jnp.log(a["sd"] * jnp.sqrt(2 * jnp.pi))
    elif dist == "uniform":
        logpdf = -jnp.log(a["high"] - a["low"]) * jnp.ones_like(value)
    else:  # loguniform
        logpdf = -jnp.log(value) - jnp.log(jnp.log(a["high"] / a["low"]))
    return logpdf + log_jac
