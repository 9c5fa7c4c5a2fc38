"""Adaptive numba solvers (Rodas5P, Tsit5) against analytic and scipy references.

Kernels are generated with `compile_numba` (cached on disk after the first run).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from numba import float64, int64, njit
from scipy.integrate import solve_ivp

from immunoedit_models.compile import numba_solvers as ns
from immunoedit_models.compile.numba_backend import compile_numba
from immunoedit_models.spec.loader import load_spec
from immunoedit_models.symbolic import SymbolicModel, build_symbolic

METHODS = ["rodas5p", "tsit5"]


def _events(rows: list[list[tuple[float, int, int, float]]]) -> tuple[np.ndarray, ...]:
    """Event arrays (B, n_ev) from per-trajectory lists of (time, state, kind, value)."""
    n_ev = max(1, max(len(r) for r in rows))
    ev_t = np.full((len(rows), n_ev), np.inf)
    ev_state = np.zeros((len(rows), n_ev), dtype=np.int64)
    ev_kind = np.zeros((len(rows), n_ev), dtype=np.int64)
    ev_value = np.zeros((len(rows), n_ev))
    for b, row in enumerate(rows):
        for i, (t, s, kind, v) in enumerate(sorted(row)):
            ev_t[b, i], ev_state[b, i], ev_kind[b, i], ev_value[b, i] = t, s, kind, v
    return ev_t, ev_state, ev_kind, ev_value


def _solve(kern, y0, p, t_out, events=(), rtol=1e-8, atol=1e-12, method="rodas5p", **kw):
    """Solve one trajectory; returns (Y (n_out, n), status, accepted steps)."""
    Y, status, n_acc, _ = kern.solve(np.atleast_2d(y0), np.atleast_2d(p), 0.0, t_out,
                                     *_events([list(events)]), rtol, atol, method=method, **kw)
    return Y[0], status[0], n_acc[0]


def _scipy_rhs(kern, p):
    """rhs(t, y) and jac(t, y) callables for scipy from the numba kernels."""
    p = kern.extended_parameters(np.asarray(p, dtype=float)[None])[0]

    def f(t, y):
        out = np.empty(y.size)
        kern.rhs(t, np.ascontiguousarray(y), p, out)
        return out

    def jac(t, y):
        out = np.empty((y.size, y.size))
        kern.jac(t, np.ascontiguousarray(y), p, out)
        return out

    return f, jac


@pytest.fixture(scope="module")
def decay():
    return compile_numba(SymbolicModel.from_equations("decay", {"x": "-k*x"}, {"k": 0.7},
                                                      {"x": 2.0}))


@pytest.fixture(scope="module")
def chain():
    return compile_numba(SymbolicModel.from_equations(
        "chain3", {"a": "-k1*a", "b": "k1*a - k2*b", "c": "k2*b - k3*c"},
        {"k1": 1.3, "k2": 0.4, "k3": 0.1}, {"a": 1.0, "b": 0.5, "c": 0.0}))


@pytest.fixture(scope="module")
def logistic():
    return compile_numba(SymbolicModel.from_equations("logistic", {"n": "r*n*(1 - n/K)"},
                                                      {"r": 0.8, "K": 100.0}, {"n": 1.0}))


@pytest.fixture(scope="module")
def blowup():
    return compile_numba(SymbolicModel.from_equations("blowup", {"y": "a*y**2"}, {"a": 1.0},
                                                      {"y": 1.0}))


@pytest.fixture(scope="module")
def forced():
    """Non-autonomous: exercises tgrad (y1 = 1/(1 + t^2); y2 forced relaxation)."""
    return compile_numba(SymbolicModel.from_equations(
        "forced", {"u": "-2*t*u**2", "v": "-lam*(v - cos(t))"}, {"lam": 3.0},
        {"u": 1.0, "v": 1.0}))


def _forced_exact(t, lam=3.0):
    c = lam / (lam**2 + 1)
    v = c * (lam * np.cos(t) + np.sin(t)) + (1 - lam * c) * np.exp(-lam * t)
    return np.stack([1 / (1 + t**2), v], axis=-1)


# ---- linear problems vs the matrix exponential -----------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_exponential_decay_matches_expm(decay, method):
    t_out = np.linspace(0.0, 10.0, 21)
    Y, status, _ = _solve(decay, [2.0], [0.7], t_out, method=method)
    ref = np.array([scipy.linalg.expm([[-0.7 * t]])[0, 0] * 2.0 for t in t_out])
    assert status == ns.STATUS_OK
    np.testing.assert_allclose(Y[:, 0], ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_linear_chain_matches_expm(chain, method):
    A = np.array([[-1.3, 0, 0], [1.3, -0.4, 0], [0, 0.4, -0.1]])
    y0 = np.array([1.0, 0.5, 0.0])
    t_out = np.linspace(0.0, 30.0, 31)
    Y, status, _ = _solve(chain, y0, [1.3, 0.4, 0.1], t_out, method=method)
    ref = np.array([scipy.linalg.expm(A * t) @ y0 for t in t_out])
    assert status == ns.STATUS_OK
    np.testing.assert_allclose(Y, ref, rtol=1e-6, atol=1e-12)


# ---- nonlinear and stiff problems ------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_logistic_matches_closed_form(logistic, method):
    t_out = np.linspace(0.0, 20.0, 41)
    Y, status, _ = _solve(logistic, [1.0], [0.8, 100.0], t_out, method=method)
    exact = 100.0 / (1.0 + 99.0 * np.exp(-0.8 * t_out))
    assert status == ns.STATUS_OK
    np.testing.assert_allclose(Y[:, 0], exact, rtol=1e-6)


def test_robertson_matches_radau():
    kern = compile_numba(SymbolicModel.from_equations(
        "robertson", {"a": "-k1*a + k3*b*c", "b": "k1*a - k3*b*c - k2*b**2", "c": "k2*b**2"},
        {"k1": 0.04, "k2": 3e7, "k3": 1e4}, {"a": 1.0, "b": 0.0, "c": 0.0}))
    p = [0.04, 3e7, 1e4]
    t_out = np.concatenate([[0.0], np.logspace(-5, 5, 11)])
    f, jac = _scipy_rhs(kern, p)
    ref = solve_ivp(f, (0.0, t_out[-1]), [1.0, 0.0, 0.0], method="Radau", jac=jac, rtol=1e-10,
                    atol=1e-14, t_eval=t_out).y.T
    Y, status, _ = _solve(kern, [1.0, 0.0, 0.0], p, t_out, rtol=1e-8, atol=1e-14)
    assert status == ns.STATUS_OK
    np.testing.assert_allclose(Y, ref, rtol=1e-5, atol=1e-13)


def test_van_der_pol_mu_1000_matches_radau():
    kern = compile_numba(SymbolicModel.from_equations(
        "vdp", {"x": "v", "v": "mu*(1 - x**2)*v - x"}, {"mu": 1000.0}, {"x": 2.0, "v": 0.0}))
    t_out = np.linspace(0.0, 3000.0, 31)
    f, jac = _scipy_rhs(kern, [1000.0])
    ref = solve_ivp(f, (0.0, 3000.0), [2.0, 0.0], method="Radau", jac=jac, rtol=1e-10,
                    atol=1e-12, t_eval=t_out).y.T
    Y, status, _ = _solve(kern, [2.0, 0.0], [1000.0], t_out, rtol=1e-8, atol=1e-12)
    assert status == ns.STATUS_OK
    np.testing.assert_allclose(Y, ref, rtol=1e-5)


# ---- order of accuracy -----------------------------------------------------------------------
# Not cached on disk: it inlines solver functions, and numba's cache cannot see their edits.
@njit(float64[:, ::1](ns.RHS_TYPE, ns.JAC_TYPE, ns.TGRAD_TYPE, ns.LU_FACTOR_TYPE,
                      ns.LU_SOLVE_TYPE, int64, float64[::1], float64[::1], float64, int64, float64))
def _fixed_steps(rhs, jac, tgrad, lu_factor, lu_solve, method, y0, p, t_end, n_steps, theta):
    """Fixed-step run of one method; rows: y(t_end), dense output at theta in the last step."""
    n = y0.size
    h = t_end / n_steps
    y, y_new, u_in = y0.copy(), np.empty(n), np.zeros(n)
    f0, dtg, tmp1, tmp2 = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    scale = np.ones(n)
    jmat, w, piv = np.empty((n, n)), np.empty((n, n)), np.empty(n, dtype=np.int64)
    blocks = np.array([0, n], dtype=np.int64)
    k, q, out = np.empty((8, n)), np.empty((3, n)), np.empty((2, n))
    for i in range(n_steps):
        t = i * h
        ns._eval_f(rhs, t, y, p, u_in, f0)
        if method == ns.RODAS5P:
            jac(t, y, p, jmat)
            tgrad(t, y, p, dtg)
            ns._rodas_step(rhs, lu_factor, lu_solve, t, h, y, p, u_in, f0, jmat, dtg, scale, w, piv,
                           blocks, k, tmp1, tmp2, y_new)
            ns._rodas_dense_coeffs(k, q)
            ns._rodas_dense(theta, y, y_new, q, out[1])
        else:
            k[0, :] = f0
            ns._tsit5_step(rhs, t, h, y, p, u_in, k, tmp1, y_new)
            ns._tsit5_dense(theta, h, y, k, out[1])
        y[:] = y_new
    out[0, :] = y
    return out


@pytest.mark.parametrize("method", METHODS)
def test_fixed_step_global_order_is_five_and_dense_output_is_accurate(forced, method):
    """Halving h divides the end-point error by ~2^5 (both methods are of order 5)."""
    t_end, theta = 2.0, 0.37
    y0, p = np.array([1.0, 1.0]), np.array([3.0])
    errs, dense_errs = [], []
    for n_steps in (20, 40, 80):
        res = _fixed_steps(forced.rhs.dispatcher, forced.jac.dispatcher, forced.tgrad.dispatcher,
                           forced.lu_factor.dispatcher, forced.lu_solve.dispatcher,
                           ns.METHODS[method], y0, forced.extended_parameters(p[None])[0],
                           t_end, n_steps, theta)
        h = t_end / n_steps
        errs.append(np.abs(res[0] - _forced_exact(t_end)).max())
        dense_errs.append(np.abs(res[1] - _forced_exact(t_end - h + theta * h)).max())
    orders = np.log2(np.array(errs[:-1]) / errs[1:])
    dense_orders = np.log2(np.array(dense_errs[:-1]) / dense_errs[1:])
    assert np.all((orders > 4.6) & (orders < 6.2)), orders
    assert np.all(dense_orders > 4.5), dense_orders   # 4th-order interpolant: local O(h^5)


@pytest.mark.parametrize("method", METHODS)
def test_adaptive_error_shrinks_with_rtol(logistic, method):
    """Global error ~ rtol^(p/(p+1)) for a per-step error control (p = 5: exponent ~0.83)."""
    t_out = np.linspace(0.0, 20.0, 41)
    exact = 100.0 / (1.0 + 99.0 * np.exp(-0.8 * t_out))
    rtols = np.array([1e-6, 1e-8, 1e-10])
    errs = [np.max(np.abs(_solve(logistic, [1.0], [0.8, 100.0], t_out, rtol=r, atol=r * 1e-3,
                                 method=method)[0][:, 0] - exact) / exact) for r in rtols]
    slopes = np.diff(np.log(errs)) / np.diff(np.log(rtols))
    assert np.all((slopes > 0.6) & (slopes < 1.3)), slopes
    assert errs[-1] < 1e-9


# ---- dosing events ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_repeated_boluses_match_sum_of_exponentials(decay, method):
    """One compartment, dose 5 every 7 days (5 doses); outputs at dose times are post-dose."""
    ke, dose = 0.7, 5.0
    dose_times = 7.0 * np.arange(5)
    t_out = np.union1d(np.linspace(0.0, 35.0, 71), [6.999, 13.5, 30.25])
    Y, status, _ = _solve(decay, [0.0], [ke], t_out,
                          [(td, 0, ns.EVENT_BOLUS, dose) for td in dose_times], method=method)
    dt = t_out[:, None] - dose_times[None, :]
    exact = (dose * np.exp(-ke * np.where(dt >= 0, dt, 0.0)) * (dt >= 0)).sum(axis=1)
    assert status == ns.STATUS_OK
    np.testing.assert_allclose(Y[:, 0], exact, rtol=1e-6, atol=1e-12)
    at_7 = Y[np.searchsorted(t_out, 7.0), 0]
    assert at_7 == pytest.approx(dose + dose * np.exp(-7 * ke), rel=1e-7)  # right-continuous


@pytest.mark.parametrize("method", METHODS)
def test_zero_order_infusion_matches_closed_form(decay, method):
    """Rate R into x from t=1 to t=3 (events +R, -R); x' = -k x."""
    ke, rate = 0.7, 4.0
    t_out = np.linspace(0.0, 8.0, 33)
    Y, status, _ = _solve(decay, [0.0], [ke], t_out,
                          [(1.0, 0, ns.EVENT_RATE, rate), (3.0, 0, ns.EVENT_RATE, -rate)],
                          method=method)
    plateau = rate / ke
    exact = np.where(t_out < 1.0, 0.0, plateau * (1.0 - np.exp(-ke * (np.minimum(t_out, 3.0) - 1))))
    exact = np.where(t_out > 3.0, exact * np.exp(-ke * (t_out - 3.0)), exact)
    assert status == ns.STATUS_OK
    np.testing.assert_allclose(Y[:, 0], exact, rtol=1e-6, atol=1e-12)


def test_events_at_t0_apply_before_integration(decay):
    t_out = np.array([0.0, 1.0])
    Y, status, _ = _solve(decay, [1.0], [0.7], t_out,
                          [(-1.0, 0, ns.EVENT_BOLUS, 2.0), (0.0, 0, ns.EVENT_BOLUS, 1.0)])
    assert status == ns.STATUS_OK
    np.testing.assert_allclose(Y[:, 0], 4.0 * np.exp(-0.7 * t_out), rtol=1e-7)


# ---- failures --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_blow_up_fails_cleanly_while_other_trajectory_succeeds(blowup, method):
    """y' = a y^2, y(0) = 1: a = 1 blows up at t = 1; a = -1 gives y = 1/(1 + t)."""
    t_out = np.array([0.0, 0.5, 0.9, 1.5, 2.0])
    Y, status, _, _ = blowup.solve(np.ones((2, 1)), [[1.0], [-1.0]], 0.0, t_out,
                                   *_events([[], []]), 1e-8, 1e-10, method=method)
    assert status[0] in (ns.STATUS_NON_FINITE, ns.STATUS_STEP_UNDERFLOW)
    np.testing.assert_allclose(Y[0, :3, 0], 1.0 / (1.0 - t_out[:3]), rtol=1e-6)
    assert np.isnan(Y[0, 3:]).all()
    assert status[1] == ns.STATUS_OK
    np.testing.assert_allclose(Y[1, :, 0], 1.0 / (1.0 + t_out), rtol=1e-7)


def test_max_steps_gives_status_1_and_nan_tail(logistic):
    t_out = np.linspace(0.0, 20.0, 5)
    Y, status, n_acc = _solve(logistic, [1.0], [0.8, 100.0], t_out, max_steps=5)
    assert status == ns.STATUS_MAX_STEPS and n_acc <= 5
    assert Y[0, 0] == 1.0 and np.isnan(Y[-1]).all()


# ---- batch vs single -------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_single_runs_row_by_row(chain, method):
    rng = np.random.default_rng(1)
    n_traj = 6
    P = np.array([1.3, 0.4, 0.1]) * np.exp(0.3 * rng.standard_normal((n_traj, 3)))
    Y0 = np.abs(rng.standard_normal((n_traj, 3)))
    rows = [[(float(rng.uniform(0, 10)), int(rng.integers(3)), int(rng.integers(2)), 1.0)
             for _ in range(b % 3)] for b in range(n_traj)]
    ev = _events(rows)
    t_out = np.linspace(0.0, 12.0, 25)
    Y, status, n_acc, n_rej = chain.solve(Y0, P, 0.0, t_out, *ev, 1e-7, 1e-10, method=method)
    assert (status == ns.STATUS_OK).all()
    for b in range(n_traj):
        one = chain.solve(Y0[b:b + 1], P[b:b + 1], 0.0, t_out, *(a[b:b + 1] for a in ev),
                          1e-7, 1e-10, method=method)
        np.testing.assert_array_equal(one[0][0], Y[b])
        assert (one[1][0], one[2][0], one[3][0]) == (status[b], n_acc[b], n_rej[b])


@njit
def _block_solve(a, blocks, rhs):
    """W^-1 rhs (rows of rhs) through the solver's block inverse and block forward substitution."""
    w = a.copy()
    piv = np.empty(a.shape[0], dtype=np.int64)
    out = np.full_like(rhs, np.nan)
    if ns._invert_blocks(w, piv, blocks):
        for r in range(rhs.shape[0]):
            ns._block_solve_row(w, blocks, rhs[r].copy(), out, r)
    return out


@pytest.mark.parametrize("blocks", [[0, 9], [0, 2, 4, 9], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]])
def test_block_lower_triangular_solve_matches_numpy(blocks):
    """The W solve used by Rodas5P, per block with pivoting inside blocks, against numpy.linalg.solve."""
    rng = np.random.default_rng(1)
    n, starts = 9, np.array(blocks, dtype=np.int64)
    a = rng.normal(size=(n, n))
    for lo, hi in zip(starts[:-1], starts[1:]):
        a[lo:hi, hi:] = 0.0                        # nothing above the diagonal blocks
    if starts[1] > 1:
        a[0, 0] = 0.0                              # forces a pivot swap inside the first block
    rhs = rng.normal(size=(3, n))
    np.testing.assert_allclose(_block_solve(a, starts, rhs), np.linalg.solve(a, rhs.T).T, rtol=1e-10, atol=1e-12)


def test_jacobian_blocks_of_a_composed_model_split_the_pk(specs_dir):
    """PK compartments listed first, independent of later states, form their own blocks."""
    sym = build_symbolic(load_spec(specs_dir / "blocks_model.yaml"))
    assert sym.states[:4] == ("atezolizumab_A1", "atezolizumab_A2", "bevacizumab_A1", "bevacizumab_A2")
    np.testing.assert_array_equal(sym.jacobian_blocks, [0, 2, 4, 5])


# ---- first use after installing: the solver loop compiled by a helper process ---------------
class _Helper:
    """Stands in for a helper process: running until waited for."""

    def __init__(self, *args, **kwargs):
        self.args, self.waited = args, 0

    def poll(self):
        return None if not self.waited else 0

    def wait(self):
        self.waited += 1

    def terminate(self):
        pass


def test_compiled_waits_for_the_helper_compiling_it():
    @njit
    def twice(x):
        return 2.0 * x

    helper = _Helper()
    ns.HELPERS[twice] = helper
    try:
        assert ns.compiled(twice, float64(float64))(1.5) == 3.0
    finally:
        ns.HELPERS.pop(twice, None)
    assert helper.waited == 1 and twice not in ns.HELPERS


def test_a_helper_starts_once_and_only_for_what_the_disk_cache_lacks(monkeypatch):
    from immunoedit_models.compile import numba_backend as nb

    started = []

    def start(*args, **kwargs):
        started.append(_Helper(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(nb.subprocess, "Popen", start)
    monkeypatch.setattr(nb, "on_disk", lambda dispatcher: True)
    assert nb.compile_in_background("batch") is None and not started
    monkeypatch.setattr(nb, "on_disk", lambda dispatcher: False)
    try:
        helper = nb.compile_in_background("batch")
        assert nb.compile_in_background("batch") is None      # already being compiled
        assert started == [helper]
        assert ns.HELPERS[ns.SOLVE_BATCH[ns.RODAS5P]] is helper and ns.HELPERS[nb._map_outputs_parallel] is helper
    finally:
        for dispatcher in (ns.SOLVE_BATCH[ns.RODAS5P], nb._map_outputs_parallel):
            ns.HELPERS.pop(dispatcher, None)


@pytest.mark.parametrize("entry", ["single", "batch"])
def test_helper_code_compiles_its_entry(entry):
    """The code a helper runs imports and compiles (or loads) what it is registered for."""
    import subprocess
    import sys

    from immunoedit_models.compile import numba_backend as nb

    dispatchers, code = nb._HELPER_JOBS[entry]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(ns.on_disk(d) for d in dispatchers)
