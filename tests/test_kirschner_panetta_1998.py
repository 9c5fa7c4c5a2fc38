"""kirschner_panetta_1998 against the published analysis (shared/references/published_models.md
§1.2): thresholds, limit cycles, the stable spiral and the persistence threshold; and log-scale
states (the tumour is integrated as ln T) against the linear scale."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq, fsolve, minimize_scalar

import immunoedit_models as ie
from immunoedit_models.phases import oscillation

MU2, R2, G2, A = 0.03, 0.18, 1e5, 1.0
TIGHT = dict(rtol=1e-9, atol=1e-10)


@pytest.fixture(scope="module")
def model():
    return ie.compile_model("kirschner_panetta_1998", backend="numba")


def test_low_antigenicity_gives_the_large_tumour_equilibrium(model):
    ds = ie.simulate(model, np.linspace(0, 1000, 11), params={"c": 5e-5}, **TIGHT)
    assert float(ds["T"][-1]) == pytest.approx(9.88e8, rel=1e-3)  # published y ~ 9.88e8
    assert float(ds["E"][-1]) == pytest.approx(2.07e6, rel=1e-2)  # published x ~ 2.07e6


@pytest.mark.parametrize("c", [0.0, 0.035])
def test_adoptive_transfer_threshold_540(model, c):
    """Tumour-free state stable iff s1 > r2 g2 mu2 / a = 540 cells/day: 550 clears 1e3 cells, 530 not."""
    assert R2 * G2 * MU2 / A == pytest.approx(540.0)
    days = np.linspace(0, 3000, 31)
    runs = {s1: ie.simulate(model, days, params={"c": c, "s1": s1}, initial={"T": 1e3, "E": s1 / MU2, "IL": 0.0},
                            **TIGHT) for s1 in (530.0, 550.0)}
    assert float(runs[550.0]["T"][-1]) < 1.0  # below one cell (the log scale keeps it positive)
    assert float(runs[530.0]["T"][-1]) > 100.0
    assert int(runs[550.0]["status"]) == 0


def test_il2_alone_runaway_threshold(model):
    """Effectors expand without bound iff s2 > mu3 g1 mu2 / (p1 - mu2) = 6.35e7 IU/day."""
    threshold = 10 * 2e7 * MU2 / (0.1245 - MU2)
    assert threshold == pytest.approx(6.35e7, rel=1e-3)
    days = np.linspace(0, 400, 5)
    below = ie.simulate(model, days, params={"s2": 0.95 * threshold}, initial={"T": 1e6, "E": 1e4}, **TIGHT)
    above = ie.simulate(model, days, params={"s2": 1.05 * threshold}, initial={"T": 1e6, "E": 1e4}, **TIGHT)
    assert np.all(np.diff(below["E"].values[1:]) < 0) and np.all(np.diff(above["E"].values[1:]) > 0)


def test_log_scale_state_matches_linear_scale(tmp_path):
    text = textwrap.dedent("""\
        name: logistic_{scale}
        states:
          T: {{unit: cell, initial: 1e3, scale: {scale}}}
          E: {{unit: cell, initial: 10}}
        parameters:
          r: {{value: 0.2, unit: 1/day}}
          K: {{value: 1e9, unit: cell}}
          k: {{value: 1e-3, unit: 1/cell/day}}
          q: {{value: 1e-3, unit: 1/day}}
        flows:
          growth: {{to: T, rate: r*T*(1 - T/K)}}
          killing: {{from: T, rate: k*E*T}}
          influx: {{to: E, rate: q*T}}
        observables:
          log10_T: {{value: log10(T/K), unit: dimensionless}}
        """)
    days = np.linspace(0, 100, 21)
    runs = {}
    for scale in ("linear", "log"):
        path = tmp_path / f"{scale}.yaml"
        path.write_text(text.format(scale=scale))
        model = ie.compile_model(ie.load_spec(path), backend="numba")
        runs[scale] = ie.simulate(model, days, initial={"T": 2e3}, rtol=1e-10, atol=1e-12)
    for name in ("T", "E", "log10_T"):
        np.testing.assert_allclose(runs["log"][name].values, runs["linear"][name].values, rtol=1e-7)
    assert float(runs["log"]["T"][0]) == pytest.approx(2e3)  # initial overrides are natural units


def test_dose_into_log_scale_state_is_an_error(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nstates:\n  T: {unit: cell, initial: 1, scale: log}\n"
                    "doses:\n  cells: {target: T, amount_unit: cell}\n")
    with pytest.raises(ie.SpecError) as info:
        ie.load_spec(path)
    assert [str(i) for i in info.value.issues] == [
        f"{path}:5: dose 'cells': target 'T' is integrated on a log scale, where a dose is no jump "
        "(dose into a linear-scale state)"]


# ---- limit cycles, the stable spiral at c = 0.035 and the persistence threshold ------------------
# published_models.md 1.2 [C]: relaxation and limit cycles for c in 0.015-0.03 ("periods to be
# computed"), a damped approach to a stable spiral with y* ~ 1.2-2e4 for c >= 0.035 (Hopf between
# 0.03 and 0.035), and loss of the large-tumour state above c ~ 8.61e-5 (from x = y = z = 1).
P1, G1, MU3, P2, G3, B = 0.1245, 2e7, 10.0, 5.0, 1e3, 1e-9
TOCYCLE = dict(rtol=1e-9, atol=1e-10)


def kp_rhs(u, c):
    """The paper's equations with y integrated as ln y (x, ln y, z)."""
    x, ly, z = u
    y = np.exp(ly)
    return [c * y - MU2 * x + P1 * x * z / (G1 + z), R2 * (1 - B * y) - A * x / (G2 + y),
            P2 * x * y / (G3 + y) - MU3 * z]


def reference_peaks(c, days):
    """Times and heights (ln y) of the maxima of ln y in the second half of the run, from LSODA
    with an event at d(ln y)/dt = 0 (falling)."""
    def top(t, u, c):
        return kp_rhs(u, c)[1]
    top.direction = -1
    sol = solve_ivp(lambda t, u, c: kp_rhs(u, c), (0.0, days), [1.0, 0.0, 1.0], args=(c,), method="LSODA",
                    events=top, rtol=1e-10, atol=1e-10)
    keep = sol.t_events[0] > 0.5 * days
    return sol.t_events[0][keep], sol.y_events[0][keep, 1]


@pytest.mark.parametrize("c", [0.02, 0.025])
def test_limit_cycles_at_intermediate_antigenicity(model, c):
    days = 3000.0
    ds = ie.simulate(model, np.arange(0.0, days + 0.25, 0.5), params={"c": c}, **TOCYCLE)
    cycle = oscillation(ds, "T", log=True, settle=0.5)
    ref_t, ref_peak = reference_peaks(c, days)
    assert bool(cycle["sustained"]) and int(cycle["n_peaks"]) >= 5
    assert np.ptp(ref_peak) < 1e-3                                # the reference cycle is sustained too
    assert float(cycle["period"]) == pytest.approx(np.mean(np.diff(ref_t)), rel=2e-3)
    assert float(cycle["peak"]) == pytest.approx(np.mean(ref_peak), abs=2e-3)
    assert float(cycle["amplitude"]) > np.log(1e3)                # peak-to-trough over three decades of cells
    if c == 0.02:
        assert float(cycle["trough"]) < np.log(1.0)               # troughs far below one cell: hence ln T


def equilibrium(c):
    root = fsolve(kp_rhs, [4e5, np.log(1.8e4), 1e4], args=(c,), xtol=1e-13)
    assert np.allclose(kp_rhs(root, c), 0.0, atol=1e-8)
    return root


def model_eigenvalues(model, u, c):
    p = np.asarray(model.symbolic.param_values, float).copy()
    p[model.parameters.index("c")] = c
    J = np.zeros((3, 3))
    model.kernels.jac(0.0, np.asarray(u, float), model.kernels.extended_parameters(p[None])[0], J)
    return np.linalg.eigvals(J)


def test_stable_spiral_at_c_0035_and_hopf_between_003_and_0035(model):
    star = equilibrium(0.035)
    assert 1.2e4 < np.exp(star[1]) < 2e4                          # published_models.md 1.2: y* ~ 1.2-2e4
    lam = model_eigenvalues(model, star, 0.035)
    assert np.all(lam.real < 0) and np.any(lam.imag != 0)         # stable focus
    ds = ie.simulate(model, np.arange(0.0, 6000.5, 0.5), params={"c": 0.035}, **TOCYCLE)
    assert float(ds["T"][-1]) == pytest.approx(np.exp(star[1]), rel=1e-3)
    assert not bool(oscillation(ds, "T", settle=0.4)["sustained"])
    hopf = brentq(lambda c: model_eigenvalues(model, equilibrium(c), c).real.max(), 0.03, 0.035, xtol=1e-7)
    assert 0.03 < hopf < 0.035


def test_large_tumour_persistence_threshold(model):
    """The large-tumour equilibrium (on y' = 0: x = r2 (1 - b y)(g2 + y)/a) exists while c is below
    c(y) = x (mu2 - p1 z/(g1 + z))/y with z = p2 x y/(mu3 (g3 + y)); its maximum is the saddle-node."""
    def c_of(y):
        x = R2 * (1 - B * y) * (G2 + y) / A
        z = P2 * x * y / (MU3 * (G3 + y))
        return x * (MU2 - P1 * z / (G1 + z)) / y
    fold = minimize_scalar(lambda y: -c_of(y), bounds=(5e8, 0.999e9), method="bounded", options={"xatol": 1.0})
    c_star = -fold.fun
    assert c_star == pytest.approx(8.61e-5, rel=1e-2)             # published 8.61e-5 (from finite-horizon runs)
    runs = ie.simulate_batch(model, pd.DataFrame({"c": [0.95 * c_star, 1.1 * c_star]}), [0.0, 3000.0], **TIGHT)
    assert np.all(runs["status"].values == 0)
    below, above = runs["T"].values[:, -1]
    assert below > 9e8 and above < 1.0
