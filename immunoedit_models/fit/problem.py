"""Fitting problems as data: `fitting/<problem>/problem.yaml` -> `FitProblem`.

Two kinds share one file format (see fitting/README.md for the full schema):

- `kind: timecourse`: a model, simulation conditions (regimen, parameter and initial-state
  overrides), observables (model output, transformation lin/log/log10, noise model
  normal/lognormal/laplace with a fixed or fitted sigma), a PEtab-style measurement table
  (observableId, simulationConditionId, time, measurement [, noise]), and the free parameters.
- `kind: trial`: a model and a trial design (`trial:`), the cohort size and seed, free
  parameters (model parameters shared by all patients, `survival` parameters of the death model,
  and `populations:` whose median and sigma are fitted), and targets with likelihood terms:
  `ipd` (reconstructed individual patient data), `median`, `hazard_ratio`, `landmark`, `response`,
  `prevalence` (the fraction of patients positive for a biomarker rule of the trial design).
  Targets may pull their value, CI and source from a `published.csv` row
  (`published: {analysis, population, endpoint, arm, statistic}`). `fit.hold` lists free
  parameters held at their `start` while CMA-ES fits the others (a staged calibration: e.g. a
  new death model fitted on top of an earlier calibration of the tumour and immune populations).
  `calibration:` names such an earlier calibration (a folder with a calibration.yaml, relative to
  the problem's folder): its priors, fixed values and survival parameters are the base of every
  simulated trial, and the problem's free parameters replace theirs. `cohort:` gives the fit's
  arm size, its seed and, optionally, a data cut-off (`data_cut_months`) replacing the design's,
  for targets read after a longer follow-up than the design's.

Every problem found in a file is collected and raised once as a FitError with file:line.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Collection, Mapping

import numpy as np
import pandas as pd

from ..compile import BACKENDS, METHODS
from ..errors import FitError, Issue, SpecError
from ..spec.expressions import suggest
from ..spec.loader import SpecReader, load_spec, read_yaml
from ..spec.schema import Location, ModelSpec
from ..trials.design import TrialDesign, biomarker_names, load_trial
from ..trials.endpoints import SurvivalParameters
from .likelihoods import NOISE_MODELS, TRANSFORMATIONS
from .parameters import PRIOR_ARGS, SCALES, FreeParameter, ParameterSet, PopulationParameter
from .predictive import prediction_statistics

KINDS = ("timecourse", "trial")
PROBLEM_KEYS = ("name", "kind", "description", "model", "backend", "solver", "t0", "conditions",
                "observables", "measurements", "parameters", "populations", "fit", "sources",
                "trial", "cohort", "targets", "predictions", "calibration")
PARAM_KEYS = ("bounds", "scale", "start", "prior", "source", "role")
POP_KEYS = ("distribution", "median", "sigma", "bounds", "source")
CONDITION_KEYS = ("regimen", "parameters", "initial", "description")
OBSERVABLE_KEYS = ("output", "transformation", "noise", "sigma", "description")
SOLVER_KEYS = ("rtol", "atol", "method", "max_steps")
FIT_KEYS = ("method", "n_starts", "seed", "max_iter", "profiles", "profile_points", "posterior",
            "popsize", "sigma0", "use_priors", "predictive", "hold")
POSTERIOR_KEYS = ("num_warmup", "num_samples", "num_chains", "target_accept")   # fit.bayes.nuts_posterior
COHORT_KEYS = ("patients_per_arm", "seed", "data_cut_months")
CALIBRATION_KEYS = ("priors", "fixed", "survival")     # the run_trial keywords a calibration.yaml gives
PREDICTIVE_KEYS = ("draws", "replicates", "patients_per_arm", "seed", "window")
TARGET_KEYS = ("id", "kind", "endpoint", "arm", "comparison", "data", "published", "value", "ci",
               "n", "months", "hazard_bins_months", "smoothing_months", "weight", "source", "note", "biomarker")
TARGET_KINDS = ("ipd", "median", "hazard_ratio", "landmark", "response", "prevalence")
MEASUREMENT_COLUMNS = ("observableId", "simulationConditionId", "time", "measurement")
ROLES = ("model", "survival", "noise")
SURVIVAL_PARAMETERS = tuple(f.name for f in fields(SurvivalParameters))


@dataclass(frozen=True)
class Condition:
    """A simulation condition: regimen (None: the spec's default), parameter/initial overrides."""

    name: str
    regimen: str | None = None
    parameters: Mapping[str, float] = field(default_factory=dict)
    initial: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Observable:
    """h = transformation(output); measurement ~ noise(h, sigma). sigma: number or free parameter."""

    name: str
    output: str
    transformation: str = "lin"
    noise: str = "normal"
    sigma: float | str = 1.0


@dataclass(frozen=True)
class Target:
    """One likelihood term of a trial problem (see module doc); months throughout."""

    id: str
    kind: str
    endpoint: str = "pfs"
    arm: str | None = None
    comparison: str | None = None
    value: float | None = None
    ci: tuple[float, float] | None = None
    n: int | None = None
    months: float | None = None
    biomarker: str | None = None      # prevalence: a biomarker rule of the trial design (e.g. pdl1_high)
    data: pd.DataFrame | None = None  # ipd: columns time_months, event
    hazard_bins_months: tuple[float, ...] = ()
    smoothing_months: float = 0.5
    weight: float = 1.0
    source: str = ""


@dataclass(frozen=True)
class Solver:
    rtol: float = 1e-6
    atol: float = 1e-9
    method: str | None = None
    max_steps: int = 100_000


@dataclass(frozen=True)
class FitSettings:
    """How to fit: method (multistart | cmaes | nuts), budget, seed, profiles."""

    method: str = "multistart"
    n_starts: int = 8
    seed: int = 0
    max_iter: int = 200
    profiles: tuple[str, ...] = ()
    profile_points: int = 12
    posterior: Mapping[str, Any] = field(default_factory=dict)
    popsize: int | None = None
    sigma0: float = 0.25
    use_priors: bool = False
    predictive: Mapping[str, Any] = field(default_factory=dict)  # trial problems: predictive.PredictiveSettings
    hold: tuple[str, ...] = ()      # trial problems: free parameters held at their `start` (staged calibration)


@dataclass(frozen=True, eq=False)
class FitProblem:
    """A validated fitting problem (paths resolved relative to its folder)."""

    name: str
    kind: str
    folder: Path
    model: str
    parameters: ParameterSet
    fit: FitSettings
    roles: Mapping[str, str] = field(default_factory=dict)  # free parameter -> model|survival|noise
    description: str = ""
    backend: str = "jax"
    solver: Solver = Solver()
    t0: float = 0.0
    conditions: Mapping[str, Condition] = field(default_factory=dict)
    observables: Mapping[str, Observable] = field(default_factory=dict)
    measurements: pd.DataFrame | None = None
    trial: str | None = None
    cohort: Mapping[str, Any] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()
    predictions: tuple[Mapping[str, Any], ...] = ()
    calibration: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # base: priors, fixed, survival
    calibration_path: str | None = None     # as written in the problem, relative to its folder
    sources: tuple[str, ...] = ()
    source_text: str = ""

    def model_path(self) -> str:
        """The model as load_spec accepts it: a path relative to the folder if one exists there."""
        return _local(self.folder, self.model)

    def trial_path(self) -> str:
        """The trial design as load_trial accepts it: a path relative to the folder if one exists there."""
        return _local(self.folder, self.trial or "")


def _local(folder: Path, name: str) -> str:
    local = folder / name
    return str(local) if name and local.is_file() else name


def _raise(issues: list[Issue]) -> None:
    n = len(issues)
    error = FitError("\n".join([f"{n} problem{'s' if n != 1 else ''} in fitting problem:",
                                *(f"  {issue}" for issue in issues)]))
    error.issues = issues
    raise error


def _real(value: Any) -> bool:
    """A finite int or float written as a number (not a boolean)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pair(value: Any) -> tuple[float, float] | None:
    """[low, high] of two finite numbers with low < high; None otherwise."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_real, value)) and value[0] < value[1]:
        return float(value[0]), float(value[1])
    return None


def _parser_line(message: str) -> int | None:
    """The file line a pandas parser message names: 'in line 4' (1-based) or 'at row 2' (0-based)."""
    found = re.search(r"\b(line|row) (\d+)", message)
    return None if found is None else int(found[2]) + (found[1] == "row")


def _cell_number(raw: Any) -> float | None:
    """A CSV cell as a number: None when empty, NaN when it is text or not finite."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    try:
        number = float(raw)
    except ValueError:
        return math.nan
    return number if math.isfinite(number) else math.nan


NOT_REACHED = "a statistic not reached (NR, NE) cannot be a target: drop the target, or write the number"
CellProblem = tuple[str, str] | None    # (message, hint) of an Issue


def _published_value(row: pd.Series) -> tuple[float | None, CellProblem]:
    """The `value` of a published row, or what is wrong with it."""
    value = _cell_number(row.get("value"))
    if value is None:
        return None, ("the 'value' cell is empty", "give the published number, or 'value:' in the target")
    if math.isnan(value):
        return None, (f"'value' must be a number, got {row['value']!r}", NOT_REACHED)
    return value, None


def _published_ci(row: pd.Series) -> tuple[tuple[float, float] | None, CellProblem]:
    """(ci_low, ci_high) of a published row (None when a cell is empty), or what is wrong with it."""
    cells = {c: _cell_number(row.get(c)) for c in ("ci_low", "ci_high")}
    for column, number in cells.items():
        if number is not None and math.isnan(number):
            return None, (f"'{column}' must be a number, got {row[column]!r}", NOT_REACHED)
    low, high = cells.values()
    if low is None or high is None:
        return None, None
    if not low < high:
        return None, (f"ci must be [low, high] with low < high, got [{low:g}, {high:g}]", "swap ci_low and ci_high")
    return (low, high), None


def _edges(value: Any) -> tuple[float, ...] | None:
    """Histogram edges: at least two increasing numbers >= 0; None otherwise."""
    if not (isinstance(value, list) and len(value) >= 2 and all(map(_real, value)) and value[0] >= 0):
        return None
    return tuple(map(float, value)) if all(a < b for a, b in zip(value, value[1:])) else None


def _long_row(text: str, sep: str) -> int | None:
    """The line of the first row with more fields than the header (pandas reads such rows'
    first fields as an index instead of failing)."""
    rows = csv.reader(io.StringIO(text), delimiter=sep)
    width = len(next(rows, []))
    return next((rows.line_num for row in rows if len(row) > width), None)


def _table_kind(path: Path) -> str:
    return "TSV" if path.suffix in (".tsv", ".tab") else "CSV"


def check_free_parameters(problem: FitProblem, model_name: str, model_parameters: Collection[str]) -> None:
    """FitError unless every free model parameter, and the parameter behind every free population
    (`r_tumour` of `r_tumour.median`), is a parameter of the model."""
    unknown = [name for name in problem.parameters.names
               if (role := problem.roles.get(name, "model")) in ("model", "population")
               and (name.rsplit(".", 1)[0] if role == "population" else name) not in model_parameters]
    if unknown:
        raise FitError(f"problem '{problem.name}': free parameters {unknown} are not parameters of model "
                       f"'{model_name}' (noise parameters need 'role: noise')")


def problem_file(path: str | Path) -> Path:
    """problem.yaml of a folder, or the file itself."""
    path = Path(path)
    return path / "problem.yaml" if path.is_dir() else path


def load_problem(path: str | Path) -> FitProblem:
    """Load and validate `fitting/<problem>/problem.yaml` (or the folder); FitError lists every issue."""
    file = problem_file(path)
    issues: list[Issue] = []
    if not file.is_file():
        _raise([Issue(str(file), None, "problem", "no such file",
                      "give a folder with a problem.yaml, e.g. fitting/reference_timecourse")])
    doc = read_yaml(file, issues)
    if issues:
        _raise(issues)
    if not isinstance(doc, Mapping):
        _raise([Issue(str(file), None, "problem", "must be a YAML mapping")])
    problem = _Reader(SpecReader(file, issues), file.parent).read(doc)
    if issues:
        _raise(sorted(issues, key=lambda i: (i.file, i.line or 0)))
    return problem


class _Reader:
    """Builds a FitProblem from the YAML tree, collecting issues with locations."""

    def __init__(self, reader: SpecReader, folder: Path):
        self.r = reader
        self.folder = folder
        self.published_tables: dict[Path, pd.DataFrame | None] = {}

    # ---- top level -------------------------------------------------------------------------
    def read(self, doc: Mapping) -> FitProblem:
        r = self.r
        r.check_keys(doc, PROBLEM_KEYS, "problem")
        loc = r.loc(doc)
        kind = str(doc.get("kind", "timecourse"))
        if kind not in KINDS:
            r.issue(r.loc(doc, "kind"), "problem", f"kind must be one of {', '.join(KINDS)}, got '{kind}'")
        if not doc.get("model"):
            r.issue(loc, "problem", "missing 'model'", "a built-in spec name or a path relative to the folder")
        free, roles = self.free_parameters(doc)
        backend = self.backend(doc, kind)
        populations = self.populations(doc) if kind == "trial" else ()
        free = free + [p for pop in populations for p in (pop.median, pop.sigma)]
        roles.update({p.name: "population" for pop in populations for p in (pop.median, pop.sigma)})
        common = dict(name=str(doc.get("name", self.folder.name)), kind=kind, folder=self.folder,
                      model=str(doc.get("model", "")), parameters=ParameterSet(tuple(free), tuple(populations)),
                      fit=self.fit_settings(doc, free), roles=roles,
                      description=str(doc.get("description", "")).strip(),
                      backend=backend, solver=self.solver(doc, backend), sources=self.sources(doc),
                      source_text=Path(r.file).read_text(encoding="utf-8"))
        if kind == "trial":
            if not doc.get("trial"):
                r.issue(loc, "problem", "a trial problem needs 'trial:' (the trial design name)")
            base, base_path = self.calibration(doc)
            design = self.loaded(doc, "trial", load_trial)
            return FitProblem(**common, trial=str(doc.get("trial", "")), cohort=self.cohort(doc),
                              targets=self.targets(doc, design), predictions=self.predictions(doc, design),
                              calibration=base, calibration_path=base_path)
        if "calibration" in doc:
            r.issue(r.loc(doc, "calibration"), "calibration", "only a trial problem builds on a calibration",
                    "remove 'calibration:' or make the problem 'kind: trial'")
        observables = self.observables(doc, roles)
        conditions = self.conditions(doc)
        spec = self.loaded(doc, "model", load_spec)
        if spec is not None:
            self.check_against_model(doc, spec, observables, conditions)
        t0 = float(r.number(doc, "t0", loc, "problem", 0.0))
        return FitProblem(**common, t0=t0, conditions=conditions, observables=observables,
                          measurements=self.measurements(doc, observables, conditions, t0))

    def sources(self, doc) -> tuple[str, ...]:
        """`sources:`, a list of references."""
        value = doc.get("sources") or []
        if not isinstance(value, list):
            self.r.issue(self.r.loc(doc, "sources"), "sources", f"must be a list of references, got "
                         f"{self.r.plain(value)!r}", "write one '- author, journal year' item per reference")
            return ()
        return tuple(str(s) for s in value)

    def predictions(self, doc, design: TrialDesign | None) -> tuple[Mapping[str, Any], ...]:
        """`predictions:`, the statistics a calibrated trial problem predicts (of the design's arms,
        comparisons and subgroups)."""
        r = self.r
        value = doc.get("predictions") or []
        hint = ("entries: {endpoint, arms: [...], statistics: [median, landmark_<months>]} or "
                "{endpoint, comparisons: [...], statistics: [hazard_ratio], subgroups: [...]}")
        if not isinstance(value, list):
            r.issue(r.loc(doc, "predictions"), "predictions", f"must be a list of entries, got {r.plain(value)!r}", hint)
            return ()
        predictions = tuple(r.plain(value))
        try:
            statistics = prediction_statistics(predictions)
        except (FitError, TypeError, ValueError, AttributeError) as exc:
            r.issue(r.loc(doc, "predictions"), "predictions", str(exc), hint)
            return predictions
        if design is not None:
            self.check_predicted_names(statistics, design, r.loc(doc, "predictions"))
        return predictions

    def check_predicted_names(self, statistics, design: TrialDesign, loc: Location) -> None:
        """Each predicted statistic's arms and subgroup are the design's ('all', a subgroup rule or
        its complement 'not_<rule>')."""
        arms = list(design.arms)
        subgroups = ["all", *design.subgroups, *(f"not_{g}" for g in design.subgroups)]
        for s in statistics:
            named = s.comparison.split("_vs_") if s.comparison else [s.arm] if s.arm else []
            for arm in (a for a in named if a not in arms):
                self.r.issue(loc, "predictions", f"'{s.name}': trial design '{design.name}' has no arm '{arm}'",
                             suggest(arm, arms) or f"its arms: {', '.join(arms)}")
            if s.subgroup not in subgroups:
                self.r.issue(loc, "predictions", f"'{s.name}': trial design '{design.name}' has no subgroup "
                             f"'{s.subgroup}'", suggest(s.subgroup, subgroups) or f"its subgroups: {', '.join(subgroups)}")

    def loaded(self, doc, key: str, load: Callable[[str], Any]) -> Any:
        """The model spec or trial design that `key` names (`load` reads it); its own problems join
        the problem's. None when the key is absent or it does not load."""
        if not doc.get(key):
            return None
        try:
            return load(_local(self.folder, str(doc[key])))
        except SpecError as exc:
            self.r.issues.extend(exc.issues)
            return None

    def check_against_model(self, doc, spec: ModelSpec, observables: Mapping[str, Observable],
                            conditions: Mapping[str, Condition]) -> None:
        """Every observable's output, and every condition's parameters, initial states and
        regimen, must be the model's (else `immunoedit fit` would fail after compiling)."""
        r = self.r
        outputs = [*spec.states, *spec.expressions, *spec.observables]
        section = doc.get("observables") or {}
        for name, o in observables.items():
            if o.output not in outputs:
                body = section.get(name) if isinstance(section.get(name), Mapping) else {}
                r.issue(r.at(body, "output", r.loc(section, name)), f"observable '{name}'",
                        f"output '{o.output}' is not a state, expression or observable of model '{spec.name}'",
                        suggest(o.output, outputs))
        section = doc.get("conditions") or {}
        regimens = [*spec.regimens, "none", "untreated"]
        for name, c in conditions.items():
            body = section.get(name) if isinstance(section.get(name), Mapping) else {}
            item, loc = f"condition '{name}'", r.loc(section, name) if name in section else r.loc(doc)
            for key, given, known, what in (("parameters", c.parameters, spec.parameters, "a parameter"),
                                            ("initial", c.initial, spec.states, "a state")):
                values = body.get(key) if isinstance(body.get(key), Mapping) else {}
                for k in given:
                    if k not in known:
                        r.issue(r.at(values, k, loc), item, f"'{k}' is not {what} of model '{spec.name}'",
                                suggest(k, known))
            if c.regimen is not None and c.regimen not in regimens:
                r.issue(r.at(body, "regimen", loc), item, f"model '{spec.name}' has no regimen '{c.regimen}'",
                        suggest(c.regimen, regimens) or f"regimens: {', '.join(regimens)}")

    def cohort(self, doc) -> dict[str, Any]:
        """The fit's trial settings: patients_per_arm, seed, data_cut_months (all optional)."""
        body = doc.get("cohort") or {}
        if not isinstance(body, Mapping):
            self.r.issue(self.r.loc(doc, "cohort"), "cohort", "must be a mapping of " + ", ".join(COHORT_KEYS))
            return {}
        self.r.check_keys(body, COHORT_KEYS, "cohort")
        loc = self.r.loc(doc, "cohort")
        out = self.r.plain(body)
        for key, minimum in (("patients_per_arm", 1), ("seed", 0)):
            if key in body:
                out[key] = self.r.count(body, key, loc, "cohort", None, minimum)
        if "data_cut_months" in body:
            cut = self.r.number(body, "data_cut_months", loc, "cohort")
            if cut <= 0:
                self.r.issue(self.r.loc(body, "data_cut_months"), "cohort", f"data_cut_months must be > 0, got {cut}")
            out["data_cut_months"] = cut
        return out

    def calibration(self, doc) -> tuple[dict[str, dict], str | None]:
        """The base calibration's run_trial keywords (priors, fixed, survival) and its file."""
        if doc.get("calibration") is None:
            return {}, None
        loc = self.r.loc(doc, "calibration")
        path = self.folder / str(doc["calibration"])
        path = path / "calibration.yaml" if path.is_dir() else path
        if not path.is_file():
            self.r.issue(loc, "calibration", f"no calibration at {path}",
                         "give a folder holding a calibration.yaml, as `immunoedit fit PROBLEM --out FOLDER` writes")
            return {}, None
        issues: list[Issue] = []
        data = read_yaml(path, issues)
        if issues or not isinstance(data, Mapping):
            self.r.issue(loc, "calibration", f"{path} is not a calibration.yaml (a mapping of "
                         f"{', '.join(CALIBRATION_KEYS)})")
            return {}, None
        return {k: dict(self.r.plain(data[k])) for k in CALIBRATION_KEYS if data.get(k)}, str(doc["calibration"])

    def backend(self, doc, kind: str) -> str:
        """The backend fits simulate with (jax for time courses, numba for trials, by default)."""
        backend = str(doc.get("backend", "jax" if kind == "timecourse" else "numba"))
        if backend not in BACKENDS:
            self.r.issue(self.r.at(doc, "backend", self.r.loc(doc)), "problem", f"unknown backend '{backend}'",
                         suggest(backend, BACKENDS) or f"backends: {', '.join(BACKENDS)}")
        return backend

    def solver(self, doc, backend: str) -> Solver:
        """The solver settings: 0 < rtol < 1, atol > 0, a method of the backend (None: its default)."""
        r = self.r
        body = doc.get("solver") or {}
        if not isinstance(body, Mapping):
            r.issue(r.loc(doc, "solver"), "solver", "must be a mapping of " + ", ".join(SOLVER_KEYS))
            return Solver()
        r.check_keys(body, SOLVER_KEYS, "solver")
        loc = r.loc(doc, "solver")
        rtol, atol = r.number(body, "rtol", loc, "solver", 1e-6), r.number(body, "atol", loc, "solver", 1e-9)
        if not (0 < rtol < 1 and atol > 0):     # NaN (reported by number()) fails too
            r.issue(loc, "solver", f"tolerances must satisfy 0 < rtol < 1 and atol > 0, got rtol={rtol:g}, "
                    f"atol={atol:g}", "e.g. solver: {rtol: 1.0e-6, atol: 1.0e-9}")
        method = body.get("method")
        methods = METHODS.get(backend, ())
        if method is not None and methods and method not in methods:
            r.issue(r.at(body, "method", loc), "solver", f"backend '{backend}' has no method '{method}'",
                    f"methods: {', '.join(methods)}")
        return Solver(rtol, atol, method, r.count(body, "max_steps", loc, "solver", 100_000))

    # ---- parameters --------------------------------------------------------------------------
    def free_parameter(self, name: str, body: Mapping, loc: Location, item: str) -> FreeParameter | None:
        r = self.r
        bounds = body.get("bounds")
        if not (isinstance(bounds, list) and len(bounds) == 2):
            r.issue(loc, item, "needs 'bounds: [low, high]'")
            return None
        if not all(map(_real, bounds)):
            r.issue(r.at(body, "bounds", loc), item, f"'bounds' must be two finite numbers [low, high], got "
                    f"{r.plain(bounds)!r}")
            return None
        start = None if body.get("start") is None else r.number(body, "start", loc, item)
        if start is not None and math.isnan(start):
            return None
        prior = r.plain(body.get("prior")) if body.get("prior") is not None else None
        if prior is not None:
            dist = prior.get("distribution") if isinstance(prior, Mapping) else None
            if dist not in PRIOR_ARGS:
                r.issue(r.loc(body, "prior"), item, f"prior distribution must be one of {', '.join(PRIOR_ARGS)}, "
                        f"got {dist!r}")
                prior = None
        scale = str(body.get("scale", "log"))
        if scale not in SCALES:
            r.issue(r.loc(body, "scale"), item, f"scale must be one of {', '.join(SCALES)}, got '{scale}'")
            return None
        try:
            return FreeParameter(name, (float(bounds[0]), float(bounds[1])), scale, start, prior,
                                 str(body.get("source", "")))
        except FitError as exc:
            r.issue(loc, item, str(exc))
            return None

    def free_parameters(self, doc) -> tuple[list[FreeParameter], dict[str, str]]:
        out, roles = [], {}
        section = self.r.section(doc, "parameters")
        for name in section:
            got = self.r.entry(section, name, "parameter", PARAM_KEYS)
            if not got:
                continue
            body, loc, item = got
            role = str(body.get("role", "survival" if str(name) in SURVIVAL_PARAMETERS else "model"))
            if role not in ROLES:
                self.r.issue(loc, item, f"role must be one of {', '.join(ROLES)}, got '{role}'")
            p = self.free_parameter(str(name), body, loc, item)
            if p is not None:
                out.append(p)
                roles[p.name] = role
        return out, roles

    def populations(self, doc) -> tuple[PopulationParameter, ...]:
        out = []
        section = self.r.section(doc, "populations")
        for name in section:
            got = self.r.entry(section, name, "population", POP_KEYS)
            if not got:
                continue
            body, loc, item = got
            if str(body.get("distribution", "lognormal")) != "lognormal":
                self.r.issue(loc, item, "only 'distribution: lognormal' populations are supported "
                             "(value = median * exp(sigma * z))")
            parts = []
            for part in ("median", "sigma"):
                sub = body.get(part)
                if not isinstance(sub, Mapping):
                    self.r.issue(loc, item, f"needs '{part}: {{bounds: [low, high], scale: log}}'")
                    continue
                self.r.check_keys(sub, PARAM_KEYS, f"{item} {part}")
                parts.append(self.free_parameter(f"{name}.{part}", sub, self.r.loc(body, part), f"{item} {part}"))
            if len(parts) == 2 and all(parts):
                out.append(PopulationParameter(str(name), parts[0], parts[1], self.truncation(body, loc, item)))
        return tuple(out)

    def truncation(self, body, loc, item) -> tuple[float, float] | None:
        """A population's `bounds`: 0 < low < high, to which each patient's value is clipped."""
        value = body.get("bounds")
        if value is None:
            return None
        bounds = _pair(value)
        if bounds is None or bounds[0] <= 0:
            self.r.issue(self.r.at(body, "bounds", loc), item, f"'bounds' must be [low, high] with 0 < low < high, "
                         f"got {self.r.plain(value)!r}", "each patient's value (median x exp(sigma z), positive) is "
                         "clipped to them: give the model parameter's bounds")
            return None
        return bounds

    def fit_settings(self, doc, free: list[FreeParameter]) -> FitSettings:
        r = self.r
        names = [p.name for p in free]
        body = doc.get("fit") or {}
        if not isinstance(body, Mapping):
            r.issue(r.loc(doc, "fit"), "fit", "must be a mapping of " + ", ".join(FIT_KEYS))
            return FitSettings()
        r.check_keys(body, FIT_KEYS, "fit")
        loc = r.loc(doc, "fit")
        method = str(body.get("method", "multistart" if doc.get("kind", "timecourse") == "timecourse" else "cmaes"))
        if method not in ("multistart", "cmaes", "nuts"):
            r.issue(loc, "fit", f"method must be multistart, cmaes or nuts, got '{method}'")
        elif doc.get("kind") == "trial" and method != "cmaes":
            r.issue(loc, "fit", f"trial problems are fitted with method cmaes (their objective is a "
                    f"simulated trial, not differentiable), got '{method}'")
        profiles = self.profiles(body, loc, names)
        for p in profiles:
            if p not in names:
                r.issue(loc, "fit", f"profile of '{p}', which is not a free parameter",
                        suggest(p, names) or "profiles: list free parameter names, or true for all")
        sigma0 = float(r.number(body, "sigma0", loc, "fit", 0.25))
        if sigma0 <= 0:
            r.issue(r.at(body, "sigma0", loc), "fit", f"'sigma0' must be > 0, got {sigma0:g}",
                    "the initial CMA-ES step on the fit scale, e.g. sigma0: 0.25")
        use_priors = body.get("use_priors", False)
        if not isinstance(use_priors, bool):
            r.issue(r.at(body, "use_priors", loc), "fit", f"'use_priors' must be true or false, got {r.plain(use_priors)!r}",
                    "write use_priors: true (unquoted)")
        return FitSettings(method, r.count(body, "n_starts", loc, "fit", 8), r.count(body, "seed", loc, "fit", 0, minimum=0),
                           r.count(body, "max_iter", loc, "fit", 200), tuple(profiles),
                           r.count(body, "profile_points", loc, "fit", 12, minimum=3), self.posterior(body, loc),
                           None if body.get("popsize") is None else r.count(body, "popsize", loc, "fit", 0, minimum=2),
                           sigma0, use_priors is True,
                           self.predictive(body, loc, doc.get("kind")), self.hold(body, loc, doc.get("kind"), free))

    def profiles(self, body, loc, names: list[str]) -> list[str]:
        """fit.profiles: a list of free parameter names, or true for all of them."""
        value = body.get("profiles", [])
        if isinstance(value, bool):
            return names if value else []
        if not isinstance(value, list):
            self.r.issue(self.r.at(body, "profiles", loc), "fit", f"'profiles' must be a list of free parameter "
                         f"names or true (all), got {self.r.plain(value)!r}",
                         f"e.g. profiles: [{names[0]}]" if names else None)
            return []
        return [str(p) for p in value]

    def posterior(self, body, loc) -> dict[str, Any]:
        """fit.posterior: NUTS settings num_warmup, num_samples, num_chains (>= 1), target_accept in (0, 1)."""
        sub = body.get("posterior")
        if sub is None:
            return {}
        if not isinstance(sub, Mapping):
            self.r.issue(self.r.at(body, "posterior", loc), "fit", f"'posterior' must be a mapping of "
                         f"{', '.join(POSTERIOR_KEYS)}, got {self.r.plain(sub)!r}", "e.g. posterior: {num_samples: 500}")
            return {}
        self.r.check_keys(sub, POSTERIOR_KEYS, "fit posterior")
        where = self.r.at(body, "posterior", loc)
        out = {key: self.r.count(sub, key, where, "fit posterior", None) for key in POSTERIOR_KEYS[:3] if key in sub}
        if "target_accept" in sub:
            accept = self.r.number(sub, "target_accept", where, "fit posterior")
            if not 0 < accept < 1:
                self.r.issue(self.r.at(sub, "target_accept", where), "fit posterior",
                             f"'target_accept' must be in (0, 1), got {accept:g}", "e.g. target_accept: 0.8")
            out["target_accept"] = accept
        return {k: v for k, v in out.items() if v is not None}

    def hold(self, body, loc, kind, free: list[FreeParameter]) -> tuple[str, ...]:
        """fit.hold: free parameters of a trial problem held at their `start` (e.g. a previous
        calibration's estimate) while CMA-ES fits the others: a staged calibration."""
        held = body.get("hold") or []
        if not held:
            return ()
        by_name = {p.name: p for p in free}
        if kind != "trial" or not isinstance(held, list):
            self.r.issue(loc, "fit", "'hold:' is a list of free parameter names, for trial problems only")
            return ()
        for name in map(str, held):
            if name not in by_name:
                self.r.issue(loc, "fit", f"hold: '{name}' is not a free parameter",
                             suggest(name, by_name) or "list names of 'parameters:' or '<population>.median|sigma'")
            elif by_name[name].start is None:
                self.r.issue(loc, "fit", f"hold: '{name}' has no 'start', the value it is held at")
        if set(map(str, held)) >= set(by_name):
            self.r.issue(loc, "fit", "hold: every free parameter is held; leave at least one to fit")
        return tuple(dict.fromkeys(map(str, held)))

    def predictive(self, body, loc, kind) -> dict[str, Any]:
        """fit.predictive: {draws, replicates, patients_per_arm, seed, window} (trial problems only)."""
        sub = body.get("predictive")
        if sub is None:
            return {}
        if kind != "trial" or not isinstance(sub, Mapping):
            self.r.issue(loc, "fit", "'predictive:' is a mapping of " + ", ".join(PREDICTIVE_KEYS)
                         + " and only trial problems have it (time courses: method nuts for a posterior)")
            return {}
        self.r.check_keys(sub, PREDICTIVE_KEYS, "fit predictive")
        out = self.r.plain(sub)
        for key in ("draws", "replicates", "patients_per_arm", "seed"):
            if key in out and (isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 0):
                self.r.issue(self.r.loc(body, "predictive"), "fit predictive", f"{key} must be an integer >= 0, "
                             f"got {out[key]!r}")
        if "window" in out and not (isinstance(out["window"], (int, float)) and out["window"] > 0):
            self.r.issue(self.r.loc(body, "predictive"), "fit predictive",
                         f"window must be a number > 0 (objective units above the best), got {out['window']!r}")
        return out

    # ---- time courses ------------------------------------------------------------------------
    def conditions(self, doc) -> dict[str, Condition]:
        section = self.r.section(doc, "conditions")
        out = {}
        for name in section:
            got = self.r.entry(section, name, "condition", CONDITION_KEYS)
            if got:
                body, loc, item = got
                out[str(name)] = Condition(str(name), None if body.get("regimen") is None else str(body["regimen"]),
                                           self.values(body, "parameters", loc, item),
                                           self.values(body, "initial", loc, item))
        if not out:
            out["default"] = Condition("default")
        return out

    def values(self, body, key: str, loc: Location, item: str) -> dict[str, float]:
        """A condition's `parameters:` or `initial:`, a mapping of name: number."""
        value = body.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.r.issue(self.r.at(body, key, loc), item, f"'{key}' must be a mapping of name: number, got "
                         f"{self.r.plain(value)!r}", f"e.g. {key}: {{NAME: 1.0}}")
            return {}
        return {str(k): self.r.number(value, k, loc, f"{item} {key}") for k in value}

    def observables(self, doc, roles: Mapping[str, str]) -> dict[str, Observable]:
        section = self.r.section(doc, "observables")
        out = {}
        if not section:
            self.r.issue(self.r.loc(doc), "problem", "a timecourse problem needs 'observables:'")
        for name in section:
            got = self.r.entry(section, name, "observable", OBSERVABLE_KEYS)
            if not got:
                continue
            body, loc, item = got
            transformation, noise = str(body.get("transformation", "lin")), str(body.get("noise", "normal"))
            if transformation not in TRANSFORMATIONS:
                self.r.issue(loc, item, f"transformation must be one of {', '.join(TRANSFORMATIONS)}")
            if noise not in NOISE_MODELS:
                self.r.issue(loc, item, f"noise must be one of {', '.join(NOISE_MODELS)}")
            sigma = body.get("sigma", 1.0)
            if isinstance(sigma, str):
                if roles.get(sigma) != "noise":
                    self.r.issue(loc, item, f"sigma '{sigma}' must be a number or a free parameter with "
                                 "'role: noise'", suggest(sigma, [k for k, v in roles.items() if v == "noise"]))
            elif not (_real(sigma) and sigma > 0):
                self.r.issue(self.r.at(body, "sigma", loc), item, f"sigma must be a number > 0 or a noise "
                             f"parameter's name, got {self.r.plain(sigma)!r}")
                sigma = 1.0
            out[str(name)] = Observable(str(name), str(body.get("output", name)), transformation, noise,
                                        sigma if isinstance(sigma, str) else float(sigma))
        return out

    def measurements(self, doc, observables, conditions, t0: float) -> pd.DataFrame | None:
        r = self.r
        name = doc.get("measurements")
        loc = r.loc(doc, "measurements") if name else r.loc(doc)
        if not name:
            r.issue(loc, "problem", "a timecourse problem needs 'measurements:' (a TSV file)")
            return None
        path = self.folder / str(name)
        if not path.is_file():
            r.issue(loc, "measurements", f"no such file: {path}")
            return None
        table = self.table(path, "measurements", "observableId, simulationConditionId, time, measurement [, noise]")
        if table is None:
            return None
        missing = [c for c in MEASUREMENT_COLUMNS if c not in table.columns]
        if missing:
            r.issue(loc, "measurements", f"{path.name} lacks the columns {missing}",
                    "PEtab style: observableId, simulationConditionId, time, measurement [, noise]")
            return None
        for col, known in (("observableId", observables), ("simulationConditionId", conditions)):
            unknown = sorted(set(table[col].astype(str)) - set(known))
            if unknown:
                r.issue(loc, "measurements", f"{path.name}: {col} {unknown} not defined in the problem",
                        f"defined: {', '.join(known)}")
        numeric = ["time", "measurement"] + (["noise"] if "noise" in table else [])
        table[numeric] = table[numeric].apply(pd.to_numeric, errors="coerce")
        if not np.isfinite(table[numeric].to_numpy(float)).all():
            r.issue(loc, "measurements", f"{path.name}: time, measurement and noise must be finite numbers")
        early = int((table["time"] < t0).sum())
        if early:
            r.issue(loc, "measurements", f"{path.name}: {early} measurement times are before t0 = {t0:g}",
                    "the simulation starts at t0: set 't0:' to the earliest time, or drop those rows")
        if "noise" in table and (table["noise"] <= 0).any():
            r.issue(loc, "measurements", f"{path.name}: noise must be > 0 (the standard deviation of each "
                    f"measurement), got {table['noise'].min():g}", "leave the noise column out to use the observable's sigma")
        table["observableId"] = table["observableId"].astype(str)
        table["simulationConditionId"] = table["simulationConditionId"].astype(str)
        return table

    def table(self, path: Path, item: str, header: str) -> pd.DataFrame | None:
        """A CSV file (TSV for .tsv, .tab) as a DataFrame; None, with an issue naming the file and
        line, when it cannot be read, is not UTF-8, is empty, is ragged or has no rows."""
        kind = _table_kind(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            self.r.issue(Location(str(path)), item, f"cannot read: {exc.strerror}")
            return None
        except UnicodeDecodeError as exc:
            self.r.issue(Location(str(path), exc.object[:exc.start].count(b"\n") + 1), item,
                         f"is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} cannot be decoded", "save the file as UTF-8")
            return None
        sep = "\t" if kind == "TSV" else ","
        try:
            table = pd.read_csv(io.StringIO(text), sep=sep, float_precision="round_trip")
        except pd.errors.EmptyDataError:
            self.r.issue(Location(str(path)), item, "is empty", f"write the header row ({header}), then one row per line")
            return None
        except pd.errors.ParserError as exc:
            detail = str(exc).strip().split("C error: ")[-1]
            self.r.issue(Location(str(path), _parser_line(detail)), item, f"is not a valid {kind} table: {detail}",
                         f"give every row one field per header column, separated by "
                         f"{'tabs' if kind == 'TSV' else 'commas'}, and close every quote")
            return None
        if not isinstance(table.index, pd.RangeIndex):
            self.r.issue(Location(str(path), _long_row(text, sep)), item, f"is not a valid {kind} table: a row "
                         "has more fields than the header", f"give every row one field per header column, "
                         f"separated by {'tabs' if kind == 'TSV' else 'commas'}")
            return None
        if table.empty:
            self.r.issue(Location(str(path)), item, "has no rows", f"add one row per line under the header ({header})")
            return None
        return table

    # ---- trial targets -----------------------------------------------------------------------
    def targets(self, doc, design: TrialDesign | None) -> tuple[Target, ...]:
        r = self.r
        items = doc.get("targets") or []
        if not isinstance(items, list) or not items:
            r.issue(r.loc(doc), "problem", "a trial problem needs 'targets:', a list of likelihood terms")
            return ()
        out = []
        for i, body in enumerate(items):
            item = f"target {i + 1}"
            if not isinstance(body, Mapping):
                r.issue(r.loc(doc, "targets"), item, "must be a mapping")
                continue
            loc = r.loc(body)
            r.check_keys(body, TARGET_KEYS, item)
            kind = str(body.get("kind", ""))
            if kind not in TARGET_KINDS:
                r.issue(loc, item, f"kind must be one of {', '.join(TARGET_KINDS)}, got '{kind}'")
                continue
            fields, reported = self.target_fields(body, dict(id=str(body.get("id", f"{kind}_{i + 1}")), kind=kind),
                                                  loc, item)
            self.check_target(fields, reported, loc, item)
            if design is not None:
                self.check_design_names(fields, design, loc, item)
            if fields["id"] in {t.id for t in out}:
                r.issue(loc, item, f"id '{fields['id']}' is used by an earlier target",
                        "give each target its own id (reports and checkpoints name terms by id)")
            out.append(Target(**fields))
        return tuple(out)

    def target_fields(self, body, fields: dict[str, Any], loc, item) -> tuple[dict[str, Any], set[str]]:
        """A target's fields from its keys and its `published:` row, and the keys whose values were
        reported wrong (so that they are not reported missing as well)."""
        r = self.r
        fields.update(endpoint=str(body.get("endpoint", "pfs")).lower(),
                      arm=None if body.get("arm") is None else str(body["arm"]),
                      comparison=None if body.get("comparison") is None else str(body["comparison"]),
                      source=str(body.get("source", "")))
        reported: set[str] = set()
        if body.get("published") is not None:
            published, failed = self.published(body, loc, item)
            fields.update(published)
            reported |= failed
        for key in ("weight", "value", "months", "smoothing_months"):
            if body.get(key) is not None:
                number = r.number(body, key, loc, item)
                if math.isnan(number):
                    reported.add(key)
                else:
                    fields[key] = number
        if body.get("n") is not None:
            n = r.count(body, "n", loc, item, None)
            if n is None:
                reported.add("n")
            else:
                fields["n"] = n
        if body.get("ci") is not None:
            ci = _pair(body["ci"])
            if ci is None:
                r.issue(r.at(body, "ci", loc), item, f"ci must be [low, high] with low < high, got "
                        f"{r.plain(body['ci'])!r}", "the 95 % confidence interval, e.g. ci: [3.4, 5.6]")
                reported.add("ci")
            else:
                fields["ci"] = ci
        if body.get("biomarker") is not None:
            fields["biomarker"] = str(body["biomarker"])
        if fields["kind"] == "ipd":
            fields["data"] = self.ipd(body, loc, item)
            edges = body.get("hazard_bins_months")
            if not edges:
                r.issue(loc, item, "an ipd target needs 'hazard_bins_months: [0, ...]'")
            elif _edges(edges) is None:
                r.issue(r.at(body, "hazard_bins_months", loc), item, "'hazard_bins_months' must be increasing "
                        f"numbers >= 0, at least two, got {r.plain(edges)!r}", "bin edges in months, e.g. [0, 3, 6, 12]")
            else:
                fields["hazard_bins_months"] = _edges(edges)
        return fields, reported

    def published(self, body, loc, item) -> tuple[dict[str, Any], set[str]]:
        """value, ci and source from the row of a published-results CSV that `published:` selects,
        and the keys it failed to give, each reported."""
        r, failed = self.r, {"value", "ci"}
        if not isinstance(body["published"], Mapping):
            r.issue(r.at(body, "published", loc), item, f"'published' must be a mapping of column: value, got "
                    f"{r.plain(body['published'])!r}", "it selects one row of published.csv, e.g. "
                    "published: {endpoint: PFS, arm: NIVO, statistic: median}")
            return {}, failed
        sel = r.plain(body["published"])
        path = self.folder / str(sel.pop("file", "published.csv"))
        if not path.is_file():
            r.issue(loc, item, f"no such file: {path}")
            return {}, failed
        table = self.published_table(path)
        if table is None:
            return {}, failed
        rows = table
        for key, value in sel.items():
            if key not in table.columns:
                r.issue(loc, item, f"published: {path.name} has no column '{key}'")
                return {}, failed
            rows = rows[rows[key].astype(str) == str(value)]
        if len(rows) != 1:
            r.issue(loc, item, f"published: {sel} matches {len(rows)} rows of {path.name}, need exactly 1")
            return {}, failed
        row = rows.iloc[0]
        where = Location(str(path), int(rows.index[0]) + 2)      # the header is line 1
        out: dict[str, Any] = {"source": str(row.get("source", ""))}
        failed = set()
        for key, (number, problem) in (("value", _published_value(row)), ("ci", _published_ci(row))):
            if key in body:             # given in the target: it replaces the published one
                continue
            if problem:
                r.issue(where, item, *problem)
                failed.add(key)
            elif number is not None:
                out[key] = number
        return out, failed

    def published_table(self, path: Path) -> pd.DataFrame | None:
        """A published-results CSV, read and checked once for all the targets that select from it."""
        if path not in self.published_tables:
            table = self.table(path, "published", "analysis, population, endpoint, arm, statistic, value, ci_low, "
                               "ci_high, source")
            if table is not None and "value" not in table.columns:
                self.r.issue(Location(str(path), 1), "published", "has no column 'value'",
                             "published rows give value, and ci_low, ci_high for a confidence interval")
                table = None
            self.published_tables[path] = table
        return self.published_tables[path]

    def ipd(self, body, loc, item) -> pd.DataFrame | None:
        if not body.get("data"):
            self.r.issue(loc, item, "an ipd target needs 'data:' (a CSV with time_months, event)")
            return None
        path = self.folder / str(body["data"])
        if not path.is_file():
            self.r.issue(loc, item, f"no such file: {path}")
            return None
        table = self.table(path, item, "time_months, event")
        if table is None:
            return None
        if not {"time_months", "event"} <= set(table.columns):
            self.r.issue(loc, item, f"{path.name} must have the columns time_months, event")
            return None
        time = pd.to_numeric(table["time_months"], errors="coerce").to_numpy(float)
        event = pd.to_numeric(table["event"], errors="coerce").to_numpy(float)
        if not (np.all(np.isfinite(time) & (time >= 0)) and np.all(np.isin(event, (0, 1)))):
            self.r.issue(loc, item, f"{path.name}: time_months must be numbers >= 0 and event 0 or 1")
            return None
        return pd.DataFrame({"time_months": time, "event": event.astype(int)})

    def check_target(self, f: Mapping[str, Any], reported: set[str], loc: Location, item: str) -> None:
        r, kind = self.r, f["kind"]
        needs = {"ipd": ("arm",), "median": ("arm", "value", "ci"), "hazard_ratio": ("comparison", "value", "ci"),
                 "landmark": ("arm", "value", "ci", "months"), "response": ("arm", "value", "n"),
                 "prevalence": ("biomarker", "value", "n")}[kind]
        for key in needs:
            if f.get(key) is None and key not in reported:
                r.issue(loc, item, f"a {kind} target needs '{key}'"
                        + (" (from 'published:' or given)" if key in ("value", "ci") else "")
                        + (" (a biomarker rule of the trial design, e.g. pdl1_high)" if key == "biomarker" else ""))
        value, ci = f.get("value"), f.get("ci")
        if kind in ("response", "prevalence", "landmark") and value is not None and not 0 <= value <= 1:
            r.issue(loc, item, f"a {kind} target's value is a fraction in [0, 1], got {value}")
        if kind in ("median", "hazard_ratio"):
            if value is not None and not value > 0:
                r.issue(loc, item, f"a {kind} target's value must be > 0, got {value:g}",
                        "its likelihood is read on the log scale")
            if ci is not None and not ci[0] > 0:
                r.issue(loc, item, f"a {kind} target's ci must be > 0, got [{ci[0]:g}, {ci[1]:g}]",
                        "its standard error is read on the log scale")
        for key, low, rule in (("months", 0.0, "> 0"), ("smoothing_months", 0.0, "> 0"), ("weight", None, ">= 0")):
            number = f.get(key)
            if number is not None and not (number > low if low is not None else number >= 0):
                r.issue(loc, item, f"{key} must be {rule}, got {number:g}")
        if f["endpoint"] not in ("pfs", "os"):
            r.issue(loc, item, f"endpoint must be pfs or os, got '{f['endpoint']}'")

    def check_design_names(self, f: Mapping[str, Any], design: TrialDesign, loc: Location, item: str) -> None:
        """The target's arm, comparison arms and biomarker are the trial design's."""
        r, arms = self.r, list(design.arms)
        named = [f["arm"]] if f.get("arm") is not None else []
        if f.get("comparison") is not None:
            experimental, sep, control = f["comparison"].partition("_vs_")
            if sep:
                named += [experimental, control]
            else:
                r.issue(loc, item, f"comparison '{f['comparison']}' must read EXPERIMENTAL_vs_CONTROL",
                        f"e.g. {arms[0]}_vs_{arms[-1]}" if arms else None)
        for arm in named:
            if arm not in arms:
                r.issue(loc, item, f"trial design '{design.name}' has no arm '{arm}'",
                        suggest(arm, arms) or f"its arms: {', '.join(arms)}")
        rules = biomarker_names(design.biomarkers)
        if f.get("biomarker") is not None and f["biomarker"] not in rules:
            r.issue(loc, item, f"trial design '{design.name}' has no biomarker rule '{f['biomarker']}'",
                    suggest(f["biomarker"], rules) or f"its rules: {', '.join(rules) or 'none'}")
