"""Run an in-silico trial: cohort -> randomised arms -> dosing with scans in the kernel -> readouts.

Each arm's patients are integrated by the compiled kernel with the trial's scan days: the kernel
reads the sum of diameters (`sld_mm`) at every visit, decides RECIST progression per trajectory
and skips every later dose (treatment until progression; the drugs an arm treats beyond
progression stop at its iRECIST confirmation instead), with no Python per patient. The
readouts (RECIST, PFS, OS with censoring) and the analysis (Kaplan-Meier, Cox, ORR) follow the
papers; see `recist`, `endpoints` and `analysis`.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr
from rich.progress import Progress

from ..compile import CompiledModel, compile_model
from ..errors import Issue, SimulationError, SpecError
from ..io.results import provenance
from ..spec.expressions import suggest
from ..spec.loader import load_spec, read_yaml
from ..simulate.core import (initial_matrix, output_function, parameter_function, parameter_matrix,
                             require_compiled)
from ..simulate.regimen import event_arrays
from .analysis import biomarker_subgroups, summarise_trial
from .biomarkers import baseline_covariates
from .cohort import Cohort, sample_cohort
from .design import DAYS_PER_MONTH, TrialDesign, load_trial
from .endpoints import Censoring, SurvivalParameters, patient_outcomes, truncate_doses
from .recist import confirmation_day

#: Observables the trial engine reads by name (the composed models' contract).
BURDEN_OUTPUT = "sld_mm"
LETHAL_OUTPUT = "tumour_cells"


def run_trial(design: TrialDesign | str, *, model: CompiledModel | None = None,
              patients_per_arm: int | None = None, seed: int = 0,
              priors: Mapping[str, Mapping[str, Any]] | None = None,
              fixed: Mapping[str, float] | None = None,
              survival: Mapping[str, float] | None = None, cohort: Cohort | None = None,
              chunk_size: int = 4096, progress: bool = False) -> xr.Dataset:
    """Simulate a trial design; returns the trial Dataset (dims arm, patient; see the module doc).

    design: a TrialDesign or a built-in name / path. model: a compiled model (default: the
    design's model compiled with numba). patients_per_arm: default the design's. priors, fixed:
    parameter priors / values replacing the spec's for the cohort (e.g. a calibration). survival:
    values replacing the design's survival parameters. cohort: a ready cohort of at least
    n_arms * patients_per_arm patients (default: sampled with the design's cohort settings).
    Same seed => same trial.
    """
    design = design if isinstance(design, TrialDesign) else load_trial(design)
    model = require_compiled(model, "run_trial") if model is not None else compile_model(model_source(design))
    check_trial_model(model, design)
    n = design.patients_per_arm if patients_per_arm is None else patients_per_arm
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SimulationError(f"run_trial: patients_per_arm must be an integer >= 1, got {patients_per_arm!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SimulationError(f"run_trial: seed must be an integer >= 0, got {seed!r}")
    survival_params = survival_settings(design, survival)
    arms = list(design.arms)
    rng = np.random.default_rng(seed)
    if cohort is not None and (priors or fixed):
        raise SimulationError("run_trial: pass either a ready cohort or priors/fixed to sample one, not both "
                              "(a cohort's parameters are already drawn)")
    cohort_given = cohort is not None
    if cohort is None:
        settings = dict(design.cohort)
        cohort = sample_cohort(model, n * len(arms), seed, priors=priors, fixed=fixed,
                               progress=progress, **settings)
    if len(cohort) < n * len(arms):
        raise SimulationError(f"the cohort has {len(cohort)} patients; the trial needs "
                              f"{n * len(arms)} ({len(arms)} arms x {n})")
    order = rng.permutation(len(cohort))[: n * len(arms)].reshape(len(arms), n)   # randomisation
    P_all, _ = parameter_matrix(model, cohort.params, len(cohort))
    horizon = design.horizon_days
    day = np.arange(0.0, horizon + design.solver.output_every_days, design.solver.output_every_days)
    scan_day = design.scans.days(horizon)
    visit_day = _visit_days(design, scan_day, (len(arms), n), seed)

    sims = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"trial {design.name}", total=n * len(arms))
        for a, arm in enumerate(arms):
            choice = rng.integers(0, 1 << 30, size=n)
            sims.append(_simulate_arm(model, design, arm, P_all[order[a]], choice, day,
                                      scan_day if visit_day is None else visit_day[a],
                                      chunk_size, lambda k: bar.advance(task, k)))

    sld = np.stack([s["scans"] for s in sims])
    burden = np.stack([s["burden"] for s in sims])
    censoring = Censoring(design.accrual_months, design.data_cut_months)
    trial = patient_outcomes(sld, scan_day, burden, day, rng, censoring, survival=survival_params,
                             criteria=design.recist, visit_day=visit_day)
    dose_day, dose_drug = _dose_records(sims)
    dose_day, dose_drug = truncate_doses(dose_day, dose_drug, trial.os_months.values,
                                         trial.os_event.values)
    trial["dose_day"] = (("arm", "patient", "dose"), dose_day, {"units": "day"})
    trial["dose_drug"] = (("arm", "patient", "dose"), dose_drug.astype(str))
    trial["status"] = (("arm", "patient"), np.stack([s["status"] for s in sims]),
                       {"description": "solver status per patient (0 = ok)"})
    trial["progression_day_kernel"] = (("arm", "patient"), np.stack([s["pd_time"] for s in sims]),
                                       {"units": "day", "description": "first PD at a simulated "
                                        "scan, where dosing stopped (inf: none)"})
    trial["confirmed_progression_day"] = (
        ("arm", "patient"), np.stack([s["cpd_time"] for s in sims]),
        {"units": "day", "description": "iRECIST confirmation of the first PD (a later scan "
         f"{design.recist.cpd_abs_mm:g} mm above it), where treatment beyond progression stopped (inf: none)"})
    baseline = cohort.baseline.iloc[order.reshape(-1)].reset_index(drop=True)
    covariates = baseline_covariates(baseline, design.biomarkers)
    for name in covariates:
        trial[name] = (("arm", "patient"), np.asarray(covariates[name]).reshape(len(arms), n))
    for name in model.parameters:
        values = P_all[order, model.parameters.index(name)]
        if np.ptp(values) > 0:
            trial[name] = (("arm", "patient"), values, {"kind": "patient parameter"})
    trial = trial.assign_coords(arm=arms, patient=np.arange(n))
    summary = summarise_trial(trial, list(design.comparisons), _subgroups(trial, design))
    trial = xr.merge([trial, summary], combine_attrs="drop_conflicts")
    trial.attrs.update(provenance(model, backend=model.backend, seed=seed))
    trial.attrs.update({"trial": design.name, "trial_design_hash": design.design_hash,
                        "trial_design_path": design.path, "patients_per_arm": n,
                        "comparisons": "; ".join(f"{e} vs {c}" for e, c in design.comparisons),
                        "failed_runs": int((trial.status != 0).sum()),
                        "rtol": design.solver.rtol, "atol": design.solver.atol,
                        "visits": design.visits.describe(), "days_per_month": DAYS_PER_MONTH,
                        "cohort_source": cohort_source(cohort_given, priors, fixed)})
    return trial


def survival_settings(design: TrialDesign, survival: Mapping[str, float] | None) -> SurvivalParameters:
    """The design's survival parameters with `survival` replacing some; SimulationError for names
    it does not have."""
    known = [f.name for f in fields(design.survival)]
    unknown = sorted(set(survival or {}) - set(known))
    if unknown:
        raise SimulationError(f"survival has no parameter {', '.join(map(repr, unknown))}; its parameters are "
                              f"{', '.join(known)}")
    return replace(design.survival, **(survival or {}))


def cohort_source(given: bool, priors: Mapping | None, fixed: Mapping | None) -> str:
    """Where the patients' parameters came from, for the provenance attributes: a ready cohort,
    the spec's priors, or the spec's with these priors / values replacing theirs (JSON)."""
    if given:
        return "a cohort passed to run_trial"
    if not (priors or fixed):
        return "the spec's priors (uncalibrated)"
    return json.dumps({"priors": priors or {}, "fixed": fixed or {}}, sort_keys=True, default=float)


def _visit_days(design: TrialDesign, scan_day: np.ndarray, shape: tuple[int, int],
                seed: int) -> np.ndarray | None:
    """Each patient's visit days (arm, patient, n_scan) under the design's visit offsets, None when
    every visit is on its scheduled day. Drawn from their own stream of `seed`, so the cohort,
    randomisation and deaths of a trial are the same with visit offsets or without."""
    if design.visits.on_schedule:
        return None
    visit_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    return design.visits.days(scan_day, shape, visit_rng)


def _subgroups(trial: xr.Dataset, design: TrialDesign) -> dict[str, np.ndarray]:
    """The design's subgroups with their complements, and the whole population ("all")."""
    groups = biomarker_subgroups(trial)
    missing = [g for g in design.subgroups if g not in groups]
    if missing:
        raise SimulationError(f"trial '{design.name}' analyses subgroups {missing}, which are not "
                              f"biomarker covariates of this trial (have: {sorted(groups)})")
    keep = {"all", *design.subgroups, *(f"not_{g}" for g in design.subgroups)}
    return {name: mask for name, mask in groups.items() if name in keep}


def model_source(design: TrialDesign) -> str:
    """The design's model: a file next to the design file, else a built-in name or a path."""
    beside = Path(design.path).parent / design.model
    return str(beside) if beside.is_file() else design.model


def check_trial_model(model: CompiledModel, design: TrialDesign) -> None:
    """SimulationError unless `model` can run `design`: in-kernel scans, the burden observables
    the trial reads, and every drug the design doses."""
    if not hasattr(model.kernels, "solve_scanned"):
        raise SimulationError(f"trials need scans inside the kernel; the {model.backend} backend "
                              "has none: compile the model with backend='numba' (or 'cuda')")
    missing = [o for o in (BURDEN_OUTPUT, LETHAL_OUTPUT) if o not in model.output_names]
    if missing:
        raise SimulationError(f"model '{model.name}' lacks the observables {missing} that trials "
                              f"read (sum of diameters in mm, tumour cells); add them to the spec")
    drugs = {d for arm in design.arms.values() for d in arm.drugs()}
    unknown = sorted(drugs - set(model.kernels.drug_names))
    if unknown:
        raise SimulationError(f"trial '{design.name}' doses {unknown}, which model '{model.name}' "
                              f"does not declare (its drugs: {list(model.kernels.drug_names)})")


def model_issues(design: TrialDesign) -> list[Issue]:
    """What `check_trial_model` would find, from the model's spec before compiling (for
    `immunoedit validate`): that the model loads, has the observables trials read, and declares
    each arm's drugs (reported at the arm's line)."""
    doc = read_yaml(Path(design.path), []) or {}
    try:
        spec = load_spec(model_source(design))
    except SpecError as exc:
        return [Issue(design.path, _line(doc, "model"), "trial", f"model '{design.model}' does not load "
                      "(its problems follow)"), *exc.issues]
    issues = []
    missing = [o for o in (BURDEN_OUTPUT, LETHAL_OUTPUT) if o not in spec.observables]
    if missing:
        issues.append(Issue(design.path, _line(doc, "model"), "trial", f"model '{spec.name}' lacks the "
                            f"observables {missing} that trials read",
                            "add them to the spec (sum of diameters in mm, tumour cells)"))
    arms = doc.get("arms") or {}
    for name, arm in design.arms.items():
        for drug in arm.drugs():
            if drug not in spec.doses:
                issues.append(Issue(design.path, _line(arms, name), f"arm '{name}'", f"doses '{drug}', which "
                                    f"model '{spec.name}' does not declare", suggest(drug, spec.doses)
                                    or f"its drugs: {', '.join(spec.doses) or 'none'}"))
    return issues


def _line(mapping: Any, key: str) -> int | None:
    """The 1-based line of `key` in a mapping read by ruamel.yaml; None when unknown."""
    try:
        return mapping.lc.key(key)[0] + 1
    except (AttributeError, KeyError, TypeError):
        return None


def _simulate_arm(model: CompiledModel, design: TrialDesign, arm_name: str, P: np.ndarray,
                  choice: np.ndarray, day: np.ndarray, scan_day: np.ndarray, chunk_size: int,
                  advance) -> dict[str, Any]:
    """One arm's patients (P (n, n_par)) through the kernel in chunks; each patient's cycle
    counts are picked by `choice` (n,) among the arm's regimen variants. scan_day: (n_scan,)
    shared, or (n, n_scan) each patient's visit days."""
    arm = design.arms[arm_name]
    variants = list(arm.regimens(design.horizon_days).values())
    variant = choice % len(variants)
    regimens = [variants[v] for v in variant]
    kernels = model.kernels
    dose_states = {d: model.states.index(t.state) for d, t in model.symbolic.dose_targets.items()}
    burden_index = model.output_names.index(BURDEN_OUTPUT)
    lethal = output_function(model, LETHAL_OUTPUT)
    parts = []
    for lo in range(0, len(P), chunk_size):
        p = np.ascontiguousarray(P[lo:lo + chunk_size])
        regs = regimens[lo:lo + chunk_size]
        scan_t = scan_day if scan_day.ndim == 1 else scan_day[lo:lo + chunk_size]
        ev = event_arrays(regs, np.asarray(kernels.dose_factors(p)), list(kernels.drug_names),
                          dose_states, amount_of=lambda text: parameter_function(model, text)(p))
        Y, status, _, _, scans, pd_time = kernels.solve_scanned(
            initial_matrix(model, p, None), p, 0.0, day, ev.time, ev.state, ev.kind, ev.value,
            design.solver.rtol, design.solver.atol, max_steps=design.solver.max_steps,
            scan_t=scan_t, burden_index=burden_index, pd_rel=design.recist.pd_rel,
            pd_abs=design.recist.pd_abs_mm, ev_guard=ev.guard, cpd_abs=design.recist.cpd_abs_mm,
            ev_guard_c=ev.guard_confirmed)
        burden = lethal(day, Y, p)
        parts.append({"scans": scans, "burden": burden, "status": status, "pd_time": pd_time,
                      "cpd_time": confirmation_day(scans, scan_t, pd_time, design.recist.cpd_abs_mm)})
        advance(len(p))
    out = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return {**out, "variants": variants, "variant": variant}


def _dose_records(sims: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Dose records (arm, patient, dose) padded with NaN / '': each patient's regimen variant,
    without the doses the kernel skipped after progression or its confirmation (vectorised per
    variant)."""
    width = max(len(reg.doses) for s in sims for reg in s["variants"]) or 1
    n = len(sims[0]["variant"])
    day = np.full((len(sims), n, width), np.nan)
    drug = np.full((len(sims), n, width), "", dtype=object)
    for a, sim in enumerate(sims):
        for v, reg in enumerate(sim["variants"]):
            rows = np.flatnonzero(sim["variant"] == v)
            times = np.array([d.time for d in reg.doses])
            at_pd = np.array([d.until_progression for d in reg.doses], dtype=bool)
            at_cpd = np.array([d.until_confirmed_progression for d in reg.doses], dtype=bool)
            given = ~((at_pd[None] & (times[None] >= sim["pd_time"][rows, None]))
                      | (at_cpd[None] & (times[None] >= sim["cpd_time"][rows, None])))
            m = len(reg.doses)
            day[a, rows, :m] = np.where(given, times[None], np.nan)
            drug[a, rows, :m] = np.where(given, np.array([d.drug for d in reg.doses], dtype=object)[None], "")
    order = np.argsort(day, axis=-1, kind="stable")            # skipped doses (NaN) to the end
    return np.take_along_axis(day, order, -1), np.take_along_axis(drug, order, -1)
