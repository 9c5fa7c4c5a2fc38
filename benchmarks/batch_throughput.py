#!/usr/bin/env python
"""Batch throughput of the reference model through `simulate_batch`, for several chunk sizes.

    python benchmarks/batch_throughput.py                       # numba, 10^4 trajectories
    python benchmarks/batch_throughput.py --large               # numba, 10^5 trajectories
    python benchmarks/batch_throughput.py --backend jax         # JAX (GPU when present, else CPU)
    python benchmarks/batch_throughput.py --chunks 2000,20000 --n 50000 --method tsit5

Workload as in the shared protocol: 366 daily outputs over days 0-365, 18 doses q21d from day 7.5,
rtol 1e-6 / atol 1e-9; draws: all 42 parameters log-uniform in [0.5, 1.5] x nominal with
numpy default_rng(0) (the same matrix as reference_protocol.py; each row's `Dose` is its bolus).

For each chunk size: one untimed warm-up call (numba: JIT caches and threads; JAX: trace and
compile for the chunk's shape, reported as `warmup_s`), then one timed `simulate_batch` over all
trajectories. A kernel-level line (`model.kernels.solve` on prebuilt arrays, same chunks)
shows what the xarray/API layer costs. Per core: numba divides by its thread count; JAX on CPU
by the cores the process kept busy; JAX on GPU reports per device.

Writes benchmarks/results/batch_throughput_<backend>_<n>.json.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from reference_protocol import system_busy_seconds  # same folder: run as a script

HERE = Path(__file__).resolve().parent
DAYS = np.arange(366.0)
RTOL, ATOL = 1e-6, 1e-9


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Clock:
    """Wall, own CPU and other processes' CPU (cores) over a with-block."""

    def __enter__(self):
        self.sys0, self.cpu0, self.t0 = system_busy_seconds(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.cpu0
        sys1 = system_busy_seconds()
        self.other = (None if self.sys0 is None or sys1 is None
                      else max(0.0, (sys1 - self.sys0 - self.cpu) / self.wall))


def wait_idle(max_wait: float, threshold: float = 0.2) -> None:
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        with Clock() as c:
            time.sleep(3.0)
        if c.other is None or c.other < threshold:
            return
        log(f"waiting for an idle machine: other processes use {c.other:.2f} cores")


def draws(nominal: np.ndarray, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return nominal * np.exp(rng.uniform(np.log(0.5), np.log(1.5), size=(n, nominal.size)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("numba", "jax"), default="numba")
    ap.add_argument("--method", default=None, help="solver (default: the backend's stiff default)")
    ap.add_argument("--n", type=int, default=None,
                    help="trajectories (default 10^4; 10^5 with --large; JAX on CPU: 500)")
    ap.add_argument("--large", action="store_true", help="10^5 trajectories")
    ap.add_argument("--chunks", default=None, help="comma-separated chunk sizes (default depends on backend)")
    ap.add_argument("--no-kernel", action="store_true", help="skip the kernel-level lines")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="first wait up to this long for other processes to go idle (< 0.2 cores)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)

    import pandas as pd

    import immunoedit_models as ie
    from immunoedit_models.simulate.core import parameter_function, regimen_list
    from immunoedit_models.simulate.regimen import event_arrays

    info: dict = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "hostname": platform.node(),
                  "cpu_count": os.cpu_count(), "python": platform.python_version(),
                  "immunoedit": importlib.metadata.version("immunoedit-models"), "backend": args.backend}
    gpu = False
    if args.backend == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        devices = jax.devices()
        print("jax.devices():", devices, flush=True)
        gpu = devices[0].platform != "cpu"
        info.update(jax=jax.__version__, devices=[str(d) for d in devices], platform=devices[0].platform)
        per_core_div = len(devices) if gpu else None
        n_default = 10_000 if gpu else 500
        chunks_default = [1_000, 10_000] if gpu else [100, 500]
    else:
        import numba
        info.update(numba=numba.__version__, numba_threads=numba.get_num_threads(),
                    threading_layer=numba.config.THREADING_LAYER)
        per_core_div = numba.get_num_threads()
        n_default = 10_000
        chunks_default = [1_000, 5_000, 10_000, 20_000]
    unit = "device" if gpu else "core"
    n = args.n or (100_000 if args.large else n_default)
    if args.large and not args.chunks:
        chunks_default = [10_000, 20_000, 100_000] if args.backend == "numba" or gpu else chunks_default
    chunks = [int(c) for c in args.chunks.split(",")] if args.chunks else chunks_default
    chunks = sorted({min(c, n) for c in chunks})
    if args.backend == "jax" and not gpu and n > 2_000:
        log(f"note: JAX on CPU runs ~20 trajectories/s on 2 cores; {n} will take ~{n / 20 / 60:.0f} min")

    t = time.perf_counter()
    model = ie.compile_model(ie.load_spec("benchmark_reference"), backend=args.backend)
    info["compile_model_s"] = time.perf_counter() - t
    from immunoedit_models.compile import DEFAULT_METHOD

    method = args.method or DEFAULT_METHOD[args.backend]
    nominal = np.asarray(model.symbolic.param_values, dtype=float)
    P = draws(nominal, n)
    frame = pd.DataFrame(P, columns=list(model.parameters))
    regimens = regimen_list(model, None, n)  # the spec's q21d x18 regimen doses each row's `Dose`
    log(f"{args.backend} {method}: {n} trajectories, chunks {chunks}, compile_model {info['compile_model_s']:.2f} s")

    if args.wait_idle > 0:
        wait_idle(args.wait_idle)
    results = []
    for chunk in chunks:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ie.simulate_batch(model, params=frame.iloc[:chunk], times=DAYS, regimen=regimens[:chunk],
                              rtol=RTOL, atol=ATOL, method=method, chunk_size=chunk)
            warm = time.perf_counter() - t
            with Clock() as c:
                out = ie.simulate_batch(model, params=frame, times=DAYS, regimen=regimens, rtol=RTOL, atol=ATOL,
                                        method=method, chunk_size=chunk)
        results.append(_line("api", chunk, n, c, warm, int((out["status"].values != 0).sum()),
                             float(out["n_steps"].mean()), per_core_div, unit))
        del out

    if not args.no_kernel:
        kernels = model.kernels
        dose_states = {d: model.states.index(tg.state) for d, tg in model.symbolic.dose_targets.items()}
        Y0 = np.ascontiguousarray(kernels.initial(P))
        ev = event_arrays(regimens, np.asarray(kernels.dose_factors(P)), list(kernels.drug_names), dose_states,
                          amount_of=lambda text: parameter_function(model, text)(P))
        arrays = (Y0, P, ev.time, ev.state, ev.kind, ev.value)
        for chunk in chunks:
            pieces = [slice(a, min(a + chunk, n)) for a in range(0, n, chunk)]

            def run(sl):
                a = [x[sl] for x in arrays]
                return kernels.solve(a[0], a[1], 0.0, DAYS, *a[2:], RTOL, ATOL, method=method)
            t = time.perf_counter()
            run(pieces[0])
            warm = time.perf_counter() - t
            failures, steps = 0, 0
            with Clock() as c:
                for sl in pieces:
                    _, status, n_steps, _ = run(sl)
                    failures += int((np.asarray(status) != 0).sum())
                    steps += int(np.asarray(n_steps).sum())
            results.append(_line("kernel", chunk, n, c, warm, failures, steps / n, per_core_div, unit))

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"batch_throughput_{args.backend}_{n}.json"
    path.write_text(json.dumps({"info": info, "method": method, "n": n, "rtol": RTOL, "atol": ATOL,
                                "results": results}, indent=1))
    print()
    print(f"| level | chunk | n | s | traj/s | per {unit} | cores busy | failures | mean steps | warm-up s "
          "| other load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['level']} | {r['chunk_size']} | {r['n']} | {r['seconds']:.2f} | {r['traj_per_s']:,.0f} | "
              f"{r['traj_per_s_per_core']:,.0f} | {r['cores_busy']:.2f} | {r['failures']} | {r['mean_steps']:.0f} | "
              f"{r['warmup_s']:.2f} | {_f(r['other_load_cores'])} |")
    log(f"wrote {path}")
    return 0


def _line(level, chunk, n, clock, warm, failures, mean_steps, per_core_div, unit="core") -> dict:
    wall, cpu = clock.wall, clock.cpu
    busy = max(1.0, cpu / wall)
    div = per_core_div or busy
    r = {"level": level, "chunk_size": chunk, "n": n, "seconds": wall, "cpu_seconds": cpu, "cores_busy": busy,
         "other_load_cores": clock.other,
         "traj_per_s": n / wall, "per_core_divisor": div, "traj_per_s_per_core": n / wall / div,
         "failures": failures, "mean_steps": mean_steps, "warmup_s": warm}
    log(f"{level:6s} chunk {chunk:>6}: {n} traj in {wall:.2f} s = {r['traj_per_s']:,.0f} traj/s "
        f"({r['traj_per_s_per_core']:,.0f} per {unit}), "
        f"{busy:.2f} cores busy, failures {failures}"
        + (f", OTHER LOAD {clock.other:.2f} cores" if (clock.other or 0) > 0.2 else ""))
    return r


def _f(x) -> str:
    return "–" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    sys.exit(main())
