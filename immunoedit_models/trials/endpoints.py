"""Trial endpoints from simulated trajectories: RECIST at visits, PFS, OS, administrative censoring.

Time runs in days from randomisation (day 0) inside; endpoints are reported in months
(days / 30.4375, the mean Gregorian month). Every function is vectorised over any leading batch
dimensions (e.g. `(arm, patient)`); no Python loop runs per patient.

Death (overall survival) is the first of three competing causes, each parameterised so that a fit
can calibrate it (`SurvivalParameters`):
(a) tumour burden: the first time the daily tumour-cell trajectory reaches a lethal burden;
(b) background: a constant hazard from day 0 (deaths the tumour model does not explain:
    comorbidity, toxicity, other causes);
(c) post-progression: a hazard from the visit that shows RECIST progression (progression the
    model's target-lesion burden misses: new lesions, organ failure). With the default burden
    exponent 0 it is constant (exponential post-progression survival); with an exponent beta > 0
    it follows the simulated tumour burden after progression, h(t) = h_pp (N(t) / N_ref)^beta:
    the simulation goes on after PD without the drugs given until progression, so a patient whose
    immune system still holds the tumour back lives longer than one whose tumour regrows fast
    (`burden_linked_event_day`).
Progression-free survival ends at the first visit showing PD (scan-only detection: progression
between visits is seen at the next visit) or at death, whichever comes first.

Administrative censoring: patients enter uniformly over the accrual period; the data cut-off is a
fixed time after the first patient in, so each patient's follow-up is cut-off minus entry. OS is
censored at the follow-up; PFS without an event is censored at the last adequate visit (a visit
that took place before death and the cut-off; the baseline if none), as RECIST trials do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from immunoedit_models.errors import SimulationError
from immunoedit_models.trials.recist import RecistCriteria, assess

#: Days per month used for every reported endpoint (mean Gregorian month, 365.25 / 12).
DAYS_PER_MONTH = 30.4375

#: Causes of death in `death_cause` ("" = alive or censored at the follow-up).
DEATH_CAUSES = ("", "tumour_burden", "background", "post_progression")


@dataclass(frozen=True)
class SurvivalParameters:
    """Parameters of the death model; hazards may be arrays broadcasting over the patients.

    lethal_tumour_cells: tumour burden (cells) at which a patient dies; default 1e12 cells
        (about 1 kg of tumour), the burden conventionally taken as lethal (Friberg S, Mattson S.
        J Surg Oncol 1997;65:284-297). A calibration parameter.
    background_hazard_per_month: constant hazard of death from other causes (1/month). Default
        0.001/month (about 1.2 %/year), the order of general-population all-cause mortality in
        the early sixties, the typical age in these trials; not fitted to any trial.
    post_progression_hazard_per_month: hazard added after the visit showing PD (1/month).
        Default ln 2 / 7.9 months = 0.0877/month: exponential post-progression survival whose
        median, added to the median PFS, reproduces the IMpower150 control arm's median OS
        (BCP: PFS 6.8, OS 14.7 months; ../shared/data/trials/impower150/published.csv). An
        approximation to start a calibration from, not a fitted value. With a burden exponent,
        the hazard at the reference burden.
    post_progression_burden_exponent: beta of the burden link h(t) = h_pp (N(t) / N_ref)^beta
        after PD (dimensionless). Default 0: a constant hazard (exponential post-progression
        survival), the model every trial used before the link. beta > 0 is a tumour-growth-
        inhibition-to-survival (TGI-OS) link on the simulated burden: in atezolizumab trials the
        tumour growth rate after treatment (KG) is the strongest predictor of OS (Claret L et al.
        Clin Cancer Res 2018;24:3292-8; Chan P et al. CPT Pharmacometrics Syst Pharmacol
        2021;10:1171-82), and joint models tie the instantaneous risk of death to the current
        tumour size (Kerioui M et al. ESMO Open 2022;7:100346, IMvigor211: +10 mm of a lesion
        raises the hazard by 5-12 %) or its slope (Kerioui M et al. Stat Med 2020;39:4853-68).
        A power of the cell count (log-linear in ln N) is used because the model's burden is a
        cell number with no unique conversion to millimetres; beta is a calibration parameter.
    post_progression_reference_cells: N_ref (cells), the burden at which the post-progression
        hazard equals post_progression_hazard_per_month. Default 1e10 cells (~10 g, ~10 cm^3 at
        1e9 cells/cm^3), the order of the simulated burden at progression in IMpower150 (a choice:
        any value gives the same model with h_pp rescaled; in the IMpower150 fit ln h_pp and beta
        still correlate at -0.99, as the BCP OS data pin the hazard near 1e11 cells, where most
        post-progression deaths happen). Unused when the exponent is 0.
    post_progression_frailty_sd: sigma of a lognormal frailty Z = exp(sigma u), u ~ N(0, 1) per
        patient, multiplying the post-progression hazard (dimensionless). Default 0: every
        patient has the same hazard. A frailty carries the heterogeneity of survival after
        progression that the tumour model does not (subsequent therapies, sites of progression,
        performance status), and makes the OS curve flatten as the frail die first (Aalen OO,
        Borgan O, Gjessing HK. Survival and Event History Analysis, Springer 2008, ch. 6;
        lognormal frailty: McGilchrist CA, Aisbett CW. Biometrics 1991;47:461-6). Z has median
        1, so post_progression_hazard_per_month stays the median patient's hazard. A
        calibration parameter.
    """

    lethal_tumour_cells: float = 1e12
    background_hazard_per_month: float | np.ndarray = 0.001
    post_progression_hazard_per_month: float | np.ndarray = np.log(2.0) / 7.9
    post_progression_burden_exponent: float | np.ndarray = 0.0
    post_progression_reference_cells: float = 1e10
    post_progression_frailty_sd: float | np.ndarray = 0.0

    def __post_init__(self):
        for name in ("lethal_tumour_cells", "background_hazard_per_month", "post_progression_hazard_per_month",
                     "post_progression_burden_exponent", "post_progression_frailty_sd"):
            value = np.asarray(getattr(self, name), dtype=float)
            if not np.all(value >= 0):
                raise ValueError(f"SurvivalParameters.{name} must be >= 0 (got {getattr(self, name)})")
        if not self.post_progression_reference_cells > 0:
            raise ValueError("SurvivalParameters.post_progression_reference_cells must be > 0 "
                             f"(got {self.post_progression_reference_cells})")

    @property
    def burden_linked(self) -> bool:
        """Whether the post-progression hazard follows the tumour burden (an exponent != 0)."""
        return bool(np.any(np.asarray(self.post_progression_burden_exponent) != 0))

    @property
    def frail(self) -> bool:
        """Whether patients differ in their post-progression hazard (a frailty sd != 0)."""
        return bool(np.any(np.asarray(self.post_progression_frailty_sd) != 0))


@dataclass(frozen=True)
class Censoring:
    """Administrative censoring: accrual period and data cut-off, both in months from first patient in.

    A cut-off before the end of accrual would leave patients who were never enrolled, so
    cutoff_months must exceed accrual_months.
    """

    accrual_months: float
    cutoff_months: float

    def __post_init__(self):
        if not (self.accrual_months >= 0 and self.cutoff_months > self.accrual_months):
            raise ValueError(
                f"Censoring: need 0 <= accrual_months < cutoff_months, got accrual {self.accrual_months} "
                f"and cut-off {self.cutoff_months} months (the cut-off counts from the first patient in)")


def months(days):
    """Days -> months (30.4375 days per month)."""
    return np.asarray(days, dtype=float) / DAYS_PER_MONTH


def burden_death_day(burden: np.ndarray, day: np.ndarray, lethal: float | np.ndarray) -> np.ndarray:
    """(...,) first day the burden (..., n_day) reaches `lethal`; inf if it never does on the grid.

    The crossing time is interpolated linearly between the two grid days around it (a burden
    already lethal at day[0] gives day[0]). NaN burden values never count as lethal.
    """
    burden = np.asarray(burden)
    burden = burden if np.issubdtype(burden.dtype, np.floating) else burden.astype(float)  # float32 stays
    day = np.asarray(day, dtype=float)
    if burden.shape[-1] != day.size or np.any(np.diff(day) <= 0):
        raise SimulationError(f"burden_death_day: burden shape {burden.shape} does not match a strictly "
                              f"increasing day grid of {day.size} points")
    lethal = np.asarray(lethal, dtype=float)[..., None]
    above = burden >= lethal
    crossed = above.any(axis=-1)
    k = above.argmax(axis=-1)                      # first grid index at or above the threshold
    km1 = np.maximum(k - 1, 0)
    b1 = np.take_along_axis(burden, k[..., None], -1)[..., 0].astype(float)
    b0 = np.take_along_axis(burden, km1[..., None], -1)[..., 0].astype(float)
    lethal = np.broadcast_to(lethal[..., 0], b1.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(k > 0, (lethal - b0) / (b1 - b0), 1.0)
    t = day[km1] + np.clip(np.nan_to_num(frac, nan=1.0), 0.0, 1.0) * (day[k] - day[km1])
    return np.where(crossed, t, np.inf)


def accrual_followup(shape: tuple[int, ...], censoring: Censoring, rng: np.random.Generator):
    """Entry (months after first patient in, uniform over accrual) and follow-up (days) per patient."""
    entry_months = rng.uniform(0.0, censoring.accrual_months, size=shape)
    return entry_months, (censoring.cutoff_months - entry_months) * DAYS_PER_MONTH


def burden_linked_event_day(log_burden: np.ndarray, day: np.ndarray, start_day: np.ndarray,
                            hazard_per_day: float | np.ndarray, exponent: float | np.ndarray,
                            log_reference: float, unit_exponential: np.ndarray) -> np.ndarray:
    """(...,) day of an event whose hazard follows the tumour burden from `start_day` on.

    The hazard is h(t) = hazard_per_day * exp(exponent * (ln N(t) - log_reference)) for
    t >= start_day, 0 before. ln N (..., n_day) is taken linear between the grid days `day`
    (n_day,) (exponential growth between outputs), so on each grid interval h is an exponential
    in t and its integral is closed-form; the event is the first day where the cumulative hazard
    reaches the patient's unit exponential draw (inverse-transform sampling: same draw => the event
    day moves continuously with the parameters). inf where start_day is not finite or the
    cumulative hazard over the grid stays below the draw (an event after the last grid day); a NaN
    burden (failed solve) ends the patient's hazard there. hazard_per_day, exponent: scalars or
    arrays broadcasting over the leading dimensions.
    """
    # Hand-written closed form rather than scipy quad + root finding: it is exact for the
    # interpolant, vectorised over every patient at once, and smooth in the parameters.
    log_burden = np.asarray(log_burden, dtype=float)
    day = np.asarray(day, dtype=float)
    if log_burden.shape[-1] != day.size or day.size < 2 or np.any(np.diff(day) <= 0):
        raise SimulationError(f"burden_linked_event_day: burden shape {log_burden.shape} does not match a "
                              f"strictly increasing day grid of {day.size} (>= 2) points")
    start = np.where(np.isfinite(start_day), start_day, np.inf)[..., None]
    rate = np.asarray(hazard_per_day, dtype=float)[..., None]
    beta = np.asarray(exponent, dtype=float)[..., None]
    slope = np.diff(log_burden, axis=-1) / np.diff(day)                 # d ln N / dt on each interval
    lo = np.clip(start, day[:-1], day[1:])                              # at risk from max(start, interval start)
    width = day[1:] - lo
    a = np.minimum(beta * (log_burden[..., :-1] + slope * (lo - day[:-1]) - log_reference), 700.0)
    c = beta * slope
    h_lo = rate * np.exp(a)                                             # hazard at lo
    cw = c * width
    safe = np.where(np.abs(cw) > 1e-8, cw, 1.0)
    expm1_over = np.where(np.abs(cw) > 1e-8, np.expm1(cw) / safe, 1.0 + 0.5 * cw)   # (e^x - 1) / x
    cumulative = np.cumsum(h_lo * width * expm1_over, axis=-1)
    draw = np.asarray(unit_exponential, dtype=float)
    hit = cumulative >= draw[..., None]
    k = hit.argmax(axis=-1)[..., None]

    def at_k(x):
        return np.take_along_axis(np.broadcast_to(x, cumulative.shape), k, -1)[..., 0]

    left = draw - np.where(k[..., 0] > 0, at_k(np.concatenate(
        [np.zeros(cumulative.shape[:-1] + (1,)), cumulative[..., :-1]], axis=-1)), 0.0)
    h_k, c_k = at_k(h_lo), at_k(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = left * c_k / h_k                                            # solve h_k (e^{c u} - 1) / c = left
        u = np.where(np.abs(x) > 1e-8, np.log1p(x) / np.where(c_k != 0, c_k, 1.0), left / h_k * (1.0 - 0.5 * x))
    u = np.clip(np.nan_to_num(u, nan=0.0, posinf=np.inf), 0.0, at_k(width))   # rounding at the interval ends
    return np.where(hit.any(axis=-1), at_k(lo) + u, np.inf)


def death_day(burden_day: np.ndarray, pd_day: np.ndarray, survival: SurvivalParameters,
              rng: np.random.Generator, tumour_cells: np.ndarray | None = None,
              day: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(...,) day of death and its cause index into DEATH_CAUSES (competing hazards).

    burden_day: tumour-burden death day (inf if none); pd_day: day of the visit showing PD (NaN if
    none). Draws two unit exponentials per patient from `rng` (background, then post-progression),
    so the draws do not depend on the parameters and a fit sees smooth changes. A frailty
    (survival.frail) divides the post-progression draw by Z = exp(sigma u): H(t) Z >= e is
    H(t) >= e / Z. Its normals u come from a jumped copy of `rng`'s bit generator, so `rng` and
    every draw after this call are the same with a frailty or without. With a burden
    exponent (survival.burden_linked), the post-progression hazard follows tumour_cells
    (..., n_day) on `day` (n_day,) (`burden_linked_event_day`); without, it is constant and the
    post-progression death day is pd_day + draw / hazard.
    """
    shape = np.shape(burden_day)
    e_background = rng.exponential(size=shape)
    e_post = rng.exponential(size=shape)
    if survival.frail:
        u = np.random.Generator(rng.bit_generator.jumped()).standard_normal(size=shape)
        e_post = e_post * np.exp(-np.asarray(survival.post_progression_frailty_sd, dtype=float) * u)
    pd_start = np.where(np.isfinite(pd_day), pd_day, np.inf)
    with np.errstate(divide="ignore"):
        background = e_background * DAYS_PER_MONTH / np.asarray(survival.background_hazard_per_month)
        if survival.burden_linked:
            if tumour_cells is None or day is None:
                raise SimulationError("death_day: a burden-linked post-progression hazard needs the "
                                      "tumour_cells trajectories and their day grid")
            log_cells = np.log(np.maximum(np.asarray(tumour_cells, dtype=float), 1.0))   # < 1 cell: 1 cell
            post = burden_linked_event_day(
                log_cells, day, pd_start, np.asarray(survival.post_progression_hazard_per_month) / DAYS_PER_MONTH,
                survival.post_progression_burden_exponent, np.log(survival.post_progression_reference_cells), e_post)
        else:
            post = pd_start + e_post * DAYS_PER_MONTH / np.asarray(survival.post_progression_hazard_per_month)
    times = np.stack(np.broadcast_arrays(burden_day, background, post), axis=-1)
    cause = np.argmin(times, axis=-1) + 1
    death = np.min(times, axis=-1)
    return death, np.where(np.isfinite(death), cause, 0)


def censored_endpoints(scan_day: np.ndarray, observed: np.ndarray, pd_day: np.ndarray,
                       death: np.ndarray, followup: np.ndarray) -> dict[str, np.ndarray]:
    """PFS and OS in months with event flags from true event days and each patient's follow-up.

    observed (..., n_scan) marks the visits that took place (before death and the cut-off); pd_day
    must come from those visits only. A patient dying on the day of the cut-off is an event.
    """
    os_event = death <= followup
    pfs_by_pd = np.isfinite(pd_day)                       # observed PD precedes death by construction
    pfs_event = pfs_by_pd | os_event
    last_visit = np.max(np.where(observed, scan_day, 0.0), axis=-1)
    pfs_day = np.where(pfs_by_pd, pd_day, np.where(os_event, death, last_visit))
    return {"pfs_months": months(pfs_day), "pfs_event": pfs_event.astype(np.int8),
            "os_months": months(np.minimum(death, followup)), "os_event": os_event.astype(np.int8)}


def patient_outcomes(sld: np.ndarray, scan_day: np.ndarray, tumour_cells: np.ndarray, day: np.ndarray,
                     rng: np.random.Generator, censoring: Censoring, *,
                     survival: SurvivalParameters = SurvivalParameters(),
                     criteria: RecistCriteria = RecistCriteria(),
                     dims: tuple[str, ...] = ("arm", "patient"),
                     visit_day: np.ndarray | None = None) -> xr.Dataset:
    """All per-patient readouts of a simulated trial, named as in the trial-results contract.

    sld: (..., n_scan) sum of diameters (mm) at scan_day (n_scan,) days, first scan = baseline,
        NaN where the simulation has no value; every visit is simulated, death and censoring are
        applied here. tumour_cells: (..., n_day) daily tumour cells on `day` (n_day,) for the
        burden death. `dims` names the leading dimensions. Random numbers are drawn from `rng` in a
        fixed order (entry, background death, post-progression death), so one seed gives one trial.
    visit_day: (..., n_scan) each patient's visit days when visits keep a window around the
        scheduled scan_day (`visits.VisitTiming`); sld is read on them. None: on scan_day.

    Returns a Dataset over `dims` with pfs_months, pfs_event, os_months, os_event, best_response,
    best_pct_change, pd_day (day of the observed PD visit), death_cause, entry_months,
    followup_months, and over (*dims, scan) the observed sld_mm (NaN after death / cut-off) and the
    visit responses, with coordinate scan_day (scheduled) and, with visit_day, that variable.
    """
    sld = np.asarray(sld, dtype=float)
    scan_day = np.asarray(scan_day, dtype=float)
    day = np.asarray(day, dtype=float)
    shape = sld.shape[:-1]
    if len(dims) != len(shape) or np.shape(tumour_cells)[:-1] != shape:
        raise SimulationError(f"patient_outcomes: sld {sld.shape} and tumour_cells {np.shape(tumour_cells)} "
                              f"must share the leading dimensions {dims}")
    entry_months, followup = accrual_followup(shape, censoring, rng)
    if followup.size and np.max(followup) > day[-1]:
        raise SimulationError(
            f"patient_outcomes: follow-up reaches {np.max(followup):.0f} days (cut-off "
            f"{censoring.cutoff_months} months) but the trajectories end at day {day[-1]:.0f}; "
            "simulate at least cutoff_months * 30.4375 days or choose an earlier cut-off")

    burden_day = burden_death_day(tumour_cells, day, survival.lethal_tumour_cells)
    # PD from every simulated visit; a later death cannot change it, an earlier one hides it below.
    visits = scan_day if visit_day is None else np.asarray(visit_day, dtype=float)
    true_pd_day = assess(sld, visits, criteria).pd_day
    death, cause = death_day(burden_day, true_pd_day, survival, rng, tumour_cells, day)

    observed = (visits < death[..., None]) & (visits <= followup[..., None]) & np.isfinite(sld)
    sld_observed = np.where(observed, sld, np.nan)
    readout = assess(sld_observed, visits, criteria)
    ends = censored_endpoints(visits, observed, readout.pd_day, death, followup)
    cause = np.where(ends["os_event"] == 1, cause, 0)

    def var(values, units="", **attrs):
        return (dims, values, {"units": units, **attrs} if units else attrs)

    visit_var = {} if visit_day is None else {
        "visit_day": ((*dims, "scan"), np.broadcast_to(visits, sld.shape).copy(),
                      {"units": "day", "description": "day of each visit: the scheduled scan_day plus "
                       "its window offset"})}
    return xr.Dataset(
        {"pfs_months": var(ends["pfs_months"], "month"),
         "pfs_event": var(ends["pfs_event"], description="1 = progression or death, 0 = censored"),
         "os_months": var(ends["os_months"], "month"),
         "os_event": var(ends["os_event"], description="1 = death, 0 = censored"),
         "best_response": var(readout.best_response, description="RECIST 1.1 best overall response"),
         "best_pct_change": var(readout.best_pct_change, "percent"),
         "pd_day": var(readout.pd_day, "day"),
         "death_cause": var(np.asarray(DEATH_CAUSES)[cause]),
         "entry_months": var(entry_months, "month"),
         "followup_months": var(months(followup), "month"),
         "sld_mm": ((*dims, "scan"), sld_observed, {"units": "mm"}),
         "visit_response": ((*dims, "scan"), np.asarray(["NE", "PD", "SD", "PR", "CR"])[readout.response]),
         **visit_var},
        coords={"scan_day": ("scan", scan_day, {"units": "day"})},
        attrs={"days_per_month": DAYS_PER_MONTH, "recist": repr(criteria), "survival": repr(survival),
               "censoring": repr(censoring)})


def truncate_doses(dose_day: np.ndarray, dose_drug: np.ndarray, os_months: np.ndarray,
                   os_event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blank the dose records (NaN / "") a patient did not receive: on or after death, after the cut-off.

    dose_day, dose_drug: (..., n_dose) padded records; os_months, os_event: (...,) as returned by
    `patient_outcomes` (the same rule as for visits: before death, up to the cut-off).
    """
    end = np.asarray(os_months, dtype=float)[..., None] * DAYS_PER_MONTH
    died = np.asarray(os_event)[..., None] == 1
    dose_day = np.asarray(dose_day, dtype=float)
    keep = np.where(died, dose_day < end, dose_day <= end)
    return np.where(keep, dose_day, np.nan), np.where(keep, dose_drug, "")
