"""Visit timing: tumour assessments happen around their scheduled days, not on them.

A protocol schedules scans (e.g. every 6 weeks) and allows a window around each; real visits
spread over it. A trial's PFS events are dated at the visit that shows progression, so its
Kaplan-Meier steps, and its medians, fall near the scheduled days rather than on them.
`VisitTiming` draws each patient's visit days; `fit_visit_offsets` estimates its offsets from
event times (e.g. reconstructed individual patient data) near the scheduled days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from ..errors import FitError, SimulationError


@dataclass(frozen=True)
class VisitTiming:
    """When the assessments really happen: each visit after baseline on its scheduled scan day
    plus an offset in days, drawn per patient and visit from normal(offset_mean_days,
    offset_sd_days) and clipped to +-limit_days, at most half the shortest scan interval less a
    day, so visits keep their order. The default (0, 0) puts every visit on its scheduled day.
    """

    offset_mean_days: float = 0.0
    offset_sd_days: float = 0.0
    limit_days: float = math.inf
    source: str = ""

    @property
    def on_schedule(self) -> bool:
        return self.offset_mean_days == 0.0 and self.offset_sd_days == 0.0

    def describe(self) -> str:
        if self.on_schedule:
            return "on the scheduled scan days"
        return (f"scheduled day + normal({self.offset_mean_days:g}, {self.offset_sd_days:g}) days, "
                f"clipped to +-{self.limit_days:g}")

    def days(self, scan_day: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Visit days (*shape, n_scan) from the scheduled scan_day (n_scan,), baseline first."""
        self.check(scan_day, rng)
        offset = rng.normal(self.offset_mean_days, self.offset_sd_days, size=(*shape, len(scan_day) - 1))
        limit = max(0.0, min(self.limit_days, np.min(np.diff(scan_day), initial=np.inf) / 2 - 1.0))
        offset = np.clip(offset, -limit, limit)
        return scan_day + np.concatenate([np.zeros((*shape, 1)), offset], axis=-1)


    def check(self, scan_day: np.ndarray, rng: np.random.Generator) -> None:
        """SimulationError unless the offsets are finite (sd >= 0, limit > 0), scan_day a 1-D
        increasing array of finite days and rng a numpy Generator."""
        if not (math.isfinite(self.offset_mean_days) and math.isfinite(self.offset_sd_days)
                and self.offset_sd_days >= 0 and self.limit_days > 0):
            raise SimulationError(f"visit offsets need a finite mean, an sd >= 0 and a limit > 0 days, got "
                                  f"mean {self.offset_mean_days:g}, sd {self.offset_sd_days:g}, limit {self.limit_days:g}")
        days = np.asarray(scan_day, dtype=float)
        if days.ndim != 1 or days.size == 0 or not np.all(np.isfinite(days)) or np.any(np.diff(days) <= 0):
            raise SimulationError(f"scan_day must be the scheduled scan days in increasing order, baseline first, "
                                  f"got {np.asarray(scan_day).tolist()!r}")
        if not isinstance(rng, np.random.Generator):
            raise SimulationError(f"rng must be a numpy Generator, e.g. np.random.default_rng(0), got {type(rng).__name__}")


@dataclass(frozen=True)
class VisitOffsetFit:
    """Maximum-likelihood visit offsets: normal(mean_days, sd_days) for the share `weight` of the
    n_events events within +-half_width_days of a scheduled scan; the rest uniform (events between
    visits: deaths, unscheduled scans)."""

    mean_days: float
    sd_days: float
    weight: float
    n_events: int
    half_width_days: float


def fit_visit_offsets(event_day: np.ndarray, scan_day: np.ndarray,
                      half_width_days: float = 21.0) -> VisitOffsetFit:
    """Estimate visit offsets from event days (n,) and the scheduled scan days (n_scan,).

    Each event's offset from its nearest scheduled scan, for offsets within +-half_width_days, is
    modelled as a mixture: w normal(mu, sd) truncated to the window, plus (1 - w) uniform over it.
    A hand-written three-parameter likelihood (scipy has no mixture of a truncated normal and a
    uniform); maximised with scipy's Nelder-Mead from a grid of starts.
    """
    event_day, scan_day = _offset_inputs(event_day, scan_day, half_width_days)
    nearest = scan_day[np.abs(event_day[:, None] - scan_day[None, :]).argmin(axis=1)]
    offset = (event_day - nearest)[np.abs(event_day - nearest) <= half_width_days]
    if offset.size < 10:
        raise FitError(f"fit_visit_offsets: {offset.size} events lie within {half_width_days:g} days of "
                       "a scheduled scan; at least 10 are needed (pass event days, not months)")
    h = half_width_days

    def nll(x: np.ndarray) -> float:
        mu, sd, w = x[0], math.exp(x[1]), 1.0 / (1.0 + math.exp(-x[2]))
        mass = stats.norm.cdf(h, mu, sd) - stats.norm.cdf(-h, mu, sd)
        density = w * stats.norm.pdf(offset, mu, sd) / mass + (1.0 - w) / (2.0 * h)
        return -float(np.sum(np.log(density)))

    starts = [np.array([mu, math.log(sd), 0.0]) for mu in (-h / 4, 0.0, h / 4) for sd in (h / 8, h / 3)]
    best = min((optimize.minimize(nll, x0, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9,
                                                                            "maxiter": 4000})
                for x0 in starts), key=lambda r: r.fun)
    mu, log_sd, logit_w = best.x
    return VisitOffsetFit(float(mu), float(math.exp(log_sd)), float(1.0 / (1.0 + math.exp(-logit_w))),
                          int(offset.size), float(h))


def _offset_inputs(event_day, scan_day, half_width_days: float) -> tuple[np.ndarray, np.ndarray]:
    """(event days, scan days) as float arrays; FitError unless event days are finite and >= 0,
    scans increase, the window is at most half the shortest scan interval and the events are days
    (most of them nearer a later visit than the baseline scan; months would not be)."""
    try:
        events, scans = np.asarray(event_day, dtype=float), np.asarray(scan_day, dtype=float)
    except (TypeError, ValueError):
        raise FitError("fit_visit_offsets: event_day and scan_day must be numbers (days)") from None
    if events.ndim != 1 or not np.all(np.isfinite(events) & (events >= 0)):
        raise FitError("fit_visit_offsets: event_day must be a 1-D array of finite days >= 0 (one per event; drop "
                       "patients without an event)")
    if scans.ndim != 1 or scans.size < 2 or not np.all(np.isfinite(scans)) or np.any(np.diff(scans) <= 0):
        raise FitError("fit_visit_offsets: scan_day must list at least 2 scheduled scan days in increasing order, "
                       "baseline first")
    widest = np.diff(scans).min() / 2
    if not (isinstance(half_width_days, (int, float, np.number)) and 0 < half_width_days <= widest):
        raise FitError(f"fit_visit_offsets: half_width_days must lie in (0, {widest:g}], half the shortest scan "
                       f"interval (wider windows overlap the next visit's), got {half_width_days!r}")
    if np.mean(events < (scans[0] + scans[1]) / 2) > 0.5:
        raise FitError(f"fit_visit_offsets: most event days lie before day {(scans[0] + scans[1]) / 2:g}, nearer the "
                       "baseline scan than any later visit: pass event days, not months")
    return events, scans
