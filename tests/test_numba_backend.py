"""Code generation for numba: printed kernels vs sympy, caching, input checks, a stiff model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp
from scipy.integrate import solve_ivp

from immunoedit_models.compile import numba_solvers as ns
from immunoedit_models.compile.numba_backend import (VERSION_TAG, compile_numba, generate_source,
                                                     hoist_parameter_expressions)
from immunoedit_models.errors import CompileError, SimulationError
from immunoedit_models.symbolic import SymbolicModel

KINKY = dict(
    odes={
        "x": "-k*Min(x, c) + Max(y - x, 0) + Piecewise((a*x**2, x > 1), (a/x, True))",
        "y": "-Abs(y - 2)*x/(1 + y**2) + sqrt(y)*exp(-t) + tanh(x)*y**5/10 + x**Rational(3, 2)",
        "z": "sign(x - y)*z/3 - Heaviside(y - 1)*z**-2 + log(1 + x)*cos(t)",
    },
    params={"k": 1.0, "c": 0.5, "a": 0.1},
    initial={"x": "c", "y": 1.0, "z": "2*a + k"},
    outputs={"total": "x + y + z", "ratio": "x/y", "clipped": "Min(x, c)"},
    doses={"drug": ("x", "2*k"), "other": ("z", "a/3")},
)


@pytest.fixture(scope="module")
def kinky_sym():
    return SymbolicModel.from_equations("kinky", **KINKY)


@pytest.fixture(scope="module")
def kinky(kinky_sym):
    return compile_numba(kinky_sym)


def _sympy_eval(sym, exprs, t, y, p):
    """Reference values of sympy expressions at one point (sympy's own evaluation)."""
    subs = {sym.time: t, **dict(zip(sym.state_symbols, y)), **dict(zip(sym.param_symbols, p))}
    return np.array([float(sp.sympify(e).xreplace(subs).evalf(30)) for e in exprs])


# Points away from every switch of KINKY (x vs c, x vs 1, y vs x, y vs 2, y vs 1).
POINTS = [(0.3, [0.3, 1.7, 0.8], [1.0, 0.5, 0.1]),
          (1.1, [1.4, 2.6, 1.2], [0.7, 0.9, 0.2]),
          (2.0, [0.7, 0.4, 2.5], [1.3, 0.2, 0.05])]


@pytest.mark.parametrize("t, y, p", POINTS)
def test_rhs_tgrad_outputs_match_sympy(kinky_sym, kinky, t, y, p):
    y, p = np.array(y), np.array(p)
    rhs, dt, out = np.empty(3), np.empty(3), np.empty(3)
    pe = kinky.extended_parameters(p[None])[0]     # what rhs and tgrad take
    kinky.rhs(t, y, pe, rhs)
    kinky.tgrad(t, y, pe, dt)
    kinky.outputs_kernel(t, y, p, out)
    np.testing.assert_allclose(rhs, _sympy_eval(kinky_sym, kinky_sym.rhs, t, y, p), rtol=1e-13)
    np.testing.assert_allclose(dt, _sympy_eval(kinky_sym, kinky_sym.tgrad, t, y, p), rtol=1e-13,
                               atol=1e-15)
    np.testing.assert_allclose(out, _sympy_eval(kinky_sym, list(kinky_sym.outputs.values()),
                                                t, y, p), rtol=1e-13)


def test_kernels_without_cpython_wrappers_are_usable_from_python_and_numba(kinky):
    """The generated functions have no CPython wrapper (a direct Python call would crash): a
    Kernel called from Python runs a twin with one, njit code takes its `.dispatcher`, and an
    njit function given the Kernel itself fails to type instead of crashing."""
    from numba import njit
    from numba.core.errors import TypingError

    assert kinky.rhs.dispatcher.targetoptions["no_cpython_wrapper"] is True
    t, y, p = POINTS[0][0], np.array(POINTS[0][1]), kinky.extended_parameters(np.array([POINTS[0][2]]))[0]
    from_python, from_numba = np.empty(3), np.empty(3)
    kinky.rhs(t, y, p, from_python)

    @njit
    def call(f, t, y, p, out):
        f(t, y, p, out)

    call(kinky.rhs.dispatcher, t, y, p, from_numba)
    np.testing.assert_array_equal(from_numba, from_python)
    with pytest.raises(TypingError):
        call(kinky.rhs, t, y, p, from_numba)
    assert kinky.rhs.signatures == kinky.rhs.dispatcher.signatures


@pytest.mark.parametrize("n_traj", [3, 80])      # the serial and the parallel mapping
def test_batch_outputs_match_sympy_pointwise(kinky_sym, kinky, n_traj):
    rng = np.random.default_rng(n_traj)
    t_out = np.array([0.3, 1.1, 2.0])
    Y = rng.uniform(0.5, 2.5, size=(n_traj, t_out.size, 3))
    P = rng.uniform(0.1, 1.5, size=(n_traj, 3))
    got = kinky.outputs(t_out, Y, P)
    exprs = list(kinky_sym.outputs.values())
    for b in (0, n_traj // 2, n_traj - 1):
        for i, t in enumerate(t_out):
            np.testing.assert_allclose(got[b, i], _sympy_eval(kinky_sym, exprs, t, Y[b, i], P[b]),
                                       rtol=1e-13)


def _vm_flags(address: int) -> set[str]:
    """The kernel's VmFlags of the mapping of this process that holds `address` (Linux)."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and line.startswith("VmFlags:"):
                return set(line.split()[1:])
    raise LookupError(f"no mapping holds {address:#x}")


def test_large_batch_results_are_correct_and_in_small_pages(kinky_sym, kinky):
    """A batch's result above 4 MiB comes from `result_array`: writable, C-ordered, the same
    values, and (Linux) in a mapping advised against transparent huge pages ('nh')."""
    rng = np.random.default_rng(5)
    t_out = np.linspace(0.1, 3.0, 20)
    Y = rng.uniform(0.5, 2.5, size=(20_000, t_out.size, 3))
    P = rng.uniform(0.1, 1.5, size=(20_000, 3))
    got = kinky.outputs(t_out, Y, P)
    assert got.nbytes > 1 << 22 and got.flags.writeable and got.flags.c_contiguous
    exprs = list(kinky_sym.outputs.values())
    for b, i in ((0, 0), (12_345, 7), (19_999, 19)):
        np.testing.assert_allclose(got[b, i], _sympy_eval(kinky_sym, exprs, t_out[i], Y[b, i], P[b]), rtol=1e-13)
    if sys.platform.startswith("linux"):
        assert "nh" in _vm_flags(got.ctypes.data)


@pytest.mark.parametrize("t, y, p", POINTS)
def test_jacobian_and_tgrad_match_finite_differences(kinky, t, y, p):
    y, p = np.array(y), kinky.extended_parameters(np.array(p)[None])[0]
    J, dt = np.empty((3, 3)), np.empty(3)
    kinky.jac(t, y, p, J)
    kinky.tgrad(t, y, p, dt)

    def f(tt, yy):
        out = np.empty(3)
        kinky.rhs(tt, yy, p, out)
        return out

    eps = 1e-6
    J_fd = np.column_stack([(f(t, y + eps * e) - f(t, y - eps * e)) / (2 * eps)
                            for e in np.eye(3)])
    np.testing.assert_allclose(J, J_fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dt, (f(t + eps, y) - f(t - eps, y)) / (2 * eps), rtol=1e-6,
                               atol=1e-8)


def test_initial_dose_factors_outputs_batch_methods(kinky_sym, kinky):
    P = np.array([[1.0, 0.5, 0.1], [2.0, 0.3, 0.6]])
    np.testing.assert_allclose(kinky.initial(P), [[0.5, 1.0, 1.2], [0.3, 1.0, 3.2]], rtol=1e-15)
    assert kinky.drug_names == ("drug", "other")
    np.testing.assert_allclose(kinky.dose_factors(P), [[2.0, 0.1 / 3], [4.0, 0.2]], rtol=1e-15)
    t_out = np.array([0.0, 1.5])
    Y = np.array([[[0.3, 1.7, 0.8], [1.4, 2.6, 1.2]], [[0.7, 0.4, 2.5], [0.1, 0.2, 0.3]]])
    out = kinky.outputs(t_out, Y, P)
    assert out.shape == (2, 2, 3) and kinky.output_names == ("total", "ratio", "clipped")
    for b in range(2):
        for i in range(2):
            ref = _sympy_eval(kinky_sym, list(kinky_sym.outputs.values()), t_out[i], Y[b, i],
                              P[b])
            np.testing.assert_allclose(out[b, i], ref, rtol=1e-14)


def test_printed_source_uses_multiplications_and_conditionals(kinky_sym):
    src = generate_source(kinky_sym)
    assert "(y[0]*y[0])" in src and "y[1]*y[1]*y[1]*y[1]*y[1]" not in src
    assert "/(y[2]*y[2])" in src
    assert "math.sqrt(y[1])" in src and "Heaviside" not in src and "if" in src
    no_default = sp.Piecewise((sp.Symbol("x", real=True), sp.Symbol("x", real=True) > 0))
    sym = SymbolicModel.from_equations("pw", {"x": "-x"}, {}, {"x": 1.0},
                                       outputs={"o": str(no_default)})
    assert "else math.nan" in generate_source(sym)


RECIP = ({"x": "-x/k + y/(k + c) - x*y/(c**2*(1 + x))", "y": "x/y - k*y/c"},
         {"k": 2.0, "c": 0.7}, {"x": 1.0, "y": 1.0})


def test_parameter_only_subexpressions_become_derived_parameters():
    """1/k, 1/(k + c), 1/c^2 and k/c leave the right-hand side for `extend`, which computes them
    once per trajectory; divisions by states stay; the kernels still equal sympy's expressions,
    and a vector of the model's parameters alone gives NaN instead of a read past its end."""
    sym = SymbolicModel.from_equations("recip", *RECIP)
    source = generate_source(sym)
    rhs_src = source.split("def rhs(")[1].split("\n\n")[0]
    assert re.findall(r"/\(*p\[", rhs_src) == [] and "y[0]/y[1]" in rhs_src
    assert "N_KERNEL_PARAMS = 6" in source                                  # 2 + 4 derived
    kern = compile_numba(sym)
    pe = kern.extended_parameters(np.array([[2.0, 0.7]]))
    np.testing.assert_array_equal(pe[0, :2], [2.0, 0.7])
    np.testing.assert_allclose(np.sort(pe[0, 2:]), np.sort([1 / 2.0, 1 / 2.7, 1 / 0.49, 2.0 / 0.7]),
                               rtol=1e-15)
    for y in ([1.3, 0.4], [0.2, 2.5]):
        dy = np.empty(2)
        kern.rhs(0.0, np.array(y), pe[0], dy)
        np.testing.assert_allclose(dy, _sympy_eval(sym, sym.rhs, 0.0, y, [2.0, 0.7]), rtol=1e-14)
        kern.rhs(0.0, np.array(y), np.array([2.0, 0.7]), dy)
        assert np.isnan(dy).all()


def test_hoisting_keeps_every_expression_and_derives_only_from_parameters():
    sym = SymbolicModel.from_equations(
        "hoist", {"x": "-k*x + Piecewise((x/(k*c), y > 2*c), (exp(-c/k)*y, True))",
                  "y": "-(k + c)*y + x**2/(c**2 + x) - k"},
        {"k": 2.0, "c": 0.7}, {"x": 1.0, "y": 1.0})
    jac = [e for e in sym.jacobian if e != 0]
    (rhs, jac_h), derived = hoist_parameter_expressions([list(sym.rhs), jac], sym.param_symbols)
    back = {s: e for s, e in derived}
    for new, old in zip([*rhs, *jac_h], [*sym.rhs, *jac]):
        assert sp.simplify(new.xreplace(back) - old) == 0
    assert all(e.free_symbols <= set(sym.param_symbols) for _, e in derived)
    assert len({e for _, e in derived}) == len(derived)
    assert sp.Integer(2) * sym.param_symbols[1] in back.values()            # 2c, in the condition


def test_unknown_symbol_is_a_compile_error(tmp_path):
    sym = SymbolicModel.from_equations("bad", {"x": "-k*x"}, {"k": 1.0}, {"x": 1.0},
                                       outputs={"o": "x*undefined_thing"})
    with pytest.raises(CompileError, match="undefined_thing"):
        compile_numba(sym, tmp_path)


# ---- caching ---------------------------------------------------------------------------------
def test_generated_file_is_named_by_hash_and_reused(kinky_sym, tmp_path):
    first = compile_numba(kinky_sym, tmp_path)
    expected = tmp_path / f"model_{kinky_sym.structure_hash}_{VERSION_TAG}.py"
    assert first.source_path == expected and expected.is_file()
    stamp = expected.stat().st_mtime_ns
    second = compile_numba(kinky_sym, tmp_path)
    assert expected.stat().st_mtime_ns == stamp and second.rhs is first.rhs
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_a_damaged_cached_file_is_generated_again(kinky_sym, tmp_path):
    damaged = tmp_path / f"model_{kinky_sym.structure_hash}_{VERSION_TAG}.py"
    damaged.write_text("garbage  # e.g. a disk that filled up\n")
    kern = compile_numba(kinky_sym, tmp_path)
    assert damaged.read_text() == generate_source(kinky_sym)
    reference = compile_numba(kinky_sym)
    assert kern.n_kernel_params == reference.n_kernel_params and kern.source_path == damaged


_PROBE = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    from immunoedit_models.compile import numba_solvers as ns
    from immunoedit_models.compile.numba_backend import compile_numba
    from immunoedit_models.symbolic import SymbolicModel
    t1 = time.perf_counter()
    sym = SymbolicModel.from_equations("probe", {"x": "-k*x + Max(x - 2, 0)", "y": "k*x - y"},
                                       {"k": 0.5}, {"x": 1.0, "y": 0.0}, outputs={"s": "x + y"},
                                       doses={"d": ("x", "1")})
    kern = compile_numba(sym, sys.argv[1])
    t2 = time.perf_counter()
    fns = [kern.rhs, kern.jac, kern.tgrad, kern.initial_kernel, kern.outputs_kernel,
           kern.dose_factors_kernel, ns.batch_entry(), ns.single_entry()]
    print(json.dumps({"import_s": t1 - t0, "compile_s": t2 - t1,
                      "hits": sum(sum(f.stats.cache_hits.values()) for f in fns),
                      "misses": sum(sum(f.stats.cache_misses.values()) for f in fns)}))
""")


def test_second_process_loads_everything_from_numba_disk_cache(tmp_path):
    def run():
        proc = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path)], check=True,
                              capture_output=True, text=True, timeout=300)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    cold = run()
    warm = run()
    print(f"\nnumba compile of a small model: cold {cold['compile_s']:.2f} s, "
          f"warm {warm['compile_s']:.3f} s (solver import {warm['import_s']:.2f} s)")
    assert warm["misses"] == 0 and warm["hits"] == 8
    assert warm["compile_s"] < cold["compile_s"]


# ---- input checks ----------------------------------------------------------------------------
def test_solve_rejects_inconsistent_inputs(kinky):
    Y0, P = np.ones((2, 3)), np.ones((2, 3))
    ev = (np.full((2, 1), np.inf), np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((2, 1)))
    t_out = np.array([0.0, 1.0])
    with pytest.raises(SimulationError, match="unknown method"):
        kinky.solve(Y0, P, 0.0, t_out, *ev, 1e-6, 1e-9, method="euler")
    with pytest.raises(SimulationError, match="t_out"):
        kinky.solve(Y0, P, 0.0, t_out[::-1], *ev, 1e-6, 1e-9)
    with pytest.raises(SimulationError, match="shape"):
        kinky.solve(np.ones((2, 2)), P, 0.0, t_out, *ev, 1e-6, 1e-9)
    with pytest.raises(SimulationError, match="state index"):
        kinky.solve(Y0, P, 0.0, t_out, [[0.5], [0.5]], [[3], [0]], [[0], [0]], [[1.0], [1.0]],
                    1e-6, 1e-9)
    with pytest.raises(SimulationError, match="sorted"):
        kinky.solve(Y0, P, 0.0, t_out, [[0.5, 0.2]], [[0, 0]], [[0, 0]], [[1.0, 1.0]], 1e-6,
                    1e-9)
    bad = {"scan_t must be finite, sorted, with scan_t >= t0":
           dict(scan_t=[1.0, 0.5]),
           "event kind must be 0 (bolus) or 1 (rate)":
           dict(ev_kind=[[7], [0]], ev_t=[[0.5], [0.5]]),
           "event values must be finite":
           dict(ev_value=[[np.nan], [1.0]], ev_t=[[0.5], [0.5]])}
    for message, change in bad.items():
        args = dict(zip(("ev_t", "ev_state", "ev_kind", "ev_value"), ev)) | change
        scan = args.pop("scan_t", ())
        with pytest.raises(SimulationError) as info:
            kinky.solve_scanned(Y0, P, 0.0, t_out, rtol=1e-6, atol=1e-9, scan_t=scan, **args)
        assert str(info.value) == message


# ---- a 10-state stiff model with dosing vs scipy Radau ----------------------------------------
IMMUNO10 = dict(
    odes={
        "T": "r*T*(1 - T/K) - kill*E*T/(Kt + T)*(1 + emax*B/Rtot)",
        "E": "sE + pE*E*T/(Kt + T)*I/(KI + I) - dE*E - inh*R*E - exh*X*E",
        "R": "sR + pR*R*I/(KI + I) - dR*R",
        "I": "kI*E*T/(Kt + T) - dI*I",
        "G": "kG*E - dG*G",
        "D": "-ka*D",
        "C": "ka*D/V - CL/V*C - k12*C + k21*P - kon*C*(Rtot - B) + koff*B",
        "P": "k12*C - k21*P",
        "B": "kon*C*(Rtot - B) - koff*B - kint*B",
        "X": "ax*T/(Kt + T) - dx*X + G/100",
    },
    params=dict(r=0.2, K=1000.0, kill=0.5, Kt=50.0, emax=2.0, Rtot=10.0, sE=0.1, pE=1.0, KI=0.5,
                dE=0.1, inh=0.02, exh=0.05, sR=0.05, pR=0.3, dR=0.1, kI=5.0, dI=100.0, kG=2.0,
                dG=50.0, ka=1.0, V=3.0, CL=0.5, k12=0.3, k21=0.2, kon=500.0, koff=1.0,
                kint=0.5, ax=0.1, dx=0.05),
    initial=dict(T=10.0, E=1.0, R=0.5, I=0.0, G=0.0, D=0.0, C=0.0, P=0.0, B=0.0, X=0.0),
    outputs={"occupancy": "B/Rtot"},
    doses={"antibody": ("D", "1")},
)


def test_stiff_10_state_model_with_doses_matches_radau():
    sym = SymbolicModel.from_equations("immuno10", **IMMUNO10)
    kern = compile_numba(sym)
    p = np.array(sym.param_values)
    y0 = kern.initial(p[None])[0]
    pe = kern.extended_parameters(p[None])[0]     # what rhs and jac take
    d_index, dose, dose_times = sym.state_index("D"), 20.0, np.array([0.0, 14.0, 28.0])
    t_out = np.linspace(0.0, 42.0, 43)

    def f(t, y):
        out = np.empty(10)
        kern.rhs(t, y, pe, out)
        return out

    def jac(t, y):
        out = np.empty((10, 10))
        kern.jac(t, y, pe, out)
        return out

    ref, y = [], y0.copy()
    for start, end in zip(dose_times, [*dose_times[1:], t_out[-1]]):
        y[d_index] += dose
        seg = t_out[(t_out >= start) & ((t_out < end) | (end == t_out[-1]))]
        sol = solve_ivp(f, (start, end), y, method="Radau", jac=jac, rtol=1e-10, atol=1e-13,
                        t_eval=seg, dense_output=True)
        ref.append(sol.y.T)
        y = sol.sol(end)
    ref = np.concatenate(ref)

    ev = (dose_times[None], np.full((1, 3), d_index), np.zeros((1, 3)), np.full((1, 3), dose))
    Y, status, n_acc, _ = kern.solve(y0[None], p[None], 0.0, t_out, *ev, 1e-8, 1e-12)
    assert status[0] == ns.STATUS_OK
    np.testing.assert_allclose(Y[0], ref, rtol=1e-5, atol=1e-11)
    occupancy = kern.outputs(t_out, Y, p[None])[0, :, 0]
    np.testing.assert_allclose(occupancy, ref[:, sym.state_index("B")] / 10.0, rtol=1e-5,
                               atol=1e-12)
