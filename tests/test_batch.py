"""simulate_batch: rows = samples, per-run status, chunking, Dask, zarr streaming, same seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import immunoedit_models as ie

DAYS = np.arange(0.0, 181.0, 10.0)


@pytest.fixture(scope="module")
def model():
    return ie.compile_model(ie.load_spec("benchmark_reference"), backend="numba")


def _draws(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"kkill": 3.0 * rng.uniform(0.5, 1.5, n), "rT": 0.05 * rng.uniform(0.5, 1.5, n)})


def test_batch_rows_equal_single_runs(model):
    draws = _draws(6)
    batch = ie.simulate_batch(model, draws, DAYS)
    assert batch["T"].dims == ("sample", "time") and batch.sizes["sample"] == 6
    np.testing.assert_array_equal(batch["kkill"].values, draws["kkill"].values)
    for i in (0, 5):
        one = ie.simulate(model, DAYS, params=draws.iloc[i].to_dict())
        np.testing.assert_allclose(batch["T"].values[i], one["T"].values, rtol=1e-12)
        assert int(batch["n_steps"][i]) == int(one["n_steps"])


def test_pathological_draws_are_reported_not_dropped(model):
    draws = _draws(5).assign(Kkill=1e8)
    draws.loc[1, "kkill"] = np.nan  # non-finite parameter
    draws.loc[3, "Kkill"] = -1e8  # T/(Kkill + T) divides by zero at the initial T = 1e8
    with pytest.warns(RuntimeWarning, match=r"2 of 5 runs failed"):
        batch = ie.simulate_batch(model, draws, DAYS)
    status = batch["status"].values
    assert status[1] == 2 and status[3] == 2  # non-finite state
    assert list(status[[0, 2, 4]]) == [0, 0, 0]
    assert np.isnan(batch["T"].values[1, -1])
    assert np.isnan(batch["kkill"].values[1])  # the failing parameters are kept with the run
    assert np.all(np.isfinite(batch["T"].values[[0, 2, 4]]))


def test_chunks_and_per_sample_regimens(model):
    draws = _draws(7)
    whole = ie.simulate_batch(model, draws, DAYS)
    chunked = ie.simulate_batch(model, draws, DAYS, chunk_size=3, progress=True)
    np.testing.assert_array_equal(whole["T"].values, chunked["T"].values)
    regimens = [ie.Regimen.none() if i % 2 else ie.Regimen.repeated("anti_pdl1", 1200, 21, 3, 7.5)
                for i in range(7)]
    mixed = ie.simulate_batch(model, draws, DAYS, regimen=regimens)
    assert float(mixed["C1"][1].max()) == 0.0 and float(mixed["C1"][0].max()) > 100.0


def test_zarr_stream_round_trip(model, tmp_path):
    draws = _draws(9)
    streamed = ie.simulate_batch(model, draws, DAYS, chunk_size=4, zarr_path=tmp_path / "batch.zarr")
    direct = ie.simulate_batch(model, draws, DAYS)
    np.testing.assert_allclose(streamed["T"].values, direct["T"].values, rtol=0, atol=0)
    np.testing.assert_array_equal(streamed["status"].values, direct["status"].values)
    assert streamed.attrs["spec_hash"] == direct.attrs["spec_hash"]


def test_dask_local_cluster_matches_in_process(model):
    distributed = pytest.importorskip("distributed")
    draws = _draws(8)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        remote = ie.simulate_batch(model, draws, DAYS, chunk_size=4, scheduler=client)
    local = ie.simulate_batch(model, draws, DAYS)
    np.testing.assert_array_equal(remote["T"].values, local["T"].values)
    np.testing.assert_array_equal(remote["sample"].values, np.arange(8))


def test_batch_input_errors(model):
    with pytest.raises(ie.SimulationError, match=r"'kkil' is not a parameter of model 'benchmark_reference' "
                                                 r"\(did you mean 'kkill'\?\)"):
        ie.simulate_batch(model, pd.DataFrame({"kkil": [1.0]}), DAYS)
    with pytest.raises(ie.SimulationError, match="params as a pandas DataFrame"):
        ie.simulate_batch(model, {"kkill": [1.0]}, DAYS)
    with pytest.raises(ie.SimulationError, match="no regimen 'weekly'"):
        ie.simulate_batch(model, _draws(2), DAYS, regimen="weekly")


def test_steady_state_preequilibration(model):
    untreated = ie.simulate(model, [0.0, 5000.0, 10000.0], regimen="none", rtol=1e-10, atol=1e-12)
    ds = ie.simulate(model, [0.0, 1.0], regimen="none", steady_state=True, rtol=1e-10, atol=1e-12)
    assert int(ds.status) == 0
    np.testing.assert_allclose(ds["T"].values[0], untreated["T"].values[-1], rtol=1e-6)
    np.testing.assert_allclose(ds["T"].values[1], ds["T"].values[0], rtol=1e-6)  # it stays there
