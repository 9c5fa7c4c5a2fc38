"""Compile a `SymbolicModel` to numba kernels and drive the shared adaptive solvers.

`compile_numba` prints the model (right-hand side, Jacobian, time gradient, initial values,
outputs, dose factors) with common-subexpression elimination into a generated Python module,
`<cache_dir>/model_<structure_hash>_<version tag>.py`, whose functions are `njit`-compiled with
explicit signatures and `cache=True`. The file is reused when present, so a second process
loads every kernel from numba's on-disk cache. The solvers (`numba_solvers`) take the kernels
as first-class functions and are compiled once for all models.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.metadata
import importlib.util
import mmap
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numba
import numpy as np
import sympy as sp
from numba import boolean, float64, int64, njit, prange, void
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.pycode import PythonCodePrinter

from ..errors import CompileError, SimulationError
from ..symbolic import SparseLU, SymbolicModel, cse_blocks, symbol_finder
from . import cache_root
from .numba_solvers import (EVENT_BOLUS, EVENT_RATE, HELPERS, KERNEL_SIGS, KERNELS, METHODS,
                            RODAS5P, SOLVE_BATCH, SOLVE_SINGLE, _as_outputs,
                            _function_from_address, batch_entry, compiled, kernel_address,
                            on_disk, single_entry)
from .numba_solvers import OUTPUT_SIG  # noqa: F401  (the generated modules import it from here)

PARAM_SIG = void(float64[::1], float64[::1])                         # initial, dose_factors


def _package_version() -> str:
    try:
        return importlib.metadata.version("immunoedit-models")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# The code generator's sources (this file, and symbolic.py whose CSE shapes the printed code) are
# part of the tag, so any change to them invalidates caches.
_GENERATOR_HASH = hashlib.sha256(Path(__file__).read_bytes() + (Path(__file__).parent.parent / "symbolic.py").read_bytes()).hexdigest()[:8]
VERSION_TAG = re.sub(r"[^0-9A-Za-z]+", "_", f"g{_GENERATOR_HASH}_nb{numba.__version__}"
                     f"_sp{sp.__version__}_ie{_package_version()}")


def default_cache_dir() -> Path:
    """`cache_root() / "numba"`: `$IMMUNOEDIT_CACHE_DIR/numba`, else the user cache directory's."""
    return cache_root() / "numba"


# ---- printing ---------------------------------------------------------------------------------
class _NumbaPrinter(PythonCodePrinter):
    """Python printer for numba kernels: symbols by lookup table, float literals, cheap powers,
    and divisions by `constants` (symbols that do not depend on the states: parameters) printed
    as multiplications by their reciprocal."""

    def __init__(self, names: Mapping[sp.Symbol, str], constants: frozenset[sp.Symbol] = frozenset()):
        super().__init__({"strict": True})
        self._names = dict(names)
        self._constants = constants

    def _print_Mul(self, expr: sp.Mul) -> str:
        # x*y/p as x*y*(1.0/p): the reciprocal does not wait for the states, so the division
        # leaves the dependency chain of the step (divisions are the slowest operations in a
        # right-hand side; ~2 % of a trajectory of the benchmark model, within run-to-run spread).
        inverse = [f for f in expr.args if f.is_Pow and f.exp.is_negative
                   and f.free_symbols and f.free_symbols <= self._constants]
        if not inverse or len(inverse) == len(expr.args):
            return super()._print_Mul(expr)
        rest = sp.Mul(*(f for f in expr.args if f not in inverse))
        return "*".join([self.parenthesize(rest, PRECEDENCE["Mul"]), *map(self._print, inverse)])

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        try:
            return self._names[expr]
        except KeyError:
            raise CompileError(f"symbol {expr.name!r} is neither a state, a parameter nor the "
                               "time; define it in the model spec") from None

    _print_Dummy = _print_Symbol        # derived parameters (`hoist_parameter_expressions`)

    def _print_Integer(self, expr: sp.Integer) -> str:
        return repr(float(expr))

    def _print_Float(self, expr: sp.Float) -> str:
        return repr(float(expr))

    def _print_Rational(self, expr: sp.Rational) -> str:
        return f"({expr.p}.0/{expr.q}.0)"

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        base, exp = expr.as_base_exp()
        if exp.is_Integer and 1 <= abs(int(exp)) <= 4:
            b = self.parenthesize(base, PRECEDENCE["Mul"], strict=True)
            prod = "*".join([b] * abs(int(exp)))
            return f"({prod})" if exp > 0 else f"(1.0/({prod}))"
        if exp == sp.Rational(1, 2):
            return f"math.sqrt({self._print(base)})"
        if exp == sp.Rational(-1, 2):
            return f"(1.0/math.sqrt({self._print(base)}))"
        return f"(({self._print(base)})**({self._print(exp)}))"

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        code = "math.nan"   # no branch applies
        for value, cond in reversed(expr.args):
            if cond == sp.true:
                code = f"({self._print(value)})"
            else:
                code = f"(({self._print(value)}) if ({self._print(cond)}) else {code})"
        return code

    def _print_Heaviside(self, expr: sp.Heaviside) -> str:
        x = self._print(expr.args[0])
        h0 = self._print(expr.args[1]) if len(expr.args) > 1 else "0.5"
        return f"(1.0 if ({x}) > 0.0 else (0.0 if ({x}) < 0.0 else {h0}))"

    def _print_DiracDelta(self, expr: sp.Expr) -> str:
        # Derivative of a Heaviside switch: zero wherever it is defined.
        return "0.0"


#: numba options of the generated CPU kernels. As for the solvers (`numba_solvers._FASTMATH`), only
#: contraction of a * b + c into one fused multiply-add: a right-hand side is a chain of dependent
#: products and sums, and FMAs shorten it (~4 % of a trajectory of the benchmark model, 10 pairs
#: of alternating processes; results change in the last bits only). No flag that assumes finite
#: values: the solvers' status detection relies on NaN and inf propagating.
KERNEL_OPTIONS = "cache=True, error_model='numpy', fastmath={'contract'}"
#: ... of a model's kernels, which only compiled code calls (the solvers by address): without
#: numba's CPython wrapper, ~65 ms less compile per kernel (~0.6 s of the benchmark model's
#: ~2 s). Calling such a function from Python would crash the interpreter, so `NumbaKernels`
#: hands them out as `Kernel`s.
MODEL_KERNEL_OPTIONS = KERNEL_OPTIONS + ", no_cpython_wrapper=True"


def _kernel_source(name: str, signature: str, args: Sequence[str], targets: Sequence[str],
                   exprs: Sequence[sp.Expr], names: Mapping[sp.Symbol, str],
                   prologue: Sequence[str] = (), decorator: str | None = None,
                   printer_cls: type[_NumbaPrinter] = _NumbaPrinter,
                   constants: frozenset[sp.Symbol] = frozenset(),
                   epilogue: Sequence[str] = ()) -> str:
    """Source of one kernel that assigns `targets[i] = exprs[i]` after CSE, between the lines of
    `prologue` and `epilogue`.

    decorator: its line (default: njit with `signature`, cached); printer_cls: the sympy printer
    (the CUDA backend passes its own decorator and printer); constants: symbols independent of
    the states (the parameters), divisions by which are printed as reciprocals."""
    replacements, reduced = cse_blocks(exprs) if exprs else ([], [])
    constants = set(constants)
    for s, e in replacements:       # in order: a subexpression may use earlier ones
        if e.free_symbols <= constants:
            constants.add(s)
    printer = printer_cls({**names, **{s: s.name for s, _ in replacements}}, frozenset(constants))
    try:
        body = [*prologue,
                *(f"{s.name} = {printer.doprint(e)}" for s, e in replacements),
                *(f"{tgt} = {printer.doprint(e)}" for tgt, e in zip(targets, reduced)),
                *epilogue, "return"]
    except (sp.printing.codeprinter.PrintMethodNotImplementedError, NotImplementedError) as exc:
        raise CompileError(f"kernel {name!r}: cannot print for numba: {exc}") from exc
    lines = [decorator or f"@njit({signature}, {MODEL_KERNEL_OPTIONS})",
             f"def {name}({', '.join(args)}):", *(f"    {line}" for line in body)]
    return "\n".join(lines) + "\n"


def hoist_parameter_expressions(kernels: Sequence[Sequence[sp.Expr]], params: Sequence[sp.Symbol]
                                ) -> tuple[list[list[sp.Expr]], list[tuple[sp.Symbol, sp.Expr]]]:
    """The expressions of `kernels` with every maximal subexpression of the parameters alone
    (1/K, p^2, a product or sum of parameters inside a product or sum that also has states)
    replaced by a derived parameter, and those derived parameters [(symbol, expression)] in
    order of first appearance, shared by all kernels.

    The solver evaluates the derived parameters once per trajectory (`extend` kernel) instead
    of in every right-hand side and Jacobian: on the benchmark model 13 of them, 6 of the
    right-hand side's 16 divisions and squares of parameters among them, ~2.5 % of a trajectory
    (10 pairs of alternating processes). Written by hand: sympy's `cse` only extracts repeated
    subexpressions, and none that are a subset of a product's factors.
    """
    params = frozenset(params)
    derived: dict[sp.Expr, sp.Symbol] = {}
    # Both memoised by subexpression: sympy expressions share subtrees, and a model's Jacobian
    # walked as a tree (free_symbols at every node) took 40 s for the 19-state NSCLC model.
    kinds: dict[sp.Basic, int] = {}
    done: dict[sp.Basic, sp.Basic] = {}

    def name(expr: sp.Expr) -> sp.Symbol:
        if expr not in derived:
            derived[expr] = sp.Dummy(f"q{len(derived)}", real=True)
        return derived[expr]

    def kind(expr: sp.Basic) -> int:
        """0: no symbols, 1: parameters only, 2: a state, the time or another symbol."""
        if expr not in kinds:
            kinds[expr] = ((1 if expr in params else 2) if expr.is_Symbol
                           else max(map(kind, expr.args), default=0))
        return kinds[expr]

    def only_params(expr: sp.Basic) -> bool:
        return isinstance(expr, sp.Expr) and kind(expr) == 1

    def hoist(expr: sp.Basic) -> sp.Basic:
        if expr not in done:
            done[expr] = rewrite(expr)
        return done[expr]

    def rewrite(expr: sp.Basic) -> sp.Basic:
        if not expr.args or not isinstance(expr, sp.Expr):
            return expr.func(*map(hoist, expr.args)) if expr.args else expr
        if only_params(expr):   # a parameter and a negation cost nothing: not derived
            if expr.is_Symbol:
                return expr
            return -hoist(-expr) if expr.is_Mul and expr.args[0] == -1 else name(expr)
        if expr.is_Add or expr.is_Mul:
            group = [a for a in expr.args if only_params(a)]
            rest = [hoist(a) for a in expr.args if not only_params(a)]
            return expr.func(*([hoist(expr.func(*group))] if group else []), *rest)
        return expr.func(*map(hoist, expr.args))

    hoisted = [[hoist(e) for e in exprs] for exprs in kernels]
    return hoisted, [(s, e) for e, s in derived.items()]


class KernelDef(NamedTuple):
    """One model kernel: `name(*args)` assigns `targets[i] = exprs[i]` between `prologue` and
    `epilogue`."""

    name: str
    signature: str
    args: tuple[str, ...]
    targets: list[str]
    exprs: list[sp.Expr]
    prologue: tuple[str, ...] = ()
    epilogue: tuple[str, ...] = ()


#: The kernels that read derived parameters: those the solvers call at every step.
HOISTED_KERNELS = ("rhs", "jac", "tgrad")


def solver_kernels(defs: list[KernelDef], sym: SymbolicModel
                   ) -> tuple[list[KernelDef], list[tuple[sp.Symbol, sp.Expr]]]:
    """`kernel_definitions(sym, pointers=True)` as the CPU solvers take them.

    - The parameter-only subexpressions of the `HOISTED_KERNELS` become derived parameters
      (`hoist_parameter_expressions`), and the kernel `extend(p, pe)` writes pe = [p, derived]
      (n_params + n_derived,). The hoisted kernels take pe (and fill their output with NaN if
      given a vector of another length, instead of reading past its end); every other kernel
      reads only pe's first n_params entries, so it takes p or pe alike.
    - jac and tgrad return a non-finite partial derivative as 0: (L/T)^lambda with lambda < 1
      has an infinite derivative at L = 0 while f is finite, and the Rosenbrock stages then use
      an approximate Jacobian whose error the embedded estimate still controls (a non-finite f
      is a failure, status 2). Only entries that vary with the states or time are tested (23
      of the benchmark model's 100 partials, none of its time derivatives), by one test of
      their sum (`_finite_or_zero`). The solver used to test every entry after each call.

    Returns the kernels and the derived parameters."""
    hot = [d for d in defs if d.name in HOISTED_KERNELS]
    exprs, derived = hoist_parameter_expressions([d.exprs for d in hot], sym.param_symbols)
    n_ext = sym.n_params + len(derived)
    n = sym.n_states
    size = {"rhs": n, "jac": n * n, "tgrad": n}
    varying = frozenset((*sym.state_symbols, sym.time))
    rewritten = {d.name: d._replace(
        exprs=e, prologue=_with_length_guard(d, n_ext, size[d.name]),
        epilogue=() if d.name == "rhs" else _finite_or_zero(d, e, size[d.name], varying))
        for d, e in zip(hot, exprs)}
    n_par = sym.n_params
    extend = KernelDef("extend", "PARAM_SIG", ("p_arr", "pe_arr"),
                       [f"pe[{n_par + j}]" for j in range(len(derived))], [e for _, e in derived],
                       ("p = _data_pointer(p_arr, 0)", "pe = _data_pointer(pe_arr, 0)",
                        f"for _k in range({n_par}):", "    pe[_k] = p[_k]"))
    return [rewritten.get(d.name, d) for d in defs] + [extend], derived


def _finite_or_zero(kernel: KernelDef, exprs: Sequence[sp.Expr], n_out: int,
                    varying: frozenset[sp.Symbol]) -> tuple[str, ...]:
    """Epilogue lines of a kernel (pointers) that set its non-finite outputs (n_out entries) to 0.

    One test of the sum of the entries that depend on `varying` (the states and time; the others
    are fixed for a trajectory), added as a balanced tree (a NaN or an infinity anywhere makes
    it non-finite), and a repair loop only when it fails. A test per entry compiles into a
    branch each: +0.36 s for the benchmark model's Jacobian, against a 2 s compile budget. An
    overflowing sum is a false alarm, repaired as a no-op."""
    symbols_in = symbol_finder(varying)
    tested = [tgt for tgt, e in zip(kernel.targets, exprs) if symbols_in(e)]
    if not tested:
        return ()
    out = kernel.args[-1].removesuffix("_arr")
    return (f"if not math.isfinite({_balanced_sum(tested)}):", f"    for _k in range({n_out}):",
            f"        if not math.isfinite({out}[_k]):", f"            {out}[_k] = 0.0")


def _balanced_sum(terms: Sequence[str]) -> str:
    """'a + b + ...' as a balanced tree of parenthesised additions (depth log2 n, not n)."""
    if len(terms) == 1:
        return terms[0]
    half = len(terms) // 2
    return f"({_balanced_sum(terms[:half])} + {_balanced_sum(terms[half:])})"


def _with_length_guard(kernel: KernelDef, n_ext: int, n_out: int) -> tuple[str, ...]:
    """The prologue of a hoisted kernel (pointers) with a guard after the pointer views: a
    parameter vector of another length than n_ext (the model's parameters alone, say) fills the
    output (n_out entries) with NaN and returns, instead of reading past the vector's end. By
    pointer: numba's slice assignment would count references at every call."""
    views = tuple(line for line in kernel.prologue if "_data_pointer" in line)
    rest = tuple(line for line in kernel.prologue if line not in views)
    out = kernel.args[-1].removesuffix("_arr")
    return (*views, f"if p_arr.size != {n_ext}:", f"    for _k in range({n_out}):",
            f"        {out}[_k] = math.nan", "    return", *rest)


def symbol_names(sym: SymbolicModel) -> dict[sp.Symbol, str]:
    """How kernels refer to the time, states and parameters: t, y[i], p[i]."""
    names: dict[sp.Symbol, str] = {sym.time: "t"}
    names.update({s: f"y[{i}]" for i, s in enumerate(sym.state_symbols)})
    names.update({s: f"p[{i}]" for i, s in enumerate(sym.param_symbols)})
    return names


def kernel_definitions(sym: SymbolicModel, dense_jacobian: bool = False,
                       pointers: bool = False) -> list[KernelDef]:
    """The model kernels of every backend: rhs, jac, tgrad, initial, outputs, dose_factors.

    dense_jacobian: assign every Jacobian entry, zeros included (no zeroing prologue).
    pointers: the kernels still take arrays (arguments renamed a -> a_arr), but read and write
    them through pointers to their data named as the arrays were (`a = _data_pointer(a_arr,
    0)`, matrices flat in C order): numba compiles a pointer access ~3x faster than an array
    access, and these kernels are long straight-line code (numba CPU backend only).
    """
    n = sym.n_states
    jac_entries = [(i, j, e) for i, row in enumerate(sym.jacobian.tolist())
                   for j, e in enumerate(row) if dense_jacobian or e != 0]
    drugs = list(sym.dose_targets)
    if pointers:
        at = lambda name, i, j=None: f"{name}[{i if j is None else i * n + j}]"  # noqa: E731
        zero_jac = (f"for _k in range({n * n}):", "    J[_k] = 0.0")
    else:
        at = lambda name, i, j=None: f"{name}[{i if j is None else f'{i}, {j}'}]"  # noqa: E731
        zero_jac = ("J[:, :] = 0.0",)

    def kernel(name: str, signature: str, args: tuple[str, ...], targets: list[str],
               exprs: list[sp.Expr], prologue: tuple[str, ...] = ()) -> KernelDef:
        if not pointers:
            return KernelDef(name, signature, args, targets, exprs, prologue)
        views = tuple(f"{a} = _data_pointer({a}_arr, 0)" for a in args if a != "t")
        return KernelDef(name, signature, tuple(a if a == "t" else f"{a}_arr" for a in args),
                         targets, exprs, views + prologue)

    return [
        kernel("rhs", "RHS_SIG", ("t", "y", "p", "dy"), [at("dy", i) for i in range(n)], list(sym.rhs)),
        kernel("jac", "JAC_SIG", ("t", "y", "p", "J"), [at("J", i, j) for i, j, _ in jac_entries],
               [e for _, _, e in jac_entries], () if dense_jacobian else zero_jac),
        kernel("tgrad", "TGRAD_SIG", ("t", "y", "p", "dt"), [at("dt", i) for i in range(n)],
               list(sym.tgrad)),
        kernel("initial", "PARAM_SIG", ("p", "y0"), [at("y0", i) for i in range(n)], list(sym.initial)),
        kernel("outputs", "OUTPUT_SIG", ("t", "y", "p", "out"),
               [at("out", i) for i in range(len(sym.outputs))], list(sym.outputs.values())),
        kernel("dose_factors", "PARAM_SIG", ("p", "out"), [at("out", i) for i in range(len(drugs))],
               [sym.dose_targets[d].factor for d in drugs]),
    ]


# ---- sparse LU of W = I/(h gamma) - J ------------------------------------------------------------
#: Largest factorisation (multiply-adds) printed as straight-line code; larger ones use the
#: solvers' dense path only (keeps the generated code and its compile time small).
LU_MAX_UPDATES = 4000
#: Threshold pivoting: a diagonal pivot is kept only if no entry below it in its column is more
#: than LU_GROWTH times larger in the error-weighted scaling, i.e. a pivot tolerance of 0.001
#: (KLU's default `tol`, which also prefers the diagonal); otherwise the step falls back to
#: dense inversion with partial pivoting. On the benchmark model's trajectories no step up to
#: 2 days falls back (tau = 0.1 would send ~40 % of steps of 0.5-2 days to the dense path).
LU_GROWTH = 1000.0


def lu_kernel_sources(lu: SparseLU, n: int, factor_decorator: str, solve_decorator: str,
                      lit: Callable[[float], str] = repr, pointers: bool = True) -> tuple[str, str]:
    """Sources of `lu_factor(inv_hg, J, scale, w) -> bool` and `lu_solve(w, b, c, out)` (or
    `lu_solve(w, b, out, r)`, below).

    lu_factor writes the factors of W = inv_hg I - J into w (n, n) by the static structure
    `lu` (`SymbolicModel.sparse_lu`): unit-lower multipliers below the diagonal, U above it,
    1 / pivot on it, and -J on the coupling entries between blocks. Threshold pivoting test on
    the matrix scaled by the error weights (scale (n,), the solver's atol + rtol |y|): a pivot
    is kept only if no entry below it is more than `LU_GROWTH` times larger in that scaling
    (the diagonal scaling changes neither the factors' pattern nor their stability, and it
    makes the test independent of the states' units: a tumour in cells beside a cytokine in
    ng/mL). Otherwise, or if a pivot is 0 or not finite, it returns False with w undefined, and
    the caller inverts W densely with partial pivoting. lu_solve sets out = W^-1 (b + c) from
    those factors (b and c are not changed): a Rosenbrock stage's right-hand side plus its
    linear part, summed from scalar loads inside the solve. Straight-line code with constant
    indices: entries live in registers and no index arrays are read.

    pointers: J, scale, w, b, c and out are pointers (`numba_solvers.LU_FACTOR_SIG`, matrices
    flat in C order, out the row to fill); otherwise 2-d arrays and lu_solve(w, b, out, r)
    fills out[r] = W^-1 b (the CUDA device functions). lit prints a float literal (the CUDA
    backend casts to its precision).
    """
    a = lambda i, j: f"a{i}_{j}"  # noqa: E731
    mat = (lambda name, i, j: f"{name}[{i * n + j}]") if pointers else (lambda name, i, j: f"{name}[{i}, {j}]")  # noqa: E731
    out_at = (lambda i: f"out[{i}]") if pointers else (lambda i: f"out[r, {i}]")  # noqa: E731
    pat = lu.pattern
    fac: list[str] = []
    if lu.n_updates > LU_MAX_UPDATES:
        fac.append("return False")
    else:
        for block in lu.blocks:
            for i, j in sorted((i, j) for i, j in pat if i in block):
                fac.append(f"{a(i, j)} = inv_hg - {mat('J', i, i)}" if i == j else f"{a(i, j)} = -{mat('J', i, j)}")
            for pos, k in enumerate(block):
                col = [i for i in block[pos + 1:] if (i, k) in pat]
                row = [j for j in block[pos + 1:] if (k, j) in pat]
                if col:
                    fac.append(f"g = {lit(LU_GROWTH)} * abs({a(k, k)}) / scale[{k}]")
                    fac.append(f"if not (g > {lit(0.0)}" + "".join(
                        f" and abs({a(i, k)}) <= g * scale[{i}]" for i in col) + "):")
                else:       # nothing below: only a zero or non-finite pivot fails
                    fac.append(f"if not (abs({a(k, k)}) > {lit(0.0)}):")
                fac.append("    return False")
                fac.append(f"{a(k, k)} = {lit(1.0)} / {a(k, k)}")
                for i in col:
                    fac.append(f"{a(i, k)} *= {a(k, k)}")
                    fac.extend(f"{a(i, j)} -= {a(i, k)} * {a(k, j)}" for j in row)
        fac.extend(f"{mat('w', i, j)} = {a(i, j)}" for i, j in sorted(pat))
        fac.extend(f"{mat('w', i, j)} = -{mat('J', i, j)}" for i, j in lu.coupling)
        fac.append("return True")
    sol: list[str] = []
    coupled: dict[int, list[int]] = {}
    for i, j in lu.coupling:
        coupled.setdefault(i, []).append(j)
    for block in lu.blocks:
        for pos, i in enumerate(block):      # forward: unit-lower L and the earlier blocks
            terms = [j for j in coupled.get(i, [])] + [k for k in block[:pos] if (i, k) in pat]
            b_i = f"b[{i}] + c[{i}]" if pointers else f"b[{i}]"
            sol.append(f"x{i} = {b_i}" + "".join(f" - {mat('w', i, j)} * x{j}" for j in terms))
        for pos in range(len(block) - 1, -1, -1):      # backward: U, times 1 / pivot
            i = block[pos]
            terms = "".join(f" - {mat('w', i, j)} * x{j}" for j in block[pos + 1:] if (i, j) in pat)
            sol.append(f"x{i} = (x{i}{terms}) * {mat('w', i, i)}")
    sol.extend(f"{out_at(i)} = x{i}" for i in range(n))
    sol.append("return")
    solve_args = "w, b, c, out" if pointers else "w, b, out, r"
    factor = "\n".join([factor_decorator, "def lu_factor(inv_hg, J, scale, w):", *("    " + x for x in fac)])
    solve = "\n".join([solve_decorator, f"def lu_solve({solve_args}):", *("    " + x for x in sol)])
    return factor + "\n", solve + "\n"


def generate_source(sym: SymbolicModel) -> str:
    """Source of the generated kernel module for `sym` (see module docstring)."""
    defs, derived = solver_kernels(kernel_definitions(sym, pointers=True), sym)
    names = symbol_names(sym) | {s: f"p[{sym.n_params + j}]" for j, (s, _) in enumerate(derived)}
    kernels = [_kernel_source(k.name, k.signature, k.args, k.targets, k.exprs, names, k.prologue,
                              constants=frozenset(sym.param_symbols), epilogue=k.epilogue)
               for k in defs]
    kernels += lu_kernel_sources(sym.sparse_lu, sym.n_states,
                                 f"@njit(LU_FACTOR_SIG, {MODEL_KERNEL_OPTIONS})",
                                 f"@njit(LU_SOLVE_SIG, {MODEL_KERNEL_OPTIONS})")
    header = (
        f'"""Numba kernels generated by immunoedit_models {VERSION_TAG}; do not edit."""\n'
        f"# model: {sym.name!r}, structure hash {sym.structure_hash}\n"
        f"# states: {list(sym.states)!r}\n# parameters: {list(sym.parameters)!r}\n"
        "import math\n\nfrom numba import njit\n\n"
        "from immunoedit_models.compile.numba_backend import OUTPUT_SIG, PARAM_SIG\n"
        "from immunoedit_models.compile.numba_solvers import (JAC_SIG, LU_FACTOR_SIG, LU_SOLVE_SIG,\n"
        "                                                     RHS_SIG, TGRAD_SIG, _data_pointer)\n"
        f"\n#: length of the parameter vectors rhs, jac and tgrad take (`extend`)\n"
        f"N_KERNEL_PARAMS = {sym.n_params + len(derived)}\n"
    )
    return header + "".join("\n\n" + k for k in kernels)


def _write_atomic(path: Path, text: str) -> None:
    """Write text to path via a uniquely named temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _import_generated(path: Path) -> Any:
    """Import (or reuse) the generated module at path; a file that fails to compile is removed."""
    mod_name = f"_immunoedit_numba_{path.stem}"
    module = sys.modules.get(mod_name)
    if module is not None and Path(module.__file__) == path:
        return module
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        path.unlink(missing_ok=True)
        raise CompileError(f"numba could not compile the generated kernels {path}: {exc}") from exc
    return module


# ---- batch helpers (compiled once, shared by all models) ---------------------------------------
_SMALL_PAGES_FROM = 1 << 22  # bytes; transparent huge pages are 2 MiB


def result_array(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float64 array for a batch's results, in 4 KiB pages where Linux allows it.

    numpy advises the kernel to back large arrays with transparent huge pages (MADV_HUGEPAGE).
    Under the usual `defrag=madvise` setting the kernel then compacts memory synchronously when
    the threads first write the pages: on this machine 0.1-1.8 s of system time for the 650 MB of
    a 10,000-trajectory batch of the reference model (median wall time 1.8-1.9 s), against a
    steady 0.2-0.3 s in 4 KiB pages (1.45-1.5 s). A private anonymous mmap advised
    MADV_NOHUGEPAGE gets the latter (numpy's own switch is process-wide). Small arrays, and
    systems without the advice: np.empty.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * 8
    if nbytes < _SMALL_PAGES_FROM or not hasattr(mmap, "MADV_NOHUGEPAGE"):
        return np.empty(shape)
    pages = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
    pages.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(pages, dtype=np.float64).reshape(shape)


# Kernels are passed by address (see `numba_solvers.kernel_address`).
_as_param_kernel = _function_from_address(PARAM_SIG)


@njit(float64[:, ::1](int64, float64[:, ::1], int64), cache=True)
def _map_params(kernel_address, params, n_out):
    """out[b] = kernel(params[b]) for a kernel of signature PARAM_SIG; out (B, n_out)."""
    kernel = _as_param_kernel(kernel_address)
    out = np.empty((params.shape[0], n_out))
    for b in range(params.shape[0]):
        kernel(params[b], out[b])
    return out


_MAP_OUTPUTS_SIG = void(int64, float64[::1], float64[:, :, ::1], float64[:, ::1], float64[:, :, ::1])


@njit(_MAP_OUTPUTS_SIG, cache=True)
def _map_outputs_serial(kernel_address, t_out, y, params, out):
    """out[b, i] = kernel(t_out[i], y[b, i], params[b]) for the outputs kernel; out (B, n_t, n_out)."""
    kernel = _as_outputs(kernel_address)
    for b in range(y.shape[0]):
        for i in range(y.shape[1]):
            kernel(t_out[i], y[b, i], params[b], out[b, i])


@njit(cache=True, parallel=True)     # compiled on first use (`compiled`)
def _map_outputs_parallel(kernel_address, t_out, y, params, out):
    """`_map_outputs_serial` on all cores, one (trajectory, time) pair per iteration."""
    kernel = _as_outputs(kernel_address)
    n_t = y.shape[1]
    for j in prange(y.shape[0] * n_t):
        b = j // n_t
        kernel(t_out[j - b * n_t], y[b, j - b * n_t], params[b], out[b, j - b * n_t])


def _map_outputs(kernel_address, t_out, y, params, n_out):
    """Outputs of every trajectory at every time (B, n_t, n_out): serial for a few trajectories
    (a parallel launch costs more than their outputs), on all cores for batches (outputs are ~10 %
    of a batch's time on one core at 366 outputs). The result is allocated in Python, as
    `solve_batch`'s (`result_array`)."""
    out = result_array((y.shape[0], y.shape[1], n_out))
    run = (compiled(_map_outputs_parallel, _MAP_OUTPUTS_SIG) if y.shape[0] >= 64
           else _map_outputs_serial)
    run(kernel_address, t_out, y, params, out)
    return out


# ---- first use after installing -----------------------------------------------------------------
#: What `compile_in_background` compiles for an entry: (dispatchers, code run by `python -c`);
#: the default method's solver loops (Rodas5P), which the commands use.
_HELPER_JOBS = {
    "single": ((SOLVE_SINGLE[RODAS5P],),
               "from immunoedit_models.compile import numba_solvers as s; s.single_entry()"),
    "batch": ((SOLVE_BATCH[RODAS5P], _map_outputs_parallel),
              "from immunoedit_models.compile import numba_backend as b; b.batch_entry(); "
              "b.compiled(b._map_outputs_parallel, b._MAP_OUTPUTS_SIG)"),
}


def compile_in_background(entry: str) -> subprocess.Popen | None:
    """Compile the solver loop `entry` ('single' or 'batch') in a helper process if numba's disk
    cache lacks it (the first run after installing); returns the helper, or None.

    For the command line: the model's kernels and the solver loop then compile on two cores at
    once, and `numba_solvers.compiled` waits for the helper and loads the loop from the cache
    instead of compiling it again (the README's first command from empty caches: 40 -> 26 s).
    A helper that fails leaves the compile to this process. Helpers still running at exit are
    stopped (numba writes its cache files atomically)."""
    dispatchers, code = _HELPER_JOBS[entry]
    if any(d in HELPERS for d in dispatchers) or all(on_disk(d) for d in dispatchers):
        return None
    try:
        helper = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    atexit.register(helper.terminate)
    HELPERS.update(dict.fromkeys(dispatchers, helper))
    return helper


# ---- input checks -------------------------------------------------------------------------------
def _c_array(x: Any, dtype: type = np.float64) -> np.ndarray:
    """x as a writeable C-contiguous array (numba signatures take mutable arrays); x itself when
    it already is one (the test is ~10x cheaper than np.require, and runs ~10 times a solve)."""
    if (type(x) is np.ndarray and x.dtype == dtype and x.flags.c_contiguous
            and x.flags.writeable):
        return x
    return np.require(x, dtype=dtype, requirements=("C", "W"))


def _rows(x: Any, width: int, what: str, dtype: type = np.float64) -> np.ndarray:
    """x as a writeable C-contiguous (B, width) array of dtype; SimulationError on a bad shape."""
    arr = _c_array(x, dtype)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise SimulationError(f"{what} must have shape (B, {width}), got {arr.shape}")
    return arr


@njit(boolean(float64[::1], float64), cache=True)
def _sorted_finite_from(t, t0):
    """True if t is finite, sorted and >= t0 (one compiled pass: these checks run on every
    solve, and as numpy calls they cost more than a short trajectory)."""
    prev = t0
    for i in range(t.size):
        if not (np.isfinite(t[i]) and t[i] >= prev):
            return False
        prev = t[i]
    return True


_INPUT_PROBLEMS = ("t_out must be a finite, sorted 1-d array with t_out >= t0",
                   "scan_t must be finite, sorted, with scan_t >= t0")
_EVENT_PROBLEMS = ("event times must be sorted per trajectory (pad with +inf), no NaN",
                   "event state index out of range [0, {n_states})",
                   f"event kind must be {EVENT_BOLUS} (bolus) or {EVENT_RATE} (rate)",
                   "event values must be finite")


@njit(int64(float64[:, ::1], int64[:, ::1], int64[:, ::1], float64[:, ::1], int64), cache=True)
def _event_problem(ev_t, ev_state, ev_kind, ev_value, n_states):
    """-1 if the (B, n_ev) event arrays are valid, else the index in `_EVENT_PROBLEMS` of the
    first problem. The +inf padding is not applied by the solver, so it is not checked."""
    for b in range(ev_t.shape[0]):
        for e in range(ev_t.shape[1]):
            if np.isnan(ev_t[b, e]) or (e > 0 and ev_t[b, e] < ev_t[b, e - 1]):
                return 0
    for b in range(ev_t.shape[0]):
        for e in range(ev_t.shape[1]):
            if ev_t[b, e] < np.inf:
                if ev_state[b, e] < 0 or ev_state[b, e] >= n_states:
                    return 1
                if ev_kind[b, e] != EVENT_BOLUS and ev_kind[b, e] != EVENT_RATE:
                    return 2
                if not np.isfinite(ev_value[b, e]):
                    return 3
    return -1


@njit(int64(float64[::1], float64, float64[:, ::1], float64[:, ::1], int64[:, ::1], int64[:, ::1],
           float64[:, ::1], int64), cache=True)
def _input_problem(t_out, t0, scan_t, ev_t, ev_state, ev_kind, ev_value, n_states):
    """-1 if output times, scan times (rows of scan_t) and events are valid, else the index of
    the first problem in `_INPUT_PROBLEMS + _EVENT_PROBLEMS`: one compiled call instead of three
    (each call into numba costs ~0.4 us, and a trajectory ~250 us)."""
    if not _sorted_finite_from(t_out, t0):
        return 0
    for r in range(scan_t.shape[0]):
        if not _sorted_finite_from(scan_t[r], t0):
            return 1
    problem = _event_problem(ev_t, ev_state, ev_kind, ev_value, n_states)
    return problem if problem < 0 else len(_INPUT_PROBLEMS) + problem


#: scan_t of a solve without scans (the solvers only read it)
_NO_SCANS = np.empty((1, 0))


@lru_cache(maxsize=8)
def _no_guard(shape: tuple[int, int]) -> np.ndarray:
    """ev_guard (B, n_ev) of -inf, every event applied (the solvers only read it)."""
    return np.full(shape, -np.inf)


def _event_rows(x: Any, shape: tuple[int, int], dtype: type) -> np.ndarray:
    """x broadcast to shape as a writeable C array of dtype (no copy if it already is one)."""
    arr = _c_array(x, dtype)
    return arr if arr.shape == shape else _c_array(np.broadcast_to(arr, shape), dtype)


def check_solve_inputs(kernels: Any, Y0: Any, P: Any, t0: float, t_out: Any, ev_t: Any,
                       ev_state: Any, ev_kind: Any, ev_value: Any, rtol: float, atol: float,
                       method: str, max_steps: int, scan_t: Any, burden_index: int, ev_guard: Any,
                       ev_guard_c: Any = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Validated C arrays for a `solve_scanned` call of any backend's kernels (with n_states,
    n_params, output_names): y0 (B, n), params (B, n_par), t_out (n_out,), scan_t (1, n_scan)
    shared or (B, n_scan) per trajectory, and [ev_t, ev_state, ev_kind, ev_value, ev_guard,
    ev_guard_c] (B, n_ev); SimulationError on bad input."""
    if method not in METHODS:
        raise SimulationError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    y0 = _rows(Y0, kernels.n_states, "Y0")
    params = _rows(P, kernels.n_params, "P")
    n_traj = y0.shape[0]
    if params.shape[0] != n_traj:
        raise SimulationError(f"P has {params.shape[0]} rows but Y0 has {n_traj}")
    t = _c_array(t_out)
    if t.ndim != 1:
        raise SimulationError(_INPUT_PROBLEMS[0])
    scans = _scan_rows(scan_t, n_traj)
    n_outputs = len(kernels.output_names)
    if scans.size and not 0 <= burden_index < n_outputs:
        raise SimulationError(f"burden_index {burden_index} is not an output index "
                              f"(the model has {n_outputs} outputs: {list(kernels.output_names)})")
    if not (rtol > 0 and atol > 0 and max_steps >= 1):
        raise SimulationError("rtol and atol must be > 0 and max_steps >= 1")
    shape = (n_traj, np.shape(ev_t)[-1])
    guards = [_no_guard(shape) if g is None else g for g in (ev_guard, ev_guard_c)]
    ev = [_event_rows(a, shape, dt) for a, dt in
          ((ev_t, np.float64), (ev_state, np.int64), (ev_kind, np.int64),
           (ev_value, np.float64), *((g, np.float64) for g in guards))]
    problem = _input_problem(t, float(t0), scans, *ev[:4], kernels.n_states)
    if problem >= 0:
        message = (_INPUT_PROBLEMS + _EVENT_PROBLEMS)[problem]
        raise SimulationError(message.format(n_states=kernels.n_states))
    return y0, params, t, scans, ev


def _scan_rows(scan_t: Any, n_traj: int) -> np.ndarray:
    """scan_t as a C array (1, n_scan) shared by the batch or (B, n_scan), one row per trajectory."""
    if type(scan_t) is tuple and not scan_t:
        return _NO_SCANS
    scans = np.asarray(scan_t, dtype=np.float64)
    if scans.ndim == 2 and scans.shape[0] in (1, n_traj):
        return _c_array(scans)
    if scans.ndim <= 1:
        return _c_array(scans.reshape(1, -1))
    raise SimulationError(f"scan_t must be (n_scan,) or ({n_traj}, n_scan), one row per trajectory; "
                          f"got shape {scans.shape}")


# ---- kernels object -----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Kernel:
    """A generated model kernel, compiled without numba's CPython wrapper (`dispatcher`: what
    njit functions take). Called from Python, it runs a twin compiled with the wrapper on the
    first call (~0.1 s; not cached on disk), since the dispatcher itself cannot be."""

    dispatcher: Any

    def __call__(self, *args: Any) -> Any:
        return self._python(*args)

    @cached_property
    def _python(self) -> Any:
        options = {k: v for k, v in self.dispatcher.targetoptions.items()
                   if k not in ("nopython", "no_cpython_wrapper")}
        return njit(self.dispatcher.nopython_signatures[0], **options)(self.dispatcher.py_func)

    def __getattr__(self, name: str) -> Any:
        """The dispatcher's attributes (stats, signatures, py_func); not numba's typing hook
        `_numba_type_`, so that an njit function given the Kernel instead of its dispatcher
        fails to type (clearly) rather than half-working."""
        if name.startswith("__") or name in ("dispatcher", "_python", "_numba_type_"):
            raise AttributeError(name)
        return getattr(self.dispatcher, name)


@dataclass(frozen=True, eq=False)
class NumbaKernels:
    """Compiled kernels of one model and numpy-level batch entry points.

    Raw kernels (`Kernel`s: callable from Python, their numba dispatcher in `.dispatcher` for
    compiled code; signatures of `numba_solvers` / this module): rhs, jac, tgrad, lu_factor,
    lu_solve, initial_kernel, outputs_kernel, dose_factors_kernel, extend_kernel. rhs, jac and
    tgrad take the extended parameter vector (n_kernel_params,) of `extended_parameters` (see
    `solver_kernels`); the others the model's parameters.
    """

    model_name: str
    structure_hash: str
    source_path: Path
    state_names: tuple[str, ...]
    param_names: tuple[str, ...]
    output_names: tuple[str, ...]
    drug_names: tuple[str, ...]
    rhs: Kernel
    jac: Kernel
    tgrad: Kernel
    initial_kernel: Kernel
    outputs_kernel: Kernel
    dose_factors_kernel: Kernel
    extend_kernel: Kernel
    n_kernel_params: int        # parameters + derived parameters (`extended_parameters`)
    lu_factor: Kernel           # sparse LU of W = I/(h gamma) - J (numba_solvers conventions)
    lu_solve: Kernel
    blocks: np.ndarray          # block-lower-triangular structure of the Jacobian (solver speed-up)

    @property
    def n_states(self) -> int:
        return len(self.state_names)

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    @cached_property
    def addresses(self) -> np.ndarray:
        """C addresses of rhs, jac, tgrad, lu_factor, lu_solve and outputs (`numba_solvers.
        KERNELS` order), looked up once: the solvers take the kernels by address."""
        kernels = {"rhs": self.rhs, "jac": self.jac, "tgrad": self.tgrad, "lu_factor": self.lu_factor,
                   "lu_solve": self.lu_solve, "outputs": self.outputs_kernel}
        return np.array([kernel_address(kernels[name].dispatcher, sig)
                         for name, sig in zip(KERNELS, KERNEL_SIGS)], dtype=np.int64)

    @cached_property
    def _param_addresses(self) -> tuple[int, int, int]:
        return (kernel_address(self.initial_kernel.dispatcher, PARAM_SIG),
                kernel_address(self.dose_factors_kernel.dispatcher, PARAM_SIG),
                kernel_address(self.extend_kernel.dispatcher, PARAM_SIG))

    def extended_parameters(self, P: Any) -> np.ndarray:
        """Parameter rows P (B, n_params) followed by the derived parameters: the rows
        (B, n_kernel_params) that rhs, jac and tgrad (and so the solvers) take."""
        return _map_params(self._param_addresses[2], _rows(P, self.n_params, "P"),
                           self.n_kernel_params)

    def initial(self, P: Any) -> np.ndarray:
        """Initial states (B, n_states) from parameters P (B, n_params)."""
        return _map_params(self._param_addresses[0], _rows(P, self.n_params, "P"), self.n_states)

    def dose_factors(self, P: Any) -> np.ndarray:
        """Dose factor of each drug (B, n_drugs), order `drug_names`, from P (B, n_params)."""
        return _map_params(self._param_addresses[1], _rows(P, self.n_params, "P"),
                           len(self.drug_names))

    def outputs(self, t_out: Any, Y: Any, P: Any) -> np.ndarray:
        """Outputs (B, n_out, n_outputs) from times (n_out,), states (B, n_out, n), P (B, n_par)."""
        t = _c_array(t_out)
        y = _c_array(Y)
        params = _rows(P, self.n_params, "P")
        if y.shape != (params.shape[0], t.size, self.n_states):
            raise SimulationError(f"Y must have shape {(params.shape[0], t.size, self.n_states)},"
                                  f" got {y.shape}")
        return _map_outputs(int(self.addresses[5]), t, y, params, len(self.output_names))

    def solve(self, Y0: Any, P: Any, t0: float, t_out: Any, ev_t: Any, ev_state: Any,
              ev_kind: Any, ev_value: Any, rtol: float, atol: float, method: str = "rodas5p",
              max_steps: int = 100_000, h0: float = 0.0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Integrate B trajectories with dosing events (see `numba_solvers`).

        Y0 (B, n), P (B, n_par); t_out (n_out,) sorted, >= t0; ev_* broadcastable to (B, n_ev),
        ev_t sorted per row and padded with +inf; method in `METHODS`; max_steps bounds step
        attempts per trajectory; h0 <= 0 picks the first step automatically.
        Returns Y (B, n_out, n), status (B,), accepted steps (B,), rejected steps (B,); status
        codes are `numba_solvers.STATUS_NAMES`, failed trajectories have NaN after the failure.
        """
        return self.solve_scanned(Y0, P, t0, t_out, ev_t, ev_state, ev_kind, ev_value, rtol, atol,
                                  method, max_steps, h0)[:4]

    def solve_scanned(self, Y0: Any, P: Any, t0: float, t_out: Any, ev_t: Any, ev_state: Any,
                      ev_kind: Any, ev_value: Any, rtol: float, atol: float,
                      method: str = "rodas5p", max_steps: int = 100_000, h0: float = 0.0,
                      scan_t: Any = (), burden_index: int = 0, pd_rel: float = 0.2,
                      pd_abs: float = 5.0, ev_guard: Any = None, cpd_abs: float = 5.0,
                      ev_guard_c: Any = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                 np.ndarray]:
        """`solve` with scans read and progression decided inside the kernel, per trajectory.

        scan_t (n_scan,) sorted, >= t0 (may be empty), or (B, n_scan): each trajectory's own
        scan days (e.g. visits with their windows); burden_index: the output the scans read;
        pd_rel, pd_abs: the progression rule; ev_guard broadcastable to (B, n_ev): events with
        ev_guard >= the progression time are skipped (None: every event is applied); cpd_abs,
        ev_guard_c: the same for the confirmed progression (treatment beyond progression). See
        the `numba_solvers` docstring. Returns Y, status, accepted, rejected (as `solve`), scan
        values (B, n_scan) and progression times (B,) (+inf: no progression).
        """
        y0, params, t, scans, ev = check_solve_inputs(
            self, Y0, P, t0, t_out, ev_t, ev_state, ev_kind, ev_value, rtol, atol, method,
            max_steps, scan_t, burden_index, ev_guard, ev_guard_c)
        params = _map_params(self._param_addresses[2], params, self.n_kernel_params)
        n_traj = y0.shape[0]
        n_outputs = len(self.output_names)
        code = METHODS[method]
        opts = (scans, n_outputs, int(burden_index), float(pd_rel), float(pd_abs), float(cpd_abs),
                float(rtol), float(atol), code, int(max_steps), float(h0))
        if n_traj == 1:
            y, status, n_acc, n_rej, scan_value, pd_time = single_entry(code)(
                self.addresses, self.blocks, y0[0], params[0], float(t0), t, *(a[0] for a in ev),
                scans[0], *opts[1:])
            counts = np.array([[status], [n_acc], [n_rej]], dtype=np.int64)
            return (y[None], counts[0], counts[1], counts[2], scan_value[None],
                    np.array([pd_time]))
        y = result_array((n_traj, t.size, self.n_states))
        return (y, *batch_entry(code)(self.addresses, self.blocks, y0, params, float(t0), t, *ev,
                                  *opts, y))


def compile_numba(sym: SymbolicModel, cache_dir: Path | None = None) -> NumbaKernels:
    """Generate (or reuse) and import the numba kernels of `sym`; see the module docstring.

    cache_dir defaults to `default_cache_dir()`.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = directory / f"model_{sym.structure_hash}_{VERSION_TAG}.py"
    cached = path.exists()
    if not cached:
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, generate_source(sym))
    try:
        module = _import_generated(path)
    except CompileError:
        if not cached:
            raise
        _write_atomic(path, generate_source(sym))   # a damaged cached file (removed): generate it again
        module = _import_generated(path)
    return NumbaKernels(
        model_name=sym.name, structure_hash=sym.structure_hash, source_path=path,
        state_names=tuple(sym.states), param_names=tuple(sym.parameters),
        output_names=tuple(sym.outputs), drug_names=tuple(sym.dose_targets),
        **_module_kernels(module), n_kernel_params=module.N_KERNEL_PARAMS, blocks=sym.jacobian_blocks)


#: NumbaKernels field -> function of the generated module
_KERNEL_FUNCTIONS = {"rhs": "rhs", "jac": "jac", "tgrad": "tgrad", "initial_kernel": "initial",
                     "outputs_kernel": "outputs", "dose_factors_kernel": "dose_factors",
                     "extend_kernel": "extend", "lu_factor": "lu_factor", "lu_solve": "lu_solve"}


def _module_kernels(module: Any) -> dict[str, Kernel]:
    """The generated module's kernels as `Kernel`s, made once per module: a model compiled twice
    shares them, Python twins included."""
    if not hasattr(module, "_KERNELS"):
        module._KERNELS = {field: Kernel(getattr(module, name)) for field, name in _KERNEL_FUNCTIONS.items()}
    return module._KERNELS
