"""Trial-level objectives: published endpoints against a simulated trial Dataset.

A simulated trial is the contract Dataset over (arm, patient) (`pfs_months`, `pfs_event`,
`os_months`, `os_event`, `best_response`, and the trial's own summaries `hr_pfs` / `hr_os` over
`comparison` labelled '<experimental>_vs_<control>', `pfs_median_months`, ...). Each target of a
trial problem is one likelihood term (problem.py `Target`):

- ipd: survival likelihood of the reconstructed IPD under the simulated arm's smoothed
  piecewise-exponential hazard (`likelihoods.ipd_nll`);
- median: Gaussian on ln median, SE from the reported 95 % CI;
- hazard_ratio: Gaussian on ln HR, SE from the CI; the simulated value is the simulated trial's
  Cox HR (`hr_<endpoint>`), not a model hazard ratio;
- landmark: Gaussian on cloglog S(months), SE from the CI on that scale;
- response: binomial count round(value * n) of n under the simulated ORR;
- prevalence: binomial count round(value * n) of n under the simulated cohort's fraction of
  patients positive for a biomarker rule of the trial design (`trials.biomarkers`: e.g.
  `pdl1_high`, evaluated on the day-0 outputs), in one arm or, without `arm`, over all arms.
  The rule is the design's definition; what moves the fraction are population parameters of
  the biomarker's expression (e.g. `pdl1_basal`, `lag3_level`) and of what induces it (IFN-gamma).

`TrialObjective` turns a fit vector into the simulated trial (through an injected `simulate`
function, common random numbers inside it) and sums the weighted terms. `trial_simulator` wires
`immunoedit_models.trials.run_trial` in, when the installation has it: population medians and
sigmas become lognormal priors of the cohort (truncated to the population's `bounds`), other
model parameters `fixed` values, death-model parameters `survival` values; the cohort seed is
fixed. The cohort's draws are then the same normal scores at every evaluation, so parameter
values move continuously with x; plausibility constraints (acceptance-rejection) can still swap
a patient in or out, which is one reason to optimise trials with CMA-ES rather than gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping

import numpy as np
import xarray as xr

from ..errors import FitError
from .km import cox_hazard_ratio, km_median, km_survival
from .likelihoods import binomial_nll, gaussian_nll, ipd_nll, se_from_ci
from .problem import FitProblem, Target

Simulate = Callable[[Mapping[str, Mapping[str, float]]], xr.Dataset]


def arm_outcomes(trial: xr.Dataset, endpoint: str, arm: str) -> tuple[np.ndarray, np.ndarray]:
    """(months, event flags) of one arm's endpoint ('pfs' or 'os'), patients without a value dropped."""
    if arm not in trial["arm"].values:
        raise FitError(f"the simulated trial has no arm '{arm}' (arms: {list(map(str, trial['arm'].values))})")
    t = trial[f"{endpoint}_months"].sel(arm=arm).values
    e = trial[f"{endpoint}_event"].sel(arm=arm).values
    keep = np.isfinite(t)
    return t[keep], e[keep].astype(int)


def simulated_median(trial: xr.Dataset, endpoint: str, arm: str) -> float:
    name = f"{endpoint}_median_months"
    if name in trial:
        return float(trial[name].sel(arm=arm))
    return km_median(*arm_outcomes(trial, endpoint, arm))


def simulated_hazard_ratio(trial: xr.Dataset, endpoint: str, comparison: str) -> float:
    name = f"hr_{endpoint}"
    if name in trial and "comparison" in trial.coords and comparison in trial["comparison"].values:
        return float(trial[name].sel(comparison=comparison))
    experimental, sep, control = comparison.partition("_vs_")
    if not sep:
        raise FitError(f"comparison '{comparison}' must be written EXPERIMENTAL_vs_CONTROL")
    return cox_hazard_ratio(*arm_outcomes(trial, endpoint, experimental), *arm_outcomes(trial, endpoint, control))[0]


def simulated_landmark(trial: xr.Dataset, endpoint: str, arm: str, months: float) -> float:
    name = f"{endpoint}_landmark"
    if name in trial and "landmark_month" in trial.coords and months in trial["landmark_month"].values:
        return float(trial[name].sel(arm=arm, landmark_month=months))
    return float(km_survival(*arm_outcomes(trial, endpoint, arm), [months])[0])


def simulated_orr(trial: xr.Dataset, arm: str) -> float:
    if "orr" in trial:
        return float(trial["orr"].sel(arm=arm))
    response = trial["best_response"].sel(arm=arm).values
    present = np.isfinite(trial["pfs_months"].sel(arm=arm).values)
    return float(np.isin(response[present], ("CR", "PR")).mean())


def simulated_prevalence(trial: xr.Dataset, biomarker: str, arm: str | None = None) -> float:
    """Fraction of simulated patients (of `arm`, or of all arms) positive for a biomarker rule of
    the trial design; the trial Dataset carries each rule as a boolean over (arm, patient)."""
    if biomarker not in trial or trial[biomarker].dtype != bool:
        rules = [str(v) for v in trial.data_vars if trial[v].dtype == bool and trial[v].dims == ("arm", "patient")]
        raise FitError(f"the simulated trial has no biomarker rule '{biomarker}'; its design classifies "
                       f"patients by {', '.join(rules) or 'none'} (trial file: biomarkers:)")
    flag, present = trial[biomarker], np.isfinite(trial["pfs_months"])
    if arm is not None:
        if arm not in trial["arm"].values:
            raise FitError(f"the simulated trial has no arm '{arm}' (arms: {list(map(str, trial['arm'].values))})")
        flag, present = flag.sel(arm=arm), present.sel(arm=arm)
    return float(flag.values[present.values].mean())


def simulated_statistic(trial: xr.Dataset, target: Target) -> float:
    """The simulated counterpart of a target: the median, HR, landmark rate, ORR or biomarker
    prevalence (for an ipd target, the simulated arm's KM median)."""
    k, ep = target.kind, target.endpoint
    if k in ("ipd", "median"):
        return simulated_median(trial, ep, target.arm)
    if k == "hazard_ratio":
        return simulated_hazard_ratio(trial, ep, target.comparison)
    if k == "landmark":
        return simulated_landmark(trial, ep, target.arm, target.months)
    if k == "response":
        return simulated_orr(trial, target.arm)
    if k == "prevalence":
        return simulated_prevalence(trial, target.biomarker, target.arm)
    raise FitError(f"unknown target kind '{k}'")


def observed_statistic(target: Target) -> float:
    """The target's published value (for an ipd target, the KM median of the reconstructed IPD)."""
    if target.kind == "ipd":
        return km_median(target.data["time_months"], target.data["event"])
    return float(target.value)


def target_nll(trial: xr.Dataset, target: Target) -> float:
    """The negative log-likelihood of one target given a simulated trial (unweighted)."""
    if target.kind == "ipd":
        sim_t, sim_e = arm_outcomes(trial, target.endpoint, target.arm)
        if not np.any(sim_e > 0):
            return np.inf  # no simulated events: the observed curve is impossible under this point
        return ipd_nll(target.data["time_months"].to_numpy(float), target.data["event"].to_numpy(int),
                       sim_t, sim_e, target.hazard_bins_months, target.smoothing_months)
    sim = simulated_statistic(trial, target)
    if target.kind in ("median", "hazard_ratio"):
        return gaussian_nll(sim, target.value, se_from_ci(*target.ci, "log"), "log")
    if target.kind == "landmark":
        return gaussian_nll(sim, target.value, se_from_ci(*target.ci, "cloglog"), "cloglog")
    return binomial_nll(round(target.value * target.n), target.n, sim)  # response, prevalence


def trial_terms(trial: xr.Dataset, targets) -> dict[str, float]:
    """target id -> weighted negative log-likelihood."""
    return {t.id: t.weight * target_nll(trial, t) for t in targets}


@dataclass(frozen=True)
class PredictiveCheck:
    """What every predictive trial also yields, at the design's data cut-off, for the posterior
    predictive check of a trial fit: each target's simulated statistic (`simulated_statistic`:
    the KM median for an ipd target) and the KM survival of every arm and endpoint at `months`."""

    targets: tuple[Target, ...]
    arms: tuple[str, ...]
    months: tuple[float, ...]           # KM grid (months)
    endpoints: tuple[str, ...] = ("pfs", "os")

    def read(self, trial: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
        """(target statistics (n_target,), KM survival (n_endpoint, n_arm, n_month)); NaN for a
        statistic the trial cannot give (e.g. a Cox fit that does not converge)."""
        return (np.array([_or_nan(simulated_statistic, trial, t) for t in self.targets], dtype=float),
                np.array([[km_survival(*arm_outcomes(trial, ep, arm), self.months) for arm in self.arms]
                          for ep in self.endpoints], dtype=float))

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The shapes of `read`'s two arrays."""
        return (len(self.targets),), (len(self.endpoints), len(self.arms), len(self.months))

    def observed(self) -> np.ndarray:
        """(n_target,) the targets' observed values (`observed_statistic`)."""
        return np.array([observed_statistic(t) for t in self.targets], dtype=float)

    def key(self) -> tuple:
        """What identifies the check in a checkpoint."""
        return (tuple(t.id for t in self.targets), self.arms, self.months, self.endpoints)


def _or_nan(f: Callable[..., float], *args) -> float:
    try:
        return float(f(*args))
    except (ArithmeticError, ValueError):
        return float("nan")


@dataclass
class TrialObjective:
    """x (fit scale) -> sum of the targets' weighted terms for the simulated trial.

    simulate: natural values grouped by role ({"model": {...}, "population": {name: {median,
    sigma}}, "survival": {...}}) -> contract trial Dataset; it must use fixed seeds (common random
    numbers) so the objective is a deterministic function of x.
    """

    problem: FitProblem
    simulate: Simulate
    penalty: float = 1e12

    def grouped(self, x) -> dict[str, dict]:
        params = self.problem.parameters
        values = dict(zip(params.names, params.natural(x)))
        out: dict[str, dict] = {"model": {}, "survival": {}, "population": {}}
        for pop in params.populations:
            out["population"][pop.name] = {"median": values[pop.median.name], "sigma": values[pop.sigma.name]}
        for name, value in values.items():
            role = self.problem.roles.get(name, "model")
            if role in ("model", "survival"):
                out[role][name] = float(value)
        return out

    def terms(self, x) -> dict[str, float]:
        return trial_terms(self.simulate(self.grouped(x)), self.problem.targets)

    def __call__(self, x) -> float:
        try:
            total = float(sum(self.terms(x).values()))
        except (ArithmeticError, ValueError):  # e.g. a Cox fit that cannot converge: a rejected point
            return self.penalty
        return total if np.isfinite(total) else self.penalty


def trial_simulator(problem: FitProblem) -> Simulate:
    """The simulated trial of a trial problem as a function of grouped parameter values, through
    `immunoedit_models.trials.run_trial` with the problem's fixed cohort seed."""
    from ..compile import compile_model
    from ..trials import load_trial, run_trial

    model = compile_model(problem.model_path(), backend=problem.backend)
    design = load_trial(problem.trial_path())
    if problem.cohort.get("data_cut_months") is not None:      # the fit's follow-up, not the design's
        design = replace(design, data_cut_months=float(problem.cohort["data_cut_months"]))
    lean = objective_design(design, problem.targets)
    n = problem.cohort.get("patients_per_arm")
    seed = int(problem.cohort.get("seed", problem.fit.seed))

    def simulate(groups: Mapping[str, Mapping[str, float]], full: bool = False, patients_per_arm: int | None = None,
                 trial_seed: int | None = None, data_cut_months: float | None = None) -> xr.Dataset:
        """The simulated trial at grouped values: the fit's lean design and cohort (default), or
        `full`: the design's own summaries (every comparison and subgroup); other sizes, seeds and
        data cut-offs for predictions."""
        chosen = design if full else lean
        if data_cut_months is not None:
            chosen = replace(chosen, data_cut_months=float(data_cut_months))
        return run_trial(chosen, model=model, patients_per_arm=patients_per_arm or n,
                         seed=seed if trial_seed is None else trial_seed, **run_trial_settings(problem, groups))

    simulate.model = model
    simulate.design = design
    return simulate


def run_trial_settings(problem: FitProblem, groups: Mapping[str, Mapping[str, float]]) -> dict[str, dict | None]:
    """`run_trial` keywords (priors, fixed, survival) of grouped natural values over the problem's
    base calibration (if any): populations become lognormal priors truncated to the population's
    bounds; a fitted value replaces the base's."""
    truncation = {pop.name: pop.bounds for pop in problem.parameters.populations if pop.bounds}
    priors = {name: {"distribution": "lognormal", "median": v["median"], "sigma": v["sigma"],
                     **({"bounds": list(truncation[name])} if name in truncation else {})}
              for name, v in groups["population"].items()}
    base = problem.calibration
    merged = {"priors": {**base.get("priors", {}), **priors}, "fixed": {**base.get("fixed", {}), **groups["model"]},
              "survival": {**base.get("survival", {}), **groups["survival"]}}
    return {key: dict(value) or None for key, value in merged.items()}


def objective_design(design, targets) -> object:
    """The design the objective simulates: the same patients and outcomes (randomisation, dosing and
    readouts do not depend on the analysis), analysed only as far as the targets need: the
    comparisons of hazard-ratio targets, no subgroup HRs (a full IMpower150 summary has 32 Cox
    fits; ~0.3 ms each at a calibration's trial size, `trials.analysis.cox_efron_1d`)."""
    needed = {t.comparison for t in targets if t.kind == "hazard_ratio"}
    comparisons = tuple(c for c in design.comparisons if f"{c[0]}_vs_{c[1]}" in needed)
    return replace(design, comparisons=comparisons, subgroups=())
