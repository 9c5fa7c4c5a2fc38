"""Bad arguments to the time-course fitting API give one typed error, verbatim, before any long run.

Covers the differentiable simulator, forward sensitivities, the time-course objective, multistart,
CMA-ES, profile likelihoods, NUTS and the Laplace posterior. Optimisers are called on a cheap
quadratic so that only the argument checks run; the objective uses fitting/reference_timecourse.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import immunoedit_models as ie
from immunoedit_models.errors import FitError, SimulationError
from immunoedit_models.fit import cmaes, load_problem, multistart, nuts_posterior, profile_likelihood
from immunoedit_models.fit.optimize import _cma_seed
from immunoedit_models.fit.parameters import FreeParameter, ParameterSet
from immunoedit_models.fit.timecourse import timecourse_objective
from immunoedit_models.fit.uncertainty import draw_parameters, laplace_from_evaluations
from immunoedit_models.simulate.differentiable import differentiable_simulator
from immunoedit_models.simulate.sensitivities import ForwardSensitivities

ROOT = Path(__file__).resolve().parent.parent
PARAMS = ParameterSet((FreeParameter("a", (0.1, 10.0)), FreeParameter("b", (-1.0, 1.0), scale="lin")))
X0 = np.array([0.0, 0.0])
SHAPE = "must be 2 numbers on the fit scale, one per free parameter (a, b), got a 1-d float64 array of shape (3,)"
SEED = "seed must be an integer in [0, 4294967294], got {} (a fixed seed makes the fit reproducible and resumable, e.g. seed=0)"
OUTSIDE = ("is outside the bounds for ['a']: the values are on the fit scale (ln value for scale 'log'; "
           "ParameterSet.to_x converts natural values); start inside the bounds or widen them")


def quadratic(x):
    return float(x @ x), 2 * np.asarray(x, float)


def raises(error, message: str):
    return pytest.raises(error, match="^" + re.escape(message) + "$")


# ---- simulators ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pk_numba(specs_dir):
    return ie.compile_model(specs_dir / "pk_one_compartment.yaml", backend="numba")


@pytest.fixture(scope="module")
def pk_jax(specs_dir):
    return ie.compile_model(specs_dir / "pk_one_compartment.yaml", backend="jax")


@pytest.mark.parametrize("kwargs, message", [
    ({"params": "CL"}, "params must be a list of names, got the string 'CL' (write ['CL'])"),
    ({"outputs": "amount"}, "outputs must be a list of names, got the string 'amount' (write ['amount'])"),
    ({"t0": float("nan")}, "t0 must be a finite number of days, got nan"),
    ({"base": {"V": float("nan")}}, "parameter 'V' must be a finite number, got nan"),
    ({"base": {"V": "x"}}, "parameter 'V' must be a number, got 'x'"),
    ({"initial": {"C": float("inf")}}, "state 'C' must be a finite number, got inf"),
    ({"rtol": "1e-6"}, "rtol must be a number, got '1e-6'"),
    ({"max_steps": 10.5}, "max_steps must be a positive integer, got 10.5"),
])
def test_differentiable_simulator_arguments(pk_jax, kwargs, message):
    kwargs = {"params": ["CL"], **kwargs}
    with raises(SimulationError, message):
        differentiable_simulator(pk_jax, [0.0, 1.0], **kwargs)


@pytest.mark.parametrize("theta, shape", [([0.2], "(1,)"), (0.2, "()"), ([[0.2, 3.0]], "(1, 2)")])
def test_theta_of_the_wrong_shape_is_not_broadcast(pk_jax, theta, shape):
    f = differentiable_simulator(pk_jax, [0.0, 1.0], ["CL", "V"])
    with raises(SimulationError, f"theta must have shape (2,), one value per name in params ['CL', 'V'], got shape {shape}"):
        f(np.asarray(theta))


@pytest.mark.parametrize("kwargs, message", [
    ({"wrt": "CL"}, "wrt must be a list of names, got the string 'CL' (write ['CL'])"),
    ({"t0": float("nan")}, "t0 must be a finite number of days, got nan"),   # hung the solver
    ({"max_steps": float("inf")}, "max_steps must be a positive integer, got inf"),
    ({"initial": {"C": "x"}}, "state 'C' must be a number, got 'x'"),
])
def test_forward_sensitivities_arguments(pk_numba, kwargs, message):
    kwargs = {"wrt": ["CL"], **kwargs}
    with raises(SimulationError, message):
        ForwardSensitivities(pk_numba, [0.0, 1.0], **kwargs)


def test_forward_sensitivity_rows(pk_numba):
    fs = ForwardSensitivities(pk_numba, [0.0, 1.0], ["CL"])
    rows = "P must be numbers of shape (B, 2) with B >= 1 (one row per trajectory, columns in model.parameters order), got "
    with raises(SimulationError, rows + "2-d float64 (0, 2)"):
        fs.solve(np.zeros((0, 2)))
    with raises(SimulationError, rows + "2-d <U1 (1, 2)"):
        fs.solve([["a", "b"]])
    P = np.array([[0.2, 3.0]])
    got = fs.solve(P)
    with raises(SimulationError, "P has 2 rows but the solve has 1 trajectories: pass the P given to solve()"):
        fs.outputs(got, np.vstack([P, P]))
    with raises(SimulationError, "names must be a list of names, got the string 'amount' (write ['amount'])"):
        fs.outputs(got, P, "amount")


# ---- the time-course objective ------------------------------------------------------------------
@pytest.fixture(scope="module")
def objective():
    return timecourse_objective(load_problem(ROOT / "fitting" / "reference_timecourse"))


def test_objective_rejects_bad_vectors(objective):
    x = np.array([np.log(0.05), np.log(3.0), np.log(5e10)])
    shape = "x must be 3 numbers on the fit scale, one per free parameter (rT, kkill, KT), got a "
    for call in (objective.value, objective.value_and_grad, objective.raw_value_and_grad, objective.simulate):
        with raises(FitError, shape + "1-d float64 array of shape (2,)"):
            call(x[:2])
        with raises(FitError, shape + "2-d float64 array of shape (1, 3)"):
            call(x[None])
    for call in (objective.value, objective.value_and_grad):   # NaN was a silent FAILED_VALUE with zero gradient
        with raises(FitError, "x is not finite for ['rT']: give finite fit-scale values (ln value for scale 'log')"):
            call(np.r_[np.nan, x[1:]])
    with raises(FitError, "simulate: times start at -5, before the problem's t0 = 0 where the initial states "
                          "hold; give times >= t0"):
        objective.simulate(x, times=[-5.0, 18.0])
    assert objective.simulate(x)["treated"]["time"].iloc[0] == objective.problem.t0


# ---- optimisers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"n_starts": 0}, "multistart n_starts must be an integer >= 1, got 0 (e.g. n_starts=8)"),
    ({"n_starts": 1.5}, "multistart n_starts must be an integer >= 1, got 1.5 (e.g. n_starts=8)"),
    ({"max_iter": 0}, "multistart max_iter must be an integer >= 1, got 0 (e.g. max_iter=200)"),
    ({"seed": None}, "multistart: " + SEED.format("None")),
    ({"seed": -1}, "multistart: " + SEED.format("-1")),
    ({"first": np.zeros(3)}, "multistart first " + SHAPE),
    ({"first": np.array([np.nan, 0.0])}, "multistart first is not finite for ['a']: give finite fit-scale values "
                                         "(ln value for scale 'log')"),
    ({"first": np.array([5.0, 0.0])}, "multistart first " + OUTSIDE),
])
def test_multistart_arguments(kwargs, message):
    with raises(FitError, message):
        multistart(quadratic, PARAMS, **{"n_starts": 1, "max_iter": 1, **kwargs})


def test_no_free_parameters():
    with raises(FitError, "multistart: the parameter set has no free parameters (list at least one under 'parameters:')"):
        multistart(quadratic, ParameterSet(()), n_starts=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_iter": 0}, "cmaes max_iter must be an integer >= 1, got 0 (e.g. max_iter=100)"),
    ({"sigma0": 0}, "cmaes sigma0 must be a finite number > 0, got 0 (e.g. sigma0=0.25, a quarter of the unit box)"),
    ({"popsize": 1}, "cmaes popsize must be an integer >= 2, got 1 (e.g. popsize=8, or None for cma's default)"),
    ({"seed": 1.5}, "cmaes: " + SEED.format("1.5")),
    ({"x0": np.array([5.0, 0.0])}, "cmaes x0 " + OUTSIDE),
])
def test_cmaes_arguments(kwargs, message):
    with raises(FitError, message):
        cmaes(lambda x: quadratic(x)[0], PARAMS, **{"max_iter": 1, "popsize": 4, **kwargs})


def test_cmaes_needs_a_scalar_objective():
    with raises(FitError, "cmaes needs fun(x) -> one number (the objective), got a tuple; pass the objective's "
                          "value, e.g. objective.value, not value_and_grad"):
        cmaes(quadratic, PARAMS, max_iter=1, popsize=4)


def test_cmaes_seed_zero_is_reproducible():
    """cma reads seed 0 as 'from the clock'; the default seed=0 must still repeat."""
    run = lambda: cmaes(lambda x: quadratic(x)[0], PARAMS, seed=0, max_iter=2, popsize=4).points  # noqa: E731
    np.testing.assert_array_equal(run(), run())
    assert _cma_seed(0) == 2**32 - 1 and _cma_seed(7) == 7


@pytest.mark.parametrize("kwargs, message", [
    ({"names": ["V1"]}, "profile_likelihood names ['V1'] are not free parameters; give distinct names among the "
                        "free parameters (a, b), or None for all"),
    ({"names": []}, "profile_likelihood names is empty; give distinct names among the free parameters (a, b), or "
                    "None for all"),
    ({"names": ["a", "a"]}, "profile_likelihood names repeat a name: ['a', 'a']; give distinct names among the free "
                            "parameters (a, b), or None for all"),
    ({"names": "a"}, "profile_likelihood names must be a list of free parameter names, got the string 'a' (write ['a'])"),
    ({"x_best": np.array([5.0, 0.0])}, "profile_likelihood x_best " + OUTSIDE),
    ({"f_best": float("nan")}, "profile_likelihood f_best must be a finite number (the objective at x_best), got nan"),
    ({"n_points": 0}, "profile_likelihood n_points must be an integer >= 3, got 0 (e.g. n_points=12)"),
    ({"max_iter": 0}, "profile_likelihood max_iter must be an integer >= 1, got 0 (e.g. max_iter=100)"),
    ({"threshold": -1.0}, "profile_likelihood threshold must be a finite number > 0, got -1.0 (e.g. the 95 % level 1.9207)"),
])
def test_profile_arguments(kwargs, message):
    with raises(FitError, message):
        profile_likelihood(quadratic, PARAMS, **{"x_best": X0, "f_best": 0.0, "n_points": 4, "max_iter": 1, **kwargs})


@pytest.mark.parametrize("kwargs, message", [
    ({"num_samples": 2}, "nuts_posterior num_samples must be an integer >= 4, got 2 (e.g. num_samples=300; R-hat "
                         "needs 4 draws per chain)"),
    ({"num_warmup": -1}, "nuts_posterior num_warmup must be an integer >= 0, got -1 (e.g. num_warmup=300)"),
    ({"num_chains": 0}, "nuts_posterior num_chains must be an integer >= 1, got 0 (e.g. num_chains=1)"),
    ({"target_accept": 1.5}, "nuts_posterior target_accept must be a number in (0, 1), got 1.5 (e.g. target_accept=0.8)"),
    ({"seed": None}, "nuts_posterior: " + SEED.format("None")),
    ({"x_init": np.zeros(3)}, "nuts_posterior x_init " + SHAPE),
    ({"value_and_grad": lambda x: quadratic(x)[0]},
     "nuts_posterior needs value_and_grad(x) -> (value, gradient of shape (2,)), got a float of shape (); pass e.g. "
     "objective.raw_value_and_grad, not objective.value"),
])
def test_nuts_arguments(kwargs, message):
    with raises(FitError, message):
        nuts_posterior(**{"value_and_grad": quadratic, "params": PARAMS, "x_init": X0, "num_warmup": 2,
                          "num_samples": 4, **kwargs})


# ---- Laplace posterior --------------------------------------------------------------------------
def test_laplace_arguments():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (40, 2))
    f, bounds = (X ** 2).sum(axis=1), np.array([[-1.0, 1.0], [-1.0, 1.0]])
    with raises(FitError, "evaluations X must be (n, k), f (n,), x_best (k,) and bounds (k, 2); got X (40, 2), "
                          "f (39,), x_best (2,), bounds (2, 2)"):
        laplace_from_evaluations(X, f[:-1], np.zeros(2), bounds)
    with raises(FitError, "bounds must be finite with low < high in every row, got [[0.0, 0.0], [-1.0, 1.0]]"):
        laplace_from_evaluations(X, f, np.zeros(2), np.array([[0.0, 0.0], [-1.0, 1.0]]))
    with raises(FitError, "x_best [5.0, 0.0] must be finite and within the bounds (the best evaluated point)"):
        laplace_from_evaluations(X, f, np.array([5.0, 0.0]), bounds)
    with raises(FitError, "window must be a finite number > 0, got -1 (e.g. None for chi2(k, 0.99)/2)"):
        laplace_from_evaluations(X, f, np.zeros(2), bounds, window=-1)
    laplace = laplace_from_evaluations(X, f, np.zeros(2), bounds)
    with raises(FitError, "n must be an integer >= 0, got -1 (e.g. n=40)"):
        draw_parameters(laplace, -1, rng)
    with raises(FitError, "rng must be a numpy Generator, got int (e.g. np.random.default_rng(0))"):
        draw_parameters(laplace, 2, 0)
