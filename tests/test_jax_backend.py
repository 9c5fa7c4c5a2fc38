"""JAX backend against analytic solutions, scipy references and its own tracing contract."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from scipy.integrate import solve_ivp
from scipy.linalg import expm

from immunoedit_models.compile.jax_backend import (BOLUS, INFUSION, STATUS_OK, compile_jax,
                                                   solve_trajectory)
from immunoedit_models.errors import CompileError, SimulationError
from immunoedit_models.symbolic import SymbolicModel


def no_events(B: int):
    """Empty (B, 0) event arrays."""
    return (np.zeros((B, 0)), np.zeros((B, 0), np.int64), np.zeros((B, 0), np.int64),
            np.zeros((B, 0)))


def events(rows):
    """(B, ne) event arrays from per-row lists of (time, state, kind, value), +inf padded."""
    ne = max(len(r) for r in rows)
    ev_t = np.full((len(rows), ne), np.inf)
    ev_s, ev_k = np.zeros((len(rows), ne), np.int64), np.zeros((len(rows), ne), np.int64)
    ev_v = np.zeros((len(rows), ne))
    for b, row in enumerate(rows):
        for j, (t, s, k, v) in enumerate(sorted(row)):
            ev_t[b, j], ev_s[b, j], ev_k[b, j], ev_v[b, j] = t, s, k, v
    return ev_t, ev_s, ev_k, ev_v


CHAIN = SymbolicModel.from_equations(
    "chain", {"x1": "-k1*x1", "x2": "k1*x1 - k2*x2", "x3": "k2*x2 - k3*x3"},
    {"k1": 1.0, "k2": 0.5, "k3": 0.2}, {"x1": 1, "x2": 0, "x3": 0})

PK = SymbolicModel.from_equations(
    "pk1", {"A": "-CL/V*A"}, {"CL": 0.7, "V": 3.0, "F": 0.9}, {"A": 0},
    outputs={"conc": "A/V"}, doses={"drug": ("A", "F")})


@pytest.mark.parametrize("method", ["kvaerno5", "tsit5"])
def test_linear_chain_matches_matrix_exponential(method):
    # Tolerance: rel 1e-6 at rtol 1e-8 (global error of a 5th-order adaptive solve).
    K = compile_jax(CHAIN)
    P = np.array([[1.0, 0.5, 0.2], [2.0, 0.3, 1.5]])
    t_out = np.linspace(0.0, 12.0, 17)
    Y, status, n_steps, _ = K.solve(K.initial(P), P, 0.0, t_out, *no_events(2), 1e-8, 1e-12,
                                    method=method)
    assert (status == STATUS_OK).all() and (n_steps > 0).all()
    for b, (k1, k2, k3) in enumerate(P):
        A = np.array([[-k1, 0, 0], [k1, -k2, 0], [0, k2, -k3]])
        ref = np.array([expm(A * t) @ [1.0, 0.0, 0.0] for t in t_out])
        np.testing.assert_allclose(Y[b], ref, rtol=1e-6, atol=1e-12)


def test_logistic_growth_closed_form():
    # Tolerance: rel 1e-8 at rtol 1e-11.
    m = SymbolicModel.from_equations("logistic", {"N": "r*N*(1 - N/Kc)"},
                                     {"r": 0.8, "Kc": 100.0, "N0": 1.0}, {"N": "N0"})
    K = compile_jax(m)
    P = np.array([[0.8, 100.0, 1.0], [2.0, 5.0, 20.0]])
    t_out = np.linspace(0.0, 15.0, 31)
    Y, status, _, _ = K.solve(K.initial(P), P, 0.0, t_out, *no_events(2), 1e-11, 1e-12,
                              method="tsit5")
    assert (status == STATUS_OK).all()
    r, Kc, N0 = P.T[:, :, None]
    e = np.exp(r * t_out)
    np.testing.assert_allclose(Y[..., 0], Kc * N0 * e / (Kc + N0 * (e - 1)), rtol=1e-8)


def test_robertson_stiff_matches_radau():
    # Tolerance: rel 1e-5 against Radau at rtol 1e-10 (kvaerno5 at rtol 1e-8, atol 1e-14).
    m = SymbolicModel.from_equations(
        "robertson", {"y1": "-a*y1 + b*y2*y3", "y2": "a*y1 - b*y2*y3 - c*y2**2", "y3": "c*y2**2"},
        {"a": 0.04, "b": 1e4, "c": 3e7}, {"y1": 1, "y2": 0, "y3": 0})
    K = compile_jax(m)
    P = np.array([m.param_values])
    t_out = np.array([0.0, 0.01, 0.4, 4.0, 40.0, 400.0])
    Y, status, _, _ = K.solve(K.initial(P), P, 0.0, t_out, *no_events(1), 1e-8, 1e-14)
    assert status[0] == STATUS_OK
    ref = solve_ivp(lambda t, y: [-0.04 * y[0] + 1e4 * y[1] * y[2],
                                  0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                                  3e7 * y[1] ** 2],
                    (0.0, 400.0), [1.0, 0.0, 0.0], method="Radau", t_eval=t_out,
                    rtol=1e-10, atol=1e-16).y.T
    np.testing.assert_allclose(Y[0], ref, rtol=1e-5, atol=1e-20)


def test_pk_repeated_bolus_and_infusion_closed_forms():
    # Tolerance: rel 1e-7 at rtol 1e-10. Row 0: 5 weekly boluses; row 1: infusion over [2, 5).
    K = compile_jax(PK)
    P = np.array([[0.7, 3.0, 0.9], [0.7, 3.0, 0.9]])
    dose, rate = 10.0, 4.0
    F = K.dose_factors(P)[:, K.drug_names.index("drug")]
    dose_times = 7.0 * np.arange(5)
    ev = events([[(t, 0, BOLUS, dose * F[0]) for t in dose_times],
                 [(2.0, 0, INFUSION, rate), (5.0, 0, INFUSION, -rate)]])
    t_out = np.array([0.0, 1.0, 3.5, 5.0, 6.9, 14.0, 14.0, 20.0, 28.0, 40.0])
    Y, status, _, _ = K.solve(K.initial(P), P, 0.0, t_out, *ev, 1e-10, 1e-13)
    assert (status == STATUS_OK).all()
    k = 0.7 / 3.0
    bolus = sum(np.where(t_out >= td, dose * 0.9 * np.exp(-k * (t_out - td)), 0.0)
                for td in dose_times)
    during = rate / k * (1 - np.exp(-k * (np.clip(t_out, 2.0, 5.0) - 2.0)))
    infusion = during * np.exp(-k * np.maximum(t_out - 5.0, 0.0))
    np.testing.assert_allclose(Y[0, :, 0], bolus, rtol=1e-7)
    np.testing.assert_allclose(Y[1, :, 0], infusion, rtol=1e-7, atol=1e-14)
    assert Y[0, 5, 0] > dose * 0.9  # the output at the dose time t = 14 is post-dose
    conc = K.outputs(t_out, Y, P)[..., K.output_names.index("conc")]
    np.testing.assert_allclose(conc, Y[..., 0] / 3.0, rtol=1e-14)


def test_generated_functions_match_numpy():
    # Every supported function, evaluated against sympy's numpy lambdify (rel 1e-12).
    funcs = {"f": "exp(-a*x) + log(1 + x) + sqrt(x) + Abs(x - 2) + tanh(x)",
             "g": "Min(x, a, 1.5) + Max(x, a) + x**a + x**(-2) + (x + 1)**(1/3)",
             "h": "Piecewise((x*t, x > a), (-x, True))"}
    m = SymbolicModel.from_equations("funcs", {"x": "-a*x"}, {"a": 0.5}, {"x": 1}, outputs=funcs)
    K = compile_jax(m)
    t_out = np.array([0.0, 1.0, 2.5])
    Y = np.array([[[0.3], [1.7], [3.0]], [[0.2], [0.9], [4.0]]])
    P = np.array([[0.5], [2.0]])
    got = K.outputs(t_out, Y, P)
    for j, name in enumerate(K.output_names):
        f = sp.lambdify((m.time, *m.state_symbols, *m.param_symbols), m.outputs[name], "numpy")
        ref = np.array([[f(tt, Y[b, i, 0], P[b, 0]) for i, tt in enumerate(t_out)]
                        for b in range(2)])
        np.testing.assert_allclose(got[..., j], ref, rtol=1e-12)


def test_blow_up_is_isolated_to_its_trajectory():
    # y' = a*y^2, y(0)=1: a=1 blows up at t=1; a=-1 gives 1/(1+t) (rel 1e-7 at rtol 1e-10).
    m = SymbolicModel.from_equations("blowup", {"y": "a*y**2"}, {"a": 1.0}, {"y": 1})
    K = compile_jax(m)
    P = np.array([[1.0], [-1.0]])
    t_out = np.array([0.5, 1.5, 2.0])
    Y, status, _, _ = K.solve(K.initial(P), P, 0.0, t_out, *no_events(2), 1e-10, 1e-12,
                              max_steps=2000)
    assert status[0] != STATUS_OK and np.isnan(Y[0]).all()
    assert status[1] == STATUS_OK
    np.testing.assert_allclose(Y[1, :, 0], 1 / (1 + t_out), rtol=1e-7)


def test_batch_of_one_solves_without_vmap_and_agrees_with_the_batch():
    """A batch of one takes its own solve (traced without vmap, key[3] False); its trajectory is
    the batch's row to 1e-12 (same steps; only XLA's fusion differs)."""
    K = compile_jax(PK)
    t_out = np.linspace(0.0, 30.0, 7)
    P = np.array([[0.7, 3.0, 0.9], [0.5, 2.0, 1.0]])
    ev = events([[(0.0, 0, BOLUS, 5.0)], [(1.0, 0, INFUSION, 2.0), (4.0, 0, INFUSION, -2.0)]])
    both = K.solve(np.zeros((2, 1)), P, 0.0, t_out, *ev, 1e-8, 1e-10)
    for row in range(2):
        one = K.solve(np.zeros((1, 1)), P[row:row + 1], 0.0, t_out, *(a[row:row + 1] for a in ev),
                      1e-8, 1e-10)
        np.testing.assert_allclose(one[0][0], both[0][row], rtol=1e-12, atol=1e-15)
        assert [int(a[0]) for a in one[1:]] == [int(a[row]) for a in both[1:]]
    assert K.traces["kvaerno5", 100_000, False, False] >= 1
    assert K.traces["kvaerno5", 100_000, False, True] >= 1


def test_runtime_values_do_not_retrace():
    K = compile_jax(PK)
    t_out = np.linspace(0.0, 30.0, 7)

    def run(P, y0, ev, rtol=1e-8, atol=1e-10, times=t_out):
        return K.solve(np.full((2, 1), y0), P, 0.0, times, *ev, rtol, atol)

    P = np.array([[0.7, 3.0, 0.9], [0.5, 2.0, 1.0]])
    run(P, 0.0, events([[(0.0, 0, BOLUS, 5.0)], [(1.0, 0, INFUSION, 2.0)]]))
    key = ("kvaerno5", 100_000, False, True)
    before = K.traces[key]
    assert before >= 1
    run(P * 1.3, 0.0, events([[(0.0, 0, BOLUS, 5.0)], [(1.0, 0, INFUSION, 2.0)]]))
    run(P, 2.5, events([[(3.0, 0, BOLUS, 1.0)] * 3, [(0.5, 0, BOLUS, 9.0)] * 5]))
    run(P, 0.0, events([[(0.0, 0, BOLUS, 5.0)], [(1.0, 0, BOLUS, 2.0)]]), rtol=1e-6, atol=1e-9)
    run(P, 0.0, events([[(0.0, 0, BOLUS, 5.0)]] * 2), times=t_out * 0.5)
    assert K.traces[key] == before
    run(P, 0.0, events([[(float(i), 0, BOLUS, 1.0) for i in range(9)]] * 2))  # bucket 8 -> 16
    assert K.traces[key] == before + 1


def test_gradient_through_dosed_solve_matches_analytic():
    # y' = -k y, y(0) = y0, bolus b at t = 1: y(T) = (y0 e^{-k} + b) e^{-k (T - 1)}.
    # Tolerance: rel 1e-6 at rtol 1e-10.
    m = SymbolicModel.from_equations("decay", {"y": "-k*y"}, {"k": 0.3}, {"y": 1})
    K = compile_jax(m)
    y0, b, T, k = 2.0, 1.5, 4.0, 0.3
    ev = [jnp.array(a) for a in ([1.0, jnp.inf], [0, 0], [BOLUS, BOLUS], [b, 0.0])]

    def loss(p):
        Y, _, _, _ = solve_trajectory(K.vector_field, jnp.array([y0]), p, 0.0,
                                      jnp.array([0.5, T]), *ev, 1e-10, 1e-12, method="tsit5")
        return Y[-1, 0]

    value, grad = jax.value_and_grad(loss)(jnp.array([k]))
    exact = (y0 * np.exp(-k) + b) * np.exp(-k * (T - 1))
    d_exact = -y0 * T * np.exp(-k * T) - b * (T - 1) * np.exp(-k * (T - 1))
    np.testing.assert_allclose(float(value), exact, rtol=1e-8)
    np.testing.assert_allclose(float(grad[0]), d_exact, rtol=1e-6)


def test_inconsistent_inputs_raise():
    K = compile_jax(PK)
    P = np.array([[0.7, 3.0, 0.9]])
    with pytest.raises(SimulationError, match="ev_kind"):
        K.solve(K.initial(P), P, 0.0, [1.0], *events([[(0.0, 0, 7, 1.0)]]), 1e-6, 1e-9)
    with pytest.raises(SimulationError, match="t_out"):
        K.solve(K.initial(P), P, 1.0, [0.0, 2.0], *no_events(1), 1e-6, 1e-9)


def test_initial_state_depending_on_a_state_is_a_compile_error():
    m = SymbolicModel.from_equations("bad_init", {"x": "-x"}, {"a": 1.0}, {"x": "x + a"})
    with pytest.raises(CompileError, match="initial may depend only on parameters"):
        compile_jax(m)
