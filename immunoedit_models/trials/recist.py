"""RECIST 1.1 response readouts from the sum of longest diameters (SLD) at scan visits.

Reference: Eisenhauer EA et al. New response evaluation criteria in solid tumours: revised RECIST
guideline (version 1.1). Eur J Cancer 2009;45:228-247. Target lesions only (a mechanistic model has
no non-target or new lesions), so each visit's response follows from the SLD alone:

- PD: SLD >= (1 + pd_rel) x nadir AND SLD - nadir >= pd_abs_mm (20 % and 5 mm above the smallest
  sum so far, baseline included). Checked first: a visit that meets it is PD whatever else holds.
- CR: SLD <= cr_mm (all target lesions gone). A continuous model never reaches exactly 0 mm, so a
  visit counts as CR when the whole sum is at most cr_mm, default 5 mm: then every lesion is below
  5 mm, the size RECIST 1.1 assigns to a lesion "too small to measure" (Eisenhauer 2009), i.e. it
  can no longer be measured on 5 mm CT slices and is read as disappeared.
- PR: SLD <= (1 - pr_rel) x baseline (at least 30 % below baseline).
- SD: every other evaluated visit.

Every function works on arrays with any leading batch dimensions (e.g. `(arm, patient, scan)`);
the last axis is the scan axis; the first scan is the baseline. Scan days are shared, (n_scan,),
or each patient's own visit days, (..., n_scan) like the sums. NaN marks a visit that did not
happen (after death or after the data cut-off) and is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the one PD rule and its iRECIST confirmation, shared with the kernels
from immunoedit_models.compile.numba_solvers import confirmed_progression, progression
from immunoedit_models.errors import SimulationError

#: RECIST 1.1 thresholds (Eisenhauer 2009): PD 20 % and 5 mm above nadir; PR 30 % below baseline.
PD_REL = 0.20
PD_ABS_MM = 5.0
PR_REL = 0.30
#: SLD (mm) at or below which a visit is a complete response; see the module docstring.
CR_MM = 5.0
#: iRECIST (Seymour L et al. Lancet Oncol 2017;18:e143-e152): a progression (iUPD) is confirmed
#: (iCPD) at a later assessment whose sum of target diameters has grown by >= 5 mm over iUPD's.
CPD_ABS_MM = 5.0

#: Per-visit and best-response codes, ordered from worst to best (NE: not evaluable / no visit).
NE, PD, SD, PR, CR = 0, 1, 2, 3, 4
RESPONSE_LABELS = np.array(["NE", "PD", "SD", "PR", "CR"])


@dataclass(frozen=True)
class RecistCriteria:
    """Thresholds and the best-overall-response rules.

    pd_rel, pd_abs_mm, pr_rel, cr_mm: see the module docstring.
    confirm_days: None (default) takes CR/PR at face value, as RECIST 1.1 allows in randomised
        trials; a number requires a CR (PR) to be followed by a CR (PR or CR) at a visit at least
        this many days later (RECIST 1.1: 28 days) and before PD; unconfirmed responses count as SD.
    sd_min_days: best response SD needs an SD-or-better visit at least this many days after study
        entry (day 0); RECIST 1.1 leaves it to the protocol (commonly 6-8 weeks). Default 42 days.
    cpd_abs_mm: the growth over the SLD at progression that confirms it (`confirmation_day`),
        which ends treatment beyond progression; iRECIST: 5 mm.
    """

    pd_rel: float = PD_REL
    pd_abs_mm: float = PD_ABS_MM
    pr_rel: float = PR_REL
    cr_mm: float = CR_MM
    confirm_days: float | None = None
    sd_min_days: float = 42.0
    cpd_abs_mm: float = CPD_ABS_MM

    def __post_init__(self):
        problems = [f"{name} = {getattr(self, name)} must be >= 0" for name in
                    ("pd_rel", "pd_abs_mm", "cr_mm", "sd_min_days", "cpd_abs_mm")
                    if not getattr(self, name) >= 0]
        if not 0 < self.pr_rel < 1:
            problems.append(f"pr_rel = {self.pr_rel} must lie in (0, 1) (RECIST 1.1: 0.30)")
        if self.confirm_days is not None and not self.confirm_days > 0:
            problems.append(f"confirm_days = {self.confirm_days} must be > 0 or None (RECIST 1.1: 28)")
        if problems:
            raise ValueError("invalid RECIST criteria: " + "; ".join(problems))


@dataclass(frozen=True)
class RecistReadout:
    """Per-patient RECIST readout; `...` are the batch dimensions of the input SLD."""

    response: np.ndarray         # (..., n_scan) int8 visit codes NE/PD/SD/PR/CR (baseline: NE)
    pct_change: np.ndarray       # (..., n_scan) % change of SLD from baseline
    nadir: np.ndarray            # (..., n_scan) mm, smallest SLD before each visit (NaN at baseline)
    pd_index: np.ndarray         # (...,) int, index of the first PD visit, -1 if none
    pd_day: np.ndarray           # (...,) day of the first PD visit, NaN if none
    best_response: np.ndarray    # (...,) str "CR" "PR" "SD" "PD" "NE"
    best_pct_change: np.ndarray  # (...,) % change, smallest over post-baseline visits up to first PD

    @property
    def responder(self) -> np.ndarray:
        """(...,) bool: best overall response CR or PR."""
        return np.isin(self.best_response, ("CR", "PR"))


def running_nadir(sld: np.ndarray) -> np.ndarray:
    """(..., n_scan) smallest SLD over the visits before each visit (baseline included), NaN at s=0."""
    sld = np.asarray(sld, dtype=float)
    nadir = np.full_like(sld, np.nan)
    nadir[..., 1:] = np.fmin.accumulate(sld, axis=-1)[..., :-1]  # fmin skips missed (NaN) visits
    return nadir


def visit_responses(sld: np.ndarray, criteria: RecistCriteria = RecistCriteria()) -> np.ndarray:
    """(..., n_scan) int8 response code of every visit (NE at baseline and at missed visits)."""
    sld = np.asarray(sld, dtype=float)
    baseline = sld[..., :1]
    is_pd = progression(sld, running_nadir(sld), criteria.pd_rel, criteria.pd_abs_mm)
    code = np.select(
        [~np.isfinite(sld), is_pd, sld <= criteria.cr_mm, sld <= (1.0 - criteria.pr_rel) * baseline],
        [NE, PD, CR, PR], default=SD).astype(np.int8)
    code[..., 0] = NE
    return code


def first_progression(response: np.ndarray) -> np.ndarray:
    """(...,) index of the first PD visit, -1 when there is none."""
    is_pd = response == PD
    return np.where(is_pd.any(axis=-1), is_pd.argmax(axis=-1), -1)


def assess(sld, scan_day, criteria: RecistCriteria = RecistCriteria()) -> RecistReadout:
    """RECIST 1.1 readout of SLD (..., n_scan) in mm at scan days (n_scan,) or (..., n_scan), first
    scan = baseline.

    Only visits up to and including the first PD count for the best overall response and for
    `best_pct_change` (as on a trial's waterfall plot: a patient whose first visit is PD shows that
    visit's increase). Patients with a missing baseline are not evaluable (NE, NaN).
    """
    sld, day = _checked(sld, scan_day)
    n_scan = sld.shape[-1]
    idx = np.arange(n_scan)
    response = visit_responses(sld, criteria)
    pd_index = first_progression(response)
    stop = np.where(pd_index >= 0, pd_index, n_scan - 1)[..., None]
    counted = (idx >= 1) & (idx <= stop) & (response != NE)     # evaluated visits up to first PD

    baseline = sld[..., :1]
    pct_change = 100.0 * (sld - baseline) / baseline
    best_pct = np.min(np.where(counted, pct_change, np.inf), axis=-1)
    best_pct = np.where(np.isfinite(best_pct), best_pct, np.nan)

    best = _best_overall(response, counted, day, pd_index, criteria)
    pd_day = np.where(pd_index >= 0, _day_at(day, np.maximum(pd_index, 0), sld.shape), np.nan)
    return RecistReadout(response=response, pct_change=pct_change, nadir=running_nadir(sld),
                         pd_index=pd_index, pd_day=pd_day, best_response=RESPONSE_LABELS[best],
                         best_pct_change=best_pct)


def confirmation_day(sld, scan_day, pd_day, cpd_abs_mm: float = CPD_ABS_MM) -> np.ndarray:
    """(...,) day of the first scan after the progression on pd_day (...,) whose SLD is at least
    cpd_abs_mm above the SLD at progression (iRECIST's confirmation, as the kernels decide it);
    +inf without progression or confirmation. sld (..., n_scan) mm at scan_day (n_scan,) or
    (..., n_scan)."""
    sld, day = _checked(sld, scan_day)
    n_scan = sld.shape[-1]
    pd_index = np.sum(day < np.asarray(pd_day, dtype=float)[..., None], axis=-1)   # n_scan: no progression
    at_pd = np.take_along_axis(sld, np.minimum(pd_index, n_scan - 1)[..., None], axis=-1)
    later = (np.arange(n_scan) > pd_index[..., None]) & confirmed_progression(sld, at_pd, cpd_abs_mm)
    return np.where(later.any(axis=-1), _day_at(day, later.argmax(axis=-1), sld.shape), np.inf)


def objective_response_rate(best_response: np.ndarray, axis: int = -1) -> np.ndarray:
    """Fraction of patients with best response CR or PR along `axis` (NE counts as non-responder)."""
    return np.mean(np.isin(best_response, ("CR", "PR")), axis=axis)


def _best_overall(response, counted, day, pd_index, criteria: RecistCriteria) -> np.ndarray:
    """(...,) best-overall-response code from the counted visits (rules: RecistCriteria)."""
    cr_visit = counted & (response == CR)
    pr_visit = counted & (response >= PR)
    if criteria.confirm_days is not None:
        cr_visit = cr_visit & _confirmed_later(cr_visit, day, criteria.confirm_days)
        pr_visit = pr_visit & _confirmed_later(pr_visit, day, criteria.confirm_days)
    sd_visit = counted & (response >= SD) & (day >= criteria.sd_min_days)
    return np.select([cr_visit.any(-1), pr_visit.any(-1), sd_visit.any(-1), pd_index >= 0],
                     [CR, PR, SD, PD], default=NE)


def _confirmed_later(visit: np.ndarray, day: np.ndarray, confirm_days: float) -> np.ndarray:
    """(..., n_scan) True where some visit >= confirm_days later also has `visit` True."""
    # first_far[..., k]: the first visit at least confirm_days after visit k (n_scan: none)
    first_far = np.sum(day[..., None, :] < day[..., :, None] + confirm_days, axis=-1)
    # any_from[..., k] = visit[..., k:].any(): reversed cumulative OR, plus a False column at n_scan
    any_from = np.logical_or.accumulate(visit[..., ::-1], axis=-1)[..., ::-1]
    any_from = np.concatenate([any_from, np.zeros_like(any_from[..., :1])], axis=-1)
    return np.take_along_axis(any_from, np.broadcast_to(first_far, visit.shape), axis=-1)


def _day_at(day: np.ndarray, index: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(...,) the day of scan `index` (...,) from scan days (n_scan,) or (..., n_scan)."""
    return np.take_along_axis(np.broadcast_to(day, shape), index[..., None], axis=-1)[..., 0]


def _checked(sld, scan_day) -> tuple[np.ndarray, np.ndarray]:
    sld = np.asarray(sld, dtype=float)
    day = np.asarray(scan_day, dtype=float)
    if (sld.ndim < 1 or day.ndim < 1 or day.shape[-1] < 1
            or day.shape not in (sld.shape[-1:], sld.shape)):
        raise SimulationError(
            f"RECIST readout: sld has shape {sld.shape} but scan_day has shape {day.shape}; pass sld "
            "as (..., n_scan) with scan_day (n_scan,) or each patient's visit days (..., n_scan), "
            "the first scan being the baseline")
    if not np.all(np.isfinite(day)) or np.any(np.diff(day, axis=-1) <= 0):
        raise SimulationError(f"RECIST readout: scan days must be finite and strictly increasing, got {day}")
    base = sld[..., 0]
    bad = np.isfinite(base) & ~(base > 0)
    if bad.any():
        raise SimulationError(
            f"RECIST readout: {int(bad.sum())} patient(s) have a baseline sum of diameters <= 0 mm "
            f"(first at batch index {tuple(int(i) for i in np.argwhere(bad)[0])}); RECIST needs "
            "measurable disease at baseline: constrain the cohort to baseline sld_mm >= 10 mm")
    return sld, day
