"""The symbolic model: stoichiometry, right-hand side, Jacobian sparsity, conservation laws."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import immunoedit_models as ie
from immunoedit_models.spec.expressions import FUNCTIONS, ExpressionError, parse_expression
from immunoedit_models.spec.units import parse_unit
from immunoedit_models.symbolic import build_symbolic, derivatives


def test_stoichiometry_with_volume_coefficients_conserves_amount(specs_dir):
    sym = build_symbolic(ie.load_spec(specs_dir / "two_compartment.yaml"))
    C1, C2 = sym.state_symbols
    Q, V1, V2 = sym.param_symbols
    assert sym.stoichiometry == sp.Matrix([[-1 / V1], [1 / V2]])
    assert sp.simplify(sym.rhs[0] - (-Q * (C1 - C2) / V1)) == 0
    (law,) = sym.conservation_laws
    assert sp.simplify(law["C2"] / law["C1"] - V2 / V1) == 0  # V1*C1 + V2*C2 is constant
    model = ie.compile_model(ie.load_spec(specs_dir / "two_compartment.yaml"), backend="numba")
    ds = ie.simulate(model, np.linspace(0, 20, 5), rtol=1e-10, atol=1e-12)
    amount = 3.0 * ds["C1"].values + 4.0 * ds["C2"].values
    np.testing.assert_allclose(amount, 30.0, rtol=1e-9)


def test_reference_model_rhs_matches_antimony_equations():
    sym = build_symbolic(ie.load_spec("benchmark_reference"))
    s = {n: sym.state_symbols[i] for i, n in enumerate(sym.states)}
    p = {n: sym.param_symbols[i] for i, n in enumerate(sym.parameters)}
    T, E, X, R, I, P, L, A, C1, C2 = (s[k] for k in ["T", "E", "X", "R", "I", "P", "L", "A", "C1", "C2"])
    B = C1 / (C1 + p["Kd"])
    fPD = 1 / (1 + P * (1 - B) / p["KPD"])
    fA = p["KA"] / (p["KA"] + A)
    ag = T / (T + p["Kag"])
    kill = p["kkill"] * fPD * fA * E * T / (p["Kkill"] + T)
    exh = (p["kEX"] * ag + p["kEXL"] * L**2 / (p["KLX"] ** 2 + L**2)) * E
    written = {  # the ODEs of shared/benchmarks/reference_model.ant, typed in again
        "T": p["rT"] * T * (1 - T / p["KT"]) - kill,
        "E": p["sE"] + p["rrec"] * T / (p["Krec"] + T) + p["pE"] * fA * L / (p["KLE"] + L) * E / (1 + R / p["KRE"])
        - p["dE"] * E - exh,
        "X": exh - p["dX"] * X,
        "R": p["sR"] + p["pR"] * L / (p["KLR"] + L) * R - p["dR"] * R,
        "I": p["pI"] * E * ag - p["dI"] * I,
        "P": p["kPind"] * I / (p["KIP"] + I) - p["kPrel"] * (P - p["P0"]),
        "L": p["pL"] * E * ag - p["kcE"] * E * L / (p["KLE"] + L) - p["kcR"] * R * L / (p["KLR"] + L)
        - p["dL"] * L + p["IL2in"],
        "A": p["pA"] * T / (p["KAT"] + T) - p["dA"] * A,
        "C1": (-p["CL"] * C1 - p["Q"] * (C1 - C2)) / p["V1"],
        "C2": p["Q"] * (C1 - C2) / p["V2"],
    }
    for name, rhs in zip(sym.states, sym.rhs):
        assert sp.simplify(rhs - written[name]) == 0, name


def test_jacobian_sparsity_matches_finite_differences():
    model = ie.compile_model("benchmark_reference", backend="numba")
    sym = model.symbolic
    p = model.kernels.extended_parameters(np.asarray(sym.param_values)[None])[0]
    y = np.array([1e8, 1e6, 1e5, 2e5, 0.05, 1.0, 0.05, 5.0, 10.0, 2.0])
    f0, J = np.zeros(10), np.zeros((10, 10))
    model.kernels.rhs(0.0, y, p, f0)
    model.kernels.jac(0.0, y, p, J)
    fd = np.zeros((10, 10))
    for j in range(10):
        h = 1e-7 * max(abs(y[j]), 1e-3)
        yp = y.copy()
        yp[j] += h
        f1 = np.zeros(10)
        model.kernels.rhs(0.0, yp, p, f1)
        fd[:, j] = (f1 - f0) / h
    scale = np.abs(fd).max(axis=1, keepdims=True)  # entries are compared relative to their row
    assert np.all(np.abs(J - fd) <= 1e-4 * np.abs(fd) + 1e-6 * scale)
    np.testing.assert_array_equal(sym.jacobian_sparsity, np.abs(fd) > 0)


@pytest.mark.parametrize("name", ["benchmark_reference", "lai_exhaustion", "de_pillis_2006"])
def test_derivatives_are_sympys_expressions(name):
    """`derivatives` differentiates shared subexpressions once, by sympy's own rules: the same
    expressions as sp.diff, to the structure, w.r.t. every state, every parameter and time."""
    sym = build_symbolic(ie.load_spec(name))
    wrt = [*sym.state_symbols, *sym.param_symbols, sym.time]
    assert derivatives(sym.rhs, wrt) == [[sp.diff(e, x) for x in wrt] for e in sym.rhs]


def test_derivatives_of_shared_and_special_nodes():
    """Shared subexpressions; a product -1 * (k + 1) * ..., whose derivative multiplied pair by
    pair would distribute the -1 over k + 1 where sympy's Leibniz rule keeps it; symbolic
    exponents; functions with sympy's default chain rule; nodes left to sp.diff (Piecewise,
    Min, Abs)."""
    x, y, k, t = sp.symbols("x y k t", real=True)
    shared = k * x / (k + x) + sp.exp(-y * t)
    exprs = [-((k + 1) * (x + 2) * (y - 3) * shared), shared**y, sp.log(shared) * sp.sqrt(x),
             sp.Piecewise((shared, x > y), (x * y, True)), sp.Min(shared, y**2), sp.Abs(x - y) * shared, k]
    wrt = [x, y, t, k]
    assert derivatives(exprs, wrt) == [[sp.diff(e, s) for s in wrt] for e in exprs]


def _grammar_expressions(depth: int = 3):
    """Expression text over A, B, k and time with every operator and function of the grammar."""
    leaf = st.one_of(st.sampled_from(["A", "B", "k", "time", "2", "0.5"]))
    if depth == 0:
        return leaf
    sub = _grammar_expressions(depth - 1)
    calls = [st.tuples(st.sampled_from([f for f, (lo, hi, _) in FUNCTIONS.items() if lo == hi == 1]), sub).map(
                 lambda t: f"{t[0]}({t[1]})"),
             st.tuples(st.sampled_from(["min", "max"]), sub, sub).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
             st.tuples(sub, sub, sub).map(lambda t: f"hill({t[0]}, {t[1]}, {t[2]})"),
             st.tuples(sub, sub, sub).map(lambda t: f"piecewise({t[0]}, {t[1]} < {t[2]}, {t[1]})")]
    return st.one_of(leaf, st.tuples(sub, st.sampled_from(["+", "-", "*", "/", "^"]), sub).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"), *calls)


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(_grammar_expressions(), min_size=1, max_size=3))
def test_derivatives_of_grammar_expressions_are_sympys(texts):
    """Any expressions the spec grammar parses, combined so that they share subexpressions:
    `derivatives` gives sp.diff's expressions w.r.t. states, a parameter and time."""
    units = {name: None for name in ("A", "B", "k")}
    try:
        parsed = [parse_expression(text, units, parse_unit("day"), check_units=False).expr for text in texts]
    except ExpressionError:     # e.g. log(log(0.5)) in a condition: not an expression of the grammar
        assume(False)
    exprs = [*parsed, sp.Mul(*parsed) - parsed[0], parsed[-1] ** 2 + parsed[0]]
    wrt = sorted(set().union(*(e.free_symbols for e in exprs)), key=str)
    assert derivatives(exprs, wrt) == [[sp.diff(e, s) for s in wrt] for e in exprs]
