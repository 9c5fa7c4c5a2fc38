"""Generated numba kernels for forward sensitivities with respect to chosen parameters.

`sensitivity_kernels(sym, params)` differentiates the model symbolically (sympy) with respect to
the k parameters named and prints, like `numba_backend`, a cached module with:
    sens_rhs, sens_dir, sens_tgrad   the sensitivity equations (see `numba_sensitivity`)
    outputs_dy(t, y, p, O (n_outputs, n)), outputs_dp(t, y, p, O (n_outputs, k))
                                     derivatives of the expressions and observables
Kernels for the k-column products J S are loops over parameters around the Jacobian's non-zero
entries (printed once, after common-subexpression elimination), so code size grows with the
Jacobian, not with k times it. Initial states and dose amounts are differentiated here too (numpy
functions of the parameters) for the sensitivities' starting values and jumps.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import sympy as sp

from ..symbolic import SymbolicModel, cse_blocks, derivatives
from .numba_backend import (KERNEL_OPTIONS, VERSION_TAG, _import_generated, _kernel_source,
                            _NumbaPrinter, _write_atomic, default_cache_dir, symbol_names)

_SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()
                              + (Path(__file__).parent / "numba_sensitivity.py").read_bytes()).hexdigest()[:8]


@dataclass(frozen=True, eq=False)
class SensitivityKernels:
    """Compiled sensitivity kernels of one model for parameters `params` (indices `index`).

    initial_dp(P (n_par,)) -> (n, k): derivatives of the initial states (kernel coordinates).
    factor_dp(P (n_par,)) -> (n_drugs, k): derivatives of each drug's dose factor.
    """

    params: tuple[str, ...]
    index: np.ndarray
    source_path: Path
    sens_rhs: Any
    sens_dir: Any
    sens_tgrad: Any
    outputs_dy: Any
    outputs_dp: Any
    initial_dp: Callable[[np.ndarray], np.ndarray]
    factor_dp: Callable[[np.ndarray], np.ndarray]


Program = tuple[list[tuple[sp.Symbol, sp.Expr]], list[sp.Expr]]   # (assignments, results) after CSE


def _tangent(expr: sp.Expr, tangents: dict[sp.Symbol, sp.Expr]) -> sp.Expr:
    """d expr along the tangents of its symbols (chain rule over the symbols that have one)."""
    return sp.Add(*(sp.diff(expr, s) * tangents[s] for s in expr.free_symbols if s in tangents))


def _forward_mode(program: Program, seeds: dict[sp.Symbol, sp.Expr]) -> Program:
    """The tangent program of a straight-line program: forward-mode differentiation line by line,
    seeded with the tangents of its inputs (e.g. y_j -> v_j, or t -> 1). Differentiating the
    CSE'd program keeps the derivative code as small as the program; differentiating the
    expanded expressions (second derivatives of the composed trial models' right-hand sides)
    took minutes and produced code 10x larger. Returns the original assignments plus the
    tangent assignments, and the tangents of the results."""
    assignments, results = program
    tangents = dict(seeds)
    lines = list(assignments)
    for c, e in assignments:
        d = _tangent(e, tangents)
        if d != 0:
            dc = sp.Symbol(f"_d{c.name}", real=True)
            lines.append((dc, d))
            tangents[c] = dc
    return lines, [_tangent(r, tangents) for r in results]


def _loop_kernel(name: str, args: Sequence[str], program: Program, matrix: Sequence[tuple[int, int]],
                 additive: Sequence[tuple[int, int]], n: int, k: int, names: dict[sp.Symbol, str]) -> str:
    """Source of `name(*args)` computing, for i < n and m < k (state-major flat arrays),
        out[i k + m] = sum_l M[i, l] S[l k + m] + A[i, m]
    from a program whose results are M's entries at `matrix` (i, l), then A's at `additive`
    (i, m). The loop over m is contiguous, so numba vectorises it."""
    lines, results = program
    printer = _NumbaPrinter({**names, **{s: s.name for s, _ in lines}})
    body = [f"{s.name} = {printer.doprint(e)}" for s, e in lines]
    rows: dict[int, list[str]] = {i: [] for i in range(n)}
    for q, ((i, l), e) in enumerate(zip(matrix, results)):
        if e != 0:
            body.append(f"_m{q} = {printer.doprint(e)}")
            rows[i].append(f"_m{q} * S[{l * k} + m]")
    body += [f"for m in range({k}):"]
    body += [f"    out[{i * k} + m] = {' + '.join(terms) or '0.0'}" for i, terms in rows.items()]
    body += [f"out[{i * k + m}] += {printer.doprint(e)}"
             for (i, m), e in zip(additive, results[len(matrix):]) if e != 0]
    sig = "SENS_DIR_SIG" if "v" in args else "SENS_SIG"
    source = [f"@njit({sig}, {KERNEL_OPTIONS})", f"def {name}({', '.join(args)}):",
              *(f"    {line}" for line in body), "    return"]
    return "\n".join(source) + "\n"


def _nonzero(entries):
    return [(i, j, e) for i, j, e in entries if e != 0]


def generate_sensitivity_source(sym: SymbolicModel, index: Sequence[int]) -> str:
    """Source of the generated sensitivity module for parameters `index` of `sym`: one CSE'd
    program for the Jacobian's non-zero entries and df/dp, and its forward-mode tangents along
    v (the directional derivative in y) and along t."""
    n, k = sym.n_states, len(index)
    y, p, t = sym.state_symbols, sym.param_symbols, sym.time
    v = sp.symbols(f"_v0:{n}", real=True)
    names = {**symbol_names(sym), **{vj: f"v[{j}]" for j, vj in enumerate(v)}}
    J = sym.jacobian
    jac = _nonzero([(i, l, J[i, l]) for i in range(n) for l in range(n)])
    selected = [p[i] for i in index]
    fp = _nonzero([(i, m, e) for i, row in enumerate(derivatives(sym.rhs, selected)) for m, e in enumerate(row)])
    matrix, additive = [(i, l) for i, l, _ in jac], [(i, m) for i, m, _ in fp]
    exprs = [e for _, _, e in jac] + [e for _, _, e in fp]
    program: Program = cse_blocks(exprs) if exprs else ([], [])
    outputs = list(sym.outputs.values())
    out_dy = [(o, j, e) for o, row in enumerate(derivatives(outputs, y)) for j, e in enumerate(row)]
    out_dp = [(o, m, e) for o, row in enumerate(derivatives(outputs, selected)) for m, e in enumerate(row)]
    kernels = [
        _loop_kernel("sens_rhs", ("t", "y", "p", "S", "out"), program, matrix, additive, n, k, names),
        _loop_kernel("sens_dir", ("t", "y", "p", "S", "v", "out"), _forward_mode(program, dict(zip(y, v))),
                     matrix, additive, n, k, names),
        _loop_kernel("sens_tgrad", ("t", "y", "p", "S", "out"), _forward_mode(program, {t: sp.Integer(1)}),
                     matrix, additive, n, k, names),
    ]
    for name, entries in (("outputs_dy", out_dy), ("outputs_dp", out_dp)):
        nz = _nonzero(entries)
        kernels.append(_kernel_source(name, "JAC_SIG", ("t", "y", "p", "O"), [f"O[{a}, {b}]" for a, b, _ in nz],
                                      [e for _, _, e in nz], names, ("O[:, :] = 0.0",)))
    header = (
        f'"""Sensitivity kernels generated by immunoedit_models {VERSION_TAG} s{_SOURCE_HASH}; do not '
        f'edit."""\n# model: {sym.name!r}, structure hash {sym.structure_hash}\n'
        f"# parameters: {[sym.parameters[i] for i in index]!r}\n"
        "import math\n\nfrom numba import njit\n\n"
        "from immunoedit_models.compile.numba_sensitivity import SENS_DIR_SIG, SENS_SIG\n"
        "from immunoedit_models.compile.numba_solvers import JAC_SIG\n"
    )
    return header + "".join("\n\n" + src for src in kernels)


def _lambdify_matrix(sym: SymbolicModel, exprs: Sequence[sp.Expr], index: Sequence[int]
                     ) -> Callable[[np.ndarray], np.ndarray]:
    """P (n_par,) -> (len(exprs), k) derivatives of exprs (of the parameters) w.r.t. params index."""
    p = sym.param_symbols
    D = sp.Matrix(derivatives(exprs, [p[m] for m in index])) if exprs else sp.zeros(0, len(index))
    f = sp.lambdify([p], D, "numpy")   # printed from sympy expressions, not user text
    shape = (len(exprs), len(index))
    return lambda P: np.broadcast_to(np.asarray(f(P), dtype=float), shape).copy()


@lru_cache(maxsize=64)
def _compiled(sym: SymbolicModel, params: tuple[str, ...], cache_dir: Path) -> SensitivityKernels:
    index = [sym.parameters.index(name) for name in params]
    key = hashlib.sha256(repr(params).encode()).hexdigest()[:10]
    path = cache_dir / f"sens_{sym.structure_hash}_{key}_{VERSION_TAG}_s{_SOURCE_HASH}.py"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, generate_sensitivity_source(sym, index))
    module = _import_generated(path)
    drugs = list(sym.dose_targets)
    return SensitivityKernels(
        params=params, index=np.asarray(index, dtype=np.int64), source_path=path,
        sens_rhs=module.sens_rhs, sens_dir=module.sens_dir, sens_tgrad=module.sens_tgrad,
        outputs_dy=module.outputs_dy, outputs_dp=module.outputs_dp,
        initial_dp=_lambdify_matrix(sym, list(sym.initial), index),
        factor_dp=_lambdify_matrix(sym, [sym.dose_targets[d].factor for d in drugs], index))


def sensitivity_kernels(sym: SymbolicModel, params: Sequence[str],
                        cache_dir: Path | None = None) -> SensitivityKernels:
    """Generate (or reuse) the sensitivity kernels of `sym` for `params` (names, in order)."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _compiled(sym, tuple(params), directory)
