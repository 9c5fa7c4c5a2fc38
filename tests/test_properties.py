"""Property tests (Hypothesis): any spec text either loads and compiles, or raises SpecError —
never another exception; and the compiled right-hand side equals the symbolic one."""

from __future__ import annotations

import numpy as np
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

import immunoedit_models as ie

NAMES = ["A", "B", "T", "k1", "k2", "K", "lam", "n", "time", "exp", "lambda", "1x", "kk"]
UNITS = ["cell", "1/day", "cell/day", "dimensionless", "mg", "1/cell/day", "cels", ""]
FUNCS = ["exp", "log", "sqrt", "abs", "min", "max", "hill", "tanh", "foo"]


def expressions(depth: int = 3):
    leaf = st.one_of(st.sampled_from(NAMES), st.floats(0.01, 100, allow_nan=False).map(lambda x: f"{x:.3g}"))
    if depth == 0:
        return leaf
    sub = expressions(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(sub, st.sampled_from(["+", "-", "*", "/", "^"]), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(FUNCS), st.lists(sub, min_size=1, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(sub, sub).map(lambda t: f"piecewise({t[0]}, time < 5, {t[1]})"),
    )


@st.composite
def spec_texts(draw):
    states = draw(st.lists(st.sampled_from(["A", "B", "T"]), min_size=1, max_size=3, unique=True))
    params = draw(st.lists(st.sampled_from(["k1", "k2", "K", "lam", "n", "kk"]), max_size=5, unique=True))
    doc = {
        "name": "random",
        "states": {s: {"unit": draw(st.sampled_from(UNITS)), "initial": draw(st.floats(0, 10))} for s in states},
        "parameters": {p: {"value": draw(st.floats(0.01, 10)), "unit": draw(st.sampled_from(UNITS)),
                           "source": "hypothesis"} for p in params},
        "flows": {f"f{i}": {draw(st.sampled_from(["from", "to"])): draw(st.sampled_from(states + ["Z"])),
                            "rate": draw(expressions())} for i in range(draw(st.integers(1, 3)))},
    }
    return doc


def _write(tmp_path_factory, doc) -> str:
    path = tmp_path_factory.mktemp("hyp") / "spec.yaml"
    with path.open("w") as fh:
        YAML().dump(doc, fh)
    return str(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=spec_texts())
def test_random_specs_load_or_raise_spec_error(tmp_path_factory, doc):
    try:
        spec = ie.load_spec(_write(tmp_path_factory, doc))
    except ie.SpecError as exc:
        assert exc.issues and all(i.file.endswith("spec.yaml") for i in exc.issues)
        return
    assert set(spec.states) == set(doc["states"])


@st.composite
def valid_specs(draw):
    """Specs whose rates are k1 (1/day) times dimensionless terms of known names and smooth functions."""
    leaf = st.one_of(st.sampled_from(["A", "B", "k2", "exp(-k1*time)"]), st.floats(0.1, 3).map(lambda x: f"{x:.3g}"))
    op = st.tuples(leaf, st.sampled_from(["+", "-", "*"]), leaf).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
    term = st.one_of(op, st.tuples(st.sampled_from(["exp", "tanh", "abs"]), op).map(lambda t: f"{t[0]}(-{t[1]}^2)"),
                     st.tuples(op, op).map(lambda t: f"min({t[0]}, {t[1]})"),
                     st.tuples(op, op).map(lambda t: f"hill({t[0]}^2, 1 + {t[1]}^2, 2)"))
    return {"name": "valid", "states": {"A": {"initial": 1.0}, "B": {"initial": 0.5}},
            "parameters": {"k1": {"value": draw(st.floats(0.1, 2)), "unit": "1/day", "source": "hypothesis"},
                           "k2": {"value": draw(st.floats(0.1, 2)), "source": "hypothesis"}},
            "flows": {"f1": {"from": "A", "to": "B", "rate": f"k1*{draw(term)}"},
                      "f2": {"to": "A", "rate": f"k1*{draw(term)}"}}}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=valid_specs(), y=st.lists(st.floats(-2, 2), min_size=2, max_size=2), t=st.floats(0, 10))
def test_compiled_rhs_equals_symbolic_rhs(tmp_path_factory, doc, y, t):
    model = ie.compile_model(ie.load_spec(_write(tmp_path_factory, doc)), backend="numba")
    sym = model.symbolic
    p = np.asarray(sym.param_values)
    dy = np.zeros(2)
    model.kernels.rhs(float(t), np.asarray(y, float), model.kernels.extended_parameters(p[None])[0], dy)
    subs = {sym.time: t, **dict(zip(sym.state_symbols, y)), **dict(zip(sym.param_symbols, p))}
    expected = [float(sp.N(e.subs(subs))) for e in sym.rhs]
    np.testing.assert_allclose(dy, expected, rtol=1e-10, atol=1e-12)
