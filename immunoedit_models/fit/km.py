"""Kaplan–Meier helpers and a Guyot-type reconstruction of individual patient data.

`reconstruct_ipd` rebuilds pseudo individual patient data (time, event) from a digitised
Kaplan–Meier curve and the numbers at risk printed under it, following the algorithm of
Guyot P, Ades AE, Ouwens MJNM, Welton NJ. Enhanced secondary analysis of survival data:
reconstructing the data from published Kaplan-Meier survival curves. BMC Med Res Methodol
2012;12:9. Written here from the paper's description (no code copied): within each interval of the
at-risk table, censoring times are spread evenly and their number is adjusted until the
reconstructed number at risk at the next table time matches the published one; events at each
digitised point follow from the drop in the curve relative to the reconstructed KM estimate.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter

from ..errors import SurvivalDataError
from ..trials.analysis import cox_hazard_ratio as trial_cox_hazard_ratio

_MAX_ADJUST = 200  # censoring-count adjustments per interval before accepting the closest
_DIGITISING_NOISE = 0.02  # a digitised survival may exceed 1 or rise over an earlier point by this much


def _vector(values, what: str, name: str) -> np.ndarray:
    """values as a 1-D float array; SurvivalDataError if they are not numbers in one dimension."""
    try:
        out = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise SurvivalDataError(f"{what}: {name} must be numbers, got {values!r}") from None
    if out.ndim != 1:
        raise SurvivalDataError(f"{what}: {name} must be a 1-D array, got shape {out.shape}")
    return out


def _times(time, what: str, name: str = "times",
           hint: str = "months since randomisation; drop patients without a time first") -> np.ndarray:
    """Times as a 1-D array: at least one, each finite and >= 0 (SurvivalDataError otherwise)."""
    t = _vector(time, what, name)
    if t.size == 0:
        raise SurvivalDataError(f"{what}: {name} is empty: no patients or points to work with")
    bad = ~(np.isfinite(t) & (t >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise SurvivalDataError(f"{what}: {name} must be finite and >= 0 ({hint}); got {t[i]:g} at position {i}")
    return t


def _outcomes(time, event, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(times, 0/1 events) of one group, checked: same length, times finite >= 0, events 0 or 1."""
    t, e = _times(time, what), _vector(event, what, "events")
    if e.shape != t.shape:
        raise SurvivalDataError(f"{what}: times and events differ in length ({t.size} and {e.size}): one event flag "
                       "per patient")
    bad = (e != 0) & (e != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise SurvivalDataError(f"{what}: events must be 0 (censored) or 1 (event); got {e[i]:g} at position {i}")
    return t, e.astype(int)


def kaplan_meier(time, event) -> KaplanMeierFitter:
    """A fitted lifelines KaplanMeierFitter; SurvivalDataError for times < 0 or not finite, events not 0/1,
    lengths that differ or no patients."""
    return KaplanMeierFitter().fit(*_outcomes(time, event, "kaplan_meier"))


def km_median(time, event) -> float:
    """KM median (inf when the curve stays above 0.5)."""
    return float(kaplan_meier(time, event).median_survival_time_)


def km_survival(time, event, at: Sequence[float]) -> np.ndarray:
    """KM survival probability at the times `at`."""
    at = _vector(np.atleast_1d(at), "km_survival", "at")
    if not np.all(np.isfinite(at) & (at >= 0)):
        raise SurvivalDataError(f"km_survival: the times 'at' must be finite and >= 0, got {at.tolist()}")
    return np.asarray(kaplan_meier(time, event).survival_function_at_times(at), float)


def km_curve(time, event) -> tuple[np.ndarray, np.ndarray]:
    """The KM curve as a digitiser would click it: (times, S) at 0, at every step (distinct event
    time) and at the end of follow-up (where the plotted curve ends)."""
    sf = kaplan_meier(time, event).survival_function_
    t, s = sf.index.to_numpy(float), sf.iloc[:, 0].to_numpy(float)
    keep = np.r_[True, np.diff(s) != 0]
    keep[-1] = True
    return t[keep], s[keep]


def numbers_at_risk(time, at: Sequence[float]) -> np.ndarray:
    """Subjects still at risk (time >= t) at each t in `at`, as printed under KM plots."""
    time = np.sort(_times(time, "numbers_at_risk"))
    at = _vector(at, "numbers_at_risk", "at")
    if not np.all(np.isfinite(at)):
        raise SurvivalDataError(f"numbers_at_risk: the times 'at' must be finite, got {at.tolist()}")
    return time.size - np.searchsorted(time, at, side="left")


def cox_hazard_ratio(time_a, event_a, time_b, event_b) -> tuple[float, float, float]:
    """Cox HR of group a vs group b with its 95 % CI (Efron ties; NaN if a group has no event)."""
    (ta, ea), (tb, eb) = (_outcomes(time_a, event_a, "cox_hazard_ratio (group a)"),
                          _outcomes(time_b, event_b, "cox_hazard_ratio (group b)"))
    return trial_cox_hazard_ratio(np.r_[ta, tb], np.r_[ea, eb], np.r_[np.ones(ta.size, bool), np.zeros(tb.size, bool)])


# ---- Guyot reconstruction ----------------------------------------------------------------------
def _digitised_curve(t, s) -> tuple[np.ndarray, np.ndarray]:
    """The digitised points sorted by time (a step's top before its bottom), checked: times >= 0,
    survival a fraction in [0, 1] that never rises by more than digitising noise."""
    what = "reconstruct_ipd"
    t, s = _times(t, what, "curve_time", "the digitised times, from 0"), _vector(s, what, "curve_survival")
    if s.shape != t.shape:
        raise SurvivalDataError(f"{what}: curve_time and curve_survival differ in length ({t.size} and {s.size}): one "
                       "survival value per digitised point")
    if not np.all(np.isfinite(s) & (s >= 0)):
        raise SurvivalDataError(f"{what}: curve_survival must be finite and >= 0, got {s[~(np.isfinite(s) & (s >= 0))][0]:g}")
    if s.max() > 1 + _DIGITISING_NOISE:
        raise SurvivalDataError(f"{what}: curve_survival reaches {s.max():g}; survival is a fraction in [0, 1] "
                       "(divide percentages by 100)")
    order = np.lexsort((-s, t))
    t, s = t[order], s[order]
    rise = s - np.minimum.accumulate(s)
    if rise.max() > _DIGITISING_NOISE:
        k = int(np.argmax(rise))
        raise SurvivalDataError(f"{what}: the curve rises by {rise[k]:.3g} to {s[k]:g} at time {t[k]:g}; a KM curve never "
                       "rises: check that the points belong to one curve and that times and survival are paired")
    return t, s


def _check_risk_table(risk_time: np.ndarray, risk_n: np.ndarray, total_events: int | None) -> None:
    """SurvivalDataError unless the at-risk table starts at 0 with some patients, times increase, counts are
    whole numbers that never increase, and total_events is a count no larger than the patients."""
    what = "reconstruct_ipd"
    if risk_n.shape != risk_time.shape:
        raise SurvivalDataError(f"{what}: risk_time and risk_n differ in length ({risk_time.size} and {risk_n.size}): one "
                       "number at risk per time")
    if risk_time.size < 1 or risk_time[0] != 0 or not np.all(np.diff(risk_time) > 0) or np.any(np.diff(risk_n) > 0):
        raise SurvivalDataError("the at-risk table must start at time 0 with increasing times and non-increasing "
                       "numbers at risk")
    if not np.all(np.isfinite(risk_n) & (risk_n == np.round(risk_n)) & (risk_n >= 0)) or risk_n[0] < 1:
        raise SurvivalDataError(f"{what}: the numbers at risk must be whole numbers >= 0 with at least 1 patient at time 0, "
                       f"got {risk_n.tolist()}")
    if total_events is not None and not (isinstance(total_events, (int, np.integer)) and 0 <= total_events <= risk_n[0]):
        raise SurvivalDataError(f"{what}: total_events must be a whole number from 0 to the {int(risk_n[0])} patients at "
                       f"risk at time 0, got {total_events!r}")


def _check_curve_against_table(T: np.ndarray, S: np.ndarray, risk_time: np.ndarray, risk_n: np.ndarray) -> None:
    """SurvivalDataError where patients are still at risk after the curve has reached 0 (nobody is left)."""
    s_at = S[np.searchsorted(T, risk_time, side="right") - 1]
    late = (s_at <= 0) & (risk_n > 0)
    if late.any():
        k = int(np.argmax(late))
        raise SurvivalDataError(f"reconstruct_ipd: the curve has reached 0 by time {risk_time[k]:g}, where the at-risk "
                       f"table still has {int(risk_n[k])} patients: the curve and the table do not match "
                       "(same arm? same time unit?)")


def _clean_curve(t, s, risk_t) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, monotone curve starting at (0, 1), with a point at every at-risk time."""
    t, s = _digitised_curve(t, s)
    s = np.minimum.accumulate(np.minimum(s, 1.0))  # digitising noise: force non-increasing
    t, s = np.r_[0.0, t[t > 0]], np.r_[1.0, s[t > 0]]
    extra = [r for r in risk_t if r <= t[-1] and not np.any(np.isclose(t, r))]
    if extra:  # the step value at a risk time is the last digitised value at or before it
        s_extra = s[np.searchsorted(t, extra, side="right") - 1]
        t, s = np.r_[t, extra], np.r_[s, s_extra]
        order = np.argsort(t, kind="stable")
        t, s = t[order], s[order]
    return t, s


def _interval(T, S, k_idx, t_to, n_start, n_censor, km):
    """One pass over the points k_idx of an interval, with n_censor censorings spread evenly
    between its first point and t_to.

    Events at point k: round(n_at * (1 - S_k / KM_last)), KM_last being the reconstructed KM at the
    last event (Guyot et al.). Returns (events per point, censoring times, number at risk after
    the interval, reconstructed KM after the interval)."""
    t_from = T[k_idx[0]]
    cen_t = t_from + np.arange(1, n_censor + 1) * (t_to - t_from) / (n_censor + 1)
    ends = np.r_[T[k_idx[1:]], np.inf]
    d = np.zeros(len(k_idx), dtype=int)
    censored: list[np.ndarray] = []
    n_at = n_start
    for j, (k, end) in enumerate(zip(k_idx, ends)):
        if n_at > 0 and km > 0:
            d[j] = int(np.clip(round(n_at * (1 - S[k] / km)), 0, n_at))
            km *= 1 - d[j] / n_at
        here = cen_t[(cen_t >= T[k]) & (cen_t < end)][:n_at - d[j]]
        censored.append(here)
        n_at -= d[j] + len(here)
    return d, np.concatenate(censored), n_at, km


def reconstruct_ipd(curve_time, curve_survival, risk_time, risk_n, total_events: int | None = None) -> pd.DataFrame:
    """Pseudo-IPD (columns time, event) from a digitised KM curve and its at-risk table.

    curve_time, curve_survival: digitised coordinates of the curve (survival as a fraction; the
        corners of the steps are what Guyot et al. ask the digitiser to click).
    risk_time, risk_n: the numbers at risk at the times printed under the plot (first at 0).
    total_events: the reported number of events, if known; it fixes the censoring of the last
        interval (otherwise censoring continues at the average rate of the earlier intervals).
    """
    risk_time = _times(risk_time, "reconstruct_ipd", "risk_time", "the times printed under the plot, from 0")
    risk_n = _vector(risk_n, "reconstruct_ipd", "risk_n")
    _check_risk_table(risk_time, risk_n, total_events)
    T, S = _clean_curve(curve_time, curve_survival, risk_time)
    _check_curve_against_table(T, S, risk_time, risk_n)
    risk_time, risk_n = risk_time[risk_time <= T[-1]], risk_n[risk_time <= T[-1]].astype(int)
    first = np.searchsorted(T, risk_time)  # the point at each risk time (inserted by _clean_curve)
    events = np.zeros(len(T), dtype=int)
    censor_times: list[np.ndarray] = []
    n_at, km = int(risk_n[0]), 1.0
    n_intervals = len(risk_time)
    censored_so_far = 0
    for i in range(n_intervals):
        last = i == n_intervals - 1
        k_idx = np.arange(first[i], first[i + 1] if not last else len(T))
        next_k = None if last else first[i + 1]
        if not last:
            target = int(risk_n[i + 1])
            guess = round(n_at * S[next_k] / S[k_idx[0]] - target) if S[k_idx[0]] > 0 else 0
        else:
            span = risk_time[-1] - risk_time[0]
            rate = censored_so_far / span if span > 0 else 0.0
            guess = round(rate * (T[-1] - risk_time[-1]))
        n_censor = int(np.clip(guess, 0, n_at))
        t_to = T[next_k] if next_k is not None else T[-1]
        best = None
        for _ in range(_MAX_ADJUST):
            d, cen_t, n_after, km_after = _interval(T, S, k_idx, t_to, n_at, n_censor, km)
            if not last:  # too many left at risk at the next table time -> more censoring
                excess = n_after - target
            elif total_events is not None:  # too many events in all -> more censoring
                excess = int(events.sum() + d.sum() - total_events)
            else:
                excess = 0
            if best is None or abs(excess) < abs(best[0]):
                best = (excess, d, cen_t, n_after, km_after)
            new = int(np.clip(n_censor + excess, 0, n_at))
            if excess == 0 or new == n_censor:
                break
            n_censor = new
        _, d, cen_t, n_after, km_after = best
        events[k_idx] = d
        censor_times.append(cen_t)
        censored_so_far += len(cen_t)
        n_at, km = int(n_after), km_after
    times = np.repeat(T, events)
    cens = np.concatenate(censor_times + [np.full(n_at, T[-1])])
    out = pd.DataFrame({"time": np.r_[times, cens], "event": np.r_[np.ones(len(times), int), np.zeros(len(cens), int)]})
    return out.sort_values(["time", "event"], ascending=[True, False], ignore_index=True)
