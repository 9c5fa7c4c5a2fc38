"""The symbolic model: states x flows x stoichiometry, right-hand side, Jacobian, outputs.

A `SymbolicModel` is what every backend compiles. It is built from a validated `ModelSpec`
(`build_symbolic`) or, for tests and small examples, straight from equations
(`SymbolicModel.from_equations`). Everything here is sympy; nothing is compiled.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Mapping, Sequence

import numpy as np
import sympy as sp
from sympy.printing.repr import ReprPrinter

TIME = sp.Symbol("t", real=True)


@dataclass(frozen=True)
class DoseTarget:
    """Where a drug's dose goes: `amount [amount_unit] * factor(params)` is added to `state`."""

    drug: str
    state: str
    factor: sp.Expr
    amount_unit: str = "dimensionless"


@dataclass(frozen=True, eq=False)
class SymbolicModel:
    """A compartment model in symbolic form (time in the spec's time unit, days by default).

    Attributes
    ----------
    states, parameters: names, in kernel order.
    param_values: nominal values, shape (n_par,).
    initial: initial value of each state as an expression of the parameters.
    flows, flow_rates, stoichiometry: v(x, p, t) and S (a sympy Matrix, shape (n_state, n_flow),
        entries numbers or expressions of parameters); dx/dt = S v.
    outputs: named derived quantities (expressions, then observables) of t, states, parameters.
    units: unit string of every state, parameter and output.
    dose_targets: drug name -> DoseTarget.
    log_states: states integrated as u = ln(state). For these, the state's symbol stands for u
        in `rhs`, `jacobian`, `initial` and `outputs` (kernel coordinates); flow rates and
        stoichiometry stay in natural units.
    """

    name: str
    states: tuple[str, ...]
    parameters: tuple[str, ...]
    param_values: tuple[float, ...]
    initial: tuple[sp.Expr, ...]
    flows: tuple[str, ...]
    flow_rates: tuple[sp.Expr, ...]
    stoichiometry: sp.Matrix
    outputs: Mapping[str, sp.Expr] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    dose_targets: Mapping[str, DoseTarget] = field(default_factory=dict)
    time_unit: str = "day"
    source_text: str = ""
    log_states: frozenset[str] = frozenset()

    # ---- symbols -------------------------------------------------------------------------
    @cached_property
    def state_symbols(self) -> tuple[sp.Symbol, ...]:
        return tuple(sp.Symbol(s, real=True) for s in self.states)

    @cached_property
    def param_symbols(self) -> tuple[sp.Symbol, ...]:
        return tuple(sp.Symbol(s, real=True) for s in self.parameters)

    @property
    def time(self) -> sp.Symbol:
        return TIME

    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def n_params(self) -> int:
        return len(self.parameters)

    # ---- derived symbolic objects ----------------------------------------------------------
    @cached_property
    def rhs(self) -> tuple[sp.Expr, ...]:
        """dx/dt = S v, one expression per state."""
        if not self.flow_rates:
            return tuple(sp.Integer(0) for _ in self.states)
        natural = tuple(self.stoichiometry * sp.Matrix(self.flow_rates))
        if not self.log_states:
            return natural
        # d(ln X)/dt = (dX/dt) / X, divided term by term before X -> exp(u), so that the usual
        # per-capita terms (X * rate) cancel symbolically: exp(u) * exp(-u) would overflow to
        # inf * 0 = NaN once X falls below ~1e-308.
        per_capita = lambda e, x: sp.Add(*(term / x for term in sp.Add.make_args(e)))  # noqa: E731
        return tuple(self.natural_to_kernel(per_capita(e, x) if name in self.log_states else e)
                     for name, x, e in zip(self.states, self.state_symbols, natural))

    def natural_to_kernel(self, expr: sp.Expr) -> sp.Expr:
        """Rewrite an expression of natural states in kernel coordinates (X -> exp(u) for log states)."""
        return sp.sympify(expr).xreplace({x: sp.exp(x) for name, x in zip(self.states, self.state_symbols)
                                          if name in self.log_states})

    @property
    def log_state_indices(self) -> list[int]:
        return [i for i, name in enumerate(self.states) if name in self.log_states]

    @cached_property
    def jacobian(self) -> sp.Matrix:
        """d rhs_i / d state_j, shape (n_state, n_state)."""
        return sp.Matrix(derivatives(self.rhs, self.state_symbols))

    @cached_property
    def tgrad(self) -> tuple[sp.Expr, ...]:
        """d rhs_i / dt (zero for autonomous models)."""
        return tuple(row[0] for row in derivatives(self.rhs, [TIME]))

    @cached_property
    def jacobian_sparsity(self) -> np.ndarray:
        """Boolean (n_state, n_state): structurally non-zero Jacobian entries."""
        return np.array([[e != 0 for e in row] for row in self.jacobian.tolist()],
                        dtype=bool).reshape(self.n_states, self.n_states)

    @cached_property
    def jacobian_blocks(self) -> np.ndarray:
        """Block starts, then n: the finest split of the states, in their order, into contiguous
        blocks with no Jacobian entry above the diagonal blocks (a state never depends on a later
        block). Composed models list their PK compartments first, which then form small blocks of
        their own; `[0, n]` when the order allows no split."""
        nz = self.jacobian_sparsity
        n = self.n_states
        cuts = [m for m in range(1, n) if not nz[:m, m:].any()]
        return np.array([0, *cuts, n], dtype=np.int64)

    @cached_property
    def sparse_lu(self) -> "SparseLU":
        """Static structure of the sparse LU factorisation of W = I/(h gamma) - J that the
        stiff solvers try first (see `sparse_lu_structure`)."""
        return sparse_lu_structure(self.jacobian_sparsity)

    @cached_property
    def structure_hash(self) -> str:
        """Hash of everything that shapes compiled code (not parameter values)."""
        h = hashlib.sha256()
        for part in (self.states, self.parameters, self.flows, self.time_unit):
            h.update(repr(part).encode())
        printer = _SharedReprPrinter()
        for e in (*self.rhs, *self.initial, *self.outputs.values(),
                  *(d.factor for d in self.dose_targets.values())):
            h.update(printer.doprint(e).encode())
        h.update(repr(sorted(self.outputs)).encode())
        h.update(repr(sorted(self.log_states)).encode())
        h.update(repr(sorted((d.drug, d.state) for d in self.dose_targets.values())).encode())
        return h.hexdigest()[:16]

    @cached_property
    def spec_hash(self) -> str:
        """Hash of the spec text (structure and values), recorded in result provenance."""
        h = hashlib.sha256(self.source_text.encode())
        h.update(self.structure_hash.encode())
        h.update(np.asarray(self.param_values, dtype=float).tobytes())
        return h.hexdigest()[:16]

    @cached_property
    def conservation_laws(self) -> tuple[dict[str, sp.Expr], ...]:
        """Weighted sums of states that no flow changes (w with w^T S = 0), as {state: weight}."""
        laws = []
        for w in self.stoichiometry.T.nullspace():
            w = sp.simplify(w / next(x for x in w if x != 0))
            laws.append({s: wi for s, wi in zip(self.states, w) if wi != 0})
        return tuple(laws)

    def state_index(self, name: str) -> int:
        return self.states.index(name)

    # ---- construction from equations (tests, examples) ------------------------------------
    @classmethod
    def from_equations(
        cls,
        name: str,
        odes: Mapping[str, str],
        params: Mapping[str, float],
        initial: Mapping[str, float | str],
        outputs: Mapping[str, str] | None = None,
        doses: Mapping[str, tuple[str, str]] | None = None,
    ) -> "SymbolicModel":
        """Build a model from ODE strings (one pseudo-flow per state; trusted text only).

        `doses` maps drug -> (state, factor expression). Intended for tests and hand-written
        examples; user specs go through `load_spec` and `build_symbolic`.
        """
        states = tuple(odes)
        ns = {s: sp.Symbol(s, real=True) for s in (*states, *params)}
        ns["t"] = TIME
        parse = lambda text: sp.sympify(text, locals=ns)  # noqa: E731 (trusted test input)
        n = len(states)
        return cls(
            name=name,
            states=states,
            parameters=tuple(params),
            param_values=tuple(float(v) for v in params.values()),
            initial=tuple(parse(str(initial[s])) for s in states),
            flows=tuple(f"d{s}" for s in states),
            flow_rates=tuple(parse(odes[s]) for s in states),
            stoichiometry=sp.eye(n),
            outputs={k: parse(v) for k, v in (outputs or {}).items()},
            dose_targets={d: DoseTarget(d, s, parse(f)) for d, (s, f) in (doses or {}).items()},
            source_text=repr((odes, params, initial, outputs, doses)),
        )


@dataclass(frozen=True)
class SparseLU:
    """Static structure of an LU factorisation of W = I/(h gamma) - J without row exchanges.

    blocks: the diagonal blocks of W in dependency order (the states of a block depend only on
        their own block and earlier ones), each the tuple of its state indices in elimination
        order. Only the diagonal blocks are factorised; a solve subtracts the coupling to
        earlier blocks (block forward substitution), which creates no fill-in.
    pattern: the (row, column) entries of the factors inside the diagonal blocks, diagonal and
        fill-in included (state indices).
    coupling: the Jacobian's (row, column) entries between blocks (row in a later block).
    """

    blocks: tuple[tuple[int, ...], ...]
    pattern: frozenset[tuple[int, int]]
    coupling: tuple[tuple[int, int], ...]

    @property
    def n_updates(self) -> int:
        """Multiply-adds of one factorisation (the size of its straight-line code)."""
        count = 0
        for block in self.blocks:
            for pos, k in enumerate(block):
                later = block[pos + 1:]
                count += (sum((i, k) in self.pattern for i in later)
                          * sum((k, j) in self.pattern for j in later))
        return count


def dependency_blocks(sparsity: np.ndarray) -> list[list[int]]:
    """The strongly connected components of "state i depends on state j" (sparsity[i, j]), in
    an order where each depends only on itself and earlier ones (smallest state index first
    among those ready, so the order is deterministic); each component's states ascending."""
    from scipy.sparse.csgraph import connected_components

    n = sparsity.shape[0]
    _, label = connected_components(np.asarray(sparsity, dtype=bool), directed=True, connection="strong")
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(int(label[i]), []).append(i)
    needs = {c: {int(label[j]) for i in m for j in np.nonzero(sparsity[i])[0]} - {c}
             for c, m in members.items()}
    order: list[list[int]] = []
    done: set[int] = set()
    while len(order) < len(members):
        ready = min((m[0], c) for c, m in members.items() if c not in done and needs[c] <= done)
        order.append(members[ready[1]])
        done.add(ready[1])
    return order


def markowitz_order(block: Sequence[int], entries: set[tuple[int, int]]
                    ) -> tuple[list[int], set[tuple[int, int]]]:
    """Elimination order of a block with diagonal pivots, greedily by the Markowitz count
    (other entries in the pivot's column x in its row, ties by state index), and the pattern
    with the fill-in it creates. Hand-written: scipy's sparse LU chooses its orderings from
    numeric values with row exchanges, not for a fixed diagonal-pivot pattern."""
    pattern = {(i, j) for (i, j) in entries if i in block and j in block} | {(i, i) for i in block}
    remaining = set(block)
    order: list[int] = []
    while remaining:
        def cost(k: int) -> tuple[int, int]:
            col = sum((i, k) in pattern for i in remaining if i != k)
            row = sum((k, j) in pattern for j in remaining if j != k)
            return col * row, k
        k = min(remaining, key=cost)
        remaining.discard(k)
        order.append(k)
        for i in [i for i in remaining if (i, k) in pattern]:
            for j in [j for j in remaining if (k, j) in pattern]:
                pattern.add((i, j))
    return order, pattern


def sparse_lu_structure(sparsity: np.ndarray) -> SparseLU:
    """The `SparseLU` of W = I/(h gamma) - J for a Jacobian sparsity (n, n): diagonal blocks by
    `dependency_blocks`, each eliminated in `markowitz_order`."""
    entries = {(int(i), int(j)) for i, j in zip(*np.nonzero(sparsity))}
    blocks, pattern = [], set()
    block_of: dict[int, int] = {}
    for b, members in enumerate(dependency_blocks(sparsity)):
        order, filled = markowitz_order(members, entries)
        blocks.append(tuple(order))
        pattern |= filled
        block_of.update({i: b for i in members})
    coupling = tuple(sorted((i, j) for i, j in entries if block_of[i] != block_of[j]))
    return SparseLU(tuple(blocks), frozenset(pattern), coupling)


def symbol_finder(symbols: Sequence[sp.Symbol]) -> Callable[[sp.Basic], frozenset]:
    """expr -> the `symbols` it contains, memoised by subexpression: `free_symbols` walks the
    whole tree at every call, and expanded model expressions share subtrees heavily (see
    `derivatives`)."""
    wanted = frozenset(symbols)
    found: dict[sp.Basic, frozenset] = {}

    def symbols_in(e: sp.Basic) -> frozenset:
        got = found.get(e)
        if got is None:
            got = found[e] = ((wanted & {e}) if e.is_Symbol
                              else frozenset().union(*(symbols_in(a) for a in e.args)))
        return got

    return symbols_in


class _SharedReprPrinter(ReprPrinter):
    """`sp.srepr`, with each shared subexpression printed once (expressions with named expressions
    substituted share them heavily; see `derivatives`)."""

    def __init__(self) -> None:
        super().__init__()
        self._printed: dict[sp.Basic, str] = {}

    def _print(self, expr, **kwargs) -> str:
        if kwargs or not isinstance(expr, sp.Basic):
            return super()._print(expr, **kwargs)
        if expr not in self._printed:
            self._printed[expr] = super()._print(expr)
        return self._printed[expr]


def derivatives(exprs: Sequence[sp.Expr], symbols: Sequence[sp.Symbol]) -> list[list[sp.Expr]]:
    """d exprs[i] / d symbols[j], shape (len(exprs), len(symbols)): the expressions `sp.diff`
    gives, each shared subexpression differentiated once.

    Written around sympy's own rules because `sp.diff` differentiates a subexpression again
    wherever it occurs, and right-hand sides with named expressions substituted share them
    heavily: the 19-state NSCLC model's is a tree of 21,103 nodes but only 566 distinct ones,
    and sp.diff took 5.5 s for its Jacobian (this: 0.2 s). Add, Mul, Pow and functions with sympy's default
    chain rule follow the rules `sp.diff` applies to them term for term, so the results are the
    same expressions; every other node (Piecewise, Abs, ...) is left to `sp.diff`.
    """
    depends = symbol_finder(symbols)
    memo: dict[tuple[sp.Basic, sp.Symbol], sp.Expr] = {}

    def d(e: sp.Basic, x: sp.Symbol) -> sp.Expr:
        if x not in depends(e):
            return sp.S.Zero
        if e == x:
            return sp.S.One
        got = memo.get((e, x))
        if got is None:
            got = memo[(e, x)] = rule(e, x)
        return got

    def rule(e: sp.Basic, x: sp.Symbol) -> sp.Expr:
        if e.is_Add:
            return e.func(*(d(a, x) for a in e.args))
        if e.is_Mul:    # sympy's Leibniz rule (`Mul._eval_derivative_n_times`), first order
            args = e.args
            return sp.Add(*(sp.Mul(*args[:i], da, *args[i + 1:])
                            for i, da in enumerate(d(a, x) for a in args) if da is not sp.S.Zero))
        if e.is_Pow:
            base, exponent = e.args
            return e * (d(exponent, x) * sp.log(base) + d(base, x) * exponent / base)
        if isinstance(e, sp.Function) and type(e)._eval_derivative is sp.Function._eval_derivative:
            return sp.Add(*(e.fdiff(i) * da for i, da in enumerate((d(a, x) for a in e.args), 1)
                            if not da.is_zero))
        return sp.diff(e, x)

    return [[d(sp.sympify(e), x) for x in symbols] for e in exprs]


def substituter(definitions: Mapping[sp.Symbol, sp.Expr]) -> Callable[[sp.Expr], sp.Expr]:
    """expr -> expr with every named expression replaced by its definition, recursively
    (definitions are acyclic). Each definition is expanded once and shared by every expression
    that uses it; substituting one level at a time over the whole tree took 0.56 s for the
    NSCLC model, whose expanded right-hand side is a tree of 21,103 nodes (this: 0.13 s)."""
    expanded: dict[sp.Symbol, sp.Expr] = {}

    def expand(expr: sp.Expr) -> sp.Expr:
        named = [s for s in expr.free_symbols if s in definitions]
        return expr.xreplace({s: expansion(s) for s in named}) if named else expr

    def expansion(name: sp.Symbol) -> sp.Expr:
        if name not in expanded:
            expanded[name] = expand(definitions[name])
        return expanded[name]

    return lambda expr: expand(sp.sympify(expr))


def cse_blocks(exprs: Sequence[sp.Expr]) -> tuple[list[tuple[sp.Symbol, sp.Expr]], list[sp.Expr]]:
    """Common-subexpression elimination over several outputs at once (sympy.cse).

    Without sympy's "basic" pre-optimisations: on the composed trial models (Jacobians of ~670k
    operations) they made code generation 4x slower (95 s -> 26 s with numba) and the kernels
    no faster (measured: rhs 0.25 -> 0.20 us, jac 0.85 -> 0.67 us per call).
    """
    replacements, reduced = sp.cse(list(exprs), symbols=sp.numbered_symbols("_c"))
    return replacements, reduced


def build_symbolic(spec) -> SymbolicModel:
    """The symbolic model of a validated `ModelSpec` (named expressions substituted away)."""
    parsed = spec.parsed
    definitions = {sp.Symbol(n, real=True): p.expr for n, p in parsed["expressions"].items()}
    expand = substituter(definitions)
    states = tuple(spec.states)
    parameters = tuple(spec.parameters)
    flows = tuple(spec.flows)
    S = sp.zeros(len(states), len(flows))
    for j, name in enumerate(flows):
        for side, sign in (("from", -1), ("to", 1)):
            for state, coef in parsed["flows"][name][side].items():
                S[states.index(state), j] += sign * coef.expr
    log_states = frozenset(n for n, s in spec.states.items() if s.scale == "log")
    log_symbols = {sp.Symbol(n, real=True): sp.exp(sp.Symbol(n, real=True)) for n in log_states}
    kernel = lambda e: expand(e).xreplace(log_symbols)  # noqa: E731  (natural -> kernel coordinates)
    outputs = {n: kernel(p.expr) for n, p in parsed["expressions"].items()}
    outputs.update({n: kernel(p.expr) for n, p in parsed["observables"].items()})
    initial = tuple(sp.log(parsed["initial"][s].expr) if s in log_states else parsed["initial"][s].expr
                    for s in states)
    units = {**{n: s.unit for n, s in spec.states.items()}, **{n: p.unit for n, p in spec.parameters.items()},
             **{n: str(parsed["symbols"].get(n) or "dimensionless") for n in parsed["expressions"]},
             **{n: o.unit for n, o in spec.observables.items()}}
    return SymbolicModel(
        name=spec.name, states=states, parameters=parameters,
        param_values=tuple(p.value for p in spec.parameters.values()),
        initial=initial,
        flows=flows, flow_rates=tuple(expand(parsed["flows"][f]["rate"].expr) for f in flows),
        stoichiometry=S, outputs=outputs, units=units,
        dose_targets={d: DoseTarget(d, spec.doses[d].target, parsed["doses"][d].expr, spec.doses[d].amount_unit)
                      for d in spec.doses},
        time_unit=spec.time_unit, source_text=spec.source_text, log_states=log_states)
