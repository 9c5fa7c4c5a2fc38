"""kuznetsov_1994 against the published analysis (shared/references/published_models.md §1.1):
the steady states B (dormant), C (saddle) and D (escape), and the ~99-day damped oscillation
into dormancy (eigenvalues of the Jacobian at B, in units of tau = 9.083 days)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import fsolve

import immunoedit_models as ie

# Published steady states [C], cells: (E, T)
STEADY = {"B": (1.608e6, 8.186e6), "C": (0.7585e6, 268.0e6), "D": (0.1732e6, 447.0e6)}


@pytest.fixture(scope="module")
def model():
    return ie.compile_model("kuznetsov_1994", backend="numba")


def _rhs(model):
    p = np.asarray(model.symbolic.param_values)

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
