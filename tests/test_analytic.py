"""Specs with closed-form solutions, through the whole pipeline (spec -> compile -> simulate), on
both backends: linear chain vs matrix exponential, logistic growth, repeated-bolus and infusion PK."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm

import immunoedit_models as ie

BACKENDS = ["numba", "jax"]
TIGHT = dict(rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    return request.param


def test_linear_chain_matches_matrix_exponential(specs_dir, backend):
    model = ie.compile_model(ie.load_spec(specs_dir / "linear_chain.yaml"), backend=backend)
    times = np.linspace(0, 60, 61)
    ds = ie.simulate(model, times, params={"k2": 0.25}, initial={"B": 2.0}, **TIGHT)
    K = np.array([[-0.7, 0, 0], [0.7, -0.25, 0], [0, 0.25, -0.05]])
    exact = np.array([expm(K * t) @ np.array([10.0, 2.0, 1.0]) for t in times])
    got = np.stack([ds[s].values for s in "ABC"], axis=1)
    np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-10)
    assert int(ds.status) == 0


def test_logistic_growth_matches_closed_form(specs_dir, backend):
    model = ie.compile_model(ie.load_spec(specs_dir / "logistic.yaml"), backend=backend)
    times = np.linspace(0, 300, 31)
    ds = ie.simulate(model, times, **TIGHT)
    T0, r, K = 1e6, 0.1, 1e10
    exact = K / (1 + (K / T0 - 1) * np.exp(-r * times))
    np.testing.assert_allclose(ds["T"].values, exact, rtol=1e-6)


def test_repeated_bolus_matches_sum_of_exponentials(specs_dir, backend):
    model = ie.compile_model(ie.load_spec(specs_dir / "pk_one_compartment.yaml"), backend=backend)
    times = np.array([0.0, 1.0, 6.999, 7.0, 10.0, 14.0, 20.5, 28.0, 35.0, 40.0])
    ds = ie.simulate(model, times, **TIGHT)  # default regimen: 100 mg every 7 days x5 from day 0
    ke, V = 0.2 / 3.0, 3.0
    dose_times = 7.0 * np.arange(5)
    exact = np.array([sum(100 / V * np.exp(-ke * (t - td)) for td in dose_times if td <= t) for t in times])
    np.testing.assert_allclose(ds["C"].values, exact, rtol=1e-7)
    np.testing.assert_allclose(ds["amount"].values, exact * V, rtol=1e-7)  # observable C*V
    assert ds["C"].values[3] > ds["C"].values[2] + 100 / V * 0.999  # output at a dose time is post-dose


def test_zero_order_infusion_matches_closed_form(specs_dir, backend):
    model = ie.compile_model(ie.load_spec(specs_dir / "pk_one_compartment.yaml"), backend=backend)
    times = np.array([0.0, 2.0, 2.1, 2.25, 2.5, 3.0, 5.0])
    ds = ie.simulate(model, times, regimen="infusion", **TIGHT)  # 60 mg over 0.5 day from day 2
    ke, V, rate = 0.2 / 3.0, 3.0, 60 / 0.5
    during = lambda t: rate / (V * ke) * (1 - np.exp(-ke * (t - 2.0)))  # noqa: E731
    exact = np.where(times <= 2.0, 0.0, np.where(times <= 2.5, during(np.minimum(times, 2.5)),
                                                 during(2.5) * np.exp(-ke * (times - 2.5))))
    np.testing.assert_allclose(ds["C"].values, exact, rtol=1e-7, atol=1e-12)


def test_custom_regimen_object_and_unknown_drug(specs_dir):
    model = ie.compile_model(ie.load_spec(specs_dir / "pk_one_compartment.yaml"), backend="numba")
    one = ie.simulate(model, [0.0, 1.0], regimen=ie.Regimen.repeated("drug", 30.0), **TIGHT)
    np.testing.assert_allclose(one["C"].values, [10.0, 10.0 * np.exp(-0.2 / 3.0)], rtol=1e-8)
    with pytest.raises(ie.SimulationError, match="doses unknown drug 'aspirin'.*drugs: drug"):
        ie.simulate(model, [0.0, 1.0], regimen=ie.Regimen.repeated("aspirin", 1.0))
