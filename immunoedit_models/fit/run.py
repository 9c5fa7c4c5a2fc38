"""`fit(problem, out)`: run a fitting problem end to end, resumable, and write its results.

Stages (each checkpointed in `out`, so `resume=True` after a kill loses nothing):
- timecourse problems: gradient multistart (`fit.method: multistart`, the default), CMA-ES
  (`cmaes`), or multistart followed by NUTS (`nuts`); then profile likelihoods for `fit.profiles`;
- trial problems: CMA-ES on the trial objective (the trial runner simulates each candidate with
  common random numbers) over the free parameters not listed in `fit.hold` (held at their
  start); with `fit.predictive`, a Laplace posterior from the CMA-ES evaluations (of the searched
  parameters, conditional on the held ones) and posterior predictive trials of the problem's
  `predictions:` (predictive.py).
Outputs in `out`: `fit.nc` (the result Dataset), `calibration.yaml` (the estimates grouped by
role, ready for a calibrated simulation or trial), `report.md` and its PNG figures.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import xarray as xr
from ruamel.yaml import YAML

from ..compile import compile_model
from ..errors import FitError
from ..io.results import load as load_result
from ..io.results import provenance
from ..io.results import save as save_result
from .bayes import nuts_posterior
from .optimize import (cmaes, cmaes_dataset, multistart, multistart_dataset, profile_likelihood)
from .parameters import ParameterSet
from .predictive import PredictiveSettings, prediction_statistics, predictive_trials
from .problem import FitProblem, load_problem
from .report import (plot_convergence, plot_km_check, plot_km_fit, plot_posterior, plot_profiles,
                     plot_timecourse_fit, predictive_table, target_table, write_report)
from .timecourse import timecourse_objective
from .trial import PredictiveCheck, TrialObjective, simulated_statistic, trial_simulator, trial_terms
from .uncertainty import laplace_from_evaluations

CHECKPOINTS = ("multistart.pkl", "cmaes.pkl", "predictive.pkl")
PROBLEM_MARK = "problem_hash.txt"    # which problem (and version of its files) the folder's fit is of
#: grid of the predictive check's KM curves (months)
PPC_STEP_MONTHS = 0.25
_START_NAMES = {"start_value": "start_initial", "estimate": "start_estimate", "objective": "start_objective",
                "iterations": "start_iterations", "evaluations": "start_evaluations",
                "converged": "start_converged", "message": "start_message", "trace": "start_trace"}


def problem_hash(problem: FitProblem) -> str:
    """sha256 of the problem file and its data (measurements, IPD, the base calibration)."""
    h = hashlib.sha256(problem.source_text.encode())
    if problem.calibration:
        h.update(repr(sorted(problem.calibration.items())).encode())
    if problem.measurements is not None:
        h.update(problem.measurements.to_csv().encode())
    for t in problem.targets:
        if t.data is not None:
            h.update(t.data.to_csv().encode())
    return h.hexdigest()[:16]


def start_vector(problem: FitProblem, nominal: dict[str, float]) -> np.ndarray:
    """First start on the fit scale: each parameter's `start`, else its nominal model value, else the
    centre of its bounds on the fit scale; clipped into the bounds."""
    x = []
    for p in problem.parameters.free:
        lo, hi = p.x_bounds
        value = p.start if p.start is not None else nominal.get(p.name)
        x.append(float(np.clip(p.to_x(value), lo, hi)) if value is not None and (p.scale == "lin" or value > 0)
                 else 0.5 * (lo + hi))
    return np.array(x)


def _prepare_out(out: Path, resume: bool, problem: FitProblem) -> None:
    """Create the output folder, or check that a fit may go on in it: no checkpoints unless
    resuming, and on resume the same problem (`PROBLEM_MARK`, else fit.nc's problem_hash), so
    nothing of another fit is reused or overwritten."""
    if out.exists() and not out.is_dir():
        raise FitError(f"--out {out} is a file: give a folder for the fit's checkpoints and results")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FitError(f"cannot create the output folder {out}: {exc.strerror}") from None
    existing = [c for c in CHECKPOINTS if (out / c).exists()]
    if existing and not resume:
        raise FitError(f"{out} already holds a fit checkpoint ({', '.join(existing)}): pass resume=True "
                       "(--resume) to continue it, or choose another output folder")
    digest = problem_hash(problem)
    found = _problem_in(out)
    if resume and found is not None and found != digest:
        raise FitError(f"{out} holds a fit of another problem (or of another version of this problem's "
                       f"files): problem hash {found}, this one {digest}. Choose another output folder, "
                       "or leave out --resume in a new one")
    (out / PROBLEM_MARK).write_text(f"{digest} {problem.name}\n", encoding="utf-8")


def _problem_in(out: Path) -> str | None:
    """The problem hash of the fit in `out`: its mark, or its fit.nc's attribute; None if neither."""
    mark = out / PROBLEM_MARK
    if mark.is_file():
        return mark.read_text(encoding="utf-8").split()[0]
    if (out / "fit.nc").is_file():
        return load_result(out / "fit.nc").attrs.get("problem_hash")
    return None


def _staged(path: Path, resume: bool, compute: Callable[[], xr.Dataset]) -> xr.Dataset:
    """A finished stage's saved Dataset (on resume), else compute and save it."""
    if resume and path.exists():
        return load_result(path)
    ds = compute()
    save_result(ds, path, compress=True)
    return ds


def fit(problem: FitProblem | str | Path, out: str | Path, resume: bool = False, progress: bool = False,
        callback: Callable[[str, int, Any], None] | None = None) -> xr.Dataset:
    """Fit a problem (object, folder or problem.yaml); write results into `out`; return the result.

    callback(stage, iteration, state) is called after each multistart start or CMA-ES generation,
    after its checkpoint is written (for progress displays and tests that interrupt a fit).
    """
    problem = problem if isinstance(problem, FitProblem) else load_problem(problem)
    if not problem.parameters.free:
        raise FitError(f"problem '{problem.name}' has no free parameters: list them under 'parameters:' "
                       "(or 'populations:') in its problem.yaml")
    out = Path(out)
    _prepare_out(out, resume, problem)
    if problem.kind == "timecourse":
        return _fit_timecourse(problem, out, resume, progress, callback)
    return _fit_trial(problem, out, resume, progress, callback)


def _base(problem, x_best, f_best, model, extra_attrs) -> xr.Dataset:
    params = problem.parameters
    bounds = np.array([p.bounds for p in params.free], dtype=float)
    return xr.Dataset(
        {"estimate": ("parameter", params.natural(x_best)),
         "objective": ((), float(f_best), {"description": "negative log-likelihood at the estimate"}),
         "bound_lower": ("parameter", bounds[:, 0]), "bound_upper": ("parameter", bounds[:, 1]),
         "scale": ("parameter", np.array([p.scale for p in params.free])),
         "role": ("parameter", np.array([problem.roles.get(n, "model") for n in params.names]))},
        coords={"parameter": params.names},
        attrs=provenance(model, problem=problem.name, problem_kind=problem.kind, problem_hash=problem_hash(problem),
                         problem_path=str(problem.folder), method=problem.fit.method, seed=problem.fit.seed,
                         **extra_attrs))


def _fit_timecourse(problem, out, resume, progress, callback) -> xr.Dataset:
    s = problem.fit
    obj = timecourse_objective(problem)
    model = obj.model
    nominal = dict(zip(model.parameters, model.symbolic.param_values))
    first = start_vector(problem, nominal)
    key = {"problem_hash": problem_hash(problem)}
    parts = []
    if s.method in ("multistart", "nuts"):
        starts = multistart(obj.value_and_grad, problem.parameters, s.n_starts, s.seed, s.max_iter, first=first,
                            checkpoint=out / "multistart.pkl", settings_key=key, progress=progress,
                            on_start=(lambda i, r: callback("multistart", i, r)) if callback else None)
        ms = multistart_dataset(starts, problem.parameters)
        best = starts[int(np.argmin([r.fun for r in starts]))]
        x_best, f_best = best.x, best.fun
        parts.append(ms.rename(_START_NAMES))
    else:
        res = cmaes(obj.value, problem.parameters, first, s.sigma0, s.seed, s.max_iter, s.popsize,
                    checkpoint=out / "cmaes.pkl", settings_key=key, progress=progress,
                    on_iteration=(lambda i, r: callback("cmaes", i, r)) if callback else None)
        x_best, f_best = res.x, res.fun
        parts.append(cmaes_dataset(res, problem.parameters).drop_vars(["estimate", "objective"]))
    if s.profiles:
        prof = _staged(out / "profiles.nc", resume, lambda: profile_likelihood(
            obj.value_and_grad, problem.parameters, x_best, f_best, s.profiles, s.profile_points, s.max_iter,
            progress=progress))
        parts.append(prof.drop_vars("estimate").rename({"parameter": "profiled"}))
    if s.method == "nuts":
        post_settings = {"num_warmup": 300, "num_samples": 300, "num_chains": 1, **s.posterior}
        post = _staged(out / "posterior.nc", resume, lambda: nuts_posterior(
            obj.raw_value_and_grad, problem.parameters, x_best, seed=s.seed, progress=progress, **post_settings))
        parts.append(post)
    result = xr.merge([_base(problem, x_best, f_best, model, {"n_measurements": obj.n_measurements}), *parts],
                      combine_attrs="drop_conflicts")
    result = _profile_on_parameters(result)
    _write_outputs(problem, result, out, _timecourse_figures(problem, result, x_best))
    return result


def _profile_on_parameters(result: xr.Dataset) -> xr.Dataset:
    """CI bounds over `parameter` (NaN for parameters without a profile)."""
    if "profiled" not in result.dims:
        return result
    for name in ("ci_lower", "ci_upper"):
        result[name] = result[name].rename({"profiled": "parameter"}).reindex(parameter=result["parameter"])
    return result


def _dense_curves(problem: FitProblem, x: np.ndarray) -> dict:
    """Fitted trajectories per condition on a 200-point grid, with the numba backend (an independent
    solver; compiled once per model and cached on disk)."""
    from ..simulate.core import simulate

    model = compile_model(problem.model_path(), backend="numba")
    values = dict(zip(problem.parameters.names, problem.parameters.natural(x)))
    curves = {}
    m = problem.measurements
    for cond in problem.conditions.values():
        sub = m[m["simulationConditionId"] == cond.name]
        if sub.empty:
            continue
        grid = np.linspace(min(problem.t0, float(sub["time"].min())), float(sub["time"].max()), 200)
        params = {**cond.parameters, **{k: v for k, v in values.items() if k in model.parameters}}
        ds = simulate(model, grid, params=params, initial=cond.initial, regimen=cond.regimen,
                      rtol=problem.solver.rtol, atol=problem.solver.atol, t0=problem.t0)
        outputs = {problem.observables[o].output for o in sub["observableId"]}
        curves[cond.name] = ds[sorted(outputs)].to_dataframe().reset_index()
    return curves


def _timecourse_figures(problem, result, x_best) -> list:
    figs = [("fitted_vs_data", plot_timecourse_fit(problem, _dense_curves(problem, x_best))),
            ("convergence", plot_convergence(result))]
    if "profile_value" in result:
        figs.append(("profiles", plot_profiles(_profiles_view(result))))
    if "posterior" in result:
        figs.append(("posterior", plot_posterior(result)))
    return figs


def _profiles_view(result: xr.Dataset) -> xr.Dataset:
    view = result[["profile_value", "profile_objective"]].rename({"profiled": "parameter"})
    for name in ("ci_lower", "ci_upper"):
        view[name] = result[name].sel(parameter=view["parameter"])
    return view


def _fit_trial(problem, out, resume, progress, callback) -> xr.Dataset:
    s = problem.fit
    simulate = trial_simulator(problem)
    likelihood = TrialObjective(problem, simulate)
    first = start_vector(problem, {})
    searched, expand = searched_parameters(problem.parameters, s.hold, first)

    def objective(z):  # with use_priors: MAP, adding -ln prior of the fit vector
        x = expand(z)
        return likelihood(x) - (float(problem.parameters.log_prior_x(x)) if s.use_priors else 0.0)

    searched_res = cmaes(objective, searched, first[[problem.parameters.names.index(n) for n in searched.names]],
                         s.sigma0, s.seed, s.max_iter, s.popsize, checkpoint=out / "cmaes.pkl",
                         settings_key={"problem_hash": problem_hash(problem)}, progress=progress,
                         on_iteration=(lambda i, r: callback("cmaes", i, r)) if callback else None)
    res = replace(searched_res, x=expand(searched_res.x), points=expand(searched_res.points))
    trial = simulate(likelihood.grouped(res.x))            # the objective's own (lean) trial: the terms
    terms = trial_terms(trial, problem.targets)
    parts = [_base(problem, res.x, res.fun, simulate.model, {"held": ", ".join(s.hold) or "none"}),
             cmaes_dataset(res, problem.parameters).drop_vars(["estimate", "objective"]),
             xr.Dataset({"target_nll": ("target", np.array(list(terms.values())))}, coords={"target": list(terms)})]
    if problem.predictions and s.predictive:
        parts.append(_staged(out / "predictive.nc", resume, lambda: _predictive(
            problem, simulate, likelihood, searched_res, searched, expand, first, out, progress)))
    result = xr.merge(parts, combine_attrs="drop_conflicts")
    full = simulate(likelihood.grouped(res.x), full=True)  # same patients, with every comparison and subgroup
    save_result(full, out / "trial_at_estimate.nc")
    figs = [("fitted_vs_data", plot_km_fit(problem, full)),
            *([("predictive_check", plot_km_check(problem, result))] if "ppc_survival" in result else []),
            ("convergence", plot_convergence(result))]
    extra = [*target_table(problem.targets, {t.id: simulated_statistic(trial, t) for t in problem.targets},
                           terms, result),
             *predictive_table(result)]
    _write_outputs(problem, result, out, figs, extra)
    return result


def searched_parameters(params: ParameterSet, hold: tuple[str, ...], first: np.ndarray):
    """The parameters CMA-ES searches (all but the held ones) and `expand`: searched fit vectors
    (..., k_searched) -> full fit vectors (..., k) with the held entries at `first`."""
    if not hold:
        return params, lambda z: np.asarray(z, dtype=float)
    active = [i for i, name in enumerate(params.names) if name not in hold]

    def expand(z):
        z = np.asarray(z, dtype=float)
        x = np.broadcast_to(first, z.shape[:-1] + first.shape).copy()
        x[..., active] = z
        return x

    return ParameterSet(tuple(params.free[i] for i in active)), expand


def _predictive(problem, simulate, likelihood, res, searched, expand, first, out, progress) -> xr.Dataset:
    """Laplace posterior from the CMA-ES evaluations (of the searched parameters: held ones stay at
    their values, so the intervals are conditional on them), then the posterior predictive trials."""
    settings = PredictiveSettings.from_mapping(problem.fit.predictive)
    laplace = laplace_from_evaluations(res.points, res.values, res.x, searched.x_bounds, settings.window)
    n = settings.patients_per_arm or simulate.design.patients_per_arm
    settings = replace(settings, patients_per_arm=n)

    def simulate_at(z, seed, data_cut_months):
        return simulate(likelihood.grouped(expand(z)), full=True, patients_per_arm=n, trial_seed=seed,
                        data_cut_months=data_cut_months)

    design = simulate.design
    check = PredictiveCheck(tuple(problem.targets), tuple(design.arms),
                            tuple(np.arange(0.0, design.data_cut_months + 1e-9, PPC_STEP_MONTHS).tolist()))
    ds = predictive_trials(simulate_at, searched, laplace, prediction_statistics(problem.predictions),
                           settings, checkpoint=out / "predictive.pkl",
                           settings_key={"problem_hash": problem_hash(problem)}, progress=progress, check=check)
    names = problem.parameters.names
    if searched.names == names:
        return ds
    ds = ds.reindex(parameter=names, parameter_2=names)          # held parameters: NaN posterior summaries
    held = [i for i, name in enumerate(names) if name not in searched.names]
    draws = ds["posterior_draw"].values.copy()
    draws[:, held] = problem.parameters.natural(first)[held]      # the draws' held values
    ds["posterior_draw"] = (ds["posterior_draw"].dims, draws, ds["posterior_draw"].attrs)
    return ds


def calibration_mapping(problem: FitProblem, result: xr.Dataset) -> dict[str, Any]:
    """The estimates as the keywords of `run_trial` / `immunoedit trial --calibration`: `priors`
    (population parameters: {name: {distribution: lognormal, median, sigma}}), `fixed` (model
    parameters shared by all patients), `survival` (death-model parameters), plus `noise` and
    provenance (problem, problem_hash, objective). Over a base calibration (`calibration:` of the
    problem), the base's values are included and the estimates replace theirs, so the file is a
    whole calibration on its own (`based_on` names the base)."""
    est = {str(k): float(v) for k, v in zip(result["parameter"].values, result["estimate"].values)}
    base = problem.calibration
    out: dict[str, Any] = {"problem": problem.name, "problem_hash": result.attrs["problem_hash"],
                           "objective": float(result["objective"]), "based_on": problem.calibration_path,
                           "priors": dict(base.get("priors", {})), "fixed": dict(base.get("fixed", {})),
                           "survival": dict(base.get("survival", {})), "noise": {}}
    for pop in problem.parameters.populations:
        out["priors"][pop.name] = {"distribution": "lognormal", "median": est[pop.median.name],
                                   "sigma": est[pop.sigma.name],
                                   **({"bounds": list(pop.bounds)} if pop.bounds else {})}
    group = {"model": "fixed", "survival": "survival", "noise": "noise"}
    for name, value in est.items():
        role = problem.roles.get(name, "model")
        if role in group:
            out[group[role]][name] = value
    return {k: v for k, v in out.items() if v not in ({}, None)}


def _write_outputs(problem, result, out: Path, figures, extra=()) -> None:
    save_result(result, out / "fit.nc", compress=True)
    yaml = YAML()
    yaml.default_flow_style = False
    with open(out / "calibration.yaml", "w", encoding="utf-8") as f:
        yaml.dump(calibration_mapping(problem, result), f)
    write_report(problem, result, out, figures, extra)
