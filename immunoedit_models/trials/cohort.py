"""Cohorts (virtual populations): priors -> plausible patients -> a population matching a target.

The three stages follow Allen RJ, Rieger TR, Musante CJ, "Efficient generation and selection of
virtual populations in quantitative systems pharmacology models", CPT Pharmacometrics Syst
Pharmacol 2016;5(3):140-146, doi:10.1002/psp4.12063:

1. **Draw** parameter sets from the spec's priors (lognormal, normal, uniform, loguniform), each
   truncated to the parameter's `bounds`, with rank correlations through a Gaussian copula (the
   marginals stay the priors).
2. **Plausibility** by acceptance-rejection: every draw is simulated untreated with
   `simulate_batch` and kept only if it passes all constraints (e.g. baseline sum of diameters in
   the trial's range, untreated growth); rounds draw more until enough are plausible.
3. **Prevalence selection** (optional): from a plausible pool `oversample` times the cohort size,
   patients are selected with inclusion probabilities proportional to the ratio of the target
   density of a baseline output to its density in the pool (Allen et al.'s prevalence weight),
   so the cohort follows the target without carrying weights. The effective sample size of the
   weights and the Kolmogorov-Smirnov distance to the target (pool vs cohort) are reported.

Day 0 is the start of treatment: the cohort's `baseline` holds every state and output at day 0.
Constraints and targets are plain data, so trial YAML can carry them::

    constraints:
      - {output: sld_mm, time: 0, low: 10, high: 317}
      - {kind: growth, output: sld_mm, from: 0, to: 56, min_ratio: 1.0}
    target: {output: sld_mm, time: 0, distribution: lognormal, median: 59, range: [10, 317], n: 355}
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr
from scipy import integrate, ndimage, stats

from ..compile import CompiledModel
from ..errors import SimulationError
from ..io.results import provenance as result_provenance
from ..simulate import Regimen, simulate_batch
from ..simulate.core import require_compiled
from ..spec.expressions import suggest
from ..spec.schema import PRIORS

#: Most bins of the binned kernel density estimate of the plausible pool (bins are h/16 wide).
MAX_KDE_BINS = 1 << 16


# ---- priors ------------------------------------------------------------------------------------
def prior_distribution(name: str, prior: Mapping[str, Any]) -> Any:
    """A prior mapping of the spec language -> frozen scipy.stats distribution.

    lognormal {median, sigma} (sigma: sd of ln value), normal {mean, sd}, uniform {low, high},
    loguniform {low, high}; raises SimulationError naming the parameter when malformed.
    """
    kind = str(prior.get("distribution", ""))
    if kind not in PRIORS:
        raise SimulationError(f"parameter '{name}': unknown prior distribution '{kind}' "
                              f"(choose one of {', '.join(PRIORS)})")
    need = PRIORS[kind]
    extra = sorted(set(prior) - {"distribution", "bounds", *need})
    if extra or any(k not in prior for k in need):
        raise SimulationError(f"parameter '{name}': a {kind} prior needs exactly {', '.join(need)} "
                              f"(optionally bounds), got {', '.join(sorted(map(str, prior)))}")
    v = {k: float(prior[k]) for k in need}
    if not all(math.isfinite(x) for x in v.values()):
        raise SimulationError(f"parameter '{name}': {kind} prior values must be finite, got {v}")
    if kind == "lognormal" and v["median"] > 0 and v["sigma"] > 0:
        return stats.lognorm(s=v["sigma"], scale=v["median"])
    if kind == "normal" and v["sd"] > 0:
        return stats.norm(loc=v["mean"], scale=v["sd"])
    if kind == "uniform" and v["low"] < v["high"]:
        return stats.uniform(loc=v["low"], scale=v["high"] - v["low"])
    if kind == "loguniform" and 0 < v["low"] < v["high"]:
        return stats.loguniform(v["low"], v["high"])
    raise SimulationError(f"parameter '{name}': invalid {kind} prior {v} (lognormal: median > 0, "
                          "sigma > 0; normal: sd > 0; uniform: low < high; loguniform: 0 < low < high)")


@dataclass(frozen=True)
class Marginal:
    """One parameter's prior truncated to [low, high], sampled by its inverse CDF."""

    name: str
    dist: Any
    low: float
    high: float
    prior: Mapping[str, Any]

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """Truncated inverse CDF at u in (0, 1), shape kept."""
        a, b = self.dist.cdf(self.low), self.dist.cdf(self.high)
        if a > 0.5:  # in the upper tail the survival function keeps the precision the CDF loses
            sa, sb = self.dist.sf(self.low), self.dist.sf(self.high)
            x = self.dist.isf(sa - u * (sa - sb))
        else:
            x = self.dist.ppf(a + u * (b - a))
        return np.clip(x, self.low, self.high)


def _marginal(name: str, prior: Mapping[str, Any], bounds: tuple[float, float] | None) -> Marginal:
    dist = prior_distribution(name, prior)
    lo, hi = dist.support()
    if "bounds" in prior:
        bounds = tuple(float(b) for b in prior["bounds"])  # type: ignore[assignment]
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    if not (lo < hi and dist.cdf(hi) - dist.cdf(lo) > 0):
        raise SimulationError(f"parameter '{name}': bounds {list(bounds or ())} leave no probability "
                              f"under its prior {dict(prior)}; widen the bounds or move the prior")
    clean = {k: (list(map(float, v)) if k == "bounds" else (str(v) if k == "distribution" else float(v)))
             for k, v in prior.items()}
    return Marginal(name, dist, float(lo), float(hi), clean)


def spearman_to_normal(rho_s: np.ndarray) -> np.ndarray:
    """Spearman rank correlation -> correlation of the Gaussian copula, r = 2 sin(pi rho_s / 6)
    (exact for a bivariate normal; Kruskal WH, J Am Stat Assoc 1958;53:814-861)."""
    return 2.0 * np.sin(np.pi * np.asarray(rho_s, dtype=float) / 6.0)


def _rank_correlation_matrix(correlations: pd.DataFrame | Mapping[str, Mapping[str, float]],
                             sampled: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Correlated names (in `sampled` order) and their Spearman matrix, from a labelled square
    DataFrame or a nested mapping {a: {b: rho}} (symmetric entries may be given once)."""
    if isinstance(correlations, pd.DataFrame):
        if list(correlations.index) != list(correlations.columns):
            raise SimulationError("a correlation DataFrame needs the same parameter names as index and columns")
        pairs = {(str(a), str(b)): float(correlations.loc[a, b])
                 for a in correlations.index for b in correlations.columns if a != b}
    else:
        pairs = {(str(a), str(b)): float(rho) for a, row in correlations.items() for b, rho in row.items()
                 if a != b}
    names = [p for p in sampled if any(p in pair for pair in pairs)]
    for a, b in pairs:
        for x in (a, b):
            if x not in sampled:
                raise SimulationError(f"correlation names '{x}', which is not a sampled parameter (it has no "
                                      f"prior, or is fixed); sampled: {', '.join(sampled)}")
    R = np.eye(len(names))
    for (a, b), rho in pairs.items():
        i, j = names.index(a), names.index(b)
        if not -1 < rho < 1:
            raise SimulationError(f"correlation of '{a}' and '{b}' must lie in (-1, 1), got {rho:g}")
        if (b, a) in pairs and pairs[(b, a)] != rho:
            raise SimulationError(f"correlation of '{a}' and '{b}' is given twice with different values "
                                  f"({rho:g} and {pairs[(b, a)]:g})")
        R[i, j] = R[j, i] = rho
    return names, R


@dataclass(frozen=True)
class JointPrior:
    """The joint prior of a model's patient-varying parameters: truncated marginals joined by a
    Gaussian copula. `correlations` are Spearman rank correlations (invariant under the
    marginal transforms and the truncation, so the sampled parameters reproduce them)."""

    marginals: tuple[Marginal, ...]
    correlated: tuple[str, ...]
    cholesky: np.ndarray  # (k, k) lower factor of the copula's normal correlation over `correlated`
    fixed: Mapping[str, float]
    rank_correlation: np.ndarray  # (k, k) the requested Spearman matrix

    @classmethod
    def from_model(cls, model: CompiledModel, priors: Mapping[str, Mapping[str, Any]] | None = None,
                   correlations: pd.DataFrame | Mapping[str, Mapping[str, float]] | None = None,
                   fixed: Mapping[str, float] | None = None) -> "JointPrior":
        """The spec's priors (truncated to each parameter's bounds), with `priors` replacing or
        adding entries (same mapping form, optional `bounds`) and `fixed` parameters removed."""
        spec = model.spec
        fixed = {str(k): float(v) for k, v in (fixed or {}).items()}
        for name in [*fixed, *(priors or {})]:
            if name not in model.parameters:
                hint = suggest(name, model.parameters)
                raise SimulationError(f"'{name}' is not a parameter of model '{model.name}'"
                                      + (f" ({hint})" if hint else ""))
        chosen = {name: p.prior for name, p in spec.parameters.items() if p.prior is not None}
        chosen.update(priors or {})
        marginals = tuple(_marginal(name, chosen[name], spec.parameters[name].bounds)
                          for name in model.parameters if name in chosen and name not in fixed)
        sampled = [m.name for m in marginals]
        if correlations is None or len(correlations) == 0:
            return cls(marginals, (), np.zeros((0, 0)), fixed, np.zeros((0, 0)))
        names, R = _rank_correlation_matrix(correlations, sampled)
        try:
            L = np.linalg.cholesky(spearman_to_normal(R))
        except np.linalg.LinAlgError:
            low = np.linalg.eigvalsh(spearman_to_normal(R)).min()
            raise SimulationError(f"the correlations over {', '.join(names)} are not a valid correlation "
                                  f"matrix (smallest eigenvalue of the copula correlation {low:.3g} <= 0); "
                                  "make them mutually consistent") from None
        return cls(marginals, tuple(names), L, fixed, R)

    @property
    def names(self) -> tuple[str, ...]:
        """Sampled parameter names, in model order."""
        return tuple(m.name for m in self.marginals)

    def draw(self, rng: np.random.Generator, m: int) -> pd.DataFrame:
        """m parameter sets: one column per sampled parameter, then the fixed ones."""
        z = rng.standard_normal((m, len(self.marginals)))
        if self.correlated:
            idx = [self.names.index(c) for c in self.correlated]
            z[:, idx] = z[:, idx] @ self.cholesky.T
        u = np.clip(stats.norm.cdf(z), 1e-16, 1 - 1e-16)
        table = {mg.name: mg.ppf(u[:, j]) for j, mg in enumerate(self.marginals)}
        table.update({name: np.full(m, value) for name, value in self.fixed.items()})
        return pd.DataFrame(table, index=pd.RangeIndex(m))

    def describe(self) -> dict[str, Any]:
        """JSON-ready record of what was sampled (for provenance)."""
        return {"priors": {m.name: {**m.prior, "truncated_to": [m.low, m.high]} for m in self.marginals},
                "spearman": {a: {b: float(self.rank_correlation[i, j]) for j, b in enumerate(self.correlated)
                                 if j != i} for i, a in enumerate(self.correlated)},
                "fixed": dict(self.fixed)}


# ---- plausibility constraints ------------------------------------------------------------------
ValueAt = Callable[[str, float], np.ndarray]  # (output, day) -> values over the batch (n,)


@dataclass(frozen=True)
class RangeConstraint:
    """low <= output(time) <= high (both inclusive); non-finite values fail."""

    output: str
    time: float = 0.0
    low: float = -math.inf
    high: float = math.inf

    @property
    def times(self) -> tuple[float, ...]:
        return (self.time,)

    def passes(self, value_at: ValueAt) -> np.ndarray:
        x = value_at(self.output, self.time)
        return np.isfinite(x) & (x >= self.low) & (x <= self.high)

    def describe(self) -> str:
        return f"{self.low:g} <= {self.output}(day {self.time:g}) <= {self.high:g}"


@dataclass(frozen=True)
class GrowthConstraint:
    """Untreated growth: output(end) > min_ratio * output(start), and <= max_ratio * output(start)."""

    output: str
    start: float
    end: float
    min_ratio: float = 1.0
    max_ratio: float = math.inf

    @property
    def times(self) -> tuple[float, ...]:
        return (self.start, self.end)

    def passes(self, value_at: ValueAt) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = value_at(self.output, self.end) / value_at(self.output, self.start)
        return np.isfinite(ratio) & (ratio > self.min_ratio) & (ratio <= self.max_ratio)

    def describe(self) -> str:
        upper = "" if math.isinf(self.max_ratio) else f" and <= {self.max_ratio:g}"
        return (f"{self.output}(day {self.end:g}) / {self.output}(day {self.start:g}) > "
                f"{self.min_ratio:g}{upper}")


Constraint = RangeConstraint | GrowthConstraint
_CONSTRAINT_KEYS = {"range": ("kind", "output", "time", "low", "high", "description"),
                    "growth": ("kind", "output", "from", "to", "min_ratio", "max_ratio", "description")}


def constraint(item: Constraint | Mapping[str, Any]) -> Constraint:
    """A constraint from data: {output, time, low, high} (kind 'range', the default) or
    {kind: growth, output, from, to, min_ratio, max_ratio}; times in days from day 0."""
    if isinstance(item, (RangeConstraint, GrowthConstraint)):
        return item
    kind = str(item.get("kind", "range"))
    if kind not in _CONSTRAINT_KEYS:
        raise SimulationError(f"constraint {dict(item)}: unknown kind '{kind}' (choose range or growth)")
    allowed = _CONSTRAINT_KEYS[kind]
    unknown = [k for k in item if k not in allowed]
    if unknown or "output" not in item:
        hint = suggest(str(unknown[0]), allowed) if unknown else None
        raise SimulationError(f"constraint {dict(item)}: a {kind} constraint takes {', '.join(allowed)} "
                              f"and needs 'output'" + (f" ({hint})" if hint else ""))
    num = {k: _number(v, f"constraint {dict(item)}: '{k}'") for k, v in item.items()
           if k not in ("kind", "output", "description")}
    if kind == "range":
        c: Constraint = RangeConstraint(str(item["output"]), num.get("time", 0.0),
                                        num.get("low", -math.inf), num.get("high", math.inf))
        bad = not c.low <= c.high
    else:
        if "to" not in num:
            raise SimulationError(f"constraint {dict(item)}: a growth constraint needs 'to' (the later day)")
        c = GrowthConstraint(str(item["output"]), num.get("from", 0.0), num["to"],
                             num.get("min_ratio", 1.0), num.get("max_ratio", math.inf))
        bad = not (c.end > c.start and c.min_ratio < c.max_ratio)
    if bad or any(t < 0 for t in c.times):
        raise SimulationError(f"constraint {dict(item)} is empty or looks before day 0: need low <= high, "
                              "from < to, min_ratio < max_ratio and days >= 0")
    return c


def _number(value: Any, what: str) -> float:
    """A finite number from data; SimulationError naming `what` otherwise."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise SimulationError(f"{what} must be a finite number, got {value!r}")


# ---- target distributions ------------------------------------------------------------------
def expected_normal_range(n: int) -> float:
    """xi(n): expected range of n standard normal draws, the integral of 1 - Phi^n - (1 - Phi)^n
    over the real line (Tippett 1925; Wan et al. 2014, Table 1: xi(50) = 4.498)."""
    def integrand(x: float) -> float:
        return float(1.0 - stats.norm.cdf(x) ** n - stats.norm.sf(x) ** n)
    return 2.0 * integrate.quad(integrand, 0.0, np.inf)[0]  # the integrand is even


def sd_from_range(low: float, high: float, n: int) -> float:
    """Standard deviation of a normal sample from its range and size: (high - low) / xi(n)
    (Wan X, Wang W, Liu J, Tong T, BMC Med Res Methodol 2014;14:135, with the exact xi(n))."""
    if not (n >= 2 and high > low):
        raise SimulationError(f"a range needs high > low and n >= 2 patients, got [{low:g}, {high:g}], n={n}")
    return (high - low) / expected_normal_range(int(n))


@dataclass(frozen=True)
class Target:
    """The distribution a baseline output should follow in the cohort (`dist`: frozen scipy)."""

    output: str
    time: float
    dist: Any
    description: str

    @classmethod
    def from_mapping(cls, item: Mapping[str, Any]) -> "Target":
        """The target a mapping describes (see `_from_mapping`); SimulationError when a number it
        needs is missing or not a number."""
        try:
            return cls._from_mapping(item)
        except (TypeError, ValueError, KeyError) as exc:
            raise SimulationError(f"target {dict(item)}: its distribution needs numbers (median, sigma, mean, sd, "
                                  f"range [low, high], n, quantiles), got {type(exc).__name__}: {exc}") from None

    @classmethod
    def _from_mapping(cls, item: Mapping[str, Any]) -> "Target":
        """{output, time, distribution: lognormal | normal, then one of: median + sigma (lognormal)
        / mean + sd (normal); median + range [low, high] + n (the published summary: the location
        is the median, the spread Wan et al.'s range estimate, on the log scale for lognormal);
        quantiles {p: value} (least-squares fit of the quantile function, >= 2 quantiles)}."""
        allowed = ("output", "time", "distribution", "median", "sigma", "mean", "sd", "range", "n",
                   "quantiles", "source")
        unknown = [k for k in item if k not in allowed]
        kind = str(item.get("distribution", ""))
        if unknown or "output" not in item or kind not in ("lognormal", "normal"):
            raise SimulationError(f"target {dict(item)}: needs output and distribution (lognormal or normal), "
                                  f"and takes only {', '.join(allowed)}")
        scale = np.log if kind == "lognormal" else (lambda x: np.asarray(x, dtype=float))
        if "quantiles" in item:
            p = np.array([float(k) for k in item["quantiles"]])
            q = scale(np.array([float(v) for v in item["quantiles"].values()]))
            if len(p) < 2 or not np.all((p > 0) & (p < 1)):
                raise SimulationError(f"target {dict(item)}: quantiles need >= 2 probabilities in (0, 1)")
            spread, loc = np.polyfit(stats.norm.ppf(p), q, 1)
            how = f"fitted to quantiles {dict(zip(p.tolist(), item['quantiles'].values()))}"
        elif "range" in item:
            low, high = (float(x) for x in item["range"])
            loc = float(scale(float(item["median"])))
            spread = sd_from_range(float(scale(low)), float(scale(high)), int(item.get("n", 0)))
            how = (f"median {float(item['median']):g}, range [{low:g}, {high:g}] of n={int(item['n'])} "
                   "(spread by Wan et al. 2014)")
        elif kind == "lognormal":
            loc, spread = math.log(float(item["median"])), float(item["sigma"])
            how = f"median {float(item['median']):g}, sigma {spread:g}"
        else:
            loc, spread = float(item["mean"]), float(item["sd"])
            how = f"mean {loc:g}, sd {spread:g}"
        if not spread > 0:
            raise SimulationError(f"target {dict(item)}: the fitted spread {spread:g} is not positive")
        dist = (stats.lognorm(s=spread, scale=math.exp(loc)) if kind == "lognormal"
                else stats.norm(loc=loc, scale=spread))
        text = (f"{item['output']}(day {float(item.get('time', 0.0)):g}) ~ {kind}"
                f"({'median' if kind == 'lognormal' else 'mean'} {dist.median():.4g}, "
                f"{'sigma' if kind == 'lognormal' else 'sd'} {spread:.4g}) from {how}"
                + (f"; source: {item['source']}" if "source" in item else ""))
        return cls(str(item["output"]), float(item.get("time", 0.0)), dist, text)


def pool_density(y: np.ndarray) -> np.ndarray:
    """(n,) Gaussian kernel density of the values y (n,) at each value, Scott's bandwidth
    h = sd * n^(-1/5). Binned (a histogram with bins of h/16 smoothed by a Gaussian filter, then
    interpolated; Silverman BW, Appl Stat 1982;31:93-99) so the cost is linear in n:
    scipy.stats.gaussian_kde evaluated at every value costs n^2."""
    h = float(np.std(y, ddof=1)) * len(y) ** -0.2
    if not h > 0:
        raise SimulationError("every plausible patient has the same value of the target output: prevalence "
                              "selection needs variation (check the priors)")
    lo, hi = y.min() - 4 * h, y.max() + 4 * h
    bins = int(np.clip(np.ceil(16 * (hi - lo) / h), 256, MAX_KDE_BINS))
    counts, edges = np.histogram(y, bins=bins, range=(lo, hi))
    dx = edges[1] - edges[0]
    density = ndimage.gaussian_filter1d(counts.astype(float), h / dx, mode="constant") / (len(y) * dx)
    return np.interp(y, 0.5 * (edges[1:] + edges[:-1]), density)


def prevalence_weights(values: np.ndarray, target: Target) -> np.ndarray:
    """(n,) target density / pool density of each plausible patient's value (Allen et al. 2016),
    normalised to mean 1; densities on the log scale when all values are positive (the ratio is
    the same on either scale, the kernel estimate better on the log scale for skewed outputs)."""
    positive = bool(np.all(values > 0))
    y = np.log(values) if positive else np.asarray(values, dtype=float)
    wanted = target.dist.pdf(values) * (values if positive else 1.0)  # density of y under the target
    w = wanted / pool_density(y)
    if not (np.all(np.isfinite(w)) and w.sum() > 0):
        raise SimulationError(f"the plausible pool has no mass where the target puts it ({target.description}); "
                              "widen the priors or the constraints")
    return w / w.mean()


def inclusion_probabilities(weights: np.ndarray, n: int) -> np.ndarray:
    """(N,) probabilities summing to n, proportional to weights, those above 1 set to 1 (taken
    for certain) and the rest rescaled."""
    if np.count_nonzero(weights > 0) < n:
        raise SimulationError(f"only {np.count_nonzero(weights > 0)} plausible patients have a positive "
                              f"target weight, fewer than the {n} requested: raise oversample")
    pi = np.zeros(len(weights))
    certain = np.zeros(len(weights), dtype=bool)
    while True:
        free = ~certain
        pi[free] = (n - certain.sum()) * weights[free] / weights[free].sum()
        over = free & (pi > 1)
        if not over.any():
            return pi
        certain |= over
        pi[certain] = 1.0


def systematic_pps(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n distinct indices drawn with inclusion probabilities proportional to `weights`.

    Randomised systematic sampling (Madow 1949; Hartley & Rao 1962): shuffle, lay the inclusion
    probabilities end to end and take the units under n points spaced 1 apart from a uniform
    start. Hand-written because numpy's weighted choice without replacement draws successively,
    which does not give inclusion probabilities proportional to the weights; this does, with a
    fixed size and no duplicates.
    """
    pi = inclusion_probabilities(np.asarray(weights, dtype=float), n)
    order = rng.permutation(len(pi))
    edges = np.cumsum(pi[order])
    edges *= n / edges[-1]
    picks = np.searchsorted(edges, rng.random() + np.arange(n), side="right")
    return np.sort(order[np.minimum(picks, len(pi) - 1)])


# ---- the cohort --------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Cohort:
    """A virtual population: one row per patient (index `patient`).

    params: (n, n_param) sampled and fixed parameter values, ready for `simulate_batch`.
    baseline: (n, n_var) every state, expression and observable at day 0, untreated.
    weights: (n,) each patient's prevalence weight in the plausible pool (pool mean 1); all 1
        without a target. The cohort itself is unweighted: selection already applied them.
    pool_index: (n,) each patient's position among the plausible draws, in draw order.
    acceptance_rate: plausible / drawn over all rounds.
    selection: n_drawn, n_plausible, rounds, pass rate per constraint, solver failures, and with a
        target: its description, pool size, effective sample size, certain picks, KS distances.
    """

    params: pd.DataFrame
    baseline: pd.DataFrame
    weights: np.ndarray
    pool_index: np.ndarray
    seed: int
    acceptance_rate: float
    selection: Mapping[str, Any]
    provenance: Mapping[str, Any] = field(repr=False)

    def __len__(self) -> int:
        return len(self.params)

    def to_dataset(self) -> xr.Dataset:
        """Parameters, baseline values, `prevalence_weight` and `pool_index` over `patient`, with
        provenance and selection in the attributes (save with ie.save_result)."""
        data = {name: ("patient", self.params[name].to_numpy(), {"kind": "parameter"}) for name in self.params}
        data.update({name: ("patient", self.baseline[name].to_numpy(), {"kind": "baseline (day 0)"})
                     for name in self.baseline})
        data["prevalence_weight"] = ("patient", self.weights, {"description": "prevalence weight in the "
                                                                "plausible pool (pool mean 1)"})
        data["pool_index"] = ("patient", self.pool_index, {"description": "position among plausible draws"})
        attrs = {**self.provenance, "seed": self.seed, "acceptance_rate": self.acceptance_rate,
                 "selection": json.dumps(self.selection)}
        return xr.Dataset(data, coords={"patient": self.params.index.to_numpy()}, attrs=attrs)


def sample_cohort(model: CompiledModel, n: int, seed: int, *,
                  priors: Mapping[str, Mapping[str, Any]] | None = None,
                  correlations: pd.DataFrame | Mapping[str, Mapping[str, float]] | None = None,
                  fixed: Mapping[str, float] | None = None,
                  constraints: Sequence[Constraint | Mapping[str, Any]] | None = None,
                  target: Target | Mapping[str, Any] | None = None,
                  oversample: float = 5.0, max_rounds: int = 8,
                  rtol: float = 1e-6, atol: float = 1e-9, progress: bool = False) -> Cohort:
    """Sample a virtual population of `n` patients of a compiled model; same seed, same cohort.

    priors: replace or add priors by parameter name (default: the spec's priors; each truncated
        to the parameter's bounds). correlations: Spearman rank correlations between sampled
        parameters, a labelled square DataFrame or {a: {b: rho}} (Gaussian copula).
    fixed: parameter values shared by every patient (not sampled).
    constraints: plausibility checks on the untreated trajectory, as `constraint()` data; every
        draw must pass all (and simulate without failure). Rounds draw more until enough pass;
        after `max_rounds` a SimulationError reports the acceptance rate per constraint.
    target: a `Target` (or its mapping) for one baseline output: a plausible pool of
        `oversample * n` patients is drawn and n selected by prevalence weight (Allen et al.
        2016). Without a target the first n plausible draws are the cohort.
    rtol, atol: tolerances of the plausibility simulations; progress: show rich progress bars.
    """
    model = require_compiled(model, "sample_cohort")
    if not _whole(n, 1):
        raise SimulationError(f"a cohort needs n > 0 patients, got {n!r}")
    if not (_whole(seed, 0) and _whole(max_rounds, 1)):
        raise SimulationError(f"sample_cohort needs an integer seed >= 0 and an integer max_rounds >= 1, got "
                              f"seed={seed!r}, max_rounds={max_rounds!r}")
    _check_cohort_data(fixed, constraints, target)
    prior = JointPrior.from_model(model, priors, correlations, fixed)
    checks = [constraint(c) for c in constraints or ()]
    goal = target if isinstance(target, Target) or target is None else Target.from_mapping(target)
    if goal is not None and not (isinstance(oversample, (int, float, np.number)) and oversample >= 1):
        raise SimulationError(f"oversample must be a number >= 1 (the plausible pool is oversample x n), got "
                              f"{oversample!r}")
    _check_outputs(model, [c.output for c in checks] + ([goal.output] if goal else []))
    need = n if goal is None else int(math.ceil(oversample * n))
    times = np.unique([0.0, *(t for c in checks for t in c.times), *([goal.time] if goal else [])])
    rng = np.random.default_rng(seed)
    pool, stats_ = _plausible_pool(model, prior, checks, need, times, rng, max_rounds, rtol, atol, progress)
    params, values = pool
    if goal is None:
        chosen, weights, report = np.arange(n), np.ones(need), {}
    else:
        x = values[(goal.output, goal.time)]
        weights = prevalence_weights(x, goal)
        chosen = systematic_pps(weights, n, rng)
        report = _selection_report(goal, x, chosen, weights, n)
    baseline_cols = [c for c in values if isinstance(c, str)]
    cohort_params = params.iloc[chosen].reset_index(drop=True).rename_axis("patient")
    baseline = pd.DataFrame({c: values[c][chosen] for c in baseline_cols}).rename_axis("patient")
    selection = {**stats_, **report}
    prov = result_provenance(model, seed=int(seed), n_patients=int(n), sampling=prior.describe(),
                             constraints=[c.describe() for c in checks],
                             target=goal.description if goal else None, rtol=rtol, atol=atol,
                             method="Allen et al. 2016 (CPT PSP 5:140) plausible pool + prevalence selection")
    return Cohort(cohort_params, baseline, weights[chosen], chosen, int(seed),
                  stats_["n_plausible"] / stats_["n_drawn"], selection, prov)


def _whole(value: Any, least: int) -> bool:
    """Whether value is an integer (not a bool) >= least."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= least


def _check_cohort_data(fixed: Any, constraints: Any, target: Any) -> None:
    """SimulationError for sample_cohort data of the wrong form: fixed values that are not finite
    numbers, constraints that are not a list of constraints, a target that is not one."""
    for name, value in (fixed or {}).items():
        if not (isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)):
            raise SimulationError(f"fixed value of '{name}' must be a finite number, got {value!r}")
    if constraints is not None and (isinstance(constraints, (str, Mapping)) or not isinstance(constraints, Sequence)):
        raise SimulationError(f"constraints must be a list of constraints, e.g. [{{'output': 'sld_mm', 'time': 0, "
                              f"'low': 10, 'high': 150}}] (wrap a single one in a list), got {constraints!r}")
    if target is not None and not isinstance(target, (Target, Mapping)):
        raise SimulationError(f"target must be a Target or its mapping (output, time, distribution, ...), got "
                              f"{target!r}")


def _check_outputs(model: CompiledModel, names: list[str]) -> None:
    known = [*model.states, *model.output_names]
    for name in names:
        if name not in known:
            hint = suggest(name, known)
            raise SimulationError(f"'{name}' is not a state, expression or observable of model '{model.name}'"
                                  + (f" ({hint})" if hint else f"; known: {', '.join(known)}"))


def _plausible_pool(model, prior: JointPrior, checks: list[Constraint], need: int, times: np.ndarray,
                    rng: np.random.Generator, max_rounds: int, rtol: float, atol: float, progress: bool):
    """Draw rounds until `need` draws pass every check; returns ((params, values), statistics).

    values maps each state/output name -> its day-0 values (need,), and each (output, day) a
    constraint or target reads -> values (need,). The first `need` plausible draws are kept, in
    draw order. Round sizes follow the acceptance rate seen so far (1.25x the estimated need,
    at most 10x `need` per round)."""
    kept_params: list[pd.DataFrame] = []
    kept_values: list[dict] = []
    drawn = plausible = failed = 0
    passed = np.zeros(len(checks), dtype=np.int64)
    for round_ in range(1, max_rounds + 1):
        rate = plausible / drawn if drawn else 1.0
        left = need - plausible
        m = int(min(math.ceil(1.25 * left / max(rate, 1.0 / (drawn + 1))) + 8, 10 * need))
        draws = prior.draw(rng, m)
        with warnings.catch_warnings():  # failed runs are rejected and counted below
            warnings.filterwarnings("ignore", message=".*runs failed in the batch.*")
            ds = simulate_batch(model, draws, times, regimen=Regimen.none(), rtol=rtol, atol=atol, t0=0.0,
                                progress=progress)
        ok = ds["status"].values == 0

        def value_at(output: str, day: float, ds=ds) -> np.ndarray:
            return ds[output].sel(time=day).values

        verdicts = [c.passes(value_at) & ok for c in checks]
        passed += np.array([v.sum() for v in verdicts], dtype=np.int64)
        good = np.logical_and.reduce([ok, *verdicts])
        drawn, plausible, failed = drawn + m, plausible + int(good.sum()), failed + int((~ok).sum())
        idx = np.flatnonzero(good)
        kept_params.append(draws.iloc[idx])
        at0 = ds.sel(time=0.0)
        values = {name: at0[name].values[idx] for name in ds.data_vars if ds[name].dims == ("sample", "time")}
        values.update({(c.output, t): ds[c.output].sel(time=t).values[idx] for c in checks for t in c.times})
        kept_values.append(values)
        if plausible >= need:
            break
    summary = {"n_drawn": drawn, "n_plausible": plausible, "rounds": round_, "solver_failures": failed,
               "pass_rates": {c.describe(): float(p / drawn) for c, p in zip(checks, passed)}}
    if plausible < need:
        rates = "; ".join(f"{k}: {v:.2%}" for k, v in summary["pass_rates"].items()) or "no constraints"
        raise SimulationError(
            f"could not find {need} plausible patients of model '{model.name}' (with a target: the pool, "
            f"oversample x n) in {max_rounds} rounds: "
            f"{plausible} of {drawn} draws passed every constraint (acceptance rate {plausible / drawn:.3%}). "
            f"Pass rate per constraint: {rates}; solver failures: {failed}. Loosen the constraints, move "
            "the priors, or raise max_rounds")
    params = pd.concat(kept_params).iloc[:need].reset_index(drop=True)
    keys = kept_values[0].keys()
    values = {k: np.concatenate([v[k] for v in kept_values])[:need] for k in keys}
    return (params, values), summary


def _selection_report(goal: Target, x: np.ndarray, chosen: np.ndarray, weights: np.ndarray,
                      n: int) -> dict[str, Any]:
    """Effective sample size (Kish) of the pool weights, picks taken for certain, KS distances."""
    ess = float(weights.sum() ** 2 / (weights ** 2).sum())
    certain = int(np.count_nonzero(inclusion_probabilities(weights, n) >= 1.0))
    outside = float(goal.dist.cdf(x.min()) + goal.dist.sf(x.max()))
    report = {"target": goal.description, "pool_size": int(len(x)), "ess": ess, "certain_picks": certain,
              "target_mass_outside_pool": outside,
              "ks_pool": float(stats.kstest(x, goal.dist.cdf).statistic),
              "ks_cohort": float(stats.kstest(x[chosen], goal.dist.cdf).statistic)}
    if outside > 0.01:
        warnings.warn(f"{outside:.1%} of the target ({goal.description}) lies outside the plausible pool's "
                      f"range [{x.min():.4g}, {x.max():.4g}]: the cohort cannot follow it there (widen the "
                      "priors, their bounds or the constraints)", RuntimeWarning, stacklevel=3)
    if ess < n or certain:
        warnings.warn(f"the plausible pool is thin for the target ({goal.description}): effective sample "
                      f"size {ess:.0f} for {n} patients, {certain} taken for certain; the cohort may not "
                      "follow the target in the tails (raise oversample or widen the priors)",
                      RuntimeWarning, stacklevel=3)
    return report
