"""The sparse LU of W = I/(h gamma) - J (ordering, generated kernels, dense fallback) and the
single-trajectory caches of `simulate`, against numpy / scipy and the uncached paths."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import xarray as xr

import immunoedit_models as ie
from immunoedit_models.compile import numba_backend
from immunoedit_models.compile import numba_solvers as ns
from immunoedit_models.compile.numba_backend import compile_numba
from immunoedit_models.simulate import core
from immunoedit_models.symbolic import SymbolicModel, build_symbolic, sparse_lu_structure

DAYS = np.arange(0.0, 120.0)


@pytest.fixture(scope="module")
def reference():
    return ie.compile_model("benchmark_reference", backend="numba")


def _draws(model, n: int) -> np.ndarray:
    """The benchmark protocol's draws: every parameter log-uniform in [0.5, 1.5] x nominal."""
    nominal = np.asarray(model.symbolic.param_values)
    rng = np.random.default_rng(0)
    return nominal * np.exp(rng.uniform(np.log(0.5), np.log(1.5), size=(n, nominal.size)))


def _solve(kernels, model, P):
    ev = core._events(model, core.regimen_list(model, None, len(P)), P)
    return kernels.solve(kernels.initial(P), P, 0.0, DAYS, ev.time, ev.state, ev.kind, ev.value,
                         1e-6, 1e-9)


# ---- ordering --------------------------------------------------------------------------------
def test_blocks_of_the_reference_model_follow_its_dependencies(reference):
    """PK first (depends on nothing), then the tumour-immune loop, then X (nothing depends on it)."""
    sym = reference.symbolic
    lu = sym.sparse_lu
    names = [{sym.states[i] for i in block} for block in lu.blocks]
    assert names == [{"C1", "C2"}, {"T", "E", "R", "I", "P", "L", "A"}, {"X"}]
    block_of = {i: b for b, block in enumerate(lu.blocks) for i in block}
    rows, cols = np.nonzero(sym.jacobian_sparsity)
    assert all(block_of[j] <= block_of[i] for i, j in zip(rows, cols))
    assert set(lu.coupling) == {(i, j) for i, j in zip(rows, cols) if block_of[i] != block_of[j]}


def test_fill_in_pattern_holds_the_factors_of_scipy_lu(reference):
    """Diagonally dominant values on the pattern: partial pivoting keeps the diagonal, so
    scipy's L and U are the no-exchange factors, and their nonzeros lie in the pattern."""
    sym = reference.symbolic
    lu = sym.sparse_lu
    rng = np.random.default_rng(3)
    for block in lu.blocks:
        m = len(block)
        a = np.where(sym.jacobian_sparsity[np.ix_(block, block)], rng.uniform(-1, 1, (m, m)), 0.0)
        a += np.diag(np.full(m, 10.0 * m))
        perm, low, up = scipy.linalg.lu(a)
        np.testing.assert_array_equal(perm, np.eye(m))
        factors = (np.abs(low - np.eye(m)) + np.abs(up)) > 0
        allowed = np.array([[(block[r], block[c]) in lu.pattern for c in range(m)] for r in range(m)])
        assert not (factors & ~allowed).any()


def test_markowitz_order_avoids_fill_of_an_arrow_matrix():
    """An arrow (hub coupled to every leaf): eliminating the leaves first creates no fill-in,
    the hub first would fill the whole matrix."""
    n = 5
    sparsity = np.eye(n, dtype=bool)
    sparsity[0, :] = sparsity[:, 0] = True
    lu = sparse_lu_structure(sparsity)
    assert lu.blocks[0][:3] == (1, 2, 3)        # then the hub and the last leaf, 1 x 1 each way
    assert lu.pattern == {(i, j) for i in range(n) for j in range(n) if sparsity[i, j]}
    assert lu.n_updates == 4


# ---- generated kernels ----------------------------------------------------------------------
@pytest.mark.parametrize("inv_hg", [1e4, 10.0, 0.5])
def test_lu_kernels_solve_w_as_numpy(reference, inv_hg):
    kern = reference.kernels
    P = _draws(reference, 3)
    Y = _solve(kern, reference, P)[0]
    rng = np.random.default_rng(4)
    for b, day in ((0, 3), (1, 40), (2, 100)):
        y, p = np.ascontiguousarray(Y[b, day]), kern.extended_parameters(P[b][None])[0]
        jmat = np.empty((10, 10))
        kern.jac(float(day), y, p, jmat)
        scale = 1e-9 + 1e-6 * np.abs(y)
        w = np.empty((10, 10))
        piv = np.empty(10, dtype=np.int64)
        assert ns._factor_w(kern.lu_factor.dispatcher, inv_hg, jmat, scale, w, piv, kern.blocks) == 1
        f, lin = rng.normal(size=(2, 10)) * scale * 1e6     # the stage's f and linear part
        out = np.zeros((3, 10))
        ns._solve_w(kern.lu_solve.dispatcher, True, w, kern.blocks, f.copy(), lin, out, 1)
        exact = np.linalg.solve(inv_hg * np.eye(10) - jmat, f + lin)
        np.testing.assert_allclose(out[1], exact, rtol=1e-10, atol=0)


LINEAR2 = SymbolicModel.from_equations("linear2", {"x": "a*x + b*y", "y": "c*x + d*y"},
                                       {"a": 2.0, "b": 1.0, "c": 3.0, "d": -1.0}, {"x": 1.0, "y": 1.0})


@pytest.fixture(scope="module")
def linear2():
    return compile_numba(LINEAR2)


@pytest.mark.parametrize("inv_hg, scale, sparse", [
    (5.0, [1.0, 1.0], True),        # pivot 3, below it 3: kept
    (2.0, [1.0, 1.0], False),       # pivot 0: dense fallback
    (2.002, [1.0, 1.0], False),     # pivot 0.002 < 3 / 1000 below it
    (2.002, [1e-4, 1.0], True),     # in error weights: W_10 -> 3 x 1e-4, below 0.002 x 1000
])
def test_small_pivots_fall_back_to_dense_inversion(linear2, inv_hg, scale, sparse):
    """The pivot test in error weights; either way the solve equals numpy's."""
    jmat = np.array([[2.0, 1.0], [3.0, -1.0]])
    w = np.empty((2, 2))
    piv = np.empty(2, dtype=np.int64)
    mode = ns._factor_w(linear2.lu_factor.dispatcher, inv_hg, jmat, np.array(scale), w, piv, linear2.blocks)
    assert mode == (1 if sparse else 0)
    out = np.zeros((1, 2))
    ns._solve_w(linear2.lu_solve.dispatcher, mode == 1, w, linear2.blocks, np.array([0.5, -3.0]),
                np.array([0.5, 1.0]), out, 0)           # W^-1 (b + c), b + c = [1, -2]
    np.testing.assert_allclose(out[0], np.linalg.solve(inv_hg * np.eye(2) - jmat, [1.0, -2.0]),
                               rtol=1e-9)


def test_dense_path_alone_gives_the_sparse_paths_trajectories(reference, tmp_path, monkeypatch):
    """Kernels generated without the sparse LU (as for a model above LU_MAX_UPDATES) take the
    dense fallback at every step: the same steps and the same states up to rounding."""
    monkeypatch.setattr(numba_backend, "LU_MAX_UPDATES", -1)
    dense = compile_numba(build_symbolic(reference.spec), cache_dir=tmp_path)
    assert "def lu_factor(inv_hg, J, scale, w):\n    return False" in dense.source_path.read_text()
    P = _draws(reference, 4)
    Y, status, n_acc, n_rej = _solve(reference.kernels, reference, P)
    Yd, status_d, n_acc_d, n_rej_d = _solve(dense, reference, P)
    assert (status == 0).all() and (status_d == 0).all()
    np.testing.assert_array_equal(n_acc_d, n_acc)
    np.testing.assert_array_equal(n_rej_d, n_rej)
    np.testing.assert_allclose(Yd, Y, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("t, y, kinks", [(0.0, [1.0, 0.0], 2), (0.5, [0.0, 2.0], 1), (0.5, [1.0, 0.25], 0)])
def test_non_finite_partials_are_returned_as_zero_and_only_they(t, y, kinks):
    """sqrt(y), (x/k)^0.7 and sqrt(t) have infinite derivatives at y = 0, x = 0 and t = 0 while
    f is finite there: jac and tgrad return those partials as 0 and every other one as sympy."""
    sym = SymbolicModel.from_equations("kinks", {"x": "-k*x + sqrt(y)", "y": "-y + (x/k)**0.7 + sqrt(t)"},
                                       {"k": 2.0}, {"x": 1.0, "y": 1.0})
    kern = compile_numba(sym)
    pe = kern.extended_parameters(np.array([[2.0]]))[0]
    jmat, dtg = np.empty((2, 2)), np.empty(2)
    kern.jac(t, np.array(y), pe, jmat)
    kern.tgrad(t, np.array(y), pe, dtg)
    at = {sym.time: t, **dict(zip(sym.state_symbols, y)), sym.param_symbols[0]: 2.0}
    exact = [complex(e.subs(at).evalf()) if e.subs(at).is_finite else np.inf
             for e in [*sym.jacobian, *sym.tgrad]]
    expect = np.array([v.real if np.isfinite(v) else 0.0 for v in exact])
    assert np.isinf(exact).sum() == kinks
    np.testing.assert_allclose(np.concatenate([jmat.ravel(), dtg]), expect, rtol=1e-14, atol=0)


def test_partials_whose_sum_overflows_are_kept():
    """jac tests the sum of its entries first; an overflowing sum of finite entries repairs nothing."""
    sym = SymbolicModel.from_equations("big", {"x": "k*x*y", "y": "-y"}, {"k": 1e300}, {"x": 1.0, "y": 1.0})
    kern = compile_numba(sym)
    jmat = np.empty((2, 2))
    kern.jac(0.0, np.array([1e8, 1.5e8]), kern.extended_parameters(np.array([[1e300]]))[0], jmat)
    np.testing.assert_array_equal(jmat, [[1.5e308, 1e308], [0.0, -1.0]])


# ---- simulate's single-trajectory caches ------------------------------------------------------
def test_simulate_result_equals_the_dataset_built_from_scratch(reference):
    ds = ie.simulate(reference, DAYS, params={"kkill": 2.0})
    P, _ = core.parameter_matrix(reference, {"kkill": [2.0]}, 1)
    settings = core.SolverSettings().resolved(reference)
    got = core.run_arrays(reference, core.initial_matrix(reference, P, None), P, 0.0, DAYS,
                          core.regimen_list(reference, None, 1), settings)
    xr.testing.assert_identical(ds, core._build_dataset(reference, DAYS, got, None, P, [], ds.attrs))


def test_simulate_results_do_not_share_data_or_attributes(reference):
    first = ie.simulate(reference, DAYS)
    expected = first["T"].values.copy()
    first["T"].values[:] = -1.0
    first["T"].attrs["units"] = "changed"
    first.attrs["model"] = "changed"
    first["time"].attrs["units"] = "changed"
    second = ie.simulate(reference, DAYS)
    np.testing.assert_array_equal(second["T"].values, expected)
    assert second["T"].attrs["units"] == "cell" and second.attrs["model"] == "benchmark_reference"
    assert second["time"].attrs["units"] == "day"


def test_cached_events_follow_the_parameters(reference):
    """The first dose adds Dose / V1 to C1 (bolus at day 7.5): halving Dose halves the jump,
    and the cached event arrays cannot be written."""
    jumps = []
    for dose in (1200.0, 600.0, 1200.0):
        ds = ie.simulate(reference, [7.0, 7.5], params={"Dose": dose}, t0=0.0)
        jumps.append(float(ds["C1"][1] - ds["C1"][0]))
    v1 = reference.symbolic.param_values[reference.parameters.index("V1")]
    np.testing.assert_allclose(jumps, [1200.0 / v1, 600.0 / v1, 1200.0 / v1], rtol=1e-3)
    P, _ = core.parameter_matrix(reference, None, 1)
    ev = core._single_run_events(reference, core.regimen_list(reference, None, 1)[0], P.tobytes())
    with pytest.raises(ValueError):
        ev.value[0, 0] = 0.0
