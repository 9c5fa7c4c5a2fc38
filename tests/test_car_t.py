"""CAR-T module (modules/car_t_cells.yaml) run alone: expansion on antigen, contraction to memory
without it, chronic-antigen exhaustion, checked against the closed forms of its linear regimes;
and virtual CAR-T patients drawn from its priors."""

from __future__ import annotations

import numpy as np
import pytest

import immunoedit_models as ie
from immunoedit_models.trials.cohort import sample_cohort

DOSE = 1.0e8


@pytest.fixture(scope="module")
def car_t():
    return ie.compile_model("car_t_cells", backend="numba")


def _value(model, name):
    return dict(zip(model.parameters, model.symbolic.param_values))[name]


def test_contraction_to_memory_without_antigen(car_t):
    """No antigen: dE/dt = -(d + k_mem) E, dM/dt = k_mem E - d_M M, no exhaustion."""
    t = np.array([0.0, 1.0, 5.0, 20.0, 60.0])
    ds = ie.simulate(car_t, t, params={"car_target_cells": 0.0}, rtol=1e-10, atol=1e-6)
    a = _value(car_t, "d_car") + _value(car_t, "k_car_memory")
    b = _value(car_t, "d_car_memory")
    np.testing.assert_allclose(ds["CAR_E"].values, DOSE * np.exp(-a * t), rtol=1e-7)
    memory = _value(car_t, "k_car_memory") * DOSE / (a - b) * (np.exp(-b * t) - np.exp(-a * t))
    np.testing.assert_allclose(ds["CAR_M"].values, memory, rtol=1e-7, atol=1e-3)
    assert np.all(ds["CAR_X"].values == 0.0)


def test_expansion_and_exhaustion_on_antigen(car_t):
    """Antigen present, no crowding (capacity 1e30) and no memory formation: E grows as
    exp(g t), g = p s - d - k_x s with s = A/(A + K); X' = k_x s E - d_X X."""
    t = np.array([0.0, 2.0, 7.0, 14.0])
    ds = ie.simulate(car_t, t, params={"car_capacity": 1e30, "k_car_memory": 0.0}, rtol=1e-10, atol=1e-6)
    s = 1e9 / (1e9 + _value(car_t, "K_car_antigen"))
    kx, dx = _value(car_t, "k_car_exhaust"), _value(car_t, "d_car_exhausted")
    g = _value(car_t, "p_car") * s - _value(car_t, "d_car") - kx * s
    assert g > 0
    np.testing.assert_allclose(ds["CAR_E"].values, DOSE * np.exp(g * t), rtol=1e-7)
    exhausted = kx * s * DOSE / (g + dx) * (np.exp(g * t) - np.exp(-dx * t))
    np.testing.assert_allclose(ds["CAR_X"].values, exhausted, rtol=1e-7, atol=1e-3)


def test_virtual_car_t_patients_from_the_priors(car_t):
    """200 patients: the sampled log-parameters centre on the priors' medians (3 standard errors)
    and the expansion they produce varies between patients."""
    cohort = sample_cohort(car_t, 200, seed=5)
    params = cohort.params
    for name, sigma in (("p_car", 0.5), ("d_car", 0.4), ("K_car_antigen", 1.0)):
        logs = np.log(params[name].to_numpy())
        assert abs(np.mean(logs) - np.log(_value(car_t, name))) < 3 * sigma / np.sqrt(len(logs)) + 0.02
    batch = ie.simulate_batch(car_t, params=params, times=[0.0, 14.0])
    peak = batch["CAR_E"].values[:, -1]
    assert np.all(batch["status"].values == 0)
    assert np.quantile(peak, 0.9) / np.quantile(peak, 0.1) > 10
