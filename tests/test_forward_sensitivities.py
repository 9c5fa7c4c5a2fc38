"""Forward sensitivities of the numba backend (Rodas5P on the augmented system).

References: closed-form one-compartment PK (bolus and infusion) differentiated by sympy, which
shares no code with the solver; central finite differences of the plain numba solver at tight
tolerances on the benchmark reference model (doses Dose/V1 q21d x18); and the plain solver's own
trajectory and step count, which the state part must reproduce exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import immunoedit_models as ie
from immunoedit_models.errors import CompileError, SimulationError
from immunoedit_models.simulate.regimen import Regimen
from immunoedit_models.simulate.sensitivities import ForwardSensitivities, forward_sensitivities

CL0, V0 = 0.2, 3.0


@pytest.fixture(scope="module")
def pk(specs_dir):
    return ie.compile_model(specs_dir / "pk_one_compartment.yaml", backend="numba")


def _closed_form_bolus(times: np.ndarray, dose_days: np.ndarray, amount) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """C(t) = sum_i amount/V exp(-(CL/V)(t - t_i)) over doses given by t, and dC/dCL, dC/dV (sympy)."""
    CL, V, t = sp.symbols("CL V t", positive=True)
    dose = amount(CL, V) if callable(amount) else sp.Float(amount)
    values, grads = [], {"CL": [], "V": []}
    for ti in times:
        C = sum((dose / V * sp.exp(-(CL / V) * (ti - td)) for td in dose_days if td <= ti), sp.Integer(0))
        at = {CL: CL0, V: V0}
        values.append(float(C.subs(at)))
        grads["CL"].append(float(sp.diff(C, CL).subs(at)))
        grads["V"].append(float(sp.diff(C, V).subs(at)))
    return np.array(values), {k: np.array(v) for k, v in grads.items()}


def test_bolus_sensitivities_against_closed_form(pk):
    """Weekly 100 mg x5 into C via 1/V: dC/dCL, dC/dV and the observable amount = C V."""
    t = np.array([0.0, 0.5, 3.0, 7.0, 10.0, 29.0, 40.0])
    ds = forward_sensitivities(pk, t, ["CL", "V"], outputs=["C", "amount"], rtol=1e-10, atol=1e-14)
    C, dC = _closed_form_bolus(t, np.arange(0.0, 35.0, 7.0), 100.0)
    assert int(ds["status"]) == 0
    np.testing.assert_allclose(ds["C"].values, C, rtol=1e-9)
    for name in ("CL", "V"):
        np.testing.assert_allclose(ds["sensitivity"].sel(output="C", param=name).values, dC[name], rtol=1e-7)
    np.testing.assert_allclose(ds["sensitivity"].sel(output="amount", param="V").values, C + V0 * dC["V"], rtol=1e-7)
    assert ds["sensitivity"].dims == ("time", "output", "param")
    assert ds.attrs["backend"] == "numba" and "spec_hash" in ds.attrs


def test_dose_amount_expression_is_differentiated(pk):
    """A dose amount that is an expression of parameters (here 50*V mg, so the jump is 50 mg/L
    whatever V): the jumps of the sensitivities carry d amount/dp * factor + amount * d factor/dp."""
    t = np.array([0.0, 2.0, 9.0, 20.0])
    regimen = Regimen.repeated("drug", "50*V", every=7, count=3)
    ds = forward_sensitivities(pk, t, ["CL", "V"], regimen=regimen, rtol=1e-10, atol=1e-14)
    C, dC = _closed_form_bolus(t, np.array([0.0, 7.0, 14.0]), lambda CL, V: 50 * V)
    np.testing.assert_allclose(ds["C"].values, C, rtol=1e-9)
    for name in ("CL", "V"):
        np.testing.assert_allclose(ds["sensitivity"].sel(output="C", param=name).values, dC[name],
                                   rtol=1e-7, atol=1e-12)


def test_infusion_sensitivities_against_closed_form(pk):
    """An amount of 300*CL mg infused over 0.5 day from day 2 (rate events carry du/dp)."""
    CL, V, s = sp.symbols("CL V s", positive=True)
    amount, t_on, dur = 300 * CL, 2.0, 0.5
    ke = CL / V
    rate = amount / dur / V                                     # mg/L/day into C

    def closed(t):
        if t < t_on:
            return sp.Integer(0)
        during = rate / ke * (1 - sp.exp(-ke * (min(t, t_on + dur) - t_on)))
        return during if t <= t_on + dur else during * sp.exp(-ke * (t - t_on - dur))

    t = np.array([0.0, 2.1, 2.5, 3.0, 8.0])
    regimen = Regimen.repeated("drug", "300*CL", start=t_on, duration=dur)
    ds = forward_sensitivities(pk, t, ["CL", "V"], regimen=regimen, rtol=1e-10, atol=1e-14)
    at = {CL: CL0, V: V0}
    for name, sym in (("CL", CL), ("V", V)):
        want = np.array([float(sp.diff(closed(ti), sym).subs(at)) for ti in t])
        np.testing.assert_allclose(ds["sensitivity"].sel(output="C", param=name).values, want, rtol=1e-7, atol=1e-12)


@pytest.fixture(scope="module")
def reference():
    return ie.compile_model("benchmark_reference", backend="numba")


def test_reference_model_against_finite_differences(reference):
    """d ln T / dp at days 30..360 for parameters of growth, killing and the dose (Dose, V1):
    central differences (relative step 1e-4) of the plain solver at rtol 1e-10 / atol 1e-12."""
    t = np.array([0.0, 30.0, 90.0, 180.0, 360.0])
    names = ["rT", "kkill", "Dose", "V1", "KT"]
    ds = forward_sensitivities(reference, t, names, outputs=["T"], rtol=1e-8, atol=1e-10)
    P0 = np.array(reference.symbolic.param_values)
    idx = [reference.parameters.index(n) for n in names]
    h = 1e-4 * P0[idx]
    rows = np.repeat(P0[None], 2 * len(names), axis=0)
    rows[np.arange(len(names)), idx] += h
    rows[len(names) + np.arange(len(names)), idx] -= h
    import pandas as pd
    batch = ie.simulate_batch(reference, params=pd.DataFrame(rows, columns=reference.parameters), times=t,
                              rtol=1e-10, atol=1e-12)
    lnT = np.log(batch["T"].values)
    fd = (lnT[:len(names)] - lnT[len(names):]) / (2 * h[:, None])          # (param, time)
    got = ds["sensitivity"].sel(output="T").values / ds["T"].values[:, None]  # (time, param)
    scale = np.max(np.abs(fd), axis=1)
    np.testing.assert_array_less(np.abs(got.T - fd).max(axis=1) / scale, 1e-5)


def test_state_part_matches_the_plain_solver_step_for_step(reference):
    """With sensitivities out of the error test, y is integrated exactly as by the plain solver."""
    t = np.linspace(0, 365, 366)
    fs = ForwardSensitivities(reference, t, ["kkill", "Dose"], sens_error=False)
    P = np.array(reference.symbolic.param_values)[None]
    got = fs.solve(P)
    plain = ie.simulate(reference, t)
    assert int(got.n_steps[0]) == int(plain["n_steps"])
    np.testing.assert_allclose(got.y[0], np.stack([plain[s].values for s in reference.states], axis=1),
                               rtol=1e-12, atol=1e-15)
    with_error = ForwardSensitivities(reference, t, ["kkill", "Dose"], sens_error=True).solve(P)
    assert with_error.n_steps[0] >= got.n_steps[0]
    np.testing.assert_allclose(with_error.s[0], got.s[0], rtol=1e-4, atol=1e-6 * np.abs(got.s[0]).max())


def test_fixed_initial_state_has_no_sensitivity(pk):
    ds = forward_sensitivities(pk, [0.0, 1.0], ["V"], initial={"C": 5.0}, regimen="none", rtol=1e-10, atol=1e-14)
    assert float(ds["sensitivity"].sel(output="C", param="V").values[0]) == 0.0
    # C = 5 exp(-CL t / V): dC/dV = 5 CL t / V^2 exp(-CL t / V)
    np.testing.assert_allclose(float(ds["sensitivity"].sel(output="C", param="V").values[1]),
                               5 * CL0 / V0**2 * np.exp(-CL0 / V0), rtol=1e-8)


def test_log_state_and_expression_derivatives(specs_dir):
    """Kernel coordinates ln X: d X/dp = X d ln X/dp, checked against central differences."""
    model = ie.compile_model(specs_dir / "cohort_model.yaml", backend="numba")
    name = next(s for s in model.states if s in model.symbolic.log_states)
    param = model.parameters[0]
    t = np.array([0.0, 10.0, 30.0])
    outputs = [name] + list(model.output_names[:2])
    ds = forward_sensitivities(model, t, [param], outputs=outputs, rtol=1e-10, atol=1e-12)
    p0 = dict(zip(model.parameters, model.symbolic.param_values))[param]
    h = 1e-5 * abs(p0)
    up, down = (ie.simulate(model, t, params={param: p0 + d}, rtol=1e-11, atol=1e-13) for d in (h, -h))
    for out in outputs:
        fd = (up[out].values - down[out].values) / (2 * h)
        np.testing.assert_allclose(ds["sensitivity"].sel(output=out, param=param).values, fd,
                                   rtol=1e-5, atol=1e-8 * (np.abs(fd).max() + 1e-300))


def test_errors_name_the_problem(pk, specs_dir):
    with pytest.raises(SimulationError, match="'Vx' is not a parameter of model 'pk_one_compartment'.*'V'"):
        ForwardSensitivities(pk, [0, 1], ["Vx"])
    with pytest.raises(SimulationError, match="distinct"):
        ForwardSensitivities(pk, [0, 1], ["V", "V"])
    with pytest.raises(SimulationError, match="until progression"):
        ForwardSensitivities(pk, [0, 1], ["V"], regimen=Regimen.repeated("drug", 1.0, until_progression=True))
    jax_model = ie.compile_model(specs_dir / "pk_one_compartment.yaml", backend="jax")
    with pytest.raises(CompileError, match="backend 'numba'.*differentiable_simulator"):
        ForwardSensitivities(jax_model, [0, 1], ["V"])


def test_batch_rows_equal_single_runs_and_a_failed_row_keeps_its_status(reference):
    """Three parameter rows in one call (threads): each equals its own single run, with its own
    sensitivity tolerances (atol / |p_m| of its row); a row with a non-finite parameter fails with
    a status and NaN, and does not disturb the others."""
    t = np.array([0.0, 30.0, 120.0])
    fs = ForwardSensitivities(reference, t, ["kkill", "rT"], sens_error=True)
    P = np.repeat(np.array(reference.symbolic.param_values)[None], 3, axis=0)
    P[1, reference.parameters.index("kkill")] *= 1.3
    P[2, reference.parameters.index("rT")] = np.nan
    batch = fs.solve(P)
    assert list(batch.status[:2]) == [0, 0] and batch.status[2] != 0
    assert np.isnan(batch.s[2, 1:]).all()
    for b in range(2):
        single = fs.solve(P[b][None])
        np.testing.assert_array_equal(batch.s[b], single.s[0])
        assert batch.n_steps[b] == single.n_steps[0]
