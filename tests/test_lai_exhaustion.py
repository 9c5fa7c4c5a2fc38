"""lai_exhaustion (Lai group T-cell exhaustion / PD-L1 model, published_models.md section 2.4) against
its steady states found here with scipy root-finding from the equations written out below.

Published behaviour [V abstract, 2.4]: tumour PD-L1 expression (epsilon) controls bistability between
tumour-free and tumorous states, high exhaustion (rho) permits escape, anti-PD-L1 efficacy depends on
baseline exhaustion. The bistable case rho = 0.05, epsilon = 0.05 is the code's own (Solve_exist.m,
Fig 3 'Bistable'); the treated runs start from the code's Fig 7 state (C 1e6, E 5000, T1 1.3e7,
T2 1e7) with anti-PD-L1 from day 10 (Solve_Fig7_rho_effect.m).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq

import immunoedit_models as ie
from immunoedit_models.phases import PhaseCriteria, phase

PAR = dict(lambda_C=0.7163, K=3e9, beta1=1.961e-8, beta2=1.5688e-8, alpha0=2.15e-4, T0=5.59e6, d_E=0.18,
           alpha1=7.7181e-11, lambda_T=0.7369, delta=10.0, sigma=2.725e-17, epsilon=0.01, rho=0.1498,
           d1=0.41, d2=0.72, d_A=0.47, K_a=2e-5)
TOL = dict(rtol=1e-8, atol=1e-6)


def rhs(y, p):
    """The model's equations (ODE_treatment_AntiPDL1.m), A held at its value."""
    C, E, T1, T2, A = y
    inhibition = 1 + p["delta"] * p["sigma"] * T1 * (T1 + p["epsilon"] * C) * (1 - A / (p["K_a"] + A))
    return np.array([p["lambda_C"] * C * (1 - C / p["K"]) - p["beta1"] * E * C - p["beta2"] * T1 * C,
                     p["alpha0"] * p["T0"] - p["d_E"] * E,
                     (p["alpha1"] * p["T0"] * C + p["lambda_T"] * T1) / inhibition - (p["rho"] + p["d1"]) * T1,
                     p["rho"] * T1 - p["d2"] * T2,
                     -p["d_A"] * A])


def steady_states(p, A=0.0):
    """Tumour-free and tumorous steady states (C, E, T1, T2, A), tumour size ascending."""
    E = p["alpha0"] * p["T0"] / p["d_E"]
    block = 1 - A / (p["K_a"] + A)
    free_T1 = np.sqrt((p["lambda_T"] / (p["rho"] + p["d1"]) - 1) / (p["delta"] * p["sigma"] * block))
    points = [(0.0, free_T1)]

    def t1_on_c_nullcline(C):
        return (p["lambda_C"] * (1 - C / p["K"]) - p["beta1"] * E) / p["beta2"]

    def t1_balance(C):
        T1 = t1_on_c_nullcline(C)
        return (p["alpha1"] * p["T0"] * C + p["lambda_T"] * T1
                - (p["rho"] + p["d1"]) * T1 * (1 + p["delta"] * p["sigma"] * T1 * (T1 + p["epsilon"] * C) * block))

    grid = np.geomspace(1.0, p["K"] * (1 - p["beta1"] * E / p["lambda_C"]) * (1 - 1e-9), 4000)
    values = t1_balance(grid)
    for i in np.flatnonzero(np.sign(values[:-1]) != np.sign(values[1:])):
        C = brentq(t1_balance, grid[i], grid[i + 1], xtol=1e-6, rtol=1e-13)
        points.append((C, t1_on_c_nullcline(C)))
    return [np.array([C, E, T1, p["rho"] * T1 / p["d2"], A]) for C, T1 in points]


@pytest.fixture(scope="module")
def model():
    return ie.compile_model("lai_exhaustion", backend="numba")


def kernel_parameters(model, **values):
    p = np.asarray(model.symbolic.param_values, float).copy()
    for name, value in values.items():
        p[model.parameters.index(name)] = value
    return model.kernels.extended_parameters(p[None])[0]


def jacobian_eigenvalues(model, y, **values):
    J = np.zeros((5, 5))
    model.kernels.jac(0.0, np.asarray(y, float), kernel_parameters(model, **values), J)
    return np.linalg.eigvals(J)


def test_model_equations_and_jacobian_match_the_code(model):
    p = PAR | dict(rho=0.05, epsilon=0.05)
    y = np.array([3e8, 7e3, 2e7, 1e6, 1e-5])
    out = np.zeros(5)
    model.kernels.rhs(0.0, y, kernel_parameters(model, rho=0.05, epsilon=0.05), out)
    np.testing.assert_allclose(out, rhs(y, p), rtol=1e-12)
    J = np.zeros((5, 5))
    model.kernels.jac(0.0, y, kernel_parameters(model, rho=0.05, epsilon=0.05), J)
    steps = 1e-6 * np.maximum(np.abs(y), 1e-3)
    numeric = np.column_stack([(rhs(y + h * e, p) - rhs(y - h * e, p)) / (2 * h) for h, e in zip(steps, np.eye(5))])
    np.testing.assert_allclose(J, numeric, rtol=1e-5, atol=1e-9 * np.abs(numeric).max())


def test_high_tumour_pdl1_makes_tumour_free_and_tumorous_states_bistable(model):
    """epsilon = rho = 0.05 (the code's bistable case): stable tumour-free state, a saddle, a stable
    tumorous state; two initial conditions settle on the two stable states."""
    free, saddle, tumorous = steady_states(PAR | dict(rho=0.05, epsilon=0.05))
    assert free[0] == 0 and 1e8 < saddle[0] < tumorous[0]         # 4.70e7 / 1.73e8 / 1.25e9 cells
    signs = [np.sum(jacobian_eigenvalues(model, y, rho=0.05, epsilon=0.05).real > 0) for y in (free, saddle, tumorous)]
    assert signs == [0, 1, 0]
    starts = pd.DataFrame({"C": [5e7, 1e9], "T1": [3.3e7, 1e7]})  # C, T1 of the code's Fig 3 starts
    runs = ie.simulate_batch(model, pd.DataFrame({"rho": [0.05] * 2, "epsilon": [0.05] * 2}),
                             [0.0, 2000.0], initial=starts, **TOL)
    assert np.all(runs["status"].values == 0)
    end = {s: runs[s].values[:, -1] for s in ("C", "T1")}
    assert abs(end["C"][0]) < 1e-3                                   # small tumour eliminated
    np.testing.assert_allclose(end["T1"][0], free[2], rtol=1e-6)
    np.testing.assert_allclose([end["C"][1], end["T1"][1]], tumorous[[0, 2]], rtol=1e-6)
    labels = phase(runs, PhaseCriteria(tumour="C")).values.tolist()
    assert labels == ["elimination", "equilibrium"]


def test_low_tumour_pdl1_leaves_only_the_tumour_free_state(model):
    """epsilon = 0.01 at the same rho: the tumorous states are gone and the large tumour is eliminated."""
    states = steady_states(PAR | dict(rho=0.05, epsilon=0.01))
    assert len(states) == 1
    assert np.all(jacobian_eigenvalues(model, states[0], rho=0.05, epsilon=0.01).real < 0)
    ds = ie.simulate(model, [0.0, 2000.0], params={"rho": 0.05, "epsilon": 0.01}, initial={"C": 1e9, "T1": 1e7},
                     **TOL)
    assert abs(float(ds["C"][-1])) < 1e-3


def rho_star(p):
    """Exhaustion rate above which the tumour-free state is unstable: beta1 E* + beta2 T1_free = lambda_C."""
    T1 = (p["lambda_C"] - p["beta1"] * p["alpha0"] * p["T0"] / p["d_E"]) / p["beta2"]
    return p["lambda_T"] / (1 + p["delta"] * p["sigma"] * T1**2) - p["d1"]


def test_exhaustion_rate_destabilises_the_tumour_free_state(model):
    threshold = rho_star(PAR)
    assert threshold == pytest.approx(0.0600, abs=5e-4)
    for factor, unstable in ((0.98, 0), (1.02, 1)):
        rho = factor * threshold
        free = steady_states(PAR | dict(rho=rho))[0]
        assert np.sum(jacobian_eigenvalues(model, free, rho=rho).real > 0) == unstable


def critical_dose(rho):
    """Anti-PD-L1 input gamma_A that restores tumour-free stability (A* = gamma_A / d_A)."""
    p = PAR | dict(rho=rho)
    T1 = (p["lambda_C"] - p["beta1"] * p["alpha0"] * p["T0"] / p["d_E"]) / p["beta2"]
    block = (p["lambda_T"] / (rho + p["d1"]) - 1) / (p["delta"] * p["sigma"] * T1**2)   # = K_a / (K_a + A*)
    return p["d_A"] * p["K_a"] * (1 / block - 1)


def test_anti_pdl1_dose_needed_grows_with_exhaustion(model):
    rhos = (0.12, 0.15, 0.18)
    doses = [critical_dose(r) for r in rhos]
    assert doses[0] < doses[1] < doses[2]                            # 4.27e-6, 7.50e-6, 1.20e-5 per day
    for rho, dose in zip(rhos, doses):
        for factor, unstable in ((0.98, 1), (1.02, 0)):
            A = factor * dose / PAR["d_A"]
            free = steady_states(PAR | dict(rho=rho), A=A)[0]
            assert np.sum(jacobian_eigenvalues(model, free, rho=rho).real > 0) == unstable
    table = pd.DataFrame({"rho": np.repeat(rhos, 3), "gamma_A": np.ravel([[0.0, 0.5 * d, 2 * d] for d in doses])})
    runs = ie.simulate_batch(model, table, [0.0, 400.0], regimen="anti_pdl1_continuous", **TOL)
    final = runs["C"].values[:, -1].reshape(3, 3)
    untreated = [steady_states(PAR | dict(rho=r))[-1][0] for r in rhos]   # 6.76e8, 9.76e8, 1.25e9 cells
    np.testing.assert_allclose(final[:, 0], untreated, rtol=1e-3)
    assert np.all(final[:, 1] > 1e8)                                 # half the critical dose: tumour persists
    assert np.all(np.abs(final[:, 2]) < 1.0)                         # twice the critical dose: eliminated
