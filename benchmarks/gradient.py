#!/usr/bin/env python
"""Gradient of the shared protocol's time-course objective (../shared/benchmarks/README.md, item 3).

    python benchmarks/gradient.py                 # -> benchmarks/results/gradient.json
    python benchmarks/gradient.py --repeats 50

J(p) = 0.5 * sum_i (ln T(t_i; p) - d_i)^2 over the 20 observations of observations.json, with
respect to all 42 parameters p of the reference model (1200 mg q21d x18 from day 7.5; the dose
amount is the parameter `Dose`, so it has a gradient too). J(nominal) must be 436.555.

Measured:
- JAX (diffrax Kvaerno5, reverse-mode autodiff through the solver via
  `differentiable_simulator`): compile time of jit(value_and_grad) and the median time of a
  gradient call after it, at rtol 1e-6 / atol 1e-9 (the protocol's tolerances);
- accuracy: the JAX gradient against central finite differences of J computed with an
  independent solver (numba Rodas5P, one batch of 84 trajectories) at rtol 1e-10 / atol 1e-12,
  with relative steps 1e-4 and 1e-3 (their agreement shows the finite differences have converged).
  Reported: max_i |g_i - fd_i| / max_i |fd_i| (error relative to the gradient's scale) and the
  largest elementwise relative error over components with |fd_i| > 1e-6 max|fd|.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import immunoedit_models as ie
from immunoedit_models.simulate.differentiable import differentiable_simulator

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("IMMUNOEDIT_SHARED", HERE.parent.parent / "shared"))
J_NOMINAL = 436.555


def objective(model, obs, rtol, atol):
    f = differentiable_simulator(model, obs["obs_times"], list(model.parameters), outputs=["T"],
                                 rtol=rtol, atol=atol, t0=0.0)
    d = jnp.asarray(obs["logT"])
    return (lambda p: 0.5 * jnp.sum((jnp.log(f(p)[:, 0]) - d) ** 2)), jnp.asarray(f.theta0)


def finite_differences(obs, p0, rel_step, rtol, atol) -> np.ndarray:
    """Central differences of J with the numba backend: one batch of 2 * 42 trajectories."""
    model = ie.compile_model("benchmark_reference", backend="numba")
    k = len(p0)
    h = rel_step * np.abs(p0)
    P = np.repeat(p0[None, :], 2 * k, axis=0)
    P[np.arange(k), np.arange(k)] += h
    P[k + np.arange(k), np.arange(k)] -= h
    times = np.concatenate([[0.0], obs["obs_times"]])
    ds = ie.simulate_batch(model, params=pd.DataFrame(P, columns=model.parameters), times=times, rtol=rtol, atol=atol)
    if int((ds["status"] != 0).sum()):
        raise RuntimeError("a finite-difference trajectory failed")
    lnT = np.log(ds["T"].values[:, 1:])
    J = 0.5 * np.sum((lnT - np.asarray(obs["logT"])) ** 2, axis=1)
    return (J[:k] - J[k:]) / (2 * h)


def errors(g: np.ndarray, fd: np.ndarray) -> dict:
    scale = np.max(np.abs(fd))
    big = np.abs(fd) > 1e-6 * scale
    return {"max_abs_error_over_max_gradient": float(np.max(np.abs(g - fd)) / scale),
            "max_elementwise_rel_error": float(np.max(np.abs(g - fd)[big] / np.abs(fd[big]))),
            "components_compared_elementwise": int(big.sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20, help="timed gradient calls (median reported)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "gradient.json")
    args = ap.parse_args()
    obs = json.loads((SHARED / "benchmarks" / "observations.json").read_text())
    t = time.perf_counter()
    model = ie.compile_model("benchmark_reference", backend="jax")
    print(f"compile_model(jax): {time.perf_counter() - t:.2f} s", flush=True)
    out: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                             "jax_devices": [str(d) for d in jax.devices()]},
                 "n_parameters": len(model.parameters)}
    for rtol, atol in ((1e-6, 1e-9), (1e-10, 1e-12)):
        J, p0 = objective(model, obs, rtol, atol)
        vg = jax.jit(jax.value_and_grad(J))
        t = time.perf_counter()
        value, grad = jax.block_until_ready(vg(p0))
        compile_s = time.perf_counter() - t
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            jax.block_until_ready(vg(p0))
            times.append(time.perf_counter() - t)
        key = f"jax_rtol_{rtol:g}"
        out[key] = {"J": float(value), "J_matches_protocol": abs(float(value) - J_NOMINAL) < 5e-4,
                    "compile_s": compile_s, "gradient_median_ms": 1e3 * float(np.median(times)),
                    "gradient": np.asarray(grad).tolist()}
        print(f"{key}: J = {float(value):.6f}, compile {compile_s:.1f} s, gradient {1e3 * np.median(times):.1f} ms "
              f"(median of {args.repeats})", flush=True)
    p0 = np.asarray(p0)
    for rel_step in (1e-4, 1e-3):
        fd = finite_differences(obs, p0, rel_step, 1e-10, 1e-12)
        out[f"fd_numba_step_{rel_step:g}"] = fd.tolist()
        for rtol in (1e-6, 1e-10):
            key = f"jax_rtol_{rtol:g}"
            out[key][f"vs_fd_step_{rel_step:g}"] = errors(np.asarray(out[key]["gradient"]), fd)
            print(f"{key} vs finite differences (step {rel_step:g}): {out[key][f'vs_fd_step_{rel_step:g}']}",
                  flush=True)
    fd4, fd3 = (np.asarray(out[f"fd_numba_step_{s:g}"]) for s in (1e-4, 1e-3))
    out["fd_step_agreement"] = errors(fd3, fd4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
