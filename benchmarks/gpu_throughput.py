#!/usr/bin/env python
"""GPU throughput of the reference model: the CUDA backend (one trajectory per GPU thread) in
float64 and float32, and vmapped diffrax (the jax backend) on the same GPU for the ratio.

    python benchmarks/gpu_throughput.py --out benchmarks/results      # GPU: 10^4, 10^5, 10^6
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu_throughput.py --quick   # smoke run, simulator

Workload (the shared protocol, ../shared/benchmarks/README.md): benchmark_reference, 366 daily
outputs over days 0-365, its default regimen (18 boluses q21d from day 7.5, each row's `Dose`),
rtol 1e-6 / atol 1e-9 (float32 too: its error is reported, not hidden by a looser tolerance);
all 42 parameters log-uniform in [0.5, 1.5] x nominal, numpy default_rng(0) (a smaller batch is
a prefix of the larger one).

Stages, each written to the results as soon as it is done (a run cut short keeps what it did):
1. compile: `compile_model(backend='cuda')` into an empty cache directory, then the first and a
   second launch of the same 64-trajectory batch per precision (compile = first - second); a
   fresh subprocess on the now warm cache repeats it (numba's on-disk kernel cache).
2. throughput: per precision and batch size, --repeats calls of `kernels.solve` (median of
   each): kernel seconds (inputs on the device, results written to device memory), host-to-
   device and device-to-host copy seconds, and the whole call; trajectories/s of the kernel and
   of the call; accepted / rejected steps; failures (status != 0). Accuracy: the first --check
   trajectories against the numba CPU backend (max relative error over states x days, entries
   with |reference| < atol excluded).
3. jax: the jax backend (vmapped diffrax Kvaerno5) on the same device, --jax-n trajectories in
   chunks of --jax-chunk (first chunk: trace + compile + run, reported apart; then timed).
Writes <out>/gpu_throughput[_quick].json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")   # JAX shares the GPU with numba

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))          # the repository, when the package is not installed
DAYS = np.arange(366.0)
RTOL, ATOL = 1e-6, 1e-9
TARGET_N, TARGET_S, TARGET_RATIO = 1_000_000, 1.0, 30.0    # issue 6: 10^6 in <= 1 s, >= 30x jax


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def draws(nominal: np.ndarray, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return nominal * np.exp(rng.uniform(np.log(0.5), np.log(1.5), size=(n, nominal.size)))


def problem(model, n: int) -> tuple[np.ndarray, ...]:
    """(Y0, P, ev_t, ev_state, ev_kind, ev_value) of the protocol's first n draws."""
    from immunoedit_models.simulate.core import parameter_function, regimen_list
    from immunoedit_models.simulate.regimen import event_arrays

    P = draws(np.asarray(model.symbolic.param_values, dtype=float), n)
    dose_states = {d: model.states.index(t.state) for d, t in model.symbolic.dose_targets.items()}
    ev = event_arrays(regimen_list(model, None, n), model.kernels.dose_factors(P),
                      list(model.kernels.drug_names), dose_states,
                      amount_of=lambda text: parameter_function(model, text)(P))
    return model.kernels.initial(P), P, ev.time, ev.state, ev.kind, ev.value


def rows(arrays: tuple[np.ndarray, ...], n: int) -> tuple[np.ndarray, ...]:
    return tuple(np.ascontiguousarray(a[:n]) for a in arrays)


def max_rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """Max |got - ref| / |ref| over entries with |ref| >= ATOL (NaN where a run failed)."""
    mask = np.abs(ref) >= ATOL
    if not mask.any():
        return float("nan")
    return float(np.max(np.abs(got.astype(np.float64) - ref)[mask] / np.abs(ref)[mask]))


def numba_cuda_version() -> str:
    """The NVIDIA numba-cuda package's version, or numba's built-in CUDA target."""
    try:
        return importlib.metadata.version("numba-cuda")
    except importlib.metadata.PackageNotFoundError:
        return "built-in"


def device_info(cuda) -> dict:
    from immunoedit_models.compile.cuda_backend import simulator_enabled

    info = {"simulator": simulator_enabled()}
    dev = cuda.current_context().device
    name = getattr(dev, "name", "numba CUDA simulator")
    info["device"] = name.decode() if isinstance(name, bytes) else str(name)
    info["compute_capability"] = list(dev.compute_capability)
    if not info["simulator"]:
        free, total = cuda.current_context().get_memory_info()
        info.update(memory_total_gib=total / 2**30, memory_free_gib=free / 2**30,
                    multiprocessors=getattr(dev, "MULTIPROCESSOR_COUNT", None))
    return info


# ---- stages -----------------------------------------------------------------------------------
def first_launches(model, arrays, precisions, n: int = 64) -> dict:
    """Per precision: first and second launch of the same n-trajectory batch (seconds)."""
    out = {}
    small = rows(arrays, n)
    for precision in precisions:
        kernels = model.kernels.with_precision(precision)
        times = []
        for _ in range(2):
            t = time.perf_counter()
            kernels.solve(small[0], small[1], 0.0, DAYS, *small[2:], RTOL, ATOL)
            times.append(time.perf_counter() - t)
        out[precision] = {"first_s": times[0], "second_s": times[1],
                          "compile_s": times[0] - times[1]}
        log(f"{precision}: first launch {times[0]:.2f} s, second {times[1]:.3f} s")
    return out


def probe(args) -> int:
    """--probe: import, compile_model and first launches in this fresh process (warm cache)."""
    t = time.perf_counter()
    import immunoedit_models as ie
    imported = time.perf_counter() - t
    t = time.perf_counter()
    model = ie.compile_model("benchmark_reference", backend="cuda")
    compiled = time.perf_counter() - t
    arrays = problem(model, args.probe_n)
    launches = first_launches(model, arrays, args.precisions.split(","), args.probe_n)
    print("PROBE " + json.dumps({"import_s": imported, "compile_model_s": compiled,
                                 "launches": launches}))
    return 0


def throughput(model, arrays, precision: str, n: int, repeats: int, cpu_ref) -> dict:
    kernels = model.kernels.with_precision(precision)
    a = rows(arrays, n)
    calls = []
    for r in range(repeats):
        clock: dict[str, float] = {}
        t = time.perf_counter()
        Y, status, n_acc, n_rej, _, _ = kernels.solve_scanned(
            a[0], a[1], 0.0, DAYS, *a[2:], RTOL, ATOL, timings=clock)
        clock["call_s"] = time.perf_counter() - t
        calls.append(clock)
        if r < repeats - 1:
            del Y
    med = {k: statistics.median(c[k] for c in calls) for k in calls[0]}
    failed = status != 0
    codes, counts = np.unique(status[failed], return_counts=True)
    check = min(len(cpu_ref), n)
    line = {
        "precision": precision, "n": n, "repeats": repeats,
        "kernel_s": med["kernel_s"], "h2d_s": med["h2d_s"], "d2h_s": med["d2h_s"],
        "call_s": med["call_s"], "kernel_s_all": [c["kernel_s"] for c in calls],
        "traj_per_s_kernel": n / med["kernel_s"], "traj_per_s_call": n / med["call_s"],
        "steps_median": float(np.median(n_acc)), "steps_mean": float(np.mean(n_acc)),
        "steps_max": int(n_acc.max()), "rejected_mean": float(np.mean(n_rej)),
        "failures": int(failed.sum()),
        "failure_codes": {int(c): int(k) for c, k in zip(codes, counts)},
        "check_n": check,
        "check_max_rel_err_vs_cpu": max_rel_err(Y[:check][~failed[:check]],
                                                cpu_ref[:check][~failed[:check]]),
    }
    log(f"cuda {precision} n={n}: kernel {line['kernel_s']:.3f} s "
        f"({line['traj_per_s_kernel']:,.0f} traj/s), call {line['call_s']:.3f} s "
        f"(h2d {line['h2d_s']:.3f}, d2h {line['d2h_s']:.3f}), steps median "
        f"{line['steps_median']:.0f}, failures {line['failures']}, "
        f"max rel err vs CPU {line['check_max_rel_err_vs_cpu']:.2e}")
    return line


def jax_stage(arrays, n: int, chunk: int, cpu_ref) -> dict:
    import jax

    import immunoedit_models as ie

    jax.config.update("jax_enable_x64", True)
    devices = jax.devices()
    model = ie.compile_model("benchmark_reference", backend="jax")
    chunk = min(chunk, n)
    a = rows(arrays, n)
    pieces = [slice(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    if pieces[-1].stop - pieces[-1].start != chunk:     # one shape: one compile
        pieces = pieces[:-1] or [slice(0, chunk)]
    t = time.perf_counter()
    first = model.kernels.solve(*(x[pieces[0]] for x in a[:2]), 0.0, DAYS,
                                *(x[pieces[0]] for x in a[2:]), RTOL, ATOL)
    first_s = time.perf_counter() - t
    timed = pieces[1:] or pieces
    t = time.perf_counter()
    steps, failures = [], 0
    for sl in timed:
        Y, status, n_acc, _ = model.kernels.solve(*(x[sl] for x in a[:2]), 0.0, DAYS,
                                                  *(x[sl] for x in a[2:]), RTOL, ATOL)
        steps.append(n_acc)
        failures += int((status != 0).sum())
    wall = time.perf_counter() - t
    n_timed = sum(sl.stop - sl.start for sl in timed)
    check = min(len(cpu_ref), chunk)
    line = {"jax": jax.__version__, "devices": [str(d) for d in devices],
            "platform": devices[0].platform,
            "method": "kvaerno5", "chunk": chunk, "n": n_timed,
            "first_chunk_s": first_s, "seconds": wall, "traj_per_s": n_timed / wall,
            "steps_mean": float(np.mean(np.concatenate(steps))), "failures": failures,
            "check_max_rel_err_vs_cpu": max_rel_err(first[0][:check], cpu_ref[:check])}
    log(f"jax {line['platform']} vmap chunk {chunk}: first chunk {first_s:.1f} s, then "
        f"{n_timed} traj in {wall:.2f} s = {line['traj_per_s']:,.1f} traj/s")
    return line


# ---- report -----------------------------------------------------------------------------------
def markdown(res: dict) -> str:
    info, comp = res["info"], res.get("compile", {})
    lines = [f"# GPU throughput, {info['date']}", "",
             f"Device: {info.get('device')} (cc {info.get('compute_capability')}"
             f"{', CUDA SIMULATOR: timings meaningless' if info.get('simulator') else ''}); "
             f"numba {info.get('numba')}, numba.cuda {info.get('numba_cuda')}, jax "
             f"{(res.get('jax') or {}).get('jax', '-')}; host {info['hostname']}, Python "
             f"{info['python']}.", "",
             "Workload: benchmark_reference, days 0-365, 366 outputs, 18 doses, rtol 1e-6 / "
             "atol 1e-9, draws log-uniform [0.5, 1.5] x nominal (default_rng(0)); Rodas5P.", ""]
    if comp:
        lines += ["| compile | s |", "|---|---:|",
                  f"| compile_model (code generation, empty cache) | "
                  f"{comp['compile_model_s']:.2f} |"]
        for p, v in comp.get("launches", {}).items():
            lines.append(f"| {p}: first launch - second (kernel compile, cold) | "
                         f"{v['compile_s']:.2f} |")
        warm = comp.get("warm_probe")
        if warm:
            lines.append(f"| warm cache, new process: import + compile_model | "
                         f"{warm['import_s'] + warm['compile_model_s']:.2f} |")
            for p, v in warm["launches"].items():
                lines.append(f"| warm cache, new process: {p} first launch - second | "
                             f"{v['compile_s']:.2f} |")
        lines.append("")
    if res.get("cuda"):
        lines += ["| precision | n | kernel s | traj/s (kernel) | h2d s | d2h s | call s | "
                  "traj/s (call) | steps median | rejected mean | failures | max rel err vs CPU |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["cuda"]:
            lines.append(
                f"| {r['precision']} | {r['n']:,} | {r['kernel_s']:.3f} | "
                f"{r['traj_per_s_kernel']:,.0f} | {r['h2d_s']:.3f} | {r['d2h_s']:.3f} | "
                f"{r['call_s']:.3f} | {r['traj_per_s_call']:,.0f} | {r['steps_median']:.0f} | "
                f"{r['rejected_mean']:.1f} | {r['failures']} | "
                f"{r['check_max_rel_err_vs_cpu']:.1e} (first {r['check_n']}) |")
        lines.append("")
    if res.get("jax"):
        j = res["jax"]
        lines += [f"jax backend (vmapped diffrax Kvaerno5) on {j['platform']}: chunk {j['chunk']},"
                  f" first chunk {j['first_chunk_s']:.1f} s (trace + compile + run), then "
                  f"{j['n']} trajectories in {j['seconds']:.2f} s = {j['traj_per_s']:,.1f} "
                  f"traj/s, mean steps {j['steps_mean']:.0f}, failures {j['failures']}, max rel "
                  f"err vs CPU {j['check_max_rel_err_vs_cpu']:.1e}.", ""]
    for s in res.get("skipped", []):
        lines.append(f"Skipped: {s['precision']} n={s['n']:,} (predicted {s['predicted_s']:.0f} s "
                     "per call, over --max-call-s).")
    if res.get("jax_error"):
        lines.append(f"jax stage failed: {res['jax_error']}")
    if res.get("targets"):
        lines.append("")
        lines += ["| target (issue 6) | measured | verdict |", "|---|---:|---|"]
        lines += [f"| {t['target']} | {t['measured']} | {t['verdict']} |" for t in res["targets"]]
    return "\n".join(lines) + "\n"


def targets(res: dict) -> list[dict]:
    """The issue's GPU targets against the measured figures (none under the simulator)."""
    out = []
    if res["info"].get("simulator"):
        return out
    f64 = [r for r in res.get("cuda", []) if r["precision"] == "float64"]
    big = [r for r in f64 if r["n"] == TARGET_N]
    if big:
        r = big[0]
        out.append({"target": f"10^6 trajectories x 365 d in <= {TARGET_S:g} s (float64, kernel)",
                    "measured": f"{r['kernel_s']:.2f} s",
                    "verdict": "pass" if r["kernel_s"] <= TARGET_S else "FAIL"})
        out.append({"target": "same, whole call (with copies to and from the device)",
                    "measured": f"{r['call_s']:.2f} s",
                    "verdict": "pass" if r["call_s"] <= TARGET_S else "FAIL"})
    if f64 and res.get("jax"):
        best = max(f64, key=lambda r: r["n"])
        ratio = best["traj_per_s_kernel"] / res["jax"]["traj_per_s"]
        out.append({"target": f">= {TARGET_RATIO:g}x vmapped diffrax on the same GPU "
                              f"(float64 at n={best['n']:,}, kernel)",
                    "measured": f"{ratio:,.1f}x",
                    "verdict": "pass" if ratio >= TARGET_RATIO else "FAIL"})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes for numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")
    ap.add_argument("--sizes", default=None, help="batch sizes (default 10000,100000,1000000)")
    ap.add_argument("--precisions", default="float64,float32")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per size (median)")
    ap.add_argument("--check", type=int, default=100, help="draws compared with the CPU backend")
    ap.add_argument("--jax-n", type=int, default=None, help="jax trajectories (default 2000)")
    ap.add_argument("--jax-chunk", type=int, default=None, help="jax vmap chunk (default 1000)")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--no-warm-probe", action="store_true")
    ap.add_argument("--max-call-s", type=float, default=120.0,
                    help="skip a batch size whose call is predicted (linearly from the previous "
                         "size) to take longer; fewer repeats when they would exceed it")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--probe-n", type=int, default=64, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        return probe(args)
    sizes = [int(s) for s in (args.sizes or ("2,4" if args.quick else "10000,100000,1000000"))
             .split(",")]
    precisions = args.precisions.split(",")
    jax_n = args.jax_n or (4 if args.quick else 2000)
    jax_chunk = args.jax_chunk or (4 if args.quick else 1000)
    repeats = 1 if args.quick else args.repeats
    cache = tempfile.mkdtemp(prefix="immunoedit_gpu_bench_")
    os.environ["IMMUNOEDIT_CACHE_DIR"] = cache          # cold compile: an empty cache

    import numba

    import immunoedit_models as ie
    from immunoedit_models.compile.cuda_backend import require_device

    cuda = require_device()
    res: dict = {"info": {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                          "hostname": platform.node(), "python": platform.python_version(),
                          "numba": numba.__version__, "numba_cuda": numba_cuda_version(),
                          "argv": sys.argv[1:], **device_info(cuda)},
                 "protocol": {"days": "0-365", "outputs": DAYS.size, "rtol": RTOL, "atol": ATOL,
                              "method": "rodas5p", "sizes": sizes, "repeats": repeats}}
    stem = "gpu_throughput_quick" if args.quick else "gpu_throughput"
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        res["targets"] = targets(res)
        (args.out / f"{stem}.json").write_text(json.dumps(res, indent=1))
        (args.out / f"{stem}.md").write_text(markdown(res))

    log(f"device: {res['info']['device']} (simulator: {res['info']['simulator']}); cache {cache}")
    warnings.filterwarnings("ignore", category=numba.NumbaPerformanceWarning)
    t = time.perf_counter()
    model = ie.compile_model("benchmark_reference", backend="cuda")
    res["compile"] = {"compile_model_s": time.perf_counter() - t}
    arrays = problem(model, max(sizes + [jax_n, args.check]))
    probe_n = min(64, max(sizes))
    res["compile"]["launches"] = first_launches(model, arrays, precisions, probe_n)
    save()
    if not args.no_warm_probe:
        proc = subprocess.run([sys.executable, __file__, "--probe", "--precisions",
                               args.precisions, "--probe-n", str(probe_n)],
                              capture_output=True, text=True,
                              env={**os.environ, "IMMUNOEDIT_CACHE_DIR": cache})
        found = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
        res["compile"]["warm_probe"] = json.loads(found[-1][6:]) if found else None
        if not found:
            log(f"warm probe failed: {proc.stderr[-2000:]}")
        save()

    cpu = ie.compile_model("benchmark_reference", backend="numba")
    ref = rows(arrays, args.check)
    cpu_ref = cpu.kernels.solve(ref[0], ref[1], 0.0, DAYS, *ref[2:], RTOL, ATOL)[0]
    res["cuda"], res["skipped"] = [], []
    for precision in precisions:
        last = None
        for n in sizes:
            predicted = None if last is None else last["call_s"] * n / last["n"]
            if predicted is not None and predicted > args.max_call_s:
                res["skipped"].append({"precision": precision, "n": n, "predicted_s": predicted})
                log(f"skip cuda {precision} n={n}: predicted {predicted:.0f} s > --max-call-s")
                continue
            reps = repeats if predicted is None or predicted * repeats <= args.max_call_s else 1
            last = throughput(model, arrays, precision, n, reps, cpu_ref)
            res["cuda"].append(last)
            save()
    if not args.no_jax:
        try:
            res["jax"] = jax_stage(arrays, jax_n, jax_chunk, cpu_ref)
        except Exception as exc:        # report, keep the CUDA figures
            res["jax"] = None
            res["jax_error"] = f"{type(exc).__name__}: {exc}"
            log(f"jax stage failed: {res['jax_error']}")
        save()
    print(markdown(res))
    log(f"wrote {args.out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
