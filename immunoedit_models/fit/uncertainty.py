"""Approximate posterior of a trial calibration from its CMA-ES evaluations (Laplace approximation).

Choice and reasons. A trial objective is a simulated trial under common random numbers: no
gradient, ~2 s per evaluation, and a rough surface (patients cross RECIST thresholds, simulated
medians step between scan days, cohorts reshuffle; below). So
- finite-difference Hessians are unstable at any step small enough to be local;
- profile likelihoods cost one optimisation per grid point and parameter, more than the fit;
- a NUTS posterior would need thousands of evaluations.
CMA-ES, however, has already evaluated hundreds of points around its optimum. A least-squares
**quadratic response surface** through them smooths the roughness and costs no new simulation; its
curvature is the observed information of the negative log-likelihood, so the approximate posterior
(flat prior on the fit scale within the bounds) is N(x_best, H^-1) on the fit scale (ln value for
log-scale parameters), truncated to the bounds.

The roughness is not small: a cohort's plausibility check (acceptance-rejection) can swap a
patient in or out, which reshuffles the cohort, so neighbouring points of an IMpower150 fit differ by
up to ~30 log-likelihood units (measured: +-1 at 0.002 of the box, jumps of ~35 at 0.01). The surface
is therefore fitted as a regression over many more points than it has coefficients (by default the
3 x n-coefficients lowest evaluations, or all within chi2(k, 0.99)/2 of the best if more), and its
Hessian is constrained positive semi-definite (H = L L', scipy least_squares, started from the
unconstrained numpy fit with its eigenvalues floored): a noisy unconstrained fit has negative
curvatures that mean nothing. Its R^2 and residual sd are reported with it.

Limits (stated with every result): the approximation is local and Gaussian; directions the
evaluations do not curve upward in (non-positive or tiny curvature) get the width of a flat prior
over the bounds (variance span^2 / 12), counted in `n_flat`; the simulated arms' own Monte Carlo
error is not in the likelihood, which makes the widths of the identified directions too narrow.

`draw_parameters` samples the truncated normal by rejection. The posterior predictive trials
(`predictive.py`) simulate one trial per draw, so their spread combines parameter and
trial-to-trial (sampling) uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from ..errors import FitError
from .optimize import check_count, check_positive

#: Curvature floor in unit-box coordinates: the precision of a flat prior over the box (variance 1/12).
FLAT_PRECISION = 12.0


def n_coefficients(k: int) -> int:
    """Coefficients of a full quadratic in k variables: constant, k linear, k(k+1)/2 quadratic."""
    return 1 + k + k * (k + 1) // 2


def _design(D: np.ndarray) -> np.ndarray:
    """(n, n_coefficients) columns 1, d_i, d_i d_j (i <= j; the diagonal halved so that the
    coefficients of the squares are the Hessian's diagonal: f = c + g.d + 1/2 d'Hd)."""
    n, k = D.shape
    iu, ju = np.triu_indices(k)
    quad = D[:, iu] * D[:, ju] * np.where(iu == ju, 0.5, 1.0)
    return np.hstack([np.ones((n, 1)), D, quad])


@dataclass(frozen=True)
class QuadraticSurface:
    """f(x) ~ value + gradient.d + 1/2 d' hessian d, with d = (x - center) / scale (unit-box units)."""

    center: np.ndarray     # (k,) fit scale
    scale: np.ndarray      # (k,) fit-scale length of one unit (the bounds' span)
    value: float
    gradient: np.ndarray   # (k,) per unit d
    hessian: np.ndarray    # (k, k) per unit d
    n_points: int
    r_squared: float
    residual_sd: float = 0.0   # root-mean-square residual (objective units): the roughness smoothed

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """(n,) surface values at fit-scale points X (n, k)."""
        D = (np.atleast_2d(X) - self.center) / self.scale
        return self.value + D @ self.gradient + 0.5 * np.einsum("ni,ij,nj->n", D, self.hessian, D)


def fit_quadratic(X: np.ndarray, f: np.ndarray, center: np.ndarray, scale: np.ndarray,
                  positive_definite: bool = False) -> QuadraticSurface:
    """Least-squares quadratic through points X (n, k) with values f (n,) (numpy lstsq); with
    `positive_definite`, its Hessian constrained to L L' (scipy least_squares from the
    unconstrained fit with eigenvalues floored at FLAT_PRECISION)."""
    X, f = np.atleast_2d(np.asarray(X, float)), np.asarray(f, float)
    k = X.shape[1]
    if len(f) < n_coefficients(k):
        raise FitError(f"a quadratic in {k} parameters has {n_coefficients(k)} coefficients; "
                       f"only {len(f)} evaluations were given (run more CMA-ES generations)")
    D = (X - center) / scale
    A = _design(D)
    coef, *_ = np.linalg.lstsq(A, f, rcond=None)
    H = np.zeros((k, k))
    iu, ju = np.triu_indices(k)
    H[iu, ju] = coef[1 + k:]
    H = H + np.triu(H, 1).T
    c, g = float(coef[0]), coef[1:1 + k]
    if positive_definite:
        c, g, H = _positive_definite_fit(D, f, c, g, H)
    resid = f - (c + D @ g + 0.5 * np.einsum("ni,ij,nj->n", D, H, D))
    ss = float(np.sum((f - f.mean()) ** 2))
    return QuadraticSurface(np.asarray(center, float), np.asarray(scale, float), c, g, H, len(f),
                            1.0 - float(resid @ resid) / ss if ss > 0 else 1.0, float(np.sqrt(np.mean(resid ** 2))))


def _positive_definite_fit(D, f, c, g, H):
    """Refit with H = L L' (L lower triangular): scipy least_squares from the floored start."""
    k = D.shape[1]
    il = np.tril_indices(k)
    lam, V = np.linalg.eigh(H)
    L0 = np.linalg.cholesky((V * np.maximum(lam, FLAT_PRECISION)) @ V.T)

    def unpack(theta):
        L = np.zeros((k, k))
        L[il] = theta[1 + k:]
        return theta[0], theta[1:1 + k], L

    def residual(theta):
        c_, g_, L = unpack(theta)
        q = D @ L
        return c_ + D @ g_ + 0.5 * np.sum(q * q, axis=1) - f

    def jacobian(theta):  # d/dL[a, b] of 1/2 |D L|^2 = D[:, a] (D L)[:, b]
        q = D @ unpack(theta)[2]
        return np.hstack([np.ones((len(f), 1)), D, D[:, il[0]] * q[:, il[1]]])

    res = optimize.least_squares(residual, np.concatenate([[c], g, L0[il]]), jac=jacobian,
                                 xtol=1e-10, ftol=1e-10, max_nfev=2000)
    c_, g_, L = unpack(res.x)
    return float(c_), g_, L @ L.T


def default_window(k: int) -> float:
    """Objective rise above the best that bounds the 99 % region of a k-parameter Gaussian
    posterior: chi2(k, 0.99) / 2."""
    return float(stats.chi2.ppf(0.99, k) / 2)


def select_points(f: np.ndarray, f_best: float, window: float, min_points: int) -> np.ndarray:
    """Indices of the evaluations used for the surface: those within `window` of the best, or, if
    fewer, the `min_points` lowest (finite values only)."""
    f = np.asarray(f, float)
    finite = np.flatnonzero(np.isfinite(f))
    inside = finite[f[finite] <= f_best + window]
    if inside.size >= min_points:
        return inside
    return finite[np.argsort(f[finite], kind="stable")[:min_points]]


@dataclass(frozen=True)
class Laplace:
    """Approximate posterior N(mean, covariance) on the fit scale, truncated to `bounds`."""

    mean: np.ndarray        # (k,) fit scale: the best point found
    covariance: np.ndarray  # (k, k) fit scale
    bounds: np.ndarray      # (k, 2) fit scale
    surface: QuadraticSurface
    window: float
    n_flat: int             # directions given the flat-prior width (no upward curvature)

    @property
    def sd(self) -> np.ndarray:
        return np.sqrt(np.diag(self.covariance))

    def interval(self, level: float = 0.95) -> np.ndarray:
        """(k, 2) marginal intervals on the fit scale, clipped to the bounds."""
        z = float(stats.norm.ppf(0.5 + level / 2))
        lo, hi = self.mean - z * self.sd, self.mean + z * self.sd
        return np.column_stack([np.maximum(lo, self.bounds[:, 0]), np.minimum(hi, self.bounds[:, 1])])


def laplace_from_evaluations(X: np.ndarray, f: np.ndarray, x_best: np.ndarray, bounds: np.ndarray,
                             window: float | None = None, min_points: int | None = None) -> Laplace:
    """Laplace approximation at x_best from evaluated points X (n, k) with objective f (n,) (a
    negative log-likelihood). The positive semi-definite quadratic surface is fitted in unit-box
    coordinates to the points within `window` (default chi2(k, 0.99)/2) of the best value, or to
    the `min_points` (default 3 x the number of quadratic coefficients, at most all finite
    evaluations) lowest; its Hessian's eigenvalues are floored at the precision of a flat prior over
    the box (FLAT_PRECISION), then inverted."""
    X, f, x_best, bounds = _evaluations(X, f, x_best, bounds)
    k = X.shape[1]
    window = default_window(k) if window is None else check_positive(window, "window", "None for chi2(k, 0.99)/2")
    finite = int(np.isfinite(f).sum())
    need = (min(3 * n_coefficients(k), finite) if min_points is None
            else check_count(min_points, "min_points", 1, "None for 3 x the coefficients"))
    f_best = float(np.nanmin(f))
    use = select_points(f, f_best, window, need)
    span = bounds[:, 1] - bounds[:, 0]
    surface = fit_quadratic(X[use], f[use], x_best, span, positive_definite=True)
    lam, V = np.linalg.eigh(0.5 * (surface.hessian + surface.hessian.T))
    n_flat = int(np.sum(lam < FLAT_PRECISION))
    lam = np.maximum(lam, FLAT_PRECISION)
    cov_unit = (V / lam) @ V.T
    return Laplace(x_best, cov_unit * np.outer(span, span), bounds, surface, window, n_flat)


def _evaluations(X, f, x_best, bounds) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The inputs of `laplace_from_evaluations` as float arrays, FitError where their shapes disagree,
    the bounds are not finite with low < high, or x_best is not a finite point within them."""
    X, f = np.atleast_2d(np.asarray(X, float)), np.asarray(f, float)
    x_best, bounds = np.asarray(x_best, float), np.asarray(bounds, float)
    n, k = X.shape if X.ndim == 2 else (-1, -1)
    if X.ndim != 2 or f.shape != (n,) or x_best.shape != (k,) or bounds.shape != (k, 2):
        raise FitError(f"evaluations X must be (n, k), f (n,), x_best (k,) and bounds (k, 2); got X {X.shape}, "
                       f"f {f.shape}, x_best {x_best.shape}, bounds {bounds.shape}")
    if not (np.all(np.isfinite(bounds)) and np.all(bounds[:, 0] < bounds[:, 1])):
        raise FitError(f"bounds must be finite with low < high in every row, got {bounds.tolist()}")
    if not (np.all(np.isfinite(x_best)) and np.all((bounds[:, 0] <= x_best) & (x_best <= bounds[:, 1]))):
        raise FitError(f"x_best {x_best.tolist()} must be finite and within the bounds (the best evaluated point)")
    return X, f, x_best, bounds


def draw_parameters(laplace: Laplace, n: int, rng: np.random.Generator, max_rounds: int = 100) -> np.ndarray:
    """(n, k) fit-scale draws from the truncated normal posterior (rejection outside the bounds)."""
    n = check_count(n, "n", 0, "n=40")
    max_rounds = check_count(max_rounds, "max_rounds", 1, "max_rounds=100")
    if not isinstance(rng, np.random.Generator):
        raise FitError(f"rng must be a numpy Generator, got {type(rng).__name__} (e.g. np.random.default_rng(0))")
    L = np.linalg.cholesky(laplace.covariance)   # positive definite: eigenvalues floored
    lo, hi = laplace.bounds[:, 0], laplace.bounds[:, 1]
    kept: list[np.ndarray] = []
    count = 0
    for _ in range(max_rounds):
        Z = laplace.mean + rng.standard_normal((max(n, 16), len(laplace.mean))) @ L.T
        ok = Z[np.all((Z >= lo) & (Z <= hi), axis=1)]
        kept.append(ok)
        count += len(ok)
        if count >= n:
            return np.concatenate(kept)[:n]
    raise FitError(f"fewer than {n} of {max_rounds * max(n, 16)} posterior draws fell inside the bounds: "
                   "the estimate sits on a bound with a wide posterior; widen that bound or refit")
