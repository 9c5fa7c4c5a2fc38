"""Likelihood terms as pure functions (negative log-likelihoods; smaller is better).

Time courses (JAX-traceable, also fine on numpy arrays), PEtab noise models:
- normal:    y ~ N(h, sigma^2)
- lognormal: ln y ~ N(ln h, sigma^2)   (y, h > 0; the density of y includes 1/y)
- laplace:   y ~ Laplace(h, b), density exp(-|y - h|/b) / (2 b)
where h is the model output after the observable's transformation (lin, log, log10).
`constants=False` drops the terms that depend on neither the model nor the noise parameters
(0.5 ln 2 pi, ln y, ln 2), so a normal model with sigma = 1 gives 0.5 sum (y - h)^2.

Survival (numpy): the negative log-likelihood of observed (time, event) data under a
piecewise-exponential hazard estimated from a simulated arm, with simulated event times softly
assigned to bins so the objective is continuous in the simulated times (common random numbers
then make it a smooth function of the fitted parameters).

Summary statistics (numpy): Gaussian terms on ln median and ln HR with the standard error implied by
a reported 95 % CI, landmark survival on the complementary log-log scale, and binomial counts.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp
import numpy as np
from scipy import special, stats

from ..errors import FitError

LOG_2PI = math.log(2 * math.pi)
TRANSFORMATIONS = ("lin", "log", "log10")
NOISE_MODELS = ("normal", "lognormal", "laplace")


# ---- time courses ----------------------------------------------------------------------------
def transform(h, kind: str):
    """The observable's transformation of a model output (lin, log, log10)."""
    if kind == "lin":
        return h
    if kind == "log":
        return jnp.log(h)
    if kind == "log10":
        return jnp.log10(h)
    raise FitError(f"unknown transformation '{kind}': choose one of {', '.join(TRANSFORMATIONS)}")


def normal_nll(y, h, sigma, constants: bool = True):
    """Sum over points of -ln N(y | h, sigma^2)."""
    r = (y - h) / sigma
    return jnp.sum(0.5 * r**2 + jnp.log(sigma) * jnp.ones_like(r) + (0.5 * LOG_2PI if constants else 0.0))


def lognormal_nll(y, h, sigma, constants: bool = True):
    """Sum over points of -ln p(y) with ln y ~ N(ln h, sigma^2)."""
    ly = jnp.log(y)
    r = (ly - jnp.log(h)) / sigma
    extra = 0.5 * LOG_2PI + ly if constants else 0.0
    return jnp.sum(0.5 * r**2 + jnp.log(sigma) * jnp.ones_like(r) + extra)


def laplace_nll(y, h, b, constants: bool = True):
    """Sum over points of -ln Laplace(y | h, b) = |y - h| / b + ln(2 b)."""
    a = jnp.abs(y - h) / b
    return jnp.sum(a + jnp.log(b) * jnp.ones_like(a) + (math.log(2.0) if constants else 0.0))


NOISE = {"normal": normal_nll, "lognormal": lognormal_nll, "laplace": laplace_nll}


# ---- survival ------------------------------------------------------------------------------
def _bins(edges: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Bin starts and ends from edges [0, e1, ..., ek]; the last bin is open (ends at +inf)."""
    e = np.asarray(edges, dtype=float)
    if e.ndim != 1 or e.size < 1 or e[0] != 0 or np.any(np.diff(e) <= 0):
        raise FitError(f"hazard bin edges must start at 0 and increase, got {list(e)}")
    return e, np.append(e[1:], np.inf)


def exposure(time: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """(n, n_bins) time each subject spends at risk in each bin (continuous in time)."""
    a, b = _bins(edges)
    t = np.asarray(time, dtype=float)[:, None]
    return np.clip(np.minimum(t, b) - a, 0.0, None)


def soft_bin_events(time: np.ndarray, event: np.ndarray, edges: Sequence[float], width: float) -> np.ndarray:
    """(n_bins,) events per bin, each event spread over bins by a Gaussian kernel of sd `width`
    (the same unit as time): weight in [a, b) = Phi((t - a)/w) - Phi((t - b)/w), renormalised
    over bins so each event counts once. width = 0 gives hard counts."""
    a, b = _bins(edges)
    t = np.asarray(time, dtype=float)[np.asarray(event) > 0][:, None]
    if width <= 0:
        w = ((t >= a) & (t < b)).astype(float)
    else:
        w = special.ndtr((t - a) / width) - special.ndtr((t - b) / width)
        w /= w.sum(axis=1, keepdims=True)
    return w.sum(axis=0)


def piecewise_hazard(sim_time, sim_event, edges: Sequence[float], width: float = 0.5,
                     prior_events: float = 0.5) -> np.ndarray:
    """(n_bins,) hazard per bin estimated from a simulated arm (events / exposure).

    prior_events pseudo-events at the arm's pooled rate shrink sparsely populated bins (late bins,
    where few simulated patients remain) toward the pooled rate instead of 0 or infinity.
    """
    sim_time, sim_event = np.asarray(sim_time, float), np.asarray(sim_event)
    if sim_time.size == 0 or not np.any(sim_event > 0):
        raise FitError("the simulated arm has no events: cannot estimate its hazard (simulate longer "
                       "or check the event definition)")
    D = soft_bin_events(sim_time, sim_event, edges, width)
    E = exposure(sim_time, edges).sum(axis=0)
    pooled = D.sum() / E.sum()
    return (D + prior_events) / (E + prior_events / pooled)


def survival_nll(time, event, edges: Sequence[float], hazard: np.ndarray) -> float:
    """-ln L of right-censored (time, event) under a piecewise-constant hazard on `edges`:
    sum_i H(t_i) - event_i ln h(t_i)."""
    time, event = np.asarray(time, float), np.asarray(event)
    a, _ = _bins(edges)
    H = exposure(time, edges) @ hazard
    j = np.searchsorted(a, time, side="right") - 1
    return float(np.sum(H) - np.sum(np.log(hazard[j])[event > 0]))


def ipd_nll(obs_time, obs_event, sim_time, sim_event, edges: Sequence[float], width: float = 0.5,
            prior_events: float = 0.5) -> float:
    """Survival likelihood of observed (reconstructed) IPD under a simulated arm's smoothed
    piecewise-exponential event-time distribution."""
    hazard = piecewise_hazard(sim_time, sim_event, edges, width, prior_events)
    return survival_nll(obs_time, obs_event, edges, hazard)


# ---- summary statistics ----------------------------------------------------------------------
Z95 = float(stats.norm.ppf(0.975))


def se_from_ci(low: float, high: float, scale: str = "log", level: float = 0.95) -> float:
    """Standard error on `scale` ('log', 'cloglog' or 'lin') implied by a symmetric CI."""
    g = {"log": np.log, "cloglog": cloglog, "lin": float}[scale]
    if not low < high:
        raise FitError(f"a confidence interval needs low < high, got ({low}, {high})")
    return abs(float(g(high)) - float(g(low))) / (2 * float(stats.norm.ppf(0.5 + level / 2)))


def cloglog(s):
    """Complementary log-log of a survival probability: ln(-ln S)."""
    return np.log(-np.log(s))


def gaussian_nll(sim: float, observed: float, se: float, scale: str = "log") -> float:
    """-ln N(g(observed) | g(sim), se^2) with g = ln, cloglog or identity."""
    g = {"log": np.log, "cloglog": cloglog, "lin": float}[scale]
    if not np.isfinite(g(sim)):
        return np.inf
    r = (float(g(sim)) - float(g(observed))) / se
    return 0.5 * r * r + math.log(se) + 0.5 * LOG_2PI


def binomial_nll(k: int, n: int, p: float, eps: float = 1e-12) -> float:
    """-ln Binomial(k | n, p) (p clipped to [eps, 1 - eps] so a simulated 0 % or 100 % stays finite)."""
    return float(-stats.binom.logpmf(int(k), int(n), float(np.clip(p, eps, 1 - eps))))
