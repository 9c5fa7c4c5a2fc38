#!/usr/bin/env python
"""Gradient of the shared protocol's time-course objective (../shared/benchmarks/README.md, item 3).

    python benchmarks/gradient.py                 # -> benchmarks/results/gradient.json
    python benchmarks/gradient.py --repeats 50

J(p) = 0.5 * sum_i (ln T(t_i; p) - d_i)^2 over the 20 observations of observations.json, with
respect to all 42 parameters p of the reference model (1200 mg q21d x18 from day 7.5; the dose
amount is the parameter `Dose`, so it has a gradient too). J(nominal) must be 436.555.

Measured:
- numba forward sensitivities (`ForwardSensitivities`: Rodas5P with the sensitivity equations,
  the protocol's tolerances; sensitivities out of the error test, the default, and in it):
  preparation time (symbolic differentiation, code generation and numba compile of the
  sensitivity kernels, in a fresh kernel cache unless --warm-cache), the first gradient call
  (the solver's own compile when its numba cache is cold) and the median of later calls, with
  step counts;
- JAX (diffrax Kvaerno5, reverse-mode autodiff through the solver via
  `differentiable_simulator`): compile time of jit(value_and_grad) and the median time of a
  gradient call after it, at rtol 1e-6 / atol 1e-9 (the protocol's tolerances);
- accuracy: the JAX gradient against central finite differences of J computed with an
  independent solver (numba Rodas5P, one batch of 84 trajectories) at rtol 1e-10 / atol 1e-12,
  with relative steps 1e-4 and 1e-3 (their agreement shows the finite differences have converged).
  Reported: max_i |g_i - fd_i| / max_i |fd_i| (error relative to the gradient's scale) and the
  largest elementwise relative error over components with |fd_i| > 1e-6 max|fd|.
Target (issue 5): <= 20 ms per gradient, exact to 1e-6 against the finite differences.

    python benchmarks/gradient.py --tools numba      # numba only (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
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


def numba_gradient(obs, sens_error: bool, rtol: float, atol: float):
    """(J and gradient function of all 42 parameters, the prepared ForwardSensitivities, P0)."""
    from immunoedit_models.simulate.sensitivities import ForwardSensitivities

    model = ie.compile_model("benchmark_reference", backend="numba")
    times = np.concatenate([[0.0], obs["obs_times"]])
    fs = ForwardSensitivities(model, times, list(model.parameters), rtol=rtol, atol=atol, sens_error=sens_error)
    d = np.asarray(obs["logT"])
    P0 = np.asarray(model.symbolic.param_values, dtype=float)[None]

    def value_and_grad(P):
        got = fs.solve(P)
        T, dT = fs.outputs(got, P, ["T"])
        r = np.log(T[0, 1:, 0]) - d
        return 0.5 * float(np.sum(r ** 2)), (r / T[0, 1:, 0]) @ dT[0, 1:, 0, :], got

    return value_and_grad, P0


def run_numba(obs, repeats: int) -> dict:
    out = {}
    for sens_error in (False, True):
        t = time.perf_counter()
        vg, P0 = numba_gradient(obs, sens_error, 1e-6, 1e-9)
        prepare_s = time.perf_counter() - t
        t = time.perf_counter()
        value, grad, got = vg(P0)
        first_s = time.perf_counter() - t
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            vg(P0)
            times.append(time.perf_counter() - t)
        key = f"numba_forward_sens_error_{int(sens_error)}"
        out[key] = {"J": value, "J_matches_protocol": abs(value - J_NOMINAL) < 5e-4, "prepare_s": prepare_s,
                    "first_call_s": first_s, "gradient_median_ms": 1e3 * float(np.median(times)),
                    "steps": int(got.n_steps[0]), "rejected": int(got.n_rejected[0]), "gradient": grad.tolist()}
        print(f"{key}: J = {value:.6f}, prepare {prepare_s:.1f} s, first call {first_s:.2f} s, gradient "
              f"{1e3 * np.median(times):.2f} ms (median of {repeats}), {got.n_steps[0]} steps", flush=True)
    return out


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


def run_jax(obs, repeats: int) -> dict:
    t = time.perf_counter()
    model = ie.compile_model("benchmark_reference", backend="jax")
    print(f"compile_model(jax): {time.perf_counter() - t:.2f} s", flush=True)
    out = {}
    for rtol, atol in ((1e-6, 1e-9), (1e-10, 1e-12)):
        J, p0 = objective(model, obs, rtol, atol)
        vg = jax.jit(jax.value_and_grad(J))
        t = time.perf_counter()
        value, grad = jax.block_until_ready(vg(p0))
        compile_s = time.perf_counter() - t
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(vg(p0))
            times.append(time.perf_counter() - t)
        key = f"jax_rtol_{rtol:g}"
        out[key] = {"J": float(value), "J_matches_protocol": abs(float(value) - J_NOMINAL) < 5e-4,
                    "compile_s": compile_s, "gradient_median_ms": 1e3 * float(np.median(times)),
                    "gradient": np.asarray(grad).tolist()}
        print(f"{key}: J = {float(value):.6f}, compile {compile_s:.1f} s, gradient {1e3 * np.median(times):.1f} ms "
              f"(median of {repeats})", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20, help="timed gradient calls (median reported)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "gradient.json")
    ap.add_argument("--tools", default="numba,jax", help="comma-separated: numba, jax")
    ap.add_argument("--warm-cache", action="store_true",
                    help="keep the user's kernel cache (default: a fresh one, so preparation is timed cold)")
    args = ap.parse_args()
    tools = {t.strip() for t in args.tools.split(",")}
    if not args.warm_cache:
        os.environ["IMMUNOEDIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="immunoedit_gradient_")
    obs = json.loads((SHARED / "benchmarks" / "observations.json").read_text())
    out: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                             "jax_devices": [str(d) for d in jax.devices()]},
                 "load_average_start": os.getloadavg()}
    if "numba" in tools:
        out.update(run_numba(obs, args.repeats))
    if "jax" in tools:
        out.update(run_jax(obs, args.repeats))
    p0 = np.asarray(ie.compile_model("benchmark_reference", backend="numba").symbolic.param_values, dtype=float)
    out["n_parameters"] = int(p0.size)
    gradients = {k: np.asarray(v["gradient"]) for k, v in out.items() if isinstance(v, dict) and "gradient" in v}
    for rel_step in (1e-4, 1e-3):
        fd = finite_differences(obs, p0, rel_step, 1e-10, 1e-12)
        out[f"fd_numba_step_{rel_step:g}"] = fd.tolist()
        for key, g in gradients.items():
            out[key][f"vs_fd_step_{rel_step:g}"] = errors(g, fd)
            print(f"{key} vs finite differences (step {rel_step:g}): {out[key][f'vs_fd_step_{rel_step:g}']}",
                  flush=True)
    fd4, fd3 = (np.asarray(out[f"fd_numba_step_{s:g}"]) for s in (1e-4, 1e-3))
    out["fd_step_agreement"] = errors(fd3, fd4)
    out["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
