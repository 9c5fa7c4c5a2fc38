"""Dosing regimens as data, and their translation into per-trajectory event arrays.

A regimen is a list of doses (bolus, or zero-order infusion over `duration`). Kernels see only
padded arrays of event times, target states, kinds and values (in state units), so any number of
patients with their own schedules share one compiled kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from numbers import Integral, Real
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import SimulationError
from ..spec.schema import MAX_DOSE_COUNT, RegimenSpec

BOLUS, INFUSION_RATE = 0, 1
AMOUNT_EXAMPLE = "a number >= 0 in the drug's amount unit, or an expression of parameters such as 'dose_per_kg*weight'"


def _number(value: Any, what: str) -> float:
    """`value` as a finite float; SimulationError naming `what` otherwise (bools are not numbers)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise SimulationError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise SimulationError(f"{what} must be a finite number, got {number}")
    return number


def _amount(amount: Any, where: str) -> float | str:
    """A dose amount: a finite number >= 0 (as float), or non-empty expression text."""
    if isinstance(amount, str):
        if not amount.strip():
            raise SimulationError(f"{where}: amount is empty; give {AMOUNT_EXAMPLE}")
        return amount
    if isinstance(amount, (bool, np.bool_)) or not isinstance(amount, Real):
        raise SimulationError(f"{where}: amount must be {AMOUNT_EXAMPLE}, got {amount!r}")
    value = _number(amount, f"{where}: amount")
    if value < 0:
        raise SimulationError(f"{where}: amount {value:g} is negative; give {AMOUNT_EXAMPLE}")
    return value


def _flag(value: Any, name: str, where: str) -> bool:
    """A True/False setting of a dose."""
    if not isinstance(value, (bool, np.bool_)):
        raise SimulationError(f"{where}: {name} must be True or False, got {value!r}")
    return bool(value)


def _dose_count(count: Any, drug: str) -> int:
    """A whole number of doses from 1 to MAX_DOSE_COUNT (3.0 counts as 3)."""
    whole = isinstance(count, Integral) or (isinstance(count, Real) and float(count).is_integer())
    if isinstance(count, (bool, np.bool_)) or not whole or not 1 <= count <= MAX_DOSE_COUNT:
        raise SimulationError(f"count of '{drug}' doses must be a whole number from 1 to {MAX_DOSE_COUNT}, "
                              f"got {count!r}")
    return int(count)


def _dose_tuple(doses: Any, name: str) -> tuple[Dose, ...]:
    """`doses` as a tuple sorted by time (stable): hashable, and equal for equal schedules."""
    if isinstance(doses, (Dose, str, Mapping)) or not isinstance(doses, Iterable):
        raise SimulationError(f"regimen '{name}': doses must be a tuple of Dose, got {type(doses).__name__}; "
                              "e.g. Regimen((Dose('drug', 0.0, 100.0),))")
    doses = tuple(doses)
    for i, dose in enumerate(doses):
        if not isinstance(dose, Dose):
            raise SimulationError(f"regimen '{name}': dose {i + 1} is a {type(dose).__name__}, not a Dose; "
                                  "write Dose(drug, time, amount)")
    return tuple(sorted(doses, key=lambda d: d.time))


@dataclass(frozen=True)
class Dose:
    """One administration at `time`; infusion if duration > 0.

    amount: in the drug's amount unit; a number, or an expression of the model's parameters
    (e.g. "Dose" or "dose_per_kg*weight") evaluated with each trajectory's parameters.
    until_progression: the dose is not given once a scan has shown progression (on or before
    its day); only meaningful in runs with scans (trials).
    until_confirmed_progression: the dose is given beyond progression and stops once a later
    scan has confirmed it (iRECIST; `numba_solvers.confirmed_progression`): treatment beyond
    progression. At most one of the two is set.
    """

    drug: str
    time: float
    amount: float | str
    duration: float = 0.0
    until_progression: bool = False
    until_confirmed_progression: bool = False

    def __post_init__(self):
        if not isinstance(self.drug, str) or not self.drug.strip():
            raise SimulationError(f"a dose's drug must be the name of one of the model's drugs, got {self.drug!r}")
        time = _number(self.time, f"time of a dose of '{self.drug}' (day)")
        where = f"dose of '{self.drug}' on day {time:g}"
        duration = _number(self.duration, f"{where}: duration")
        if duration < 0:
            raise SimulationError(f"{where}: duration {duration:g} is negative; give 0 for a bolus or the "
                                  "infusion's length in days")
        object.__setattr__(self, "time", time)
        object.__setattr__(self, "amount", _amount(self.amount, where))
        object.__setattr__(self, "duration", duration)
        for name in ("until_progression", "until_confirmed_progression"):
            object.__setattr__(self, name, _flag(getattr(self, name), name, where))
        if self.until_progression and self.until_confirmed_progression:
            raise SimulationError(f"{where}: set until_progression or until_confirmed_progression, not both")

    @property
    def stoppable(self) -> bool:
        """Whether a scan can stop this dose (progression, or its confirmation)."""
        return self.until_progression or self.until_confirmed_progression


@dataclass(frozen=True)
class Regimen:
    """A drug schedule: a tuple of `Dose`s sorted by time (days, the model's time unit). Any
    iterable of Doses is stored as that tuple, so equal schedules are equal and hashable."""

    doses: tuple[Dose, ...] = ()
    name: str = "custom"

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise SimulationError(f"a regimen's name must be text, got {self.name!r}")
        object.__setattr__(self, "doses", _dose_tuple(self.doses, self.name))

    @classmethod
    def none(cls) -> "Regimen":
        """No treatment."""
        return cls((), "untreated")

    @classmethod
    def repeated(cls, drug: str, amount: float | str, every: float | None = None, count: int = 1,
                 start: float = 0.0, duration: float = 0.0, name: str | None = None,
                 until_progression: bool = False, until_confirmed_progression: bool = False) -> "Regimen":
        """`count` doses of `amount` every `every` days from day `start` (infusion over `duration`),
        stopped by progression or by its confirmation in runs with scans (see `Dose`)."""
        first = Dose(drug, start, amount, duration, until_progression, until_confirmed_progression)
        count = _dose_count(count, first.drug)
        interval = _dosing_interval(every, count, first)
        doses = tuple(replace(first, time=first.time + k * interval) for k in range(count))
        return cls(doses, name or f"{first.drug} {first.amount} x{count}")

    @classmethod
    def from_spec(cls, spec: RegimenSpec) -> "Regimen":
        """The regimen of a spec's `regimens:` entry."""
        if not isinstance(spec, RegimenSpec):
            raise SimulationError(f"Regimen.from_spec takes a RegimenSpec (a value of spec.regimens), got "
                                  f"{type(spec).__name__}; for a regimen by name pass regimen='name' to simulate")
        out = cls.none()
        for item in spec.doses:
            out = out + cls.repeated(item.drug, item.amount, item.every, item.count, item.start, item.duration)
        return cls(out.doses, spec.name)

    def __add__(self, other: "Regimen") -> "Regimen":
        """Both schedules together (e.g. chemotherapy + antibody)."""
        if not isinstance(other, Regimen):
            raise SimulationError(f"a Regimen adds only another Regimen, got {type(other).__name__}; "
                                  "wrap a single dose as Regimen((dose,))")
        return Regimen(self.doses + other.doses, f"{self.name} + {other.name}")

    def describe(self) -> str:
        """'name (drug: n doses, days first-last; ...)'."""
        by_drug: dict[str, list[Dose]] = {}
        for d in self.doses:
            by_drug.setdefault(d.drug, []).append(d)
        parts = [f"{drug}: {len(ds)} doses, days {ds[0].time:g}-{ds[-1].time:g}" for drug, ds in by_drug.items()]
        return f"{self.name} ({'; '.join(parts) or 'no doses'})"


def _dosing_interval(every: Any, count: int, first: Dose) -> float:
    """The days between `count` doses like `first` (0 for a single dose without `every`)."""
    if every is None:
        if count > 1:
            raise SimulationError(f"{count} doses of '{first.drug}' need every > 0 (the dosing interval in days)")
        return 0.0
    what = f"every (the interval between doses of '{first.drug}', days)"
    interval = _number(every, what)
    if interval <= 0:
        raise SimulationError(f"{what} must be > 0, got {interval:g}")
    if count > 1 and interval < first.duration:
        raise SimulationError(f"infusions of '{first.drug}' over {first.duration:g} days overlap when given every "
                              f"{interval:g} days; durations are in days (30 minutes is 30/1440)")
    return interval


@dataclass(frozen=True)
class EventArrays:
    """Padded per-trajectory events, each (n_traj, n_events); padding has time +inf.

    guard: the start day of the dose an event belongs to if that dose is given only until
    progression, else -inf (the kernels skip events with guard >= the progression day).
    guard_confirmed: the same for doses given until confirmed progression (treatment beyond
    progression; skipped from the confirmation day on).
    """

    time: np.ndarray
    state: np.ndarray
    kind: np.ndarray
    value: np.ndarray
    guard: np.ndarray
    guard_confirmed: np.ndarray


def event_arrays(regimens: Sequence[Regimen], dose_factors: np.ndarray, drug_names: Sequence[str],
                 dose_states: Mapping[str, int],
                 amount_of: Callable[[str], np.ndarray] | None = None) -> EventArrays:
    """Events for each trajectory b: regimens[b] with amounts scaled by dose_factors[b, drug].

    dose_factors: (n_traj, n_drugs), the spec's conversion (e.g. 1/V1) per trajectory's parameters.
    amount_of: expression text -> its value per trajectory (n_traj,), for amounts given as text.
    Trajectories sharing a Regimen object are filled together (vectorised over the batch).
    """
    groups: dict[int, list[int]] = {}
    for b, regimen in enumerate(regimens):
        groups.setdefault(id(regimen), []).append(b)
    built = [(np.asarray(idx), _schedule(regimens[idx[0]], np.asarray(idx), dose_factors, list(drug_names),
                                         dose_states, amount_of)) for idx in groups.values()]
    width = max([len(times) for _, (times, *_rest) in built] + [1])
    n_traj = len(regimens)
    out = EventArrays(np.full((n_traj, width), np.inf), np.zeros((n_traj, width), np.int64),
                      np.zeros((n_traj, width), np.int64), np.zeros((n_traj, width)),
                      np.full((n_traj, width), -np.inf), np.full((n_traj, width), -np.inf))
    for idx, (times, states, kinds, values, guards, confirmed) in built:
        m = len(times)
        out.time[idx, :m] = times
        out.state[idx, :m] = states
        out.kind[idx, :m] = kinds
        out.value[idx, :m] = values
        out.guard[idx, :m] = guards
        out.guard_confirmed[idx, :m] = confirmed
    return out


def _schedule(regimen: Regimen, idx: np.ndarray, factors: np.ndarray, drug_names: list[str],
              dose_states: Mapping[str, int], amount_of: Callable[[str], np.ndarray] | None):
    """One regimen's events, time-sorted: times (m,), states (m,), kinds (m,), values
    (len(idx), m), guards (m,), confirmed-progression guards (m,)."""
    rows: list[tuple[float, int, int, np.ndarray, float, float]] = []
    checked: set[str] = set()
    for dose in regimen.doses:
        if dose.drug not in drug_names:
            known = ", ".join(drug_names) or "none"
            raise SimulationError(f"regimen '{regimen.name}' doses unknown drug '{dose.drug}' (this model's "
                                  f"drugs: {known}); declare it under 'doses:' in the spec")
        given = _given(regimen, dose, idx, amount_of, checked)
        amount = given * factors[idx, drug_names.index(dose.drug)]
        state = dose_states[dose.drug]
        guards = (dose.time if dose.until_progression else -np.inf,
                  dose.time if dose.until_confirmed_progression else -np.inf)
        if dose.duration > 0:
            rows.append((dose.time, state, INFUSION_RATE, amount / dose.duration, *guards))
            rows.append((dose.time + dose.duration, state, INFUSION_RATE, -amount / dose.duration, *guards))
        else:
            rows.append((dose.time, state, BOLUS, amount, *guards))
    rows.sort(key=lambda row: row[0])
    values = np.stack([row[3] for row in rows], axis=1) if rows else np.zeros((len(idx), 0))
    return (np.array([row[0] for row in rows], dtype=float), np.array([row[1] for row in rows], dtype=np.int64),
            np.array([row[2] for row in rows], dtype=np.int64), values, np.array([row[4] for row in rows]),
            np.array([row[5] for row in rows]))


def _given(regimen: Regimen, dose: Dose, idx: np.ndarray, amount_of: Callable[[str], np.ndarray] | None,
           checked: set[str]) -> np.ndarray | float:
    """The amount of `dose` for trajectories idx; an expression is evaluated, and checked to be
    finite and >= 0 once per text (`checked`)."""
    if not isinstance(dose.amount, str):
        return dose.amount
    if amount_of is None:
        raise SimulationError(f"regimen '{regimen.name}': the amount of '{dose.drug}' is the expression "
                              f"'{dose.amount}'; event_arrays needs amount_of to evaluate it")
    given = amount_of(dose.amount)[idx]
    if dose.amount not in checked:
        bad = np.flatnonzero(~((given >= 0) & (given < np.inf)))
        if bad.size:
            raise SimulationError(
                f"regimen '{regimen.name}': the amount '{dose.amount}' of '{dose.drug}' is {given[bad[0]]:g} in "
                f"{bad.size} of {given.size} runs (first: run {idx[bad[0]]}); a dose amount must be a finite "
                "number >= 0: check the expression and the parameters it uses")
        checked.add(dose.amount)
    return given
