"""CUDA backend (numba.cuda, one trajectory per thread) against the numba CPU backend.

The CUDA kernels run on numba's CUDA simulator, in a subprocess: NUMBA_ENABLE_CUDASIM must be
set before numba.cuda is first imported, which this pytest process may already have done. The
subprocess runs this file as a script (`python tests/test_cuda_backend.py OUT.npz`): it solves
every case below with backend='cuda' and saves the results; the tests solve the same inputs with
the numba CPU backend (and closed forms where there are any) and compare. The simulator runs the
kernel's Python source statement by statement, so it checks the port's logic, not GPU speed.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import immunoedit_models as ie
from immunoedit_models.simulate.core import parameter_function, regimen_list
from immunoedit_models.simulate.regimen import Regimen, event_arrays
from immunoedit_models.symbolic import SymbolicModel
from immunoedit_models.trials import load_trial, run_trial
from immunoedit_models.trials.visits import VisitTiming

HERE = Path(__file__).resolve().parent
SPECS = HERE / "specs"
DAYS = np.arange(61.0)                          # outputs, days 0..60
SCANS = np.array([0.0, 42.0, 84.0, 126.0, 168.0, 210.0])
SCAN_TIMES = np.array([0.0, 100.0, 250.0])
SCAN_S0 = np.array([50.0, 5.0, 20.0])
SCAN_ROWS = SCANS + np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 5.0, -3.0, 9.5, 1.0, -7.0],
                              [0.0, -11.0, 2.0, 0.0, 13.0, 4.0]])     # each trajectory's visit days


# ---- inputs shared by both processes --------------------------------------------------------
def reference_draws(model, n: int) -> np.ndarray:
    """The benchmark protocol's draws: all parameters log-uniform in [0.5, 1.5] x nominal."""
    nominal = np.asarray(model.symbolic.param_values)
    rng = np.random.default_rng(0)
    return nominal * np.exp(rng.uniform(np.log(0.5), np.log(1.5), size=(n, nominal.size)))


def dose_events(model, P: np.ndarray, regimen=None):
    """The model's default (or given) regimen as event arrays for each row of P."""
    dose_states = {d: model.states.index(t.state) for d, t in model.symbolic.dose_targets.items()}
    return event_arrays(regimen_list(model, regimen, len(P)), model.kernels.dose_factors(P),
                        list(model.kernels.drug_names), dose_states,
                        amount_of=lambda text: parameter_function(model, text)(P))


def solve(model, P, method="rodas5p", rtol=1e-6, atol=1e-9, max_steps=100_000, times=DAYS):
    ev = dose_events(model, P)
    return model.kernels.solve(model.kernels.initial(P), P, 0.0, times, ev.time, ev.state,
                               ev.kind, ev.value, rtol, atol, method=method, max_steps=max_steps)


def beyond_progression_design():
    """tests/specs/trial_small.yaml with the antibody given beyond progression in COMBO, and
    visits spread around the scheduled scans (each patient's own scan days in the kernel)."""
    design = load_trial(SPECS / "trial_small.yaml")
    combo = dataclasses.replace(design.arms["COMBO"], treat_beyond_progression=("antibody",))
    return dataclasses.replace(design, arms={**design.arms, "COMBO": combo},
                               visits=VisitTiming(2.0, 5.0, 20.0))


TRIAL_PATIENTS = 6
TRIAL_VARIABLES = ("pfs_months", "pfs_event", "os_months", "best_response", "sld_mm", "visit_day",
                   "progression_day_kernel", "confirmed_progression_day", "dose_day")


def pathological_draws(model) -> np.ndarray:
    """Three reference draws; the second has a NaN kill rate."""
    P = reference_draws(model, 3)
    P[1, model.parameters.index("kkill")] = np.nan
    return P


def switch_model() -> SymbolicModel:
    """min, max, piecewise in time, rational powers and pi: every printing rule of the CUDA
    printer (literals, reciprocals, square roots, _fmin / _fmax folding)."""
    return SymbolicModel.from_equations(
        "switches",
        {"x": "r*x*(1 - x/K) - Min(x, c, 2)*Piecewise((1, t < 5), (0.5, True))",
         "y": "Max(x - y, 0) + sqrt(x)/(1 + y**2) - 0.1*y**Rational(3, 2) + pi*1e-3*exp(-t/10)"},
        {"r": 0.8, "K": 10.0, "c": 1.5}, {"x": 1.0, "y": 0.5},
        outputs={"ratio": "x/(y + 1)"})


def scan_inputs(model, until_progression=True, duration=0.0, beyond=False, rows=False):
    """beyond: the doses go on after progression until its confirmation (iRECIST, 5 mm); rows:
    each trajectory scans on its own days (SCAN_ROWS)."""
    P = np.column_stack([SCAN_S0, 0.01 * SCAN_S0, 2e-4 * SCAN_S0])   # S0, shrink, curvature
    regimen = Regimen.repeated("drug", 10.0, every=21, count=20, duration=duration,
                               until_progression=until_progression and not beyond,
                               until_confirmed_progression=beyond)
    ev = event_arrays([regimen] * len(P), model.kernels.dose_factors(P), ["drug"], {"drug": 1})
    return (model.kernels.initial(P), P, 0.0, SCAN_TIMES, ev.time, ev.state, ev.kind, ev.value,
            1e-9, 1e-12), dict(scan_t=SCAN_ROWS if rows else SCANS, burden_index=0, ev_guard=ev.guard,
                               cpd_abs=5.0, ev_guard_c=ev.guard_confirmed)


def pk_regimen() -> Regimen:
    """Weekly 100 mg boluses from day 0 plus a 60 mg infusion over days 2-2.5."""
    return (Regimen.repeated("drug", 100.0, every=7, count=5)
            + Regimen((ie.Dose("drug", 2.0, 60.0, duration=0.5),)))


PK_CL = np.array([0.2, 0.5, 1.0])


# ---- the CUDA side (subprocess, simulator) ------------------------------------------------
def cuda_cases() -> dict[str, np.ndarray]:
    """Solve every case with backend='cuda'; results by name."""
    from immunoedit_models.compile.cuda_backend import compile_cuda, use_precision

    out: dict[str, np.ndarray] = {}
    ref = ie.compile_model("benchmark_reference", backend="cuda")
    P = reference_draws(ref, 4)
    for key, got in (("rodas", solve(ref, P)),
                     ("tsit5", solve(ref, P[:2], method="tsit5", times=DAYS[:31])),
                     ("f32", solve(use_precision(ref, "float32"), P, rtol=1e-5)),
                     ("nan", solve(ref, pathological_draws(ref))),
                     ("maxsteps", solve(ref, P[:2], max_steps=40))):
        for name, value in zip(("Y", "status", "n_acc", "n_rej"), got):
            out[f"{key}_{name}"] = value
    chunked = dataclasses.replace(ref, kernels=dataclasses.replace(ref.kernels, max_chunk=3))
    out["chunked_Y"] = solve(chunked, P)[0]                       # launches of 3 and 1
    out["chunked_outputs"] = chunked.kernels.outputs(DAYS, out["rodas_Y"], P)
    out["initial"] = ref.kernels.initial(P)
    out["dose_factors"] = ref.kernels.dose_factors(P)
    out["outputs"] = ref.kernels.outputs(DAYS, out["rodas_Y"], P)

    sw = compile_cuda(switch_model())
    sw_args = (sw.initial(np.array([[0.8, 10.0, 1.5]])), np.array([[0.8, 10.0, 1.5]]), 0.0,
               np.linspace(0, 10, 21), [[np.inf]], [[0]], [[0]], [[0.0]], 1e-8, 1e-10)
    out["switch_Y"] = sw.solve(*sw_args)[0]
    out["switch_f32_Y"] = sw.with_precision("float32").solve(*sw_args[:-2], 1e-5, 1e-8)[0]

    scan = ie.compile_model(SPECS / "scan_model.yaml", backend="cuda")
    for key, kw in (("scan", {}), ("scan_free", {"until_progression": False}),
                    ("scan_infusion", {"duration": 2.0}), ("scan_beyond", {"beyond": True}),
                    ("scan_rows", {"rows": True})):
        args, scan_kw = scan_inputs(scan, **kw)
        for name, value in zip(("Y", "status", "n_acc", "n_rej", "values", "pd_time"),
                               scan.kernels.solve_scanned(*args, **scan_kw)):
            out[f"{key}_{name}"] = value

    pk = ie.compile_model(SPECS / "pk_one_compartment.yaml", backend="cuda")
    ds = ie.simulate_batch(pk, pd.DataFrame({"CL": PK_CL}), times=np.linspace(0, 30, 121),
                           regimen=pk_regimen(), rtol=1e-8, atol=1e-10)
    out["pk_C"] = ds["C"].values
    out["pk_amount"] = ds["amount"].values
    out["pk_status"] = ds["status"].values
    out["pk_backend"] = np.array(ds.attrs["backend"])

    trial = run_trial(beyond_progression_design(), model=ie.compile_model(SPECS / "trial_model.yaml", backend="cuda"),
                      patients_per_arm=TRIAL_PATIENTS, seed=3)
    for name in TRIAL_VARIABLES:
        out[f"trial_{name}"] = trial[name].values
    return out


@pytest.fixture(scope="module")
def cuda(tmp_path_factory) -> dict[str, np.ndarray]:
    path = tmp_path_factory.mktemp("cuda_sim") / "results.npz"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run([sys.executable, __file__, str(path)], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    with np.load(path) as data:
        return dict(data)


@pytest.fixture(scope="module")
def ref():
    return ie.compile_model("benchmark_reference", backend="numba")


# ---- tests --------------------------------------------------------------------------------
def test_reference_model_rodas5p_matches_cpu(cuda, ref):
    P = reference_draws(ref, 4)
    Y, status, n_acc, n_rej = solve(ref, P)
    assert (cuda["rodas_status"] == 0).all() and (status == 0).all()
    np.testing.assert_allclose(cuda["rodas_Y"], Y, rtol=1e-6, atol=1e-12)
    # the same controller decisions, step for step
    np.testing.assert_array_equal(cuda["rodas_n_acc"], n_acc)
    np.testing.assert_array_equal(cuda["rodas_n_rej"], n_rej)


def test_tsit5_matches_cpu(cuda, ref):
    Y, status, n_acc, n_rej = solve(ref, reference_draws(ref, 4)[:2], method="tsit5",
                                    times=DAYS[:31])
    assert (cuda["tsit5_status"] == 0).all()
    np.testing.assert_allclose(cuda["tsit5_Y"], Y, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(cuda["tsit5_n_acc"], n_acc)


def test_float32_agrees_with_float64_to_its_precision(cuda, ref):
    # float32 (eps 1.2e-7) at rtol 1e-5 against float64 at 1e-6: measured 7e-5 relative on
    # this case; 1e-3 bounds float32 round-off amplified over ~100 steps and 5 doses
    Y, _, _, _ = solve(ref, reference_draws(ref, 4))
    assert cuda["f32_Y"].dtype == np.float32
    assert (cuda["f32_status"] == 0).all()
    np.testing.assert_allclose(cuda["f32_Y"], Y, rtol=1e-3, atol=1e-9)


def test_pathological_draw_keeps_its_status_and_spares_the_others(cuda, ref):
    P = pathological_draws(ref)
    Y, status, _, _ = solve(ref, P)
    np.testing.assert_array_equal(cuda["nan_status"], [0, 2, 0])
    np.testing.assert_array_equal(cuda["nan_status"], status)
    assert np.isnan(cuda["nan_Y"][1, 1:]).all()             # NaN after the failure at day 0
    alone, _, _, _ = solve(ref, P[[0, 2]])                   # the good draws on their own
    np.testing.assert_allclose(cuda["nan_Y"][[0, 2]], alone, rtol=1e-6, atol=1e-12)


def test_max_steps_is_reported_with_nan_after(cuda, ref):
    Y, status, n_acc, n_rej = solve(ref, reference_draws(ref, 2), max_steps=40)
    np.testing.assert_array_equal(cuda["maxsteps_status"], [1, 1])
    np.testing.assert_array_equal(cuda["maxsteps_n_acc"] + cuda["maxsteps_n_rej"], [40, 40])
    np.testing.assert_array_equal(np.isnan(cuda["maxsteps_Y"]), np.isnan(Y))
    np.testing.assert_allclose(cuda["maxsteps_Y"], Y, rtol=1e-6, atol=1e-12)


def test_batches_split_into_launches_give_the_same_results(cuda):
    np.testing.assert_array_equal(cuda["chunked_Y"], cuda["rodas_Y"])
    np.testing.assert_array_equal(cuda["chunked_outputs"], cuda["outputs"])


def test_initial_dose_factors_and_outputs_kernels(cuda, ref):
    P = reference_draws(ref, 4)
    np.testing.assert_allclose(cuda["initial"], ref.kernels.initial(P), rtol=1e-14)
    np.testing.assert_allclose(cuda["dose_factors"], ref.kernels.dose_factors(P), rtol=1e-14)
    np.testing.assert_allclose(cuda["outputs"], ref.kernels.outputs(DAYS, cuda["rodas_Y"], P),
                               rtol=1e-12, atol=1e-300)


def test_min_max_piecewise_printing(cuda):
    from immunoedit_models.compile.numba_backend import compile_numba

    sw = compile_numba(switch_model())
    p = np.array([[0.8, 10.0, 1.5]])
    Y = sw.solve(sw.initial(p), p, 0.0, np.linspace(0, 10, 21), [[np.inf]], [[0]], [[0]],
                 [[0.0]], 1e-8, 1e-10)[0]
    # the switch at t = 5 makes step sequences sensitive to round-off (FMA on the CPU, none in
    # the simulator): agreement to 100 x rtol; a misprinted term would differ at O(1)
    np.testing.assert_allclose(cuda["switch_Y"], Y, rtol=1e-6)
    np.testing.assert_allclose(cuda["switch_f32_Y"], Y, rtol=1e-4)


def test_scans_progression_and_guarded_doses(cuda):
    """Hand-worked (see test_scans.py): S(t) = S0 (1 - 0.01 t + 1e-4 t^2); nadir at day 42;
    S0 = 50 and 20 progress at day 126 (+20 % and >= 5 mm), S0 = 5 only at day 168 (5 mm)."""
    np.testing.assert_array_equal(cuda["scan_pd_time"], [126.0, 168.0, 126.0])
    sld = SCAN_S0[:, None] * (1 - 0.01 * SCANS + 1e-4 * SCANS**2)
    np.testing.assert_allclose(cuda["scan_values"], sld, rtol=1e-8)
    # 10 mg q21d from day 0 until progression: doses on days 0..105 (6), or 0..147 (8)
    np.testing.assert_allclose(cuda["scan_Y"][:, -1, 1], [60.0, 80.0, 60.0], rtol=1e-9)
    np.testing.assert_allclose(cuda["scan_free_Y"][:, -1, 1], 120.0, rtol=1e-9)   # days 0..231
    np.testing.assert_allclose(cuda["scan_infusion_Y"][:, -1, 1], [60.0, 80.0, 60.0], rtol=1e-9)
    # beyond progression: confirmed 5 mm above the PD scan on day 168 (S0 50, 20) or 210 (S0 5)
    np.testing.assert_allclose(cuda["scan_beyond_Y"][:, -1, 1], [80.0, 100.0, 80.0], rtol=1e-9)


def test_scans_match_cpu_solve_scanned(cuda):
    cpu = ie.compile_model(SPECS / "scan_model.yaml", backend="numba")
    for key, kw in (("scan", {}), ("scan_free", {"until_progression": False}),
                    ("scan_infusion", {"duration": 2.0}), ("scan_beyond", {"beyond": True}),
                    ("scan_rows", {"rows": True})):
        args, scan_kw = scan_inputs(cpu, **kw)
        Y, status, n_acc, _, values, pd_time = cpu.kernels.solve_scanned(*args, **scan_kw)
        np.testing.assert_array_equal(cuda[f"{key}_pd_time"], pd_time)
        np.testing.assert_array_equal(cuda[f"{key}_n_acc"], n_acc)
        np.testing.assert_allclose(cuda[f"{key}_values"], values, rtol=1e-12)
        np.testing.assert_allclose(cuda[f"{key}_Y"], Y, rtol=1e-10, atol=1e-12)


def test_simulate_batch_with_infusion_matches_closed_form(cuda):
    """One compartment, ke = CL/V: boluses D/V e^{-ke (t - tb)}; an infusion at rate R over
    [ts, te] gives R/(V ke) (1 - e^{-ke (min(t, te) - ts)}) e^{-ke max(0, t - te)} after ts."""
    t = np.linspace(0, 30, 121)[None, :]
    V, ke = 3.0, PK_CL[:, None] / 3.0
    conc = sum(100.0 / V * np.exp(-ke * (t - tb)) * (t >= tb) for tb in (0, 7, 14, 21, 28))
    ts, te, rate = 2.0, 2.5, 60.0 / 0.5
    conc = conc + (t >= ts) * rate / (V * ke) * (1 - np.exp(-ke * (np.minimum(t, te) - ts))) \
        * np.exp(-ke * np.maximum(0.0, t - te))
    assert str(cuda["pk_backend"]) == "cuda"
    np.testing.assert_array_equal(cuda["pk_status"], 0)
    np.testing.assert_allclose(cuda["pk_C"], conc, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cuda["pk_amount"], conc * V, rtol=1e-6, atol=1e-9)


def test_trial_on_the_cuda_backend_matches_numba(cuda):
    """A whole trial (scans, progression and its confirmation in the kernel, readouts) with the
    cuda backend: same patients, same decisions, states within the solvers' agreement."""
    cpu = run_trial(beyond_progression_design(), model=ie.compile_model(SPECS / "trial_model.yaml"),
                    patients_per_arm=TRIAL_PATIENTS, seed=3)
    for name in TRIAL_VARIABLES:
        got, want = cuda[f"trial_{name}"], cpu[name].values
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-10, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    assert np.isfinite(cpu.progression_day_kernel.values).sum() >= 3          # not vacuous
    assert np.isfinite(cpu.confirmed_progression_day.values).any()


def test_without_gpu_or_simulator_the_backend_says_how_to_proceed():
    cuda = pytest.importorskip("numba.cuda")
    if cuda.is_available():
        pytest.skip("a GPU (or the simulator) is available in this process")
    with pytest.raises(ie.BackendUnavailable) as err:
        ie.compile_model(SPECS / "pk_one_compartment.yaml", backend="cuda")
    assert "NUMBA_ENABLE_CUDASIM=1" in str(err.value)
    assert "backend='numba'" in str(err.value)


if __name__ == "__main__":
    np.savez(sys.argv[1], **cuda_cases())
