"""Typed errors. Every message says what is wrong, where, and the usual fix."""

from __future__ import annotations

from dataclasses import dataclass


class ImmunoeditError(Exception):
    """Base class of every error this package raises on purpose."""


@dataclass(frozen=True)
class Issue:
    """One problem found in a spec: where it is, which item, what is wrong, and a hint."""

    file: str
    line: int | None
    item: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        text = f"{where}: {self.item}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class SpecError(ImmunoeditError, ValueError):
    """A spec is invalid; `issues` lists every problem found (validation collects them all).
    `what` names the kind of file: a model spec or a trial design."""

    def __init__(self, issues: list[Issue] | Issue, what: str = "model spec"):
        self.issues: list[Issue] = [issues] if isinstance(issues, Issue) else list(issues)
        n = len(self.issues)
        head = f"{n} problem{'s' if n != 1 else ''} in {what}:"
        super().__init__("\n".join([head, *(f"  {issue}" for issue in self.issues)]))


class CompileError(ImmunoeditError):
    """A valid spec could not be turned into kernels for a backend."""


class BackendUnavailable(ImmunoeditError, ImportError):
    """The requested backend's libraries are not installed or not usable here."""


class SimulationError(ImmunoeditError, RuntimeError):
    """A simulation request is inconsistent (bad times, unknown parameter, wrong shapes)."""


class ResultError(ImmunoeditError, ValueError):
    """A result cannot be written or read as asked (format, an existing path, an unreadable file)."""


class FitError(ImmunoeditError):
    """A fitting problem is ill-posed or an optimiser failed."""


class SurvivalDataError(FitError, ValueError):
    """Survival times and events, or a digitised KM curve, cannot be analysed (negative or NaN
    times, events not 0/1, lengths that differ, no patients). A ValueError too, so that a fit
    rejects a simulated trial that produced such data as a bad point instead of stopping."""
