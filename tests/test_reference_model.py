"""The built-in benchmark_reference spec against libRoadRunner running the same model from SBML
(shared/benchmarks/reference_model.xml), and the backends against each other and scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import immunoedit_models as ie
from immunoedit_models.simulate.core import regimen_list

from .scipy_reference import scipy_simulate

DAYS = np.arange(366.0)
STATES = ["T", "E", "X", "R", "I", "P", "L", "A", "C1", "C2"]


@pytest.fixture(scope="module")
def roadrunner_reference(shared_dir):
    roadrunner = pytest.importorskip("roadrunner")
    rr = roadrunner.RoadRunner(str(shared_dir / "benchmarks" / "reference_model.xml"))
    rr.integrator.relative_tolerance = 1e-10
    rr.integrator.absolute_tolerance = 1e-12
    result = rr.simulate(0, 365, 366)
    assert list(result.colnames[1:]) == STATES
    return np.asarray(result)[:, 1:]


@pytest.fixture(scope="module", params=["numba", "jax"])
def model(request):
    return ie.compile_model(ie.load_spec("benchmark_reference"), backend=request.param)


def _states(ds) -> np.ndarray:
    return np.stack([ds[s].values for s in STATES], axis=-1)


def test_agrees_with_libroadrunner_at_default_tolerances(model, roadrunner_reference):
    ds = ie.simulate(model, DAYS, rtol=1e-6, atol=1e-9)
    assert int(ds.status) == 0
    np.testing.assert_allclose(_states(ds), roadrunner_reference, rtol=1e-5, atol=1e-12)


def test_backends_and_scipy_agree_at_tight_tolerances(roadrunner_reference):
    spec = ie.load_spec("benchmark_reference")
    runs = {b: _states(ie.simulate(ie.compile_model(spec, backend=b), DAYS, rtol=1e-10, atol=1e-12))
            for b in ("numba", "jax")}
    model = ie.compile_model(spec, backend="numba")
    runs["scipy"] = scipy_simulate(model.symbolic, DAYS, regimen_list(model, None, 1)[0])
    for name, got in runs.items():
        np.testing.assert_allclose(got, runs["scipy"], rtol=1e-6, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(runs["numba"], roadrunner_reference, rtol=1e-6, atol=1e-12)


def test_default_regimen_is_the_18_dose_schedule(model):
    (regimen,) = regimen_list(model, None, 1)
    assert [d.time for d in regimen.doses] == [7.5 + 21 * k for k in range(18)]
    assert {d.amount for d in regimen.doses} == {"Dose"}  # the Dose parameter, 1200 mg
    untreated = ie.simulate(model, DAYS, regimen="untreated")
    assert float(untreated["C1"].max()) == 0.0
    first = ie.simulate(model, [7.5], params={"Dose": 600.0})
    assert float(first["C1"][0]) == pytest.approx(600.0 / 3.28, rel=1e-12)  # Dose / V1, post-dose


def test_batch_of_dose_draws_agrees_with_libroadrunner(shared_dir):
    """Dose is a parameter in the SBML model too: vary it with two others, run both, compare."""
    roadrunner = pytest.importorskip("roadrunner")
    rr = roadrunner.RoadRunner(str(shared_dir / "benchmarks" / "reference_model.xml"))
    rr.integrator.relative_tolerance, rr.integrator.absolute_tolerance = 1e-10, 1e-12
    draws = pd.DataFrame({"Dose": [600.0, 1500.0], "kkill": [2.0, 3.5], "V1": [3.0, 3.6]})
    model = ie.compile_model("benchmark_reference", backend="numba")
    batch = ie.simulate_batch(model, draws, DAYS)
    for i, row in draws.iterrows():
        rr.resetAll()
        for name, value in row.items():
            rr[name] = value
        reference = np.asarray(rr.simulate(0, 365, 366))[:, 1:]
        got = np.stack([batch[s].values[i] for s in STATES], axis=-1)
        np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-12)


def test_result_is_labelled_with_provenance(model):
    ds = ie.simulate(model, DAYS, params={"kkill": 2.0}, initial={"T": 2e8})
    assert ds["T"].dims == ("time",) and ds["T"].attrs["units"] == "cell"
    assert float(ds["T"][0]) == 2e8
    assert ds["pdl1_occupancy"].attrs["kind"] == "observable" and ds["fPD"].attrs["kind"] == "expression"
    for key in ("spec_hash", "versions", "backend", "solver", "rtol", "atol", "regimen"):
        assert key in ds.attrs
    assert ds.attrs["backend"] == model.backend and ds.attrs["rtol"] == 1e-6
