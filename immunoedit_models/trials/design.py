"""Trial designs as data: `model_specs/trials/<name>.yaml` -> `TrialDesign`.

A design names the model, the arms (each a sequence of dosing phases, e.g. induction then
maintenance), the scan schedule, RECIST and survival settings, accrual and data cut-off, the
cohort's constraints, the biomarker definitions and the comparisons. Every problem in a file is
collected and raised once as a `SpecError` with file:line, item and a hint, like model specs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import Issue, SimulationError, SpecError
from ..simulate.regimen import Dose, Regimen
from ..spec.expressions import suggest
from ..spec.loader import SPEC_ROOT, SpecReader, read_yaml
from ..spec.schema import Location
from .biomarkers import TRIAL_RULES
from .cohort import Target, constraint
from .endpoints import SurvivalParameters
from .recist import RecistCriteria
from .visits import VisitTiming

TRIAL_FOLDER = SPEC_ROOT / "trials"
DAYS_PER_MONTH = 30.4375
DAYS_PER_WEEK = 7.0

DESIGN_KEYS = ("name", "description", "references", "model", "arms", "control", "comparisons",
               "patients_per_arm", "accrual_months", "data_cut_months", "scans", "recist",
               "visits", "survival", "cohort", "biomarkers", "subgroups", "solver")
ARM_KEYS = ("description", "phases", "treat_beyond_progression")
PHASE_KEYS = ("name", "start_day", "cycle_days", "cycles", "doses")
DOSE_KEYS = ("drug", "amount", "day", "duration")
SCAN_KEYS = ("from_week", "every_weeks", "until_week")
VISIT_KEYS = ("offset_mean_days", "offset_sd_days", "source")
RECIST_KEYS = ("pd_rel", "pd_abs_mm", "pr_rel", "cr_mm", "confirm_days", "sd_min_days", "cpd_abs_mm")
SURVIVAL_KEYS = tuple(f.name for f in fields(SurvivalParameters))
SOLVER_KEYS = ("rtol", "atol", "output_every_days", "max_steps")
COHORT_KEYS = ("constraints", "target", "correlations", "oversample", "max_rounds")   # sample_cohort's
UNTIL_PROGRESSION = "until_progression"
TRIAL_DESIGN = "trial design"       # what a design's SpecError names


@dataclass(frozen=True)
class PhaseDose:
    """One drug given in each cycle of a phase, on `day` of the cycle (0-based)."""

    drug: str
    amount: float | str            # number in the drug's amount unit, or a parameter expression
    day: float = 0.0
    duration: float = 0.0          # infusion length in days (0: bolus)


@dataclass(frozen=True)
class Phase:
    """Repeated cycles of doses: `cycles` is a count, a tuple of counts to choose from per
    patient with equal probability (investigator's choice), or None (until progression or the
    end of follow-up)."""

    name: str
    cycle_days: float
    cycles: int | tuple[int, ...] | None
    doses: tuple[PhaseDose, ...]
    start_day: float | None = None     # None: when the previous phase ends


@dataclass(frozen=True)
class Arm:
    """A trial arm: its dosing phases, and the drugs it gives beyond progression.

    treat_beyond_progression: drugs whose doses go on after RECIST progression until a later
    scan confirms it (iRECIST; the design's `recist: cpd_abs_mm`), the usual protocol reading of
    "until loss of clinical benefit"; every other dose stops at progression.
    """

    name: str
    phases: tuple[Phase, ...]
    description: str = ""
    treat_beyond_progression: tuple[str, ...] = ()

    def regimens(self, horizon_days: float) -> dict[tuple[int, ...], Regimen]:
        """One Regimen per combination of phase cycle counts, keyed by those counts.

        Phases without a count run until `horizon_days`. Doses are given until progression, or
        until confirmed progression for the drugs treated beyond progression.
        """
        choices = [p.cycles if isinstance(p.cycles, tuple) else (p.cycles,) for p in self.phases]
        out: dict[tuple[int, ...], Regimen] = {}
        for combo in _product(choices):
            doses: list[Dose] = []
            start = 0.0
            counts = []
            for phase, count in zip(self.phases, combo):
                start = phase.start_day if phase.start_day is not None else start
                n = count if count is not None else max(0, math.ceil((horizon_days - start) / phase.cycle_days))
                counts.append(n)
                doses += [Dose(d.drug, start + k * phase.cycle_days + d.day, d.amount, d.duration,
                               until_progression=d.drug not in self.treat_beyond_progression,
                               until_confirmed_progression=d.drug in self.treat_beyond_progression)
                          for k in range(n) for d in phase.doses
                          if start + k * phase.cycle_days + d.day < horizon_days]
                start += n * phase.cycle_days
            out[tuple(c for c in combo if c is not None)] = Regimen(
                tuple(sorted(doses, key=lambda d: d.time)), f"{self.name} {counts}")
        return out

    def drugs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.drug for p in self.phases for d in p.doses))


def _product(choices: list[tuple]) -> list[tuple]:
    combos: list[tuple] = [()]
    for options in choices:
        combos = [c + (o,) for c in combos for o in options]
    return combos


@dataclass(frozen=True)
class ScanSchedule:
    """Tumour assessments: baseline (day 0) plus visits every `every_weeks` in each window."""

    windows: tuple[tuple[float, float, float], ...]     # (from_week, every_weeks, until_week)

    def days(self, horizon_days: float) -> np.ndarray:
        """Scan days (n_scan,), baseline 0 first, up to horizon_days."""
        out = [0.0]
        for start, every, until in self.windows:
            week = start + every
            while week <= until + 1e-9 and week * DAYS_PER_WEEK <= horizon_days:
                out.append(week * DAYS_PER_WEEK)
                week += every
        return np.unique(np.array(out))


@dataclass(frozen=True)
class SolverOptions:
    rtol: float = 1e-6
    atol: float = 1e-9
    output_every_days: float = 7.0
    max_steps: int = 100_000

    def __post_init__(self):
        wrong = [f"{name} must be > 0, got {getattr(self, name):g}"
                 for name in ("rtol", "atol", "output_every_days") if not getattr(self, name) > 0]
        if wrong:
            raise ValueError("; ".join(wrong))


@dataclass(frozen=True)
class TrialDesign:
    name: str
    model: str
    arms: Mapping[str, Arm]
    comparisons: tuple[tuple[str, str], ...]       # (experimental, control)
    patients_per_arm: int
    accrual_months: float
    data_cut_months: float
    scans: ScanSchedule
    recist: RecistCriteria
    survival: SurvivalParameters
    solver: SolverOptions
    cohort: Mapping[str, Any] = field(default_factory=dict)
    biomarkers: Mapping[str, Any] = field(default_factory=dict)
    subgroups: tuple[str, ...] = ()
    visits: VisitTiming = VisitTiming()
    description: str = ""
    references: tuple[Any, ...] = ()
    path: str = "<memory>"
    source_text: str = ""

    @property
    def horizon_days(self) -> float:
        """Longest follow-up: the first patient in, followed to the data cut-off."""
        return self.data_cut_months * DAYS_PER_MONTH

    @property
    def design_hash(self) -> str:
        return hashlib.sha256(self.source_text.encode()).hexdigest()[:16]


def biomarker_names(biomarkers: Mapping[str, Any] | str) -> tuple[str, ...]:
    """The rule names of a design's `biomarkers:` (a built-in rule set's name, or the rules)."""
    rules = TRIAL_RULES.get(biomarkers, {}) if isinstance(biomarkers, str) else biomarkers
    return tuple(rules)


# ---- reading ------------------------------------------------------------------------------------
def builtin_trials() -> dict[str, Path]:
    return {p.stem: p for p in sorted(TRIAL_FOLDER.glob("*.yaml"))}


def load_trial(name_or_path: str | Path) -> TrialDesign:
    """Read and check a trial design (a built-in name such as 'impower150', or a path)."""
    path = Path(name_or_path)
    if not path.is_file():
        trials = builtin_trials()
        if str(name_or_path) not in trials:
            hint = suggest(str(name_or_path), trials) or f"built-in trials: {', '.join(trials)}"
            raise SpecError(Issue(str(name_or_path), None, f"trial '{name_or_path}'",
                                  "no such file or built-in trial design", hint), TRIAL_DESIGN)
        path = trials[str(name_or_path)]
    issues: list[Issue] = []
    doc = read_yaml(path, issues)
    if issues:
        raise SpecError(issues, TRIAL_DESIGN)
    if not isinstance(doc, Mapping):
        raise SpecError(Issue(str(path), None, "trial", "is empty" if doc is None else
                              f"must be a YAML mapping, got a {'list' if isinstance(doc, list) else 'value'}",
                              "a trial design maps name, model, arms, scans, data_cut_months, ..."), TRIAL_DESIGN)
    design = _Design(SpecReader(path, issues)).read(doc)
    if issues:
        raise SpecError(sorted(issues, key=lambda i: (i.file, i.line or 0)), TRIAL_DESIGN)
    return design


class _Design:
    """Builds a TrialDesign from the YAML tree, collecting issues with locations."""

    def __init__(self, reader: SpecReader):
        self.r = reader

    def read(self, doc: Mapping) -> TrialDesign:
        r = self.r
        r.check_keys(doc, DESIGN_KEYS, "trial")
        loc = r.loc(doc)
        arms = {str(name): self.arm(doc["arms"], name) for name in r.section(doc, "arms")}
        if not arms:
            r.issue(loc, "trial", "has no arms", "add 'arms:' with at least two arms")
        scans = self.scans(doc)
        biomarkers = self.biomarkers(doc)
        accrual, cut = self.follow_up(doc)
        survival = self.settings(doc, "survival", SurvivalParameters, SURVIVAL_KEYS)
        if not survival.lethal_tumour_cells > 0:
            r.issue(r.loc(doc, "survival"), "survival", f"'lethal_tumour_cells' must be > 0, got "
                    f"{survival.lethal_tumour_cells:g}", "the tumour burden at which a patient dies, e.g. 1.0e12")
        return TrialDesign(
            name=str(doc.get("name", Path(r.file).stem)), model=str(doc.get("model", "")),
            arms=arms, comparisons=self.comparisons(doc, arms),
            patients_per_arm=r.count(doc, "patients_per_arm", loc, "trial", 100),
            accrual_months=accrual, data_cut_months=cut,
            scans=scans, recist=self.settings(doc, "recist", RecistCriteria, RECIST_KEYS),
            survival=survival, solver=self.settings(doc, "solver", SolverOptions, SOLVER_KEYS),
            cohort=self.cohort(doc), biomarkers=biomarkers,
            subgroups=self.subgroups(doc, biomarker_names(biomarkers)), visits=self.visits(doc, scans),
            description=str(doc.get("description", "")).strip(),
            references=tuple(self.r.plain(self.listed(doc, "references", "{key, text}"))),
            path=r.file, source_text=Path(r.file).read_text(encoding="utf-8"))

    def listed(self, doc: Mapping, key: str, entry: str) -> list:
        """The list under `key` (empty when absent); an issue when it is something else."""
        value = doc.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.r.issue(self.r.loc(doc, key), key, f"must be a list, got {self.r.plain(value)!r}",
                         f"write one '- {entry}' item per line, or [{entry}, ...]")
            return []
        return value

    def follow_up(self, doc: Mapping) -> tuple[float, float]:
        """accrual_months >= 0 and data_cut_months > 0, the cut-off after the last patient is in."""
        r, loc = self.r, self.r.loc(doc)
        accrual = r.number(doc, "accrual_months", loc, "trial", 0.0)
        cut = r.number(doc, "data_cut_months", loc, "trial")
        if accrual < 0:
            r.issue(r.at(doc, "accrual_months", loc), "trial", f"'accrual_months' must be >= 0, got {accrual:g}")
        if cut <= 0:
            r.issue(r.at(doc, "data_cut_months", loc), "trial", f"'data_cut_months' must be > 0, got {cut:g}",
                    "months from the first patient in to the data cut-off")
        elif accrual >= cut:
            r.issue(r.at(doc, "data_cut_months", loc), "trial", f"'data_cut_months' {cut:g} must be after "
                    f"'accrual_months' {accrual:g}", "the data cut-off follows the last patient's enrolment")
        return accrual, cut

    def biomarkers(self, doc: Mapping) -> Mapping[str, Any] | str:
        """`biomarkers:`, a built-in rule set's name or a mapping of rule name: rule."""
        r, value = self.r, doc.get("biomarkers")
        if value is None:
            return {}
        loc = r.loc(doc, "biomarkers")
        if isinstance(value, str):
            if value not in TRIAL_RULES:
                r.issue(loc, "biomarkers", f"no built-in rule set '{value}'",
                        suggest(value, TRIAL_RULES) or f"built in: {', '.join(TRIAL_RULES)}, or write the rules")
            return value
        if not isinstance(value, Mapping) or not all(isinstance(rule, Mapping) for rule in value.values()):
            r.issue(loc, "biomarkers", f"must be a built-in rule set ({', '.join(TRIAL_RULES)}) or a mapping of "
                    f"name: rule, got {r.plain(value)!r}", "a rule: {output: pdl1_tumour, op: '>=', value: 1}")
            return {}
        return r.plain(value)

    def subgroups(self, doc: Mapping, rules: tuple[str, ...]) -> tuple[str, ...]:
        """`subgroups:`, biomarker rules whose positive and negative patients get their own HRs."""
        names = tuple(str(s) for s in self.listed(doc, "subgroups", "RULE"))
        if not rules and doc.get("biomarkers") is not None:     # biomarkers: is wrong, and reported
            return names
        for name in names:
            if name not in rules:
                self.r.issue(self.r.loc(doc, "subgroups"), "subgroups", f"no biomarker rule '{name}'",
                             suggest(name, rules) or f"the design's rules: {', '.join(rules) or 'none'} (biomarkers:)")
        return names

    def cohort(self, doc: Mapping) -> dict[str, Any]:
        """`cohort:`, how sample_cohort draws the patients: constraints, target, correlations,
        oversample, max_rounds."""
        r, body = self.r, doc.get("cohort")
        if body is None:
            return {}
        if not isinstance(body, Mapping):
            r.issue(r.loc(doc, "cohort"), "cohort", "must be a mapping of " + ", ".join(COHORT_KEYS))
            return {}
        r.check_keys(body, COHORT_KEYS, "cohort")
        loc = r.loc(body)
        for i, item in enumerate(self.listed(body, "constraints", "{output, time, low, high}")):
            self.cohort_check(lambda: constraint(r.plain(item)), item, r.loc(body, "constraints"),
                              f"cohort constraint {i + 1}")
        if "target" in body:
            self.cohort_check(lambda: Target.from_mapping(r.plain(body["target"])), body["target"],
                              r.loc(body, "target"), "cohort target")
        if "correlations" in body and not isinstance(body["correlations"], Mapping):
            r.issue(r.loc(body, "correlations"), "cohort", "'correlations' must be a mapping {a: {b: rho}}")
        if "oversample" in body and r.number(body, "oversample", loc, "cohort") < 1:
            r.issue(r.at(body, "oversample", loc), "cohort", "'oversample' must be >= 1 (the plausible pool is "
                    "oversample x the cohort size)")
        r.count(body, "max_rounds", loc, "cohort", None)
        return {key: r.plain(value) for key, value in body.items() if key in COHORT_KEYS}

    def cohort_check(self, build, item: Any, parent: Location, what: str) -> None:
        """An issue at `item` (or its parent) when building its constraint or target fails."""
        if not isinstance(item, Mapping):
            self.r.issue(parent, what, f"must be a mapping, got {self.r.plain(item)!r}")
            return
        try:
            build()
        except SimulationError as exc:
            self.r.issue(self.r.loc(item) if self.r.line_of(item) else parent, what, str(exc))

    def arm(self, section: Mapping, name: Any) -> Arm:
        got = self.r.entry(section, name, "arm", ARM_KEYS)
        if not got:
            return Arm(str(name), ())
        body, loc, item = got
        phases = body.get("phases") or []
        if not isinstance(phases, list) or not phases:
            self.r.issue(loc, item, "needs 'phases:', a list of {cycle_days, cycles, doses}")
            phases = []
        arm = Arm(str(name), tuple(self.phase(p, loc, f"{item} phase {i + 1}") for i, p in enumerate(phases)),
                  str(body.get("description", "")))
        return replace(arm, treat_beyond_progression=self.beyond_progression(body, item, arm.drugs()))

    def beyond_progression(self, body: Mapping, item: str, drugs: tuple[str, ...]) -> tuple[str, ...]:
        """The arm's `treat_beyond_progression:` drugs (a list of them, or true for all)."""
        value = body.get("treat_beyond_progression", [])
        if value is True:
            return drugs
        if value is False:
            return ()
        loc = self.r.loc(body, "treat_beyond_progression")
        if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
            self.r.issue(loc, item, f"'treat_beyond_progression' must be a list of the arm's drugs or "
                         f"true (all of them), got {value!r}", f"e.g. treat_beyond_progression: [{drugs[0]}]"
                         if drugs else None)
            return ()
        for drug in value:
            if drug not in drugs:
                self.r.issue(loc, item, f"treats '{drug}' beyond progression but gives no '{drug}'",
                             suggest(drug, drugs) or f"the arm's drugs: {', '.join(drugs)}")
        return tuple(d for d in value if d in drugs)

    def phase(self, body: Any, parent: Location, item: str) -> Phase:
        r = self.r
        if not isinstance(body, Mapping):
            r.issue(parent, item, "must be a mapping of " + ", ".join(PHASE_KEYS))
            return Phase("", 1.0, 0, ())
        loc = r.loc(body)
        r.check_keys(body, PHASE_KEYS, item)
        cycles = body.get("cycles", UNTIL_PROGRESSION)
        if cycles == UNTIL_PROGRESSION:
            count: int | tuple[int, ...] | None = None
        elif isinstance(cycles, list) and cycles and all(isinstance(c, int) and not isinstance(c, bool) and c > 0
                                                         for c in cycles):
            count = tuple(int(c) for c in cycles)
        elif isinstance(cycles, int) and not isinstance(cycles, bool) and cycles > 0:
            count = int(cycles)
        else:
            r.issue(r.loc(body, "cycles"), item, f"'cycles' must be a positive integer, a list of "
                    f"them (chosen per patient) or '{UNTIL_PROGRESSION}', got {cycles!r}")
            count = 0
        cycle_days = r.number(body, "cycle_days", loc, item)
        if not cycle_days > 0:
            r.issue(loc, item, "'cycle_days' must be > 0")
        doses = body.get("doses") or []
        if not isinstance(doses, list) or not doses:
            r.issue(loc, item, "needs 'doses:', a list of {drug, amount[, day, duration]}")
            doses = []
        start = None if body.get("start_day") is None else r.number(body, "start_day", loc, item)
        if start is not None and start < 0:
            r.issue(r.at(body, "start_day", loc), item, f"'start_day' must be >= 0, got {start:g}")
        return Phase(str(body.get("name", item)), cycle_days, count,
                     tuple(d for d in (self.dose(d, loc, f"{item} dose {i + 1}", cycle_days)
                                       for i, d in enumerate(doses)) if d), start)

    def dose(self, body: Any, parent: Location, item: str, cycle_days: float) -> PhaseDose | None:
        r = self.r
        if not isinstance(body, Mapping) or "drug" not in body or "amount" not in body:
            r.issue(parent, item, "must be a mapping with 'drug' and 'amount'")
            return None
        loc = r.loc(body)
        r.check_keys(body, DOSE_KEYS, item)
        amount = body["amount"]
        amount = str(amount) if isinstance(amount, str) else r.number(body, "amount", loc, item)
        day, duration = r.number(body, "day", loc, item, 0.0), r.number(body, "duration", loc, item, 0.0)
        if not isinstance(amount, str) and amount < 0:
            r.issue(r.at(body, "amount", loc), item, f"'amount' must be >= 0, got {amount:g}")
        if day < 0 or day >= cycle_days:
            r.issue(r.at(body, "day", loc), item, f"'day' must be in [0, cycle_days) = [0, {cycle_days:g}), got {day:g}",
                    "the day of the cycle, 0 for its first day")
        if duration < 0:
            r.issue(r.at(body, "duration", loc), item, f"'duration' must be >= 0, got {duration:g}",
                    "the infusion length in days, 0 for a bolus")
        return PhaseDose(str(body["drug"]), amount, day, duration)

    def comparisons(self, doc: Mapping, arms: Mapping[str, Arm]) -> tuple[tuple[str, str], ...]:
        r, loc = self.r, self.r.loc(doc, "comparisons")
        control = str(doc.get("control", ""))
        if control and arms and control not in arms:
            r.issue(r.loc(doc, "control"), "trial", f"control '{control}' is not an arm",
                    suggest(control, arms) or f"arms: {', '.join(arms)}")
        pairs: list[tuple[str, str]] = []
        default = [f"{a} vs {control}" for a in arms if a != control] if control else []
        for text in self.listed(doc, "comparisons", "EXPERIMENTAL vs CONTROL") if "comparisons" in doc else default:
            parts = [p.strip() for p in str(text).split(" vs ")]
            item = f"comparison '{text}'"
            if len(parts) != 2:
                r.issue(loc, item, "must read 'EXPERIMENTAL vs CONTROL'")
                continue
            for arm in parts:
                if arm not in arms:
                    r.issue(loc, item, f"no arm '{arm}'", suggest(arm, arms))
            if parts[0] == parts[1]:
                r.issue(loc, item, "compares an arm with itself", "name two different arms")
            elif (parts[0], parts[1]) in pairs:
                r.issue(loc, item, "is listed twice")
            pairs.append((parts[0], parts[1]))
        return tuple(pairs)

    def scans(self, doc: Mapping) -> ScanSchedule:
        r = self.r
        windows = []
        for i, body in enumerate(self.listed(doc, "scans", "{from_week, every_weeks[, until_week]}")):
            item = f"scan window {i + 1}"
            if not isinstance(body, Mapping):
                r.issue(r.loc(doc, "scans"), item, "must be {from_week, every_weeks[, until_week]}")
                continue
            loc = r.loc(body)
            r.check_keys(body, SCAN_KEYS, item)
            every = r.number(body, "every_weeks", loc, item)
            if not every > 0:
                r.issue(loc, item, "'every_weeks' must be > 0")
            start, until = r.number(body, "from_week", loc, item, 0.0), r.number(body, "until_week", loc, item, math.inf)
            if start < 0:
                r.issue(r.at(body, "from_week", loc), item, f"'from_week' must be >= 0, got {start:g}")
            if until <= start:
                r.issue(r.at(body, "until_week", loc), item, f"'until_week' {until:g} must be after 'from_week' "
                        f"{start:g}", "leave 'until_week' out for a window to the end of follow-up")
            windows.append((start, every, until))
        if not windows and isinstance(doc.get("scans") or [], list):     # other values: reported by listed
            r.issue(r.loc(doc), "trial", "has no 'scans:' (tumour assessment windows)",
                    "e.g. scans: [{from_week: 0, every_weeks: 6, until_week: 48}, {from_week: 48, every_weeks: 9}]")
        return ScanSchedule(tuple(windows))

    def visits(self, doc: Mapping, scans: ScanSchedule) -> VisitTiming:
        """The `visits:` offsets around the scheduled scans, checked against the scan intervals."""
        r = self.r
        body = doc.get("visits")
        if body is None:
            return VisitTiming()
        if not isinstance(body, Mapping):
            r.issue(r.loc(doc, "visits"), "visits", "must be a mapping of " + ", ".join(VISIT_KEYS))
            return VisitTiming()
        r.check_keys(body, VISIT_KEYS, "visits")
        loc = r.loc(body)
        mean = r.number(body, "offset_mean_days", loc, "visits", 0.0)
        sd = r.number(body, "offset_sd_days", loc, "visits", 0.0)
        intervals = [every * DAYS_PER_WEEK for _, every, _ in scans.windows if every > 0]
        limit = min(intervals, default=math.inf) / 2 - 1.0
        if not sd >= 0:
            r.issue(loc, "visits", f"'offset_sd_days' must be >= 0, got {sd:g}")
        elif abs(mean) + 3 * sd > limit:
            r.issue(loc, "visits", f"offsets of {mean:g} +- 3 x {sd:g} days reach beyond +-{limit:g} days, "
                    "half the shortest scan interval less a day, where visits would swap order",
                    "offsets are small next to the scan interval: a protocol window is typically a week")
        return VisitTiming(mean, sd, limit, str(body.get("source", "")))

    def settings(self, doc: Mapping, key: str, cls: type, keys: tuple[str, ...]):
        body = doc.get(key) or {}
        if not isinstance(body, Mapping):
            self.r.issue(self.r.loc(doc, key), key, "must be a mapping of " + ", ".join(keys))
            return cls()
        self.r.check_keys(body, keys, key)
        loc = self.r.loc(body)
        values = {}
        for k in keys:
            if k in body:
                default = getattr(cls(), k)
                values[k] = (self.r.count(body, k, loc, key, default) if isinstance(default, int)
                             else self.r.number(body, k, loc, key))
        try:
            return cls(**values)
        except ValueError as exc:
            self.r.issue(loc, key, str(exc))
            return cls()
