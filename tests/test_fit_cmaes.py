"""CMA-ES on a virtual-population survival problem, with checkpoint/resume.

A toy population: each patient's growth rate g = median * exp(sigma z) and progression at the
doubling time ln 2 / g (months), censored. The "observed" arm is drawn with median 0.1 and sigma
0.5 (its own seed); the simulated arm uses fixed draws z (common random numbers) and the smoothed
piecewise-exponential IPD likelihood. CMA-ES must recover the generating values, and a run killed
after k generations and resumed must equal the uninterrupted run exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from immunoedit_models.fit.likelihoods import ipd_nll
from immunoedit_models.fit.optimize import cmaes, cmaes_dataset
from immunoedit_models.fit.parameters import FreeParameter, ParameterSet, PopulationParameter

EDGES = [0, 2, 4, 6, 8, 10, 12, 15, 18, 24]
FOLLOW_UP = 30.0


@pytest.fixture(scope="module")
def problem():
    free = (FreeParameter("g.median", (0.02, 0.5)), FreeParameter("g.sigma", (0.05, 1.5)))
    params = ParameterSet(free, (PopulationParameter("g", *free),))
    rng = np.random.default_rng(2024)
    g = 0.1 * np.exp(0.5 * rng.standard_normal(500))
    t, c = np.log(2) / g, rng.uniform(6, FOLLOW_UP, 500)
    obs_t, obs_e = np.minimum(t, c), (t <= c).astype(int)
    z = np.random.default_rng(11).standard_normal(2000)  # fixed draws: common random numbers

    def objective(x):
        median, sigma = np.exp(x)
        sim = np.log(2) / (median * np.exp(sigma * z))
        return ipd_nll(obs_t, obs_e, np.minimum(sim, FOLLOW_UP), (sim <= FOLLOW_UP).astype(int), EDGES, 0.5)

    return params, objective


def test_cmaes_recovers_the_population_parameters(problem):
    params, objective = problem
    result = cmaes(objective, params, sigma0=0.3, seed=5, max_iter=40, popsize=8)
    median, sigma = np.exp(result.x)
    assert median == pytest.approx(0.1, rel=0.08)
    assert sigma == pytest.approx(0.5, rel=0.2)
    assert result.fun == pytest.approx(objective(result.x), rel=1e-12)
    ds = cmaes_dataset(result, params)
    assert ds.sizes["iteration"] == 40 and ds["trace_best"].min() == pytest.approx(result.fun)


def test_cmaes_killed_and_resumed_equals_uninterrupted(problem, tmp_path):
    params, objective = problem
    full = cmaes(objective, params, sigma0=0.3, seed=5, max_iter=25, popsize=8)

    class Killed(Exception):
        pass

    def kill(iteration, state):
        if iteration == 7:
            raise Killed

    ckpt = tmp_path / "cmaes.pkl"
    with pytest.raises(Killed):
        cmaes(objective, params, sigma0=0.3, seed=5, max_iter=25, popsize=8, checkpoint=ckpt, on_iteration=kill)
    np.random.seed(12345)  # whatever the process did to numpy's global generator in between
    resumed = cmaes(objective, params, sigma0=0.3, seed=5, max_iter=25, popsize=8, checkpoint=ckpt)
    np.testing.assert_array_equal(resumed.x, full.x)
    assert resumed.fun == full.fun
    assert resumed.trace == full.trace
