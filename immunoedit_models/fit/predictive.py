"""Posterior predictive trials: the endpoints a trial problem predicts, with intervals that combine
parameter uncertainty and trial-to-trial sampling.

A problem's `predictions:` list names what the calibrated model must predict (never fitted):

    - {endpoint: os, arms: [ABCP, ACP], statistics: [median, landmark_12, landmark_24, landmark_36]}
    - {endpoint: os, comparisons: [ABCP_vs_BCP], statistics: [hazard_ratio], subgroups: [all, pdl1_high]}

    - {endpoint: os, arms: [ABCP], statistics: [landmark_36], data_cut_months: 68}

Each becomes one labelled statistic (e.g. `os_median:ABCP`, `os_landmark_24:ACP`,
`os_hr:ABCP_vs_BCP:pdl1_high`, `os_landmark_36:ABCP@68mo`), read from the simulated trial's own
summaries (KM medians and landmarks, Cox HRs per comparison and biomarker subgroup:
`trials.analysis`). `data_cut_months` analyses the same patients at another data cut-off (months
from the first patient in), e.g. so that every patient can reach a 36-month landmark.

Two sets of trials at the design's size (or `fit.predictive.patients_per_arm`):
- `parameter_and_trial`: draw m of the approximate posterior (`uncertainty.laplace_from_evaluations`)
  simulated with cohort seed `seed + m`: the spread is parameter plus sampling uncertainty;
- `trial_only`: the estimate simulated with the same seeds: sampling uncertainty alone.
Pairing the seeds makes the difference between the two sets the parameter uncertainty.
Each finished trial is checkpointed, so a killed stage resumes where it stopped.

With a `PredictiveCheck`, every trial also yields the fitted targets' statistics and each arm's
KM curves (a posterior predictive check, the KM form of a visual predictive check): the
replicates at the estimate say what trials of the design's size give if the calibrated model is
right, so an observed value outside their 95 % interval is a misfit beyond sampling noise. The
fit's own cohort cannot say this: it is the cohort the parameters were tuned on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import xarray as xr
from rich.progress import Progress

from ..errors import FitError
from .checkpoint import load_state, save_state
from .parameters import ParameterSet
from .uncertainty import Laplace, draw_parameters

if TYPE_CHECKING:
    from .trial import PredictiveCheck

SOURCES = ("parameter_and_trial", "trial_only")
LEVEL = 0.95


@dataclass(frozen=True)
class Statistic:
    """One predicted quantity of a simulated trial."""

    name: str
    endpoint: str                   # pfs | os
    kind: str                       # median | landmark | hazard_ratio
    arm: str = ""                   # median, landmark
    comparison: str = ""            # hazard_ratio: EXPERIMENTAL_vs_CONTROL
    subgroup: str = "all"           # hazard_ratio: a biomarker subgroup of the design, or all
    months: float = float("nan")    # landmark
    data_cut_months: float | None = None   # None: the design's data cut-off

    def value(self, trial: xr.Dataset) -> float:
        """The statistic read from a trial Dataset with the design's summaries (NaN where a
        subgroup is too small for a Cox fit)."""
        ep = self.endpoint
        if self.kind == "median":
            return float(trial[f"{ep}_median_months"].sel(arm=self.arm))
        if self.kind == "landmark":     # the summary's landmark, else the arm's KM at `months`
            from .trial import simulated_landmark    # (here: trial imports problem, which imports this module)
            return simulated_landmark(trial, ep, self.arm, self.months)
        if self.subgroup == "all":
            return float(trial[f"hr_{ep}"].sel(comparison=self.comparison))
        return float(trial[f"hr_{ep}_subgroup"].sel(comparison=self.comparison, subgroup=self.subgroup))


def prediction_statistics(predictions: Sequence[Mapping[str, Any]]) -> list[Statistic]:
    """The problem's `predictions:` entries as Statistics (FitError naming an unknown statistic)."""
    out: list[Statistic] = []
    for i, entry in enumerate(predictions):
        ep = str(entry.get("endpoint", "os")).lower()
        cut = entry.get("data_cut_months")
        cut = None if cut is None else float(cut)
        tag = "" if cut is None else f"@{cut:g}mo"
        for stat in entry.get("statistics", []):
            stat = str(stat)
            if stat == "median":
                out += [Statistic(f"{ep}_median:{a}{tag}", ep, "median", arm=str(a), data_cut_months=cut)
                        for a in entry.get("arms", [])]
            elif stat.startswith("landmark_") and stat[9:].replace(".", "", 1).isdigit():
                out += [Statistic(f"{ep}_{stat}:{a}{tag}", ep, "landmark", arm=str(a), months=float(stat[9:]),
                                  data_cut_months=cut) for a in entry.get("arms", [])]
            elif stat == "hazard_ratio":
                out += [Statistic(f"{ep}_hr:{c}:{g}{tag}", ep, "hazard_ratio", comparison=str(c), subgroup=str(g),
                                  data_cut_months=cut)
                        for c in entry.get("comparisons", []) for g in entry.get("subgroups", ["all"])]
            else:
                raise FitError(f"predictions entry {i + 1}: unknown statistic '{stat}' (use median, "
                               "landmark_<months> or hazard_ratio)")
    if len({s.name for s in out}) != len(out):
        raise FitError("predictions: a statistic is listed twice")
    return out


@dataclass(frozen=True)
class PredictiveSettings:
    """fit.predictive of a trial problem."""

    draws: int = 40                 # posterior draws, one trial each
    replicates: int = 40            # trials at the estimate (same seeds as the first draws)
    patients_per_arm: int | None = None   # None: the design's
    seed: int = 1000
    window: float | None = None     # objective rise above the best used for the surface (None: chi2(k, .99)/2)

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "PredictiveSettings":
        return cls(**{k: m[k] for k in ("draws", "replicates", "patients_per_arm", "seed", "window") if k in m})


#: (fit-scale x, cohort seed, data cut-off in months or None for the design's) -> trial with summaries
SimulateAt = Callable[[np.ndarray, int, float | None], xr.Dataset]


def predictive_trials(simulate_at: SimulateAt, params: ParameterSet, laplace: Laplace, statistics: Sequence[Statistic],
                      settings: PredictiveSettings, checkpoint: str | Path | None = None,
                      settings_key: Mapping[str, Any] | None = None, progress: bool = False,
                      check: PredictiveCheck | None = None) -> xr.Dataset:
    """Simulate the posterior-draw and estimate trials and summarise the predicted statistics.

    Returns a Dataset with `predictive_value` (source, draw, statistic), its quantiles
    `predictive_median` / `_lower` / `_upper` (source, statistic; NaN-aware, with the count of
    finite values `predictive_n`), `posterior_draw` (draw, parameter; natural values), and the
    Laplace summary: `laplace_sd_x` and `laplace_covariance_x` (fit scale), `laplace_ci_lower` /
    `_upper` (natural, 95 %, clipped to the bounds). With `check`, also `ppc_target` (source,
    draw, target) and `ppc_survival` (source, draw, ppc_endpoint, arm, ppc_month), each with
    its `_median` / `_lower` / `_upper` quantiles over the draws, and `ppc_observed` (target).
    """
    rng = np.random.default_rng(settings.seed)
    draws = draw_parameters(laplace, settings.draws, rng) if settings.draws else np.zeros((0, len(params.names)))
    jobs = [("parameter_and_trial", m, draws[m]) for m in range(settings.draws)] + \
           [("trial_only", r, laplace.mean) for r in range(settings.replicates)]
    key = {"stage": "predictive", "draws": settings.draws, "replicates": settings.replicates,
           "patients_per_arm": settings.patients_per_arm, "seed": settings.seed,
           "x_best": tuple(np.round(laplace.mean, 12)), "statistics": tuple(s.name for s in statistics),
           "check": check.key() if check else None, **(settings_key or {})}
    state = load_state(checkpoint, key) if checkpoint else None
    rows: list[tuple[np.ndarray, ...]] = state["rows"] if state else []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("predictive trials", total=len(jobs), completed=len(rows))
        cuts = list(dict.fromkeys([*(s.data_cut_months for s in statistics), *([None] if check else [])]))
        for source, m, x in jobs[len(rows):]:
            trials = {cut: simulate_at(x, settings.seed + m, cut) for cut in cuts}   # same patients per cut
            rows.append((np.array([s.value(trials[s.data_cut_months]) for s in statistics], dtype=float),
                         *(check.read(trials[None]) if check else ())))
            if checkpoint:
                save_state(checkpoint, {"settings": key, "rows": rows})
            bar.advance(task)
    n_max = max(settings.draws, settings.replicates)
    shapes = [(len(statistics),), *(check.shapes() if check else ())]
    placed = [np.full((len(SOURCES), n_max) + shape, np.nan) for shape in shapes]   # (source, draw, ...)
    for (source, m, _), row in zip(jobs, rows):
        for values, part in zip(placed, row):
            values[SOURCES.index(source), m] = part
    ds = _dataset(placed[0], draws, params, laplace, statistics, settings)
    return ds.merge(_check_dataset(check, *placed[1:])) if check else ds


def _quantiles(values: np.ndarray) -> np.ndarray:
    """(3, source, ...) NaN-aware median and 95 % interval over axis 1 (draws) of values (source, draw, ...)."""
    q = (1 - LEVEL) / 2
    with warnings.catch_warnings():   # an all-NaN column (e.g. an empty subgroup) has NaN quantiles
        warnings.simplefilter("ignore", RuntimeWarning)
        return (np.nanquantile(values, [0.5, q, 1 - q], axis=1) if values.shape[1]
                else np.full((3, values.shape[0]) + values.shape[2:], np.nan))


def _check_dataset(check: PredictiveCheck, targets: np.ndarray, survival: np.ndarray) -> xr.Dataset:
    """The `ppc_*` variables of `predictive_trials` from values (source, draw, target) and
    (source, draw, ppc_endpoint, arm, ppc_month)."""
    data: dict[str, Any] = {
        "ppc_target": (("source", "draw", "target"), targets,
                       {"description": "each fitted target's statistic in every predictive trial at the design's "
                                       "data cut-off (the KM median for an ipd target)"}),
        "ppc_observed": ("target", check.observed(),
                         {"description": "the target's observed value (for an ipd target, the KM median of the data)"}),
        "ppc_survival": (("source", "draw", "ppc_endpoint", "arm", "ppc_month"), survival,
                         {"description": "KM survival of every arm and endpoint in every predictive trial"})}
    for name, values, dims in (("ppc_target", targets, ("source", "target")),
                               ("ppc_survival", survival, ("source", "ppc_endpoint", "arm", "ppc_month"))):
        quant = _quantiles(values)
        for i, which in enumerate(("median", "lower", "upper")):
            data[f"{name}_{which}"] = (dims, quant[i], {"level": LEVEL} if i else {})
    return xr.Dataset(data, coords={"target": [t.id for t in check.targets], "arm": list(check.arms),
                                    "ppc_endpoint": list(check.endpoints), "ppc_month": list(check.months)})


def _dataset(values, draws, params, laplace, statistics, settings) -> xr.Dataset:
    quant = _quantiles(values)
    ci = laplace.interval(LEVEL)
    natural = np.column_stack([params.natural(ci[:, 0]), params.natural(ci[:, 1])])
    names = params.names
    return xr.Dataset(
        {"predictive_value": (("source", "draw", "statistic"), values,
                              {"description": "predicted statistic per simulated trial (NaN: not estimable, "
                                              "e.g. a subgroup too small for a Cox fit, or no such trial)"}),
         "predictive_median": (("source", "statistic"), quant[0]),
         "predictive_lower": (("source", "statistic"), quant[1], {"level": LEVEL}),
         "predictive_upper": (("source", "statistic"), quant[2], {"level": LEVEL}),
         "predictive_n": (("source", "statistic"), np.isfinite(values).sum(axis=1)),
         "posterior_draw": (("draw_parameter", "parameter"), np.array([params.natural(x) for x in draws]).reshape(-1, len(names)),
                            {"description": "posterior draws of the free parameters (natural values)"}),
         "laplace_sd_x": ("parameter", laplace.sd, {"description": "approximate posterior sd on the fit scale"}),
         "laplace_covariance_x": (("parameter", "parameter_2"), laplace.covariance),
         "laplace_ci_lower": ("parameter", natural[:, 0], {"level": LEVEL}),
         "laplace_ci_upper": ("parameter", natural[:, 1], {"level": LEVEL})},
        coords={"source": list(SOURCES), "draw": np.arange(values.shape[1]), "statistic": [s.name for s in statistics],
                "statistic_endpoint": ("statistic", [s.endpoint for s in statistics]),
                "statistic_kind": ("statistic", [s.kind for s in statistics]),
                "statistic_arm": ("statistic", [s.arm or s.comparison for s in statistics]),
                "statistic_subgroup": ("statistic", [s.subgroup if s.kind == "hazard_ratio" else "" for s in statistics]),
                "statistic_data_cut_months": ("statistic", [np.nan if s.data_cut_months is None else s.data_cut_months
                                                            for s in statistics]),
                "parameter": names, "parameter_2": names, "draw_parameter": np.arange(len(draws))},
        attrs={"predictive": ("posterior predictive trials: parameter_and_trial = one trial per draw of the Laplace "
                              "posterior (cohort seed seed + draw), trial_only = the estimate with the same seeds"),
               "predictive_draws": settings.draws, "predictive_replicates": settings.replicates,
               "predictive_seed": settings.seed,
               "predictive_patients_per_arm": settings.patients_per_arm or "the design's",
               "laplace": ("quadratic response surface fitted to the CMA-ES evaluations within the window above "
                           "the best; covariance = inverse Hessian on the fit scale (uncertainty.py)"),
               "laplace_window": laplace.window, "laplace_points": laplace.surface.n_points,
               "laplace_r_squared": laplace.surface.r_squared, "laplace_residual_sd": laplace.surface.residual_sd,
               "laplace_flat_directions": laplace.n_flat})
