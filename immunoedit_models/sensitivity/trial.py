"""Sensitivity of virtual-trial endpoints (a 12-month PFS rate, a median, an ORR, a hazard ratio).

    from immunoedit_models import sensitivity as sa
    sa.trial_sobol("impower150", ["pfs@12:ABCP", "hr_os:ABCP_vs_BCP"],
                   [("K_pd1", 0.05, 0.5), ("angio_dependence", 0.0, 0.3)], n=32, patients_per_arm=200)

Every run of the Sobol or Morris design is a whole in-silico trial (`trials.run_trial`), and
every run uses the same random numbers (common random numbers): the same cohort (redrawn from
the same seed when a population value varies, below), randomisation and outcome stream. The
endpoints then differ between runs through the parameters alone, and the indices apportion
that difference rather than the trial's sampling noise (`trials.analysis.trial_replicates`
measures that noise). A shared parameter's design value does not redraw the cohort: its
baseline readouts (biomarker classes) stay those drawn at the spec's values.

Endpoint forms (months; arm and comparison names from the trial design):

    "pfs@12:ABCP"          Kaplan-Meier PFS rate at 12 months in arm ABCP ("os@24:BCP", ...)
    "pfs_median:ABCP"      Kaplan-Meier median (months), "os_median:BCP"
    "orr:ABCP"             objective response rate (CR or PR)
    "hr_pfs:ABCP_vs_BCP"   Cox hazard ratio, experimental vs control ("hr_os:...")

Two kinds of design parameter:

- a model parameter every patient shares (a drug effect, a mechanism), e.g. ("K_pd1", 0.05, 0.5):
  its design value replaces the spec's for every patient. A parameter the cohort samples per
  patient is refused: one value for all would remove the population's spread;
- a value of a population prior, "NAME.KEY" with KEY one of the prior's numbers (median, sigma,
  mean, sd, low, high), e.g. ("r_tumour.median", 0.01, 0.03): each run draws its cohort anew
  with that prior, from the same seed. The draws are the same normal deviates mapped through
  the changed prior, so patients keep their ranks (common random numbers again), but the
  plausibility checks may admit a few different patients.

A trial whose patients fail to simulate, or that cannot be run, keeps its run in the design with
a non-zero `status` (FailedRunsError / on_failure, as for `sobol`).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import xarray as xr
from rich.progress import Progress

from ..compile import DEFAULT_METHOD, CompiledModel, compile_model
from ..errors import ImmunoeditError, SimulationError
from ..io.results import provenance
from ..spec.expressions import suggest
from .designs import (Design, ParameterRange, _scale, check_log_names, log_choice, model_range, morris_design,
                      range_items, sobol_design)
from .indices import STATUS_RAISED, OnFailure, check_on_failure, morris_indices, sobol_indices
from .outputs import Output

ENDPOINT_FORMS = "'pfs@12:ARM', 'os_median:ARM', 'orr:ARM', 'hr_pfs:EXPERIMENTAL_vs_CONTROL'"
_LANDMARK = re.compile(r"^(pfs|os)@([0-9]*\.?[0-9]+):(\w+)$")
_MEDIAN = re.compile(r"^(pfs|os)_median:(\w+)$")
_ORR = re.compile(r"^orr:(\w+)$")
_HR = re.compile(r"^hr_(pfs|os):(\w+)_vs_(\w+)$")


@dataclass(frozen=True)
class TrialEndpoint:
    """A scalar endpoint of a simulated trial. kind: 'landmark', 'median', 'orr' or 'hr'."""

    name: str
    kind: str
    endpoint: str = "pfs"
    arm: str = ""
    months: float = 0.0
    control: str = ""

    def value(self, trial: xr.Dataset) -> float:
        """This endpoint of a `run_trial` Dataset."""
        from ..fit.trial import (simulated_hazard_ratio, simulated_landmark, simulated_median,
                                 simulated_orr)

        if self.kind == "landmark":
            return simulated_landmark(trial, self.endpoint, self.arm, self.months)
        if self.kind == "median":
            return simulated_median(trial, self.endpoint, self.arm)
        if self.kind == "orr":
            return simulated_orr(trial, self.arm)
        return simulated_hazard_ratio(trial, self.endpoint, f"{self.arm}_vs_{self.control}")


def parse_endpoint(text: str, arms: Sequence[str]) -> TrialEndpoint:
    """A `TrialEndpoint` from its text form, its arms checked against the design's `arms`."""
    spaced = re.sub(r"\s+", "", str(text))
    if m := _LANDMARK.match(spaced):
        ep = TrialEndpoint(spaced, "landmark", m[1], m[3], float(m[2]))
    elif m := _MEDIAN.match(spaced):
        ep = TrialEndpoint(spaced, "median", m[1], m[2])
    elif m := _ORR.match(spaced):
        ep = TrialEndpoint(spaced, "orr", arm=m[1])
    elif m := _HR.match(spaced):
        ep = TrialEndpoint(spaced, "hr", m[1], m[2], control=m[3])
    else:
        raise SimulationError(f"cannot read trial endpoint '{text}': use {ENDPOINT_FORMS}")
    for arm in filter(None, (ep.arm, ep.control)):
        if arm not in arms:
            hint = suggest(arm, list(arms))
            raise SimulationError(f"trial endpoint '{text}': the trial has no arm '{arm}' "
                                  + (f"({hint})" if hint else f"(arms: {', '.join(arms)})"))
    if ep.kind == "hr" and ep.arm == ep.control:
        raise SimulationError(f"trial endpoint '{text}': a hazard ratio compares two different arms")
    return ep


def run_trial_design(trial_design: Any, design: Design, endpoints: Sequence[str | TrialEndpoint], *,
                     model: CompiledModel | None = None, patients_per_arm: int | None = None,
                     seed: int = 0, priors: Mapping[str, Mapping[str, Any]] | None = None,
                     fixed: Mapping[str, float] | None = None, survival: Mapping[str, float] | None = None,
                     progress: bool = False) -> xr.Dataset:
    """One simulated trial per run of `design`, on common random numbers (see the module docstring).

    trial_design: a TrialDesign or a built-in name / path; model: default the design's model
    (numba); priors, fixed, survival: as for `run_trial` (a calibration). Returns a Dataset over
    `sample` (one per run) with each endpoint, `status` (0; else the first failed patient's
    solver status, or STATUS_RAISED with the reason in `error`) and `failed_patients`.
    """
    from ..trials import run_trial
    from ..trials.cohort import sample_cohort
    from ..trials.run import check_trial_model, survival_settings

    trial_design, model = design_and_model(trial_design, model)
    check_trial_model(model, trial_design)      # the same for every run: raise, not a failed run
    arms = list(trial_design.arms)
    parsed = [e if isinstance(e, TrialEndpoint) else parse_endpoint(e, arms) for e in endpoints]
    n = trial_design.patients_per_arm if patients_per_arm is None else patients_per_arm
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SimulationError(f"patients_per_arm must be an integer >= 1, got {patients_per_arm!r}")
    survival_used = survival_settings(trial_design, survival)
    population = [name for name in design.names if "." in name]
    shared = [name for name in design.names if "." not in name]
    _check_design_parameters(model, shared, population, priors, fixed, trial_design.name)

    def cohort_of(row: Mapping[str, float]) -> Any:
        """The run's cohort: drawn once (shared parameters only) or per run (population values)."""
        row_priors = _priors_with(model, priors, {name: row[name] for name in population})
        return sample_cohort(model, n * len(arms), seed, priors=row_priors, fixed=fixed,
                             **dict(trial_design.cohort))

    base = None if population else cohort_of({})
    lean = _lean_design(trial_design, parsed)
    values = np.full((design.n_runs, len(parsed)), np.nan)
    status = np.zeros(design.n_runs, dtype=np.int64)
    failed = np.zeros(design.n_runs, dtype=np.int64)
    errors = np.full(design.n_runs, "", dtype=object)
    table = design.table
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{design.method} design: {design.n_runs} trials of {trial_design.name}",
                            total=design.n_runs)
        for run in range(design.n_runs):
            values_of_run = table.iloc[run].to_dict()
            try:
                cohort = base if base is not None else cohort_of(values_of_run)
                cohort = replace(cohort, params=cohort.params.assign(**{k: values_of_run[k] for k in shared}))
                trial = run_trial(lean, model=model, patients_per_arm=n, seed=seed, survival=survival,
                                  cohort=cohort)
                patient_status = trial["status"].values.ravel()
                failed[run] = int((patient_status != 0).sum())
                status[run] = patient_status[np.flatnonzero(patient_status)[0]] if failed[run] else 0
                values[run] = [ep.value(trial) for ep in parsed]
            except (ImmunoeditError, ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
                status[run], errors[run] = STATUS_RAISED, f"{type(exc).__name__}: {exc}"
            bar.advance(task)
    data = {ep.name: ("sample", values[:, j], {"description": _describe(ep)}) for j, ep in enumerate(parsed)}
    data["status"] = ("sample", status, {"description": f"0: every patient simulated; else the first failed "
                                                        f"patient's solver status; {STATUS_RAISED}: the "
                                                        "trial raised (see error)"})
    data["failed_patients"] = ("sample", failed)
    data["error"] = ("sample", errors.astype(str))
    attrs = {**provenance(model, backend=model.backend, seed=seed), "trial": trial_design.name,
             "trial_design_hash": trial_design.design_hash, "trial_design_path": trial_design.path,
             "patients_per_arm": n, "cohort_seed": seed,
             "cohort_source": _cohort_source(priors, fixed, population),
             "random_numbers": ("common: one cohort, randomisation and outcome stream for every run" if base is not None
                                else "common: each run's cohort drawn from the same seed (same normal deviates), "
                                     "randomisation and outcome stream"),
             "rtol": trial_design.solver.rtol, "atol": trial_design.solver.atol,
             "max_steps": trial_design.solver.max_steps, "output_every_days": trial_design.solver.output_every_days,
             "solver": DEFAULT_METHOD[model.backend], "visits": trial_design.visits.describe(),
             "survival": json.dumps(asdict(survival_used), sort_keys=True, default=float)}
    if survival:
        attrs["survival_overrides"] = json.dumps(dict(survival), sort_keys=True, default=float)
    return xr.Dataset(data, coords={"sample": np.arange(design.n_runs)}, attrs=attrs)


def trial_sobol(trial_design: Any, endpoints: Sequence[str | TrialEndpoint] | str,
                params: Iterable[Any] | Mapping[str, Any], n: int = 64, *, log: Any = "auto",
                second_order: bool = False, seed: int = 0, num_resamples: int = 100, conf_level: float = 0.95,
                on_failure: OnFailure = "raise", progress: bool = False, **trial: Any) -> xr.Dataset:
    """Sobol indices (S1, ST with bootstrap CIs) of trial endpoints over a Saltelli design of n base
    samples (n (k + 2) trials). params, log: as for `sobol` (`parameter_ranges`); trial: keywords
    of `run_trial_design` (model, patients_per_arm, priors, fixed, survival); seed: the design's,
    the bootstrap's and the cohort's. Returns the `sobol` Dataset, with `Y` per run and endpoint."""
    return _analyse("sobol", trial_design, endpoints, params, n, log, seed, num_resamples, conf_level,
                    on_failure, progress, trial, second_order=second_order)


def trial_morris(trial_design: Any, endpoints: Sequence[str | TrialEndpoint] | str,
                 params: Iterable[Any] | Mapping[str, Any], n: int = 10, *, log: Any = "auto",
                 num_levels: int = 4, seed: int = 0, num_resamples: int = 100, conf_level: float = 0.95,
                 on_failure: OnFailure = "raise", progress: bool = False, **trial: Any) -> xr.Dataset:
    """Morris elementary effects (mu, mu*, sigma) of trial endpoints from n trajectories
    (n (k + 1) trials); arguments as for `trial_sobol`."""
    return _analyse("morris", trial_design, endpoints, params, n, log, seed, num_resamples, conf_level,
                    on_failure, progress, trial, num_levels=num_levels)


def _analyse(method: str, trial_design: Any, endpoints: Any, params: Any, n: int, log: Any, seed: int,
             num_resamples: int, conf_level: float, on_failure: OnFailure, progress: bool,
             trial: dict[str, Any], **design_options: Any) -> xr.Dataset:
    check_on_failure(on_failure)
    trial_design, model = design_and_model(trial_design, trial.pop("model", None))
    parsed = [parse_endpoint(e, list(trial_design.arms))
              for e in ([endpoints] if isinstance(endpoints, str) else endpoints)]
    if not parsed:
        raise SimulationError(f"{method} of a trial needs at least one endpoint ({ENDPOINT_FORMS})")
    ranges = trial_ranges(model, params, log, trial.get("priors"))
    design = (sobol_design(ranges, n, seed, **design_options) if method == "sobol"
              else morris_design(ranges, n, seed, **design_options))
    batch = run_trial_design(trial_design, design, parsed, model=model, seed=seed, progress=progress, **trial)
    outputs = [Output(ep.name, _column(ep.name)) for ep in parsed]
    analyse = sobol_indices if method == "sobol" else morris_indices
    return analyse(design, batch, outputs, num_resamples=num_resamples, conf_level=conf_level,
                   on_failure=on_failure, progress=progress)


def design_and_model(trial_design: Any, model: CompiledModel | None = None,
                     backend: str = "numba") -> tuple[Any, CompiledModel]:
    """The TrialDesign (loaded from a name or path) and its model (compiled for `backend` unless
    given)."""
    from ..trials import load_trial
    from ..trials.run import model_source

    trial_design = trial_design if hasattr(trial_design, "arms") else load_trial(trial_design)
    return trial_design, model if model is not None else compile_model(model_source(trial_design), backend)


def _column(name: str):
    return lambda batch: batch[name].values


def trial_ranges(model: CompiledModel, params: Iterable[Any] | Mapping[str, Any], log: Any = "auto",
                 priors: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[ParameterRange, ...]:
    """Ranges of shared model parameters (as `parameter_ranges`, spec ranges allowed) and of
    population prior values 'NAME.KEY' (explicit ranges only), in the order given."""
    choice = log_choice(log)
    ranges = []
    for item in range_items(params):
        name = item.name if isinstance(item, ParameterRange) else item if isinstance(item, str) else item[0]
        if "." not in name:
            ranges.append(model_range(model, item, choice))
            continue
        if isinstance(item, str):
            raise SimulationError(f"population value '{name}' needs an explicit range: ({name!r}, LOW, HIGH) "
                                  f"(CLI: --param {name}:LOW:HIGH)")
        _population_prior(model, name, priors)
        if isinstance(item, ParameterRange):
            ranges.append(_checked_population_range(item))
            continue
        _, low, high = item
        ranges.append(_checked_population_range(
            ParameterRange(name, low, high, _scale(name, low, high, False, choice), "explicit (prior value)")))
    return check_log_names(choice, ranges)


def _checked_population_range(r: ParameterRange) -> ParameterRange:
    """`designs._checked_range`'s checks of the range itself (the name is a prior value)."""
    if not (np.isfinite(r.low) and np.isfinite(r.high) and r.low < r.high):
        raise SimulationError(f"population value '{r.name}': the range needs finite low < high, got "
                              f"[{r.low:g}, {r.high:g}]")
    if r.scale == "log" and r.low <= 0:
        raise SimulationError(f"population value '{r.name}': a log-scale range needs low > 0, got "
                              f"[{r.low:g}, {r.high:g}]; sample it linearly (log=False)")
    return r


def _population_prior(model: CompiledModel, name: str, priors: Mapping[str, Mapping[str, Any]] | None,
                      check_key: bool = True) -> dict[str, Any]:
    """The prior (calibration's, else the spec's) that population value 'NAME.KEY' changes."""
    param, _, key = name.partition(".")
    if param not in model.parameters:
        hint = suggest(param, model.parameters)
        raise SimulationError(f"population value '{name}': '{param}' is not a parameter of model "
                              f"'{model.name}'" + (f" ({hint})" if hint else ""))
    prior = (priors or {}).get(param) or model.spec.parameters[param].prior
    if prior is None:
        raise SimulationError(f"population value '{name}': '{param}' has no prior, so no patient draws it; "
                              "vary it as a shared parameter (without '.KEY')")
    numeric = [k for k, v in prior.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if check_key and key not in numeric:
        raise SimulationError(f"population value '{name}': the {prior.get('distribution', '')} prior of "
                              f"'{param}' has no number '{key}' (it has {', '.join(numeric)})")
    return dict(prior)


def _priors_with(model: CompiledModel, priors: Mapping[str, Mapping[str, Any]] | None,
                 values: Mapping[str, float]) -> dict[str, dict[str, Any]] | None:
    """`priors` with population values 'NAME.KEY' set (None when there are neither)."""
    out = {name: dict(prior) for name, prior in (priors or {}).items()}
    for name, value in values.items():
        param, _, key = name.partition(".")
        out[param] = {**_population_prior(model, name, out), key: float(value)}
    return out or None


def _check_design_parameters(model: CompiledModel, shared: Sequence[str], population: Sequence[str],
                             priors: Any, fixed: Mapping[str, float] | None, trial: str) -> None:
    """Refuse shared parameters that the cohort samples per patient, and population values of
    parameters that the calibration fixes."""
    from ..trials.cohort import JointPrior

    sampled = set(JointPrior.from_model(model, priors, None, fixed).names)
    pinned = sorted({name.partition(".")[0] for name in population} & set(fixed or {}))
    if pinned:
        raise SimulationError(f"{', '.join(pinned)} {'is' if len(pinned) == 1 else 'are'} fixed for every patient "
                              f"of trial '{trial}' (fixed=...), so {'its' if len(pinned) == 1 else 'their'} "
                              "prior is not drawn: vary the shared value instead (without '.KEY')")
    varying = [name for name in shared if name in sampled]
    if varying:
        first = varying[0]
        keys = [k for k, v in _population_prior(model, f"{first}.", priors, check_key=False).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)]
        raise SimulationError(
            f"{', '.join(varying)} {'varies' if len(varying) == 1 else 'vary'} between the patients of trial "
            f"'{trial}' (a prior samples {'it' if len(varying) == 1 else 'them'}): one design value for every "
            f"patient would remove the population's spread. Vary a value of the prior instead "
            f"('{first}.{keys[0]}'), or a parameter every patient shares")


def _cohort_source(priors: Mapping[str, Any] | None, fixed: Mapping[str, float] | None,
                   population: Sequence[str]) -> str:
    """Where the patients' parameters came from, as `run_trial` records it, and the population
    values each run's design replaces."""
    from ..trials.run import cohort_source

    source = cohort_source(False, priors, fixed)
    return source + (f"; each run's design values of {', '.join(population)}" if population else "")


def _lean_design(design: Any, endpoints: Sequence[TrialEndpoint]) -> Any:
    """The design analysed only as far as the endpoints need: their comparisons, no subgroups."""
    needed = {(ep.arm, ep.control) for ep in endpoints if ep.kind == "hr"}
    return replace(design, comparisons=tuple(c for c in design.comparisons if tuple(c) in needed),
                   subgroups=())


def _describe(ep: TrialEndpoint) -> str:
    what = {"landmark": f"Kaplan-Meier {ep.endpoint.upper()} rate at {ep.months:g} months in {ep.arm}",
            "median": f"Kaplan-Meier median {ep.endpoint.upper()} (months) in {ep.arm}",
            "orr": f"objective response rate in {ep.arm}",
            "hr": f"Cox hazard ratio of {ep.endpoint.upper()}, {ep.arm} vs {ep.control}"}
    return what[ep.kind]
