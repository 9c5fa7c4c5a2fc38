"""Bad arguments to simulate / simulate_batch / save_result / load_result: one typed error, with
the message verbatim; batch labels and saved files are never lost or overwritten by surprise."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import immunoedit_models as ie
from immunoedit_models.errors import ResultError, SimulationError

DAYS = np.arange(0.0, 31.0, 5.0)


@pytest.fixture(scope="module")
def model():
    return ie.compile_model(ie.load_spec("benchmark_reference"), backend="numba")


@pytest.mark.parametrize("kwargs, message", [
    ({"rtol": 10.0}, "tolerances must satisfy 0 < rtol < 1 and 0 < atol < inf, got rtol=10.0, atol=1e-09 "
                     "(1e-6 and 1e-9 are the defaults; 1e-3 is already loose)"),
    ({"atol": np.inf}, "tolerances must satisfy 0 < rtol < 1 and 0 < atol < inf, got rtol=1e-06, atol=inf "
                       "(1e-6 and 1e-9 are the defaults; 1e-3 is already loose)"),
    ({"rtol": "1e-6"}, "rtol must be a number, got '1e-6'"),
    ({"max_steps": np.inf}, "max_steps must be a positive integer, got inf"),
    ({"params": {"kkill": "abc"}}, "parameter 'kkill' must be a number, got 'abc'"),
    ({"params": {"kkill": [1, 2]}}, "parameter 'kkill' must be one number, got [1, 2]"),
    ({"params": pd.DataFrame({"kkill": [1.0]})},
     "simulate takes params as a mapping of name -> number, got DataFrame (for a table of runs use simulate_batch)"),
    ({"params": [("kkill", 1.0)]},
     "simulate takes params as a mapping of name -> number, got list (for a table of runs use simulate_batch)"),
    ({"initial": {"T": "many"}}, "initial value of 'T' must be a number, got 'many'"),
    ({"times": np.arange(6.0).reshape(2, 3)}, "times must be a 1-d array of numbers (days), got 2-d float64"),
    ({"times": pd.date_range("2020-01-01", periods=3)},
     "times must be a 1-d array of numbers (days), got 1-d datetime64[ns] (give elapsed days, not dates)"),
    ({"t0": "x"}, "t0 must be a number, got 'x'"),
    ({"regimen": 5}, "regimen must be a name, a Regimen or a list of them (one per run), got int"),
])
def test_bad_simulate_arguments_raise_one_clear_error(model, kwargs, message):
    args = {"times": DAYS, **kwargs}
    with pytest.raises(SimulationError, match=f"^{re.escape(message)}$"):
        ie.simulate(model, **args)


def test_single_values_may_be_series_or_one_element_arrays(model):
    reference = ie.simulate(model, DAYS, params={"kkill": 2.0})
    for params in (pd.Series({"kkill": 2.0}), {"kkill": np.array([2.0])}):
        np.testing.assert_array_equal(ie.simulate(model, DAYS, params=params)["T"].values, reference["T"].values)


@pytest.mark.parametrize("params, kwargs, message", [
    (pd.DataFrame([[2.0, 3.0]], columns=["kkill", "kkill"]), {}, "params gives kkill more than once"),
    (pd.DataFrame({"kkill": ["a", "b"]}), {}, "parameter 'kkill' must be numbers, got 'a'"),
    (pd.DataFrame({"kkill": [1.0, 2.0]}), {"chunk_size": -1},
     "chunk_size must be a positive integer (rows per chunk), got -1"),
    (pd.DataFrame({"kkill": [1.0, 2.0]}, index=pd.MultiIndex.from_tuples([(0, "a"), (0, "b")])), {},
     "params has a MultiIndex: the batch's 'sample' coordinate needs one level (params.reset_index() keeps "
     "the levels as columns)"),
    (pd.DataFrame({"kkill": [1.0, 2.0]}), {"initial": pd.DataFrame({"T": [1e6]})},
     "initial must be a DataFrame (or a mapping of columns) with one row per row of params (2), got 1 rows"),
    (pd.DataFrame({"kkill": [1.0, 2.0]}), {"regimen": ["untreated"]}, "a list of regimens needs one per run (2), got 1"),
])
def test_bad_batch_arguments_raise_one_clear_error(model, params, kwargs, message):
    with pytest.raises(SimulationError, match=f"^{re.escape(message)}$"):
        ie.simulate_batch(model, params=params, times=DAYS, **kwargs)


def test_batch_keeps_the_row_labels_and_takes_regimen_names(model, tmp_path):
    table = pd.DataFrame({"kkill": np.linspace(1.0, 4.0, 10)})
    part = table.iloc[5:8]                                  # a RangeIndex that does not start at 0
    batch = ie.simulate_batch(model, params=part, times=DAYS, initial={"T": [1e6, 2e6, 3e6]},
                              regimen=["untreated", "q21d_x18", "none"])
    assert list(batch.sample.values) == [5, 6, 7]
    np.testing.assert_array_equal(batch["kkill"].sel(sample=6).values, table.kkill[6])
    np.testing.assert_array_equal(batch["T"].isel(time=0).values, [1e6, 2e6, 3e6])
    one = ie.simulate(model, DAYS, params={"kkill": table.kkill[6]}, initial={"T": 2e6}, regimen="q21d_x18")
    np.testing.assert_allclose(batch["T"].sel(sample=6).values, one["T"].values, rtol=1e-12)
    streamed = ie.simulate_batch(model, params=part.set_axis(["a", "b", "c"]), times=DAYS, chunk_size=2,
                                 zarr_path=tmp_path / "s.zarr")
    assert list(streamed.sample.values) == ["a", "b", "c"]
    assert list(ie.load_result(tmp_path / "s.zarr").sample.values) == ["a", "b", "c"]
    np.testing.assert_allclose(streamed["T"].sel(sample="c").values,
                               ie.simulate(model, DAYS, params={"kkill": table.kkill[7]})["T"].values, rtol=1e-12)


def test_runs_with_nan_parameters_fail_alone_without_solving(model):
    good = ie.simulate_batch(model, params=pd.DataFrame({"kkill": [2.0, 3.0]}), times=DAYS)
    with pytest.warns(RuntimeWarning, match="1 of 3 runs failed"):
        mixed = ie.simulate_batch(model, params=pd.DataFrame({"kkill": [2.0, np.nan, 3.0]}), times=DAYS)
    assert mixed.status.values.tolist() == [0, 2, 0] and int(mixed.n_steps[1]) == 0
    assert np.isnan(mixed["T"].values[1]).all()
    np.testing.assert_array_equal(mixed["T"].values[[0, 2]], good["T"].values)
    with pytest.warns(RuntimeWarning, match="status 2"):
        assert int(ie.simulate(model, DAYS, initial={"T": np.inf}).status) == 2


def test_saving_never_replaces_a_users_directory(model, tmp_path):
    ds = ie.simulate(model, DAYS)
    mine = tmp_path / "mine.zarr"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    message = f"'{mine}' is a directory that is not a zarr store: not overwriting it (choose a path that does not exist yet)"
    with pytest.raises(ResultError, match=f"^{re.escape(message)}$"):
        ie.save_result(ds, mine)
    with pytest.raises(ResultError, match=f"^{re.escape(message)}$"):
        ie.simulate_batch(model, params=pd.DataFrame({"kkill": [1.0]}), times=DAYS, zarr_path=mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(ResultError, match=r"^cannot tell the format of '.*x\.csv' from its suffix: name it \*\.nc"):
        ie.save_result(ds, tmp_path / "x.csv")
    with pytest.raises(TypeError, match="^save_result takes an xarray Dataset, got DataArray: convert it with "
                                        r"\.to_dataset\(\) first$"):
        ie.save_result(ds["T"], tmp_path / "x.nc")
    store = ie.save_result(ds, tmp_path / "r.zarr")                  # a zarr store is replaced
    ie.save_result(ds.assign(T=ds["T"] * 2), store)
    np.testing.assert_array_equal(ie.load_result(store)["T"].values, 2 * ds["T"].values)


def test_loading_a_file_that_is_not_a_result(tmp_path):
    text = tmp_path / "notes.nc"
    text.write_text("not netCDF")
    with pytest.raises(ResultError, match=f"^'{re.escape(str(text))}' is not a netCDF file or zarr store that "
                                          "xarray can read"):
        ie.load_result(text)
    with pytest.raises(FileNotFoundError, match="no result at"):
        ie.load_result(tmp_path / "missing.nc")
