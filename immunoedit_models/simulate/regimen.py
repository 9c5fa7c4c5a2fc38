"""Dosing regimens as data, and their translation into per-trajectory event arrays.

A regimen is a list of doses (bolus, or zero-order infusion over `duration`). Kernels see only
padded arrays of event times, target states, kinds and values (in state units), so any number of
patients with their own schedules share one compiled kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import SimulationError
from ..spec.schema import RegimenSpec

BOLUS, INFUSION_RATE = 0, 1


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
        if self.until_progression and self.until_confirmed_progression:
            raise SimulationError(f"dose of '{self.drug}' on day {self.time:g}: set until_progression or "
                                  "until_confirmed_progression, not both")

    @property
    def stoppable(self) -> bool:
        """Whether a scan can stop this dose (progression, or its confirmation)."""
        return self.until_progression or self.until_confirmed_progression


@dataclass(frozen=True)
class Regimen:
    """A drug schedule: an ordered tuple of `Dose`s (times in the model's time unit, days)."""

    doses: tuple[Dose, ...] = ()
    name: str = "custom"

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
        if count > 1 and not (every and every > 0):
            raise SimulationError(f"{count} doses of '{drug}' need every > 0 (the dosing interval in days)")
        amount = amount if isinstance(amount, str) else float(amount)
        doses = tuple(Dose(drug, start + k * (every or 0.0), amount, duration, until_progression,
                           until_confirmed_progression) for k in range(count))
        return cls(doses, name or f"{drug} {amount} x{count}")

    @classmethod
    def from_spec(cls, spec: RegimenSpec) -> "Regimen":
        """The regimen of a spec's `regimens:` entry."""
        out = cls.none()
        for item in spec.doses:
            out = out + cls.repeated(item.drug, item.amount, item.every, item.count, item.start, item.duration)
        return cls(out.doses, spec.name)

    def __add__(self, other: "Regimen") -> "Regimen":
        """Both schedules together (e.g. chemotherapy + antibody)."""
        return Regimen(tuple(sorted(self.doses + other.doses, key=lambda d: d.time)),
                       f"{self.name} + {other.name}")

    def describe(self) -> str:
        by_drug: dict[str, list[Dose]] = {}
        for d in self.doses:
            by_drug.setdefault(d.drug, []).append(d)
        parts = [f"{drug}: {len(ds)} doses, days {ds[0].time:g}-{ds[-1].time:g}" for drug, ds in by_drug.items()]
        return f"{self.name} ({'; '.join(parts) or 'no doses'})"


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
    for dose in regimen.doses:
        if dose.drug not in drug_names:
            known = ", ".join(drug_names) or "none"
            raise SimulationError(f"regimen '{regimen.name}' doses unknown drug '{dose.drug}' (this model's "
                                  f"drugs: {known}); declare it under 'doses:' in the spec")
        given = amount_of(dose.amount)[idx] if isinstance(dose.amount, str) else float(dose.amount)
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
