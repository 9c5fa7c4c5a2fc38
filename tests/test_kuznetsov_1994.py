"""kuznetsov_1994 against the published analysis (shared/references/published_models.md §1.1):
the steady states B (dormant), C (saddle) and D (escape), the ~99-day damped oscillation into
dormancy (eigenvalues of the Jacobian at B, in units of tau = 9.083 days), the heteroclinic
boundary (region 3 / 5) in mu and in delta, sneaking through above it, and Fig 9's mu = 0.0021
without D."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import fsolve

import immunoedit_models as ie
from immunoedit_models.phases import inoculum_ladder, oscillation

# Published steady states [C], cells: (E, T)
STEADY = {"B": (1.608e6, 8.186e6), "C": (0.7585e6, 268.0e6), "D": (0.1732e6, 447.0e6)}


@pytest.fixture(scope="module")
def model():
    return ie.compile_model("kuznetsov_1994", backend="numba")


def _rhs(model):
    p = model.kernels.extended_parameters(np.asarray(model.symbolic.param_values)[None])[0]

    def f(y):
        out = np.zeros(2)
        model.kernels.rhs(0.0, np.asarray(y, float), p, out)
        return out
    return f, p


@pytest.mark.parametrize("name", sorted(STEADY))
def test_steady_states_match_published(model, name):
    f, _ = _rhs(model)
    E, T = STEADY[name]
    root = fsolve(f, [E, T], xtol=1e-12)
    np.testing.assert_allclose(root, [E, T], rtol=1e-3)  # published to 4 significant digits


def test_dormant_state_is_a_stable_focus_with_99_day_period(model):
    f, p = _rhs(model)
    root = fsolve(f, STEADY["B"], xtol=1e-12)
    J = np.zeros((2, 2))
    model.kernels.jac(0.0, root, p, J)
    lam = np.linalg.eigvals(J) * 9.083  # per tau (1 tau = 9.083 days)
    assert np.all(lam.real < 0)
    np.testing.assert_allclose(sorted(lam.imag), [-0.576, 0.576], rtol=2e-3)
    np.testing.assert_allclose(lam.real, [-0.0501, -0.0501], rtol=5e-3)
    assert 2 * np.pi / abs(lam[0].imag) * 9.083 == pytest.approx(99.0, rel=0.01)


def test_trajectories_approach_dormancy_or_escape(model):
    days = np.linspace(0, 3000, 301)
    dormant = ie.simulate(model, days, initial={"E": 1.5e6, "T": 1e7}, rtol=1e-9, atol=1e-6)
    escape = ie.simulate(model, days, initial={"E": 1e5, "T": 4e8}, rtol=1e-9, atol=1e-6)
    assert float(dormant["T"][-1]) == pytest.approx(8.186e6, rel=2e-3)
    assert float(escape["T"][-1]) == pytest.approx(447.0e6, rel=2e-3)


# ---- sneaking through, the heteroclinic threshold in mu, and Fig 9 (mu = 0.0021) -----------------
# Non-dimensional form (published_models.md 1.1): x = E/1e6, y = T/1e6, tau = n 1e6 t; mu = m/n.
N_KILL = 1.101e-7
ND = dict(sigma=1.3e4 / (N_KILL * 1e12), rho=0.1245 / (N_KILL * 1e6), eta=20.19, delta=0.0412 / (N_KILL * 1e6),
          alpha=0.18 / (N_KILL * 1e6), beta=2e-3)


def nd_rhs(tau, z, mu, delta=ND["delta"]):
    x, y = z
    return [ND["sigma"] + ND["rho"] * x * y / (ND["eta"] + y) - mu * x * y - delta * x,
            ND["alpha"] * y * (1 - ND["beta"] * y) - x * y]


def nd_final_tumour(mu, x0, y0, tau=2000.0, delta=ND["delta"]):
    return solve_ivp(nd_rhs, (0.0, tau), [x0, y0], args=(mu, delta), method="LSODA", rtol=1e-11,
                     atol=1e-14).y[1, -1]


def interior_tumour_states(mu):
    """Positive y of the interior steady states: x = alpha (1 - beta y) put into x' = 0 (a cubic)."""
    s, r, e, d, a, b = (ND[k] for k in ("sigma", "rho", "eta", "delta", "alpha", "beta"))
    roots = np.roots([mu * b, -mu + (mu * e + d - r) * b, s / a + r - mu * e - d + d * e * b, e * (s / a - d)])
    return sorted(z.real for z in roots if abs(z.imag) < 1e-7 and 0 < z.real < 1 / b)


def heteroclinic(lo, hi, escapes):
    """Bisection for the parameter where A's unstable manifold switches from B (region 3) to D
    (region 5); escapes(value) integrates from just above A = (sigma/delta, 0)."""
    for _ in range(18):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if escapes(mid) else (mid, hi)
    return 0.5 * (lo + hi)


def heteroclinic_mu(lo=0.0049, hi=0.0052):
    return heteroclinic(lo, hi, lambda mu: nd_final_tumour(mu, ND["sigma"] / ND["delta"], 1e-7, tau=6000.0) > 100)


def test_heteroclinic_threshold_in_mu(model):
    """Above mu_h the smallest tumours follow A's unstable manifold to escape (region 5): the
    model's batch over mu switches from dormancy to escape in the grid step holding mu_h."""
    mu_h = heteroclinic_mu()
    assert 0.00501 < mu_h < 0.00502                                 # 0.0050140 (LSODA, rtol 1e-11)
    grid = np.linspace(0.00495, 0.00510, 7)
    runs = ie.simulate_batch(model, pd.DataFrame({"m": grid * N_KILL}), [0.0, 20000.0],
                             initial=pd.DataFrame({"E": np.full(7, 1.3e4 / 0.0412), "T": np.full(7, 0.1)}),
                             rtol=1e-10, atol=1e-8)
    escaped = runs["T"].values[:, -1] > 1e8
    assert escaped.tolist() == (grid > mu_h).tolist()


def test_heteroclinic_boundary_of_the_delta_sigma_map(model):
    """Fig 4's region 3/5 boundary at the estimated sigma: a global bifurcation, found by shooting
    along A's unstable manifold (not by linearisation); the model's batch over d agrees."""
    mu = 3.422e-10 / N_KILL
    delta_h = heteroclinic(0.45, 0.5, lambda d: nd_final_tumour(mu, ND["sigma"] / d, 1e-7, tau=6000.0, delta=d) > 100)
    assert ND["sigma"] / delta_h < ND["alpha"]                      # A is a saddle on both sides
    d_h = delta_h * N_KILL * 1e6                                    # back to 1/day
    grid = np.linspace(0.048, 0.056, 7)
    runs = ie.simulate_batch(model, pd.DataFrame({"d": grid}), [0.0, 20000.0],
                             initial=pd.DataFrame({"E": 1.3e4 / grid, "T": np.full(7, 0.1)}), rtol=1e-10, atol=1e-8)
    assert np.any(grid < d_h) and np.any(grid > d_h)
    assert (runs["T"].values[:, -1] > 1e8).tolist() == (grid > d_h).tolist()


def test_sneaking_through_above_the_heteroclinic_threshold(model):
    """Region 5 (mu = 0.006 > mu_h) with effectors at 1e6 cells: small and large inocula escape to D,
    intermediate ones are held in dormancy at B; at the estimated mu (region 3) there is no sneaking
    through. mu = 0.006 and E(0) = 1e6 were chosen here (region 5, located above); they are not the
    paper's figure values, which are not in published_models.md."""
    inocula = [1e3, 1e4, 1e6, 1e7, 3e8]
    ladder = inoculum_ladder(model, inocula, escape_size=1e8, days=5000.0, initial={"E": 1e6},
                             params={"m": 0.006 * N_KILL}, rtol=1e-10, atol=1e-8)
    assert ladder["phase"].values.tolist() == ["escape", "escape", "equilibrium", "equilibrium", "escape"]
    assert ladder.attrs["sneaks_through"] == 1
    reference = [nd_final_tumour(0.006, 1.0, T / 1e6, tau=5000.0 * N_KILL * 1e6) * 1e6 for T in inocula]
    np.testing.assert_allclose(ladder["final_tumour"].values, reference, rtol=1e-4)
    estimated = inoculum_ladder(model, inocula, escape_size=1e8, days=5000.0, initial={"E": 1e6},
                                rtol=1e-10, atol=1e-8)
    assert estimated["phase"].values.tolist()[:4] == ["equilibrium"] * 4 and estimated.attrs["sneaks_through"] == 0


def test_fig9_escape_state_is_gone_at_mu_0021(model):
    """C and D annihilate in a saddle-node between mu = 0.0021 (Fig 9) and the estimated 0.00311:
    at 0.0021 only the dormant state remains and a large tumour is brought down to it."""
    assert len(interior_tumour_states(0.00311)) == 3 and len(interior_tumour_states(0.0021)) == 1
    lo, hi = 0.0021, 0.00311
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if len(interior_tumour_states(mid)) == 3 else (mid, hi)
    assert 0.0026 < hi < 0.0027                                     # saddle-node at mu = 0.002633
    dormant = interior_tumour_states(0.0021)[0] * 1e6
    runs = ie.simulate_batch(model, pd.DataFrame({"m": [0.0021 * N_KILL, 0.00311 * N_KILL]}), [0.0, 5000.0],
                             initial=pd.DataFrame({"E": [1e5, 1e5], "T": [4e8, 4e8]}), rtol=1e-10, atol=1e-8)
    fig9, estimated = runs["T"].values[:, -1]
    assert fig9 == pytest.approx(dormant, rel=1e-4) and estimated == pytest.approx(447.0e6, rel=2e-3)


def test_ladder_and_oscillation_inputs_are_checked(model):
    message = r"inocula must be at least two increasing sizes, got \[1000000\.0, 1000\.0\]"
    with pytest.raises(ie.SimulationError, match=message):
        inoculum_ladder(model, [1e6, 1e3], escape_size=1e8)
    ds = ie.simulate(model, np.linspace(0.0, 3000.0, 3001), initial={"E": 1.5e6, "T": 1e7}, rtol=1e-10, atol=1e-6)
    with pytest.raises(ie.SimulationError, match="no variable 'X' in the result"):
        oscillation(ds, "X")
    damped = oscillation(ds, "T", prominence=1e-3, settle=0.2)      # the damped spiral into B
    assert float(damped["period"]) == pytest.approx(2 * np.pi / 0.576 * 9.083, rel=2e-3)   # 99.1 days
    assert float(damped["drift"]) < 0 and not bool(damped["sustained"])
