#!/usr/bin/env python
"""The shared benchmark protocol (../shared/benchmarks/README.md), every tool side by side in ONE process.

    python benchmarks/reference_protocol.py                  # full protocol (~10-20 min on 2 cores)
    python benchmarks/reference_protocol.py --quick          # smoke version (~2-4 min)
    python benchmarks/reference_protocol.py --tools numba,roadrunner --batch 2000

Workload: the reference model (10 states, 42 parameters), 366 daily outputs over days 0-365,
1200 mg bolus into C1 (amount / V1) every 21 days from day 7.5 (18 doses), rtol 1e-6 / atol 1e-9.

Stages, each printed as one progress line:
  1. tight reference: libRoadRunner on reference_model.xml at rtol 1e-10 / atol 1e-12, nominal
     parameters and the first --check-draws parameter draws;
  2. compile probes in fresh subprocesses: numba with an empty IMMUNOEDIT_CACHE_DIR (and, in a
     separate probe, empty numba caches too), then warm; JAX first call vs later (empty and then warm JAX
     compilation cache, with the settings of the `immunoedit` command);
  3. per tool: setup in this process, single nominal trajectory (warm-up, then >= --repeats
     timed calls; median), accuracy vs the tight reference, batch throughput and failures.

Batch draws: all 42 parameters log-uniform in [0.5, 1.5] x nominal, i.e.
nominal * exp(default_rng(0).uniform(log 0.5, log 1.5, size=(n, 42))), columns in the spec's
parameter order (= the SBML order, checked). The first rows are identical for every n, so every
subset is a prefix of the same matrix. The parameter `Dose` is one of the 42: libRoadRunner's events
use it (C1 += Dose/V1), and so does the spec's default regimen (amount: Dose), so every tool doses the
drawn `Dose`.

Results: benchmarks/results/reference_protocol.json (everything, with machine info) and
benchmarks/results/reference_protocol.md (the tables).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("IMMUNOEDIT_SHARED", REPO.parent / "shared"))
SBML = SHARED / "benchmarks" / "reference_model.xml"

DAYS = np.arange(366.0)
DOSE_TIMES = 7.5 + 21.0 * np.arange(18)
RTOL, ATOL = 1e-6, 1e-9
REF_RTOL, REF_ATOL = 1e-10, 1e-12
GATE_REL = 1e-5            # accuracy gate: max relative error vs the tight reference
MAX_STEPS = 100_000
STATES = ("T", "E", "X", "R", "I", "P", "L", "A", "C1", "C2")
# Order of the 42 parameters in reference_model.ant / .xml (checked against the spec and SBML).
PARAMS = ("rT", "KT", "kkill", "Kkill", "KPD", "sE", "rrec", "Krec", "pE", "KLE", "KRE", "dE", "kEX",
          "Kag", "kEXL", "KLX", "dX", "sR", "pR", "KLR", "dR", "pI", "dI", "kPind", "KIP", "kPrel", "P0",
          "pL", "dL", "kcE", "kcR", "IL2in", "pA", "KAT", "dA", "KA", "CL", "Q", "V1", "V2", "Kd", "Dose")
Y0_ANT = np.array([1e8, 1e6, 1e5, 2e5, 0.05, 1.0, 0.05, 5.0, 0.0, 0.0])
I_C1, I_V1, I_DOSE = STATES.index("C1"), PARAMS.index("V1"), PARAMS.index("Dose")

TOOL_CHOICES = ("roadrunner", "numba", "numba-tsit5", "jax", "diffrax", "scipy", "amici", "compile")
SLOW_SUBSET = {"jax": 200, "diffrax": 200, "scipy": 500}          # full run
SLOW_SUBSET_QUICK = {"jax": 50, "diffrax": 50, "scipy": 100}      # --quick


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- the reference model, written by hand from reference_model.ant ------------------------------
def reference_rates(y, p):
    """d/dt of (T, E, X, R, I, P, L, A, C1, C2) as a tuple; plain arithmetic on y[i], p[j], so the
    same function is jitted by numba (scipy's right-hand side) and traced by JAX (plain diffrax)."""
    T, E, X, R, I, P, L, A, C1, C2 = y[0], y[1], y[2], y[3], y[4], y[5], y[6], y[7], y[8], y[9]
    rT, KT, kkill, Kkill, KPD = p[0], p[1], p[2], p[3], p[4]
    sE, rrec, Krec, pE, KLE, KRE, dE = p[5], p[6], p[7], p[8], p[9], p[10], p[11]
    kEX, Kag, kEXL, KLX, dX = p[12], p[13], p[14], p[15], p[16]
    sR, pR, KLR, dR = p[17], p[18], p[19], p[20]
    pI, dI = p[21], p[22]
    kPind, KIP, kPrel, P0 = p[23], p[24], p[25], p[26]
    pL, dL, kcE, kcR, IL2in = p[27], p[28], p[29], p[30], p[31]
    pA, KAT, dA, KA = p[32], p[33], p[34], p[35]
    CL, Q, V1, V2 = p[36], p[37], p[38], p[39]
    Kd = p[40]
    B = C1 / (C1 + Kd)
    fPD = 1.0 / (1.0 + P * (1.0 - B) / KPD)
    fA = KA / (KA + A)
    ag = T / (T + Kag)
    kill = kkill * fPD * fA * E * T / (Kkill + T)
    exh = (kEX * ag + kEXL * L * L / (KLX * KLX + L * L)) * E
    return (rT * T * (1.0 - T / KT) - kill,
            sE + rrec * T / (Krec + T) + pE * fA * L / (KLE + L) * E / (1.0 + R / KRE) - dE * E - exh,
            exh - dX * X,
            sR + pR * L / (KLR + L) * R - dR * R,
            pI * E * ag - dI * I,
            kPind * I / (KIP + I) - kPrel * (P - P0),
            pL * E * ag - kcE * E * L / (KLE + L) - kcR * R * L / (KLR + L) - dL * L + IL2in,
            pA * T / (KAT + T) - dA * A,
            (-CL * C1 - Q * (C1 - C2)) / V1,
            Q * (C1 - C2) / V2)


def dose_segments() -> list[tuple[float, float, np.ndarray]]:
    """(start, end, indices of DAYS in [start, end)) between doses; the last segment includes 365."""
    bounds = [0.0, *DOSE_TIMES, float(DAYS[-1])]
    out = []
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        last = k == len(bounds) - 2
        idx = np.nonzero((DAYS >= a) & ((DAYS <= b) if last else (DAYS < b)))[0]
        out.append((a, b, idx))
    return out


# ---- accuracy -----------------------------------------------------------------------------------
def accuracy(got: np.ndarray, ref: np.ndarray, zero_atol: float = ATOL) -> dict:
    """Max relative error over states and days. Entries whose reference is exactly 0 (C1, C2 before
    the first dose) have no relative error: they must be within zero_atol in absolute value and
    are reported separately. Non-finite or mis-shaped results count as infinite error."""
    got = np.asarray(got, dtype=float)
    if got.shape != ref.shape or not np.all(np.isfinite(got)):
        return {"max_rel_err": float("inf"), "zero_ref_max_abs": float("inf"), "worst": "non-finite/shape",
                "pass": False}
    nz = ref != 0
    rel = np.zeros_like(ref)
    rel[nz] = np.abs(got[nz] - ref[nz]) / np.abs(ref[nz])
    idx = np.unravel_index(np.argmax(rel), rel.shape)
    zero_abs = float(np.abs(got[~nz]).max()) if (~nz).any() else 0.0
    max_rel = float(rel.max())
    worst = f"{STATES[idx[-1]]} day {DAYS[idx[-2]]:g}" + (f" draw {idx[0]}" if rel.ndim == 3 else "")
    return {"max_rel_err": max_rel, "zero_ref_max_abs": zero_abs, "worst": worst,
            "pass": bool(max_rel <= GATE_REL and zero_abs <= zero_atol)}


# ---- timing helpers -----------------------------------------------------------------------------
def time_single(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        fn()
    ts = []
    sys0, cpu0, wall0 = system_busy_seconds(), time.process_time(), time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    wall, cpu, sys1 = time.perf_counter() - wall0, time.process_time() - cpu0, system_busy_seconds()
    other = None if sys0 is None or sys1 is None else max(0.0, (sys1 - sys0 - cpu) / wall)
    ms = np.array(ts) * 1e3
    return {"median_ms": float(np.median(ms)), "min_ms": float(ms.min()), "q1_ms": float(np.percentile(ms, 25)),
            "q3_ms": float(np.percentile(ms, 75)), "repeats": repeats, "warmup": warmup, "other_load_cores": other}


def system_busy_seconds() -> float | None:
    """CPU seconds all processes on the machine have been busy (from /proc/stat), or None."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
        return (f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def other_load(window: float = 3.0) -> float | None:
    """Cores' worth of CPU that other processes use, measured over `window` seconds."""
    s0, c0 = system_busy_seconds(), time.process_time()
    time.sleep(window)
    s1, c1 = system_busy_seconds(), time.process_time()
    return None if s0 is None or s1 is None else max(0.0, (s1 - s0 - (c1 - c0)) / window)


def wait_idle(max_wait: float, threshold: float = 0.2) -> float | None:
    """Wait up to max_wait seconds until other processes use < threshold cores; returns the last load."""
    deadline = time.perf_counter() + max_wait
    while True:
        load = other_load()
        if load is None or load < threshold or time.perf_counter() >= deadline:
            return load
        log(f"waiting for an idle machine: other processes use {load:.2f} cores")


def timed_batch(fn: Callable[[], tuple[int, np.ndarray | None, dict]], n: int) -> dict:
    """fn() -> (failures, first draws' states (K, 366, 10) or None, extra); returns throughput.

    cores_busy: this process's CPU time / wall time; other_load_cores: CPU the rest of the
    machine used meanwhile (/proc/stat), to flag figures disturbed by other work."""
    sys0, cpu, wall = system_busy_seconds(), time.process_time(), time.perf_counter()
    failures, head, extra = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sys1 = system_busy_seconds()
    other = None if sys0 is None or sys1 is None else max(0.0, (sys1 - sys0 - cpu) / wall)
    cores = max(1.0, cpu / wall)
    return {"n": n, "seconds": wall, "cpu_seconds": cpu, "cores_busy": cores, "other_load_cores": other,
            "traj_per_s": n / wall, "traj_per_s_per_core": n / wall / cores, "failures": int(failures),
            "head": head, **extra}


class Context:
    """What every tool shares: options, draws, the tight reference."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.nominal: np.ndarray = np.empty(0)
        self.draws: np.ndarray = np.empty(0)
        self.ref: np.ndarray = np.empty(0)           # (366, 10) tight nominal reference
        self.ref_draws: np.ndarray = np.empty(0)     # (K, 366, 10) tight reference of the first K draws
        self.notes: list[str] = []

    def batch_size(self, tool: str, est_ms: float, cores: float) -> tuple[int, str]:
        """How many draws a tool runs: all (--batch), a slow tool's subset, or fewer when the
        single-trajectory time predicts more than --max-batch-seconds (multiple of 50)."""
        n, why = self.args.batch, "all draws"
        subset = (SLOW_SUBSET_QUICK if self.args.quick else SLOW_SUBSET).get(tool)
        if self.args.subset:
            subset = self.args.subset if subset else None
        if subset and subset < n:
            n, why = subset, f"slow tool: first {subset} draws"
        predicted = n * est_ms / 1e3 / max(cores, 1.0)
        if predicted > self.args.max_batch_seconds:
            capped = max(50, int(self.args.max_batch_seconds * max(cores, 1.0) / (est_ms / 1e3)) // 50 * 50)
            if capped < n:
                n, why = capped, (f"time cap: first {capped} draws (predicted {predicted:.0f} s for {why} "
                                  f"> --max-batch-seconds {self.args.max_batch_seconds:g})")
        return min(n, len(self.draws)), why


def row(tool: str, level: str, method: str, **kw) -> dict:
    base = {"tool": tool, "level": level, "method": method, "setup_s": None, "setup_detail": {},
            "single": None, "steps": None, "accuracy": None, "batch": None, "notes": [], "error": None}
    base.update(kw)
    return base


def finish_batch(r: dict, ctx: Context, b: dict, why: str) -> None:
    head = b.pop("head")
    b["selection"] = why
    if head is not None and len(ctx.ref_draws):
        k = min(len(head), len(ctx.ref_draws))
        ok = np.isfinite(head[:k]).all(axis=(1, 2))      # failed runs are counted as failures
        b["check_draws"] = int(ok.sum())
        b["check_failed_draws"] = np.nonzero(~ok)[0].tolist()
        if ok.any():
            b["check_accuracy"] = accuracy(head[:k][ok], ctx.ref_draws[:k][ok])
    r["batch"] = b
    log(f"    batch: {b['n']} traj in {b['seconds']:.2f} s = {b['traj_per_s']:.1f} traj/s "
        f"({b['traj_per_s_per_core']:.1f}/core, {b['cores_busy']:.2f} cores busy), failures {b['failures']}"
        + (f" (status counts {b['status_counts']})" if b["failures"] and "status_counts" in b else "")
        + (f", check err {b['check_accuracy']['max_rel_err']:.2e}" if "check_accuracy" in b else "")
        + (f", OTHER LOAD {b['other_load_cores']:.2f} cores" if (b["other_load_cores"] or 0) > 0.2 else ""))


def record_single(r: dict, ctx: Context, fn: Callable[[], Any], Y: np.ndarray) -> None:
    r["single"] = time_single(fn, ctx.args.repeats)
    r["accuracy"] = accuracy(Y, ctx.ref)
    log(f"    single: median {r['single']['median_ms']:.3f} ms, steps {r['steps']}, "
        f"max rel err {r['accuracy']['max_rel_err']:.2e} ({'pass' if r['accuracy']['pass'] else 'FAIL'})")


# ---- libRoadRunner --------------------------------------------------------------------------------
def roadrunner_instance(rtol: float, atol: float):
    import roadrunner

    rr = roadrunner.RoadRunner(str(SBML))
    rr.integrator.relative_tolerance = rtol
    rr.integrator.absolute_tolerance = atol
    rr.timeCourseSelections = ["time", *STATES]
    ids = list(rr.model.getGlobalParameterIds())
    idx = np.array([ids.index(p) for p in PARAMS], dtype=np.int32)
    return rr, idx


def rr_run(rr, idx, p: np.ndarray | None) -> np.ndarray:
    rr.reset()                                  # states (incl. rate-rule variables) and time
    if p is not None:
        rr.model.setGlobalParameterValues(idx, np.ascontiguousarray(p, dtype=float))
    return np.asarray(rr.simulate(0.0, float(DAYS[-1]), len(DAYS)))[:, 1:]


def stage_reference(ctx: Context) -> None:
    import roadrunner

    log(f"reference: libRoadRunner {roadrunner.__version__} at rtol {REF_RTOL:g} / atol {REF_ATOL:g}")
    rr, idx = roadrunner_instance(REF_RTOL, REF_ATOL)
    rr.integrator.maximum_num_steps = 1_000_000
    sbml_values = np.asarray(rr.model.getGlobalParameterValues())[idx]
    if not np.allclose(sbml_values, ctx.nominal, rtol=1e-15):
        raise SystemExit("the spec's nominal parameters differ from reference_model.xml")
    ctx.ref = rr_run(rr, idx, ctx.nominal)
    k = min(ctx.args.check_draws, len(ctx.draws))
    ctx.ref_draws = np.stack([rr_run(rr, idx, ctx.draws[i]) for i in range(k)]) if k else np.empty((0, 366, 10))
    log(f"    nominal T(365) = {ctx.ref[-1, 0]:.6e}; reference for the first {k} draws done")


def tool_roadrunner(ctx: Context) -> list[dict]:
    import roadrunner

    r = row("libRoadRunner", "external", "CVODE (BDF)", version=roadrunner.__version__)
    t = time.perf_counter()
    rr, idx = roadrunner_instance(RTOL, ATOL)
    r["setup_s"] = time.perf_counter() - t
    r["setup_detail"] = {"load_sbml_and_llvm_jit_s": r["setup_s"]}
    Y = rr_run(rr, idx, ctx.nominal)
    r["steps"] = None
    r["notes"].append("per trajectory: reset(), setGlobalParameterValues(42 values), simulate(0, 365, 366)")
    record_single(r, ctx, lambda: rr_run(rr, idx, ctx.nominal), Y)
    n, why = ctx.batch_size("roadrunner", r["single"]["median_ms"], 1)
    k = min(ctx.args.check_draws, n)

    finish_batch(r, ctx, timed_batch(lambda: loop_batch(lambda p: rr_run(rr, idx, p), ctx.draws, n, k), n), why)
    return [r]


def loop_batch(run_one, draws: np.ndarray, n: int, k: int) -> tuple[int, np.ndarray, dict]:
    """A Python loop over the first n draws of a one-trajectory tool (libRoadRunner, scipy).

    run_one(p) returns states (366, 10) or None; an exception or non-finite states is a failure.
    Returns (failures, the first k trajectories, extra info) as `timed_batch` expects.
    """
    failures, head = 0, np.full((k, 366, 10), np.nan)
    for i in range(n):
        try:
            y = run_one(draws[i])
        except Exception:  # e.g. CVODE failures raise
            y = None
        if y is None or not np.all(np.isfinite(y)):
            failures += 1
        elif i < k:
            head[i] = y
    return failures, head, {}


# ---- immunoedit -----------------------------------------------------------------------------------
def states_of(ds) -> np.ndarray:
    return np.stack([np.asarray(ds[s].values) for s in STATES], axis=-1)


def tool_immunoedit(ctx: Context, backend: str, method: str) -> list[dict]:
    import immunoedit_models as ie
    from immunoedit_models.simulate.core import parameter_function, regimen_list
    from immunoedit_models.simulate.regimen import event_arrays

    key = {"numba": "numba" if method == "rodas5p" else "numba-tsit5", "jax": "jax"}[backend]
    label = f"immunoedit {backend} {method}"
    spec = ie.load_spec("benchmark_reference")
    t = time.perf_counter()
    model = ie.compile_model(spec, backend=backend)
    compile_s = time.perf_counter() - t
    if tuple(model.parameters) != PARAMS or tuple(model.states) != STATES:
        raise RuntimeError("the spec's parameter/state order differs from reference_model.ant")
    if backend == "numba":
        import numba
        cores_avail = numba.get_num_threads()
    else:
        cores_avail = os.cpu_count() or 1
    rows = []

    # --- public API ---------------------------------------------------------------------------
    api = row(label, "API", method, version=importlib.metadata.version("immunoedit-models"))
    t = time.perf_counter()
    ds = ie.simulate(model, DAYS, rtol=RTOL, atol=ATOL, method=method)
    first = time.perf_counter() - t
    api["steps"] = int(ds["n_steps"])
    if int(ds["status"]) != 0:
        api["notes"].append(f"nominal run status {int(ds['status'])}")
    record_single(api, ctx, lambda: ie.simulate(model, DAYS, rtol=RTOL, atol=ATOL, method=method), states_of(ds))
    api["setup_s"] = compile_s + max(0.0, first - api["single"]["median_ms"] / 1e3)
    api["setup_detail"] = {"compile_model_s": compile_s, "first_simulate_s": first,
                           "note": "in this process (warm disk caches for numba); cold figures: compile table"}
    n, why = ctx.batch_size(key, api["single"]["median_ms"], cores_avail)
    k = min(ctx.args.check_draws, n)
    chunk = None if backend == "numba" else min(ctx.args.jax_chunk, n)
    if chunk and n % chunk:
        n = max(chunk, n // chunk * chunk)
    df = _frame(ctx.draws[:n])
    # compile (JAX: for the chunk shape; numba: load or compile the batch entry point) first,
    # reported, not timed in the batch
    t = time.perf_counter()
    ie.simulate_batch(model, params=df.iloc[:chunk or 2], times=DAYS, rtol=RTOL, atol=ATOL,
                      method=method, chunk_size=chunk)
    api["setup_detail"]["first_batch_chunk_s"] = time.perf_counter() - t

    def api_batch():
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = ie.simulate_batch(model, params=df, times=DAYS, rtol=RTOL, atol=ATOL,
                                    method=method, chunk_size=chunk)
        head = states_of(out.isel(sample=slice(0, k)))
        return int((out["status"].values != 0).sum()), head, {"mean_steps": float(out["n_steps"].mean()),
                                                              "status_counts": _counts(out["status"].values)}
    finish_batch(api, ctx, timed_batch(api_batch, n), why)
    api["batch"]["chunk_size"] = chunk or "default"
    api["notes"].append("batch: simulate_batch(params=DataFrame of all 42; the default regimen doses each row's Dose)")
    rows.append(api)
    del df

    # --- kernels ------------------------------------------------------------------------------
    kern = row(label, "kernel", method)
    kernels = model.kernels
    dose_states = {d: model.states.index(tg.state) for d, tg in model.symbolic.dose_targets.items()}

    def arrays(P: np.ndarray):
        P = np.ascontiguousarray(P, dtype=float)
        Y0 = np.ascontiguousarray(kernels.initial(P))
        ev = event_arrays(regimen_list(model, None, len(P)), np.asarray(kernels.dose_factors(P)),
                          list(kernels.drug_names), dose_states,
                          amount_of=lambda text: parameter_function(model, text)(P))
        return Y0, P, ev.time, ev.state, ev.kind, ev.value

    one = arrays(ctx.nominal[None, :])

    def solve(a):
        return kernels.solve(a[0], a[1], 0.0, DAYS, *a[2:], RTOL, ATOL, method=method, max_steps=MAX_STEPS)
    t = time.perf_counter()
    Y, status, steps, _ = solve(one)
    first_k = time.perf_counter() - t
    kern["steps"] = int(steps[0])
    record_single(kern, ctx, lambda: solve(one), np.asarray(Y)[0])
    kern["setup_s"] = max(0.0, first_k - kern["single"]["median_ms"] / 1e3)
    kern["setup_detail"] = {"first_solve_s": first_k}
    kern["notes"].append("kernels.solve(Y0, P, t0, t_out, events, rtol, atol, method) on prebuilt arrays")
    n, why = ctx.batch_size(key, kern["single"]["median_ms"], cores_avail)
    if chunk and n % chunk:
        n = max(chunk, n // chunk * chunk)
    k = min(ctx.args.check_draws, n)
    big = arrays(ctx.draws[:n])
    pieces = [slice(a, min(a + chunk, n)) for a in range(0, n, chunk)] if chunk else [slice(0, n)]
    if backend == "jax":
        t = time.perf_counter()
        solve(tuple(a[pieces[0]] for a in big))
        kern["setup_detail"]["first_batch_chunk_s"] = time.perf_counter() - t

    def kernel_batch():
        failures, head, steps_sum, statuses = 0, None, 0, []
        for s in pieces:
            Yb, st, ns, _ = solve(tuple(a[s] for a in big))
            statuses.append(np.asarray(st))
            failures += int((np.asarray(st) != 0).sum())
            steps_sum += int(np.asarray(ns).sum())
            if head is None:
                head = np.asarray(Yb)[:k].copy()
        return failures, head, {"mean_steps": steps_sum / n, "status_counts": _counts(np.concatenate(statuses))}
    finish_batch(kern, ctx, timed_batch(kernel_batch, n), why)
    kern["batch"]["chunk_size"] = chunk or n
    rows.append(kern)
    return rows


def _counts(status: np.ndarray) -> dict[str, int]:
    """{status code: runs} (codes: 0 ok, 1 max steps, 2 non-finite, 3 step too small)."""
    codes, counts = np.unique(np.asarray(status, dtype=np.int64), return_counts=True)
    return {str(int(c)): int(k) for c, k in zip(codes, counts)}


def _frame(P: np.ndarray):
    import pandas as pd
    return pd.DataFrame(P, columns=list(PARAMS))


# ---- plain diffrax --------------------------------------------------------------------------------
def tool_diffrax(ctx: Context) -> list[dict]:
    """Two rows: outputs interpolated (diffrax's SaveAt(ts) default), and steps clipped to land on
    the output days (ClipStepSizeController), which Kvaerno5's 3rd-order interpolant needs for 1e-5."""
    return [_diffrax_row(ctx, clip=False), _diffrax_row(ctx, clip=True)]


def _diffrax_row(ctx: Context, clip: bool) -> dict:
    import diffrax as dfx
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    method = "Kvaerno5 + PIDController" + (", steps clipped to output days" if clip else ", interpolated outputs")
    r = row("diffrax (hand-written)", "external", method, version=dfx.__version__)
    log(f"    variant: {method}")
    r["notes"].append("jnp vector field written from reference_model.ant; doses by segment integration "
                      "(19 diffeqsolve segments: 1 + lax.scan over 17 + 1); jit; batch: jit(vmap) in chunks")
    term = dfx.ODETerm(lambda t, y, p: jnp.stack(reference_rates(y, p)))
    solver = dfx.Kvaerno5()
    pid = dfx.PIDController(rtol=RTOL, atol=ATOL)
    first_ts = jnp.asarray(DAYS[DAYS < DOSE_TIMES[0]])          # days 0..7
    offsets = jnp.arange(21.0) + 0.5                             # days inside a 21-day segment
    y0 = jnp.asarray(Y0_ANT)
    ok_code = dfx.RESULTS.successful

    def seg(y, p, a, b, ts):
        ctrl = dfx.ClipStepSizeController(pid, step_ts=ts) if clip else pid
        sol = dfx.diffeqsolve(term, solver, a, b, None, y, p, saveat=dfx.SaveAt(ts=ts, t1=True),
                              stepsize_controller=ctrl, max_steps=16_384, throw=False)
        return sol.ys[:-1], sol.ys[-1], sol.result == ok_code, sol.stats["num_accepted_steps"]

    def trajectory(p):
        dose = p[I_DOSE] / p[I_V1]
        ys0, y, ok, n = seg(y0, p, 0.0, DOSE_TIMES[0], first_ts)

        def body(carry, a):
            y, ok, n = carry
            ys, y, ok2, n2 = seg(y.at[I_C1].add(dose), p, a, a + 21.0, a + offsets)
            return (y, ok & ok2, n + n2), ys
        (y, ok, n), ys_mid = jax.lax.scan(body, (y, ok, n), jnp.asarray(DOSE_TIMES[:-1]))
        sol = dfx.diffeqsolve(term, solver, DOSE_TIMES[-1], DAYS[-1], None, y.at[I_C1].add(dose), p,
                              saveat=dfx.SaveAt(t1=True), stepsize_controller=pid, max_steps=16_384, throw=False)
        Y = jnp.concatenate([ys0, ys_mid.reshape(-1, len(STATES)), sol.ys])
        return Y, ok & (sol.result == ok_code), n + sol.stats["num_accepted_steps"]

    single = jax.jit(trajectory)
    batched = jax.jit(jax.vmap(trajectory))
    p0 = jnp.asarray(ctx.nominal)
    t = time.perf_counter()
    Y, ok, n_steps = jax.block_until_ready(single(p0))
    r["setup_s"] = time.perf_counter() - t
    r["setup_detail"] = {"first_call_s (trace + XLA compile + run)": r["setup_s"]}
    r["steps"] = int(n_steps)
    record_single(r, ctx, lambda: jax.block_until_ready(single(p0)), np.asarray(Y))
    r["setup_s"] = max(0.0, r["setup_s"] - r["single"]["median_ms"] / 1e3)
    n, why = ctx.batch_size("diffrax", r["single"]["median_ms"], 1)
    chunk = min(ctx.args.jax_chunk, n)
    n = max(chunk, n // chunk * chunk)
    k = min(ctx.args.check_draws, n)
    t = time.perf_counter()
    jax.block_until_ready(batched(jnp.asarray(ctx.draws[:chunk])))
    r["setup_detail"]["first_batch_chunk_s"] = time.perf_counter() - t

    def batch():
        failures, head, steps = 0, None, 0
        for a in range(0, n, chunk):
            Yb, okb, nb = jax.block_until_ready(batched(jnp.asarray(ctx.draws[a:a + chunk])))
            Yb = np.asarray(Yb)
            failures += int((~np.asarray(okb) | ~np.isfinite(Yb).all(axis=(1, 2))).sum())
            steps += int(np.asarray(nb).sum())
            if head is None:
                head = Yb[:k].copy()
        return failures, head, {"mean_steps": steps / n}
    finish_batch(r, ctx, timed_batch(batch, n), why)
    r["batch"]["chunk_size"] = chunk
    return r


# ---- scipy LSODA with a numba right-hand side --------------------------------------------------------
def tool_scipy(ctx: Context) -> list[dict]:
    import numba
    import scipy
    from scipy.integrate import solve_ivp

    r = row("scipy solve_ivp", "external", "LSODA, numba RHS", version=scipy.__version__)
    r["notes"].append("solve_ivp(LSODA) per dose segment (19), t_eval = the segment's days, "
                      "njit right-hand side from reference_model.ant, no Jacobian (finite differences)")
    t = time.perf_counter()
    rates = numba.njit(cache=False)(reference_rates)

    @numba.njit(cache=False)
    def rhs(t, y, p):
        d = rates(y, p)
        out = np.empty(10)
        for i in range(10):
            out[i] = d[i]
        return out
    rhs(0.0, Y0_ANT, ctx.nominal)
    r["setup_s"] = time.perf_counter() - t
    r["setup_detail"] = {"numba_rhs_compile_s": r["setup_s"]}
    segments = dose_segments()

    def trajectory(p):
        y = Y0_ANT.copy()
        Y = np.empty((len(DAYS), len(STATES)))
        nfev = 0
        dose = p[I_DOSE] / p[I_V1]
        for k, (a, b, idx) in enumerate(segments):
            if k > 0:
                y[I_C1] += dose
            t_eval = np.append(DAYS[idx], b) if DAYS[idx[-1]] != b else DAYS[idx]
            sol = solve_ivp(rhs, (a, b), y, method="LSODA", t_eval=t_eval, args=(p,), rtol=RTOL, atol=ATOL)
            nfev += sol.nfev
            if not sol.success:
                return None, nfev
            Y[idx] = sol.y.T[:len(idx)]
            y = sol.y[:, -1].copy()
        return Y, nfev

    Y, nfev = trajectory(ctx.nominal)
    r["steps"] = f"{nfev} RHS evals"
    record_single(r, ctx, lambda: trajectory(ctx.nominal), Y)
    n, why = ctx.batch_size("scipy", r["single"]["median_ms"], 1)
    k = min(ctx.args.check_draws, n)

    finish_batch(r, ctx, timed_batch(lambda: loop_batch(lambda p: trajectory(p)[0], ctx.draws, n, k), n), why)
    return [r]


# ---- AMICI (only if importable: `pip install amici`, which builds it and needs swig and BLAS) -----
def tool_amici(ctx: Context) -> list[dict]:
    """AMICI >= 1.0 (snake_case API): SBML import to a compiled CVODES model, then a Python loop of
    `run_simulation` over the draws, as for libRoadRunner. Sensitivity code is not generated (no
    sensitivities are asked for), which shortens the build."""
    try:
        import amici
        import amici.sim.sundials as sundials
        from amici.importers.sbml import SbmlImporter
    except ImportError:
        log("    AMICI: not installed (or older than 1.0)")
        return [row("AMICI", "external", "CVODES", error="not installed")]
    r = row("AMICI", "external", "CVODES (BDF)", version=getattr(amici, "__version__", "?"))
    out = Path(tempfile.mkdtemp(prefix="amici_ref_"))
    t = time.perf_counter()
    SbmlImporter(str(SBML)).sbml2amici("immunoedit_ref_bench", out, verbose=False,
                                       generate_sensitivity_code=False)
    model = sundials.import_model_module("immunoedit_ref_bench", out).get_model()
    r["setup_s"] = time.perf_counter() - t
    r["setup_detail"] = {"note": "SBML import + C++ build of the model (no sensitivity code)"}
    model.set_timepoints(DAYS)
    solver = model.create_solver()
    solver.set_relative_tolerance(RTOL)
    solver.set_absolute_tolerance(ATOL)
    solver.set_max_steps(MAX_STEPS)
    order = [PARAMS.index(p) for p in model.get_free_parameter_ids()]
    if len(order) != len(PARAMS):
        raise RuntimeError(f"AMICI made {len(order)} of the {len(PARAMS)} parameters free")
    cols = [list(model.get_state_ids()).index(s) for s in STATES]

    def run(p):
        model.set_free_parameters([float(p[j]) for j in order])
        rdata = sundials.run_simulation(model, solver)
        return np.asarray(rdata.x)[:, cols] if rdata.status == sundials.AMICI_SUCCESS else None
    Y = run(ctx.nominal)
    r["steps"] = int(np.max(sundials.run_simulation(model, solver).numsteps))   # CVODES steps, nominal
    record_single(r, ctx, lambda: run(ctx.nominal), Y)
    n, why = ctx.batch_size("amici", r["single"]["median_ms"], 1)
    k = min(ctx.args.check_draws, n)
    finish_batch(r, ctx, timed_batch(lambda: loop_batch(run, ctx.draws, n, k), n), why)
    return [r]


# ---- compile probes (fresh subprocesses) --------------------------------------------------------------
PROBE = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np
    import immunoedit_models as ie
    import immunoedit_models.compile.{backend}_backend
    import xarray as xr
    xr.Variable("x", np.zeros(1))  # xarray's first Variable imports dask.array (0.2-0.4 s): an import
    t1 = time.perf_counter()
    spec = ie.load_spec("benchmark_reference")
    t2 = time.perf_counter()
    model = ie.compile_model(spec, backend="{backend}")
    t3 = time.perf_counter()
    days = np.arange(366.0)
    ds = ie.simulate(model, days, rtol=1e-6, atol=1e-9)
    t4 = time.perf_counter()
    later = []
    for _ in range(5):
        t = time.perf_counter(); ie.simulate(model, days, rtol=1e-6, atol=1e-9); later.append(time.perf_counter() - t)
    later = sorted(later)[2]
    print("PROBE" + json.dumps({{"import_s": t1 - t0, "load_spec_s": t2 - t1, "compile_model_s": t3 - t2,
        "first_simulate_s": t4 - t3, "later_simulate_s": later, "status": int(ds["status"]),
        "compile_s": (t3 - t2) + max(0.0, (t4 - t3) - later),
        "time_to_first_trajectory_s": t4 - t0}}))
""")


def probe(backend: str, env_extra: dict) -> dict:
    env = {**os.environ, **env_extra}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE.format(backend=backend)], capture_output=True, text=True,
                          env=env, cwd=str(REPO), timeout=1800)
    wall = time.perf_counter() - t
    line = [x for x in proc.stdout.splitlines() if x.startswith("PROBE")]
    if proc.returncode != 0 or not line:
        return {"error": (proc.stderr or proc.stdout)[-2000:], "process_wall_s": wall}
    return {**json.loads(line[-1][5:]), "process_wall_s": wall}


def stage_compile(ctx: Context, tools: set[str]) -> dict:
    out: dict[str, Any] = {}
    if tools & {"numba", "numba-tsit5"}:
        with tempfile.TemporaryDirectory(prefix="ie_cold_") as d:
            log("compile: numba cold (fresh IMMUNOEDIT_CACHE_DIR; solver loops from the package's numba cache)")
            out["numba_cold_model"] = probe("numba", {"IMMUNOEDIT_CACHE_DIR": d})
            log(f"    {_probe_line(out['numba_cold_model'])}")
            log("compile: numba warm (second process, same cache dir)")
            out["numba_warm"] = probe("numba", {"IMMUNOEDIT_CACHE_DIR": d})
            log(f"    {_probe_line(out['numba_warm'])}")
        if not ctx.args.quick:
            with tempfile.TemporaryDirectory(prefix="ie_cold_all_") as d:
                log("compile: numba first install (fresh IMMUNOEDIT_CACHE_DIR and NUMBA_CACHE_DIR)")
                out["numba_cold_all"] = probe("numba", {"IMMUNOEDIT_CACHE_DIR": d,
                                                        "NUMBA_CACHE_DIR": str(Path(d) / "numba_cache")})
                log(f"    {_probe_line(out['numba_cold_all'])}")
    if "jax" in tools:
        with tempfile.TemporaryDirectory(prefix="ie_jax_") as d:
            # What the `immunoedit` command sets for itself (`cli._keep_jax_compiles`).
            cli_env = {"JAX_COMPILATION_CACHE_DIR": d, "EQX_ON_ERROR": "nan"}
            log("compile: jax first call vs later (fresh process, empty JAX compilation cache)")
            out["jax"] = probe("jax", cli_env)
            log(f"    {_probe_line(out['jax'])}")
            log("compile: jax warm (second process, same compilation cache)")
            out["jax_warm"] = probe("jax", cli_env)
            log(f"    {_probe_line(out['jax_warm'])}")
    return out


def _probe_line(p: dict) -> str:
    if "error" in p:
        return "ERROR " + p["error"].strip().splitlines()[-1]
    return (f"import {p['import_s']:.2f} s, compile_model {p['compile_model_s']:.2f} s, first simulate "
            f"{p['first_simulate_s']:.2f} s, later {p['later_simulate_s'] * 1e3:.2f} ms -> compile "
            f"{p['compile_s']:.2f} s, first trajectory after {p['time_to_first_trajectory_s']:.2f} s")


# ---- report ---------------------------------------------------------------------------------------
def machine_info() -> dict:
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None
    cpu = None
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                                    text=True).stdout.strip())
    except OSError:
        commit, dirty = None, None
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "hostname": platform.node(),
            "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "python": platform.python_version(), "git_commit": commit, "git_dirty": dirty,
            "versions": {n: version(n) for n in ("immunoedit-models", "numpy", "scipy", "numba", "llvmlite", "jax",
                                                 "jaxlib", "diffrax", "equinox", "libroadrunner", "amici",
                                                 "pandas", "xarray")}}
    try:
        import numba
        info["numba_threads"] = numba.get_num_threads()
        info["numba_threading_layer"] = numba.config.THREADING_LAYER
    except ImportError:
        pass
    return info


def add_ratios(rows: list[dict]) -> None:
    rr = next((r for r in rows if r["tool"] == "libRoadRunner" and r["single"]), None)
    for r in rows:
        ratios = {}
        if rr and r["single"]:
            ratios["single_speedup"] = rr["single"]["median_ms"] / r["single"]["median_ms"]
        if rr and rr["batch"] and r["batch"]:
            ratios["throughput"] = r["batch"]["traj_per_s"] / rr["batch"]["traj_per_s"]
            ratios["throughput_per_core"] = r["batch"]["traj_per_s_per_core"] / rr["batch"]["traj_per_s_per_core"]
        r["ratios_vs_roadrunner"] = ratios


def fmt(x, spec: str = ".3g", none: str = "–") -> str:
    if x is None:
        return none
    if isinstance(x, str):
        return x
    if isinstance(x, float) and not np.isfinite(x):
        return "inf"
    return format(x, spec)


def targets(rows: list[dict], compile_info: dict) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for the project issue's targets."""
    out = []
    rr = next((r for r in rows if r["tool"] == "libRoadRunner" and r["single"]), None)
    for r in rows:
        if r["tool"] == "immunoedit numba rodas5p" and r["single"]:
            ms = r["single"]["median_ms"]
            out.append((f"numba one trajectory ≤ 0.25 ms ({r['level']})", f"{ms:.3f} ms", _ok(ms <= 0.25)))
            if rr:
                sp = rr["single"]["median_ms"] / ms
                out.append((f"numba one trajectory ≥ 10× libRoadRunner ({r['level']})", f"{sp:.1f}×", _ok(sp >= 10)))
            if r["batch"]:
                pc = r["batch"]["traj_per_s_per_core"]
                out.append((f"numba batch ≥ 4,000 traj/s per core ({r['level']})", f"{pc:,.0f}", _ok(pc >= 4000)))
    warm_import = compile_info.get("numba_warm", {}).get("import_s", 0.0)
    for key, label in (("numba_cold_model", "numba compile ≤ 2 s (fresh model cache)"),
                       ("numba_warm", "numba compile ≤ 2 s (warm cache)"),
                       ("numba_cold_all", "numba compile ≤ 2 s (first install: empty numba caches; "
                                          "import-time solver compile counted)"),
                       ("jax", "JAX compile ≤ 5 s (compile_model + first-call overhead)"),
                       ("jax_warm", "JAX compile ≤ 5 s (warm compilation cache)")):
        p = compile_info.get(key)
        if p and "error" not in p:
            lim = 5.0 if key.startswith("jax") else 2.0
            value = p["compile_s"] + (max(0.0, p["import_s"] - warm_import) if key == "numba_cold_all" else 0.0)
            out.append((label, f"{value:.2f} s", _ok(value <= lim)))
        elif p:
            out.append((label, "error", "FAIL"))
    for r in rows:
        if r["accuracy"] and r["tool"].startswith("immunoedit"):
            e = r["accuracy"]["max_rel_err"]
            out.append((f"accuracy ≤ 1e-5: {r['tool']} ({r['level']})", f"{e:.2e}", _ok(r["accuracy"]["pass"])))
    return out


def _ok(b: bool) -> str:
    return "pass" if b else "FAIL"


def _name(r: dict) -> str:
    return r["tool"] + (f" ({r['method']})" if not r["tool"].startswith("immunoedit") and r["method"] != "–" else "")


def markdown(report: dict) -> str:
    rows, m, comp = report["rows"], report["machine"], report["compile"]
    L = [f"# Reference protocol — {m['date']}", "",
         f"Machine: {m['cpu']}, {m['cpu_count']} CPUs, Python {m['python']}, numba threads "
         f"{m.get('numba_threads')}; immunoedit {m['versions']['immunoedit-models']} (git {m['git_commit']}"
         f"{', dirty tree' if m['git_dirty'] else ''}). Options: `{report['argv']}`.", "",
         "Workload: 366 daily outputs, days 0–365, 18 × 1200 mg q21d from day 7.5, rtol 1e-6 / atol 1e-9. "
         "Accuracy: max relative error over states × days vs libRoadRunner at rtol 1e-10 / atol 1e-12 "
         "(gate 1e-5). Batch: 42 parameters log-uniform in [0.5, 1.5] × nominal, default_rng(0).", "",
         "| tool | level | setup s | 1 traj median ms | steps | batch n | traj/s | cores busy | traj/s/core "
         "| failures | max rel err (nominal) | gate | batch check err | ×RR 1 traj | ×RR traj/s | ×RR per core "
         "| other load |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = _name(r)
        if r["error"]:
            L.append(f"| {name} | {r['level']} | {r['error']} |" + " |" * 14)
            continue
        s, b, a, q = r["single"] or {}, r["batch"] or {}, r["accuracy"] or {}, r.get("ratios_vs_roadrunner", {})
        chk = b.get("check_accuracy", {}).get("max_rel_err")
        loads = [x.get("other_load_cores") for x in (s, b) if x and x.get("other_load_cores") is not None]
        L.append("| " + " | ".join([
            name, r["level"], fmt(r["setup_s"], ".2f"), fmt(s.get("median_ms"), ".3f"), fmt(r["steps"], ""),
            fmt(b.get("n"), "") + ("*" if b and b.get("selection") != "all draws" else ""),
            fmt(b.get("traj_per_s"), ",.1f"), fmt(b.get("cores_busy"), ".2f"), fmt(b.get("traj_per_s_per_core"), ",.1f"),
            fmt(b.get("failures"), ""), fmt(a.get("max_rel_err"), ".2e"),
            ("pass" if a.get("pass") else "**FAIL**") if a else "–", fmt(chk, ".2e"),
            fmt(q.get("single_speedup"), ".2f"), fmt(q.get("throughput"), ".2f"),
            fmt(q.get("throughput_per_core"), ".2f"), fmt(max(loads) if loads else None, ".2f")]) + " |")
    subsets = [f"{_name(r)} {r['level']}: {r['batch']['selection']}"
               for r in rows if r["batch"] and r["batch"]["selection"] != "all draws"]
    L += ["", ("\\* subset: " + "; ".join(subsets)) if subsets else "", ""]
    if comp:
        L += ["Compile (fresh subprocesses; compile = compile_model + first-call overhead over a later call):", "",
              "| probe | import s | compile_model s | first simulate s | later ms | compile s | first trajectory after s |",
              "|---|---:|---:|---:|---:|---:|---:|"]
        for k, p in comp.items():
            if "error" in p:
                L.append(f"| {k} | error: {p['error'].strip().splitlines()[-1][:80]} | | | | | |")
            else:
                L.append(f"| {k} | {p['import_s']:.2f} | {p['compile_model_s']:.2f} | {p['first_simulate_s']:.2f} | "
                         f"{p['later_simulate_s'] * 1e3:.2f} | {p['compile_s']:.2f} | {p['time_to_first_trajectory_s']:.2f} |")
        L.append("")
    L += ["Targets (project issue):", "", "| target | measured | verdict |", "|---|---:|---|"]
    L += [f"| {t} | {v} | {'**FAIL**' if x == 'FAIL' else x} |" for t, v, x in report["targets"]]
    failed = [r for r in rows if r["accuracy"] and not r["accuracy"]["pass"]]
    if failed:
        L += ["", "Failed accuracy gates: " + "; ".join(
            f"{_name(r)} {r['level']}: {r['accuracy']['max_rel_err']:.2e} at {r['accuracy']['worst']}"
            + (f" (|y| {r['accuracy']['zero_ref_max_abs']:.1e} where the reference is 0)"
               if r["accuracy"]["zero_ref_max_abs"] > ATOL else "") for r in failed)]
    over = [f"{_name(r)} {r['level']}: {r['batch']['check_accuracy']['max_rel_err']:.2e}" for r in rows
            if r["batch"] and "check_accuracy" in r["batch"] and not r["batch"]["check_accuracy"]["pass"]]
    if over:
        L += ["", "Batch check above the 1e-5 gate (first draws vs tight libRoadRunner): " + "; ".join(over)]
    if report["notes"]:
        L += ["", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(L) + "\n"


# ---- main -----------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke version: 500 draws, 5 repeats, small subsets")
    ap.add_argument("--tools", default=",".join(TOOL_CHOICES),
                    help=f"comma-separated subset of {','.join(TOOL_CHOICES)} (default: all)")
    ap.add_argument("--batch", type=int, default=None, help="draws for the fast tools (default 10000; quick 500)")
    ap.add_argument("--subset", type=int, default=None,
                    help="draws for the slow tools (default jax/diffrax 200, scipy 500; quick 50/50/100)")
    ap.add_argument("--repeats", type=int, default=None, help="timed single-trajectory calls (default 30; quick 5)")
    ap.add_argument("--check-draws", type=int, default=20,
                    help="first draws of every batch checked against the tight reference (default 20)")
    ap.add_argument("--max-batch-seconds", type=float, default=150.0,
                    help="cap a batch at about this many seconds, predicted from the single trajectory")
    ap.add_argument("--jax-chunk", type=int, default=100, help="vmap chunk for jax and diffrax batches")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="output folder")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="before starting, wait up to this long for other processes to go idle (< 0.2 cores)")
    ap.add_argument("--render", type=Path, default=None, metavar="JSON",
                    help="only rewrite the Markdown table from a saved JSON report (next to it) and print it")
    ap.add_argument("--no-compile-probes", action="store_true", help="skip the subprocess compile probes")
    args = ap.parse_args(argv)
    args.batch = args.batch or (500 if args.quick else 10_000)
    args.repeats = args.repeats or (5 if args.quick else 30)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    bad = [t for t in tools if t not in TOOL_CHOICES]
    if bad:
        ap.error(f"unknown tools {bad}; choose from {','.join(TOOL_CHOICES)}")
    args.tool_set = set(tools)
    if args.no_compile_probes:
        args.tool_set.discard("compile")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        md = markdown(json.loads(args.render.read_text()))
        args.render.with_suffix(".md").write_text(md)
        print(md)
        return 0
    if not SBML.exists():
        raise SystemExit(f"{SBML} not found: set IMMUNOEDIT_SHARED to the shared/ folder")
    ctx = Context(args)
    start = time.perf_counter()
    load0 = wait_idle(args.wait_idle) if args.wait_idle > 0 else other_load(1.0)
    if load0 is not None and load0 >= 0.2:
        log(f"WARNING: other processes use {load0:.2f} cores: timings will be disturbed")
        ctx.notes.append(f"At the start other processes used {load0:.2f} cores of the machine: timings are disturbed.")
    log(f"reference protocol: tools {sorted(args.tool_set)}, batch {args.batch}, repeats {args.repeats}"
        + (" (quick)" if args.quick else ""))
    import immunoedit_models as ie

    spec_model = ie.load_spec("benchmark_reference")
    sym = ie.build_symbolic(spec_model)
    if tuple(sym.parameters) != PARAMS:
        raise SystemExit("the spec's parameter order differs from reference_model.ant")
    ctx.nominal = np.asarray(sym.param_values, dtype=float)
    n_draw = max(args.batch, args.subset or 0, args.check_draws)
    rng = np.random.default_rng(0)
    ctx.draws = ctx.nominal * np.exp(rng.uniform(np.log(0.5), np.log(1.5), size=(n_draw, len(PARAMS))))
    stage_reference(ctx)

    compile_info = stage_compile(ctx, args.tool_set) if "compile" in args.tool_set else {}
    plan: list[tuple[str, Callable[[], list[dict]]]] = [
        ("roadrunner", lambda: tool_roadrunner(ctx)),
        ("numba", lambda: tool_immunoedit(ctx, "numba", "rodas5p")),
        ("numba-tsit5", lambda: tool_immunoedit(ctx, "numba", "tsit5")),
        ("jax", lambda: tool_immunoedit(ctx, "jax", "kvaerno5")),
        ("diffrax", lambda: tool_diffrax(ctx)),
        ("scipy", lambda: tool_scipy(ctx)),
        ("amici", lambda: tool_amici(ctx)),
    ]
    rows: list[dict] = []
    for name, fn in plan:
        if name not in args.tool_set:
            continue
        log(f"tool: {name}")
        try:
            rows.extend(fn())
        except Exception as exc:  # one broken tool must not lose the others' figures
            log(f"    ERROR {type(exc).__name__}: {exc}")
            rows.append(row(name, "–", "–", error=f"{type(exc).__name__}: {exc}",
                            traceback=traceback.format_exc()[-3000:]))
    add_ratios(rows)
    ctx.notes.append("libRoadRunner, scipy and diffrax use one core; numba's batch spreads over its threads; "
                     "cores busy = process CPU time / wall time during the batch, traj/s/core = traj/s / cores busy.")
    ctx.notes.append("setup s: in this process (numba's disk caches are usually warm; see the compile table for "
                     "cold figures); jax/diffrax: first call minus a later call, plus compile_model for the API.")
    ctx.notes.append("other load: the most CPU (in cores) that other processes on the machine used during this "
                     "row's single-trajectory or batch timing (/proc/stat); above ~0.2 the row's timings are disturbed.")
    ctx.notes.append("batch check err: max relative error of the first draws of the batch vs the tight "
                     "libRoadRunner reference of the same draws (same metric as the nominal gate).")
    report = {"argv": " ".join(sys.argv[1:]) or "(defaults)", "machine": {**machine_info(),
                                                                           "other_load_at_start_cores": load0},
              "protocol": {"days": [0, 365], "n_out": len(DAYS), "doses": DOSE_TIMES.tolist(), "dose_mg": 1200,
                           "rtol": RTOL, "atol": ATOL, "reference": {"tool": "libRoadRunner", "rtol": REF_RTOL,
                                                                     "atol": REF_ATOL},
                           "gate_rel": GATE_REL, "batch_draws": args.batch, "check_draws": args.check_draws,
                           "draws": "nominal * exp(default_rng(0).uniform(log 0.5, log 1.5, (n, 42)))",
                           "parameter_order": list(PARAMS)},
              "compile": compile_info, "rows": rows, "notes": ctx.notes,
              "wall_s": time.perf_counter() - start}
    report["targets"] = targets(rows, compile_info)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "reference_protocol" + ("_quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=_json_default))
    md = markdown(report)
    (args.out / f"{stem}.md").write_text(md)
    log(f"done in {report['wall_s']:.0f} s: {args.out / (stem + '.json')}, {args.out / (stem + '.md')}")
    print(md)
    return 0


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


if __name__ == "__main__":
    sys.exit(main())
