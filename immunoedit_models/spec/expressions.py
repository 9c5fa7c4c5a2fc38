"""The expression grammar: a closed allow-list of operators and functions, parsed, never evaluated.

Text is parsed with Python's own parser (`ast.parse(mode="eval")`, which builds a tree and runs
nothing) and every node is checked against the allow-list below while it is translated to sympy
and its unit is inferred with pint. `^` means power, as in Antimony and SBML.
"""

from __future__ import annotations

import ast
import difflib
import math
import keyword
from dataclasses import dataclass
from typing import Callable, Mapping

import pint
import sympy as sp
from sympy.logic.boolalg import BooleanAtom, BooleanFunction

from ..symbolic import TIME
from .units import format_unit, is_dimensionless, registry, same_unit

#: Largest magnitude of a number in an expression (double precision with room for arithmetic).
MAX_NUMBER = 1e300

#: Names with a fixed meaning: the independent variable.
TIME_NAMES = ("time", "t")

#: Allowed functions: name -> (minimum arguments, maximum arguments or None, one-line help).
FUNCTIONS: dict[str, tuple[int, int | None, str]] = {
    "exp": (1, 1, "exp(x), x dimensionless"),
    "log": (1, 1, "natural log, x dimensionless"),
    "log10": (1, 1, "base-10 log, x dimensionless"),
    "sqrt": (1, 1, "square root"),
    "tanh": (1, 1, "hyperbolic tangent, x dimensionless"),
    "sin": (1, 1, "sine, x dimensionless (radians)"),
    "cos": (1, 1, "cosine, x dimensionless (radians)"),
    "abs": (1, 1, "absolute value"),
    "min": (2, None, "smallest argument, all in one unit"),
    "max": (2, None, "largest argument, all in one unit"),
    "hill": (3, 3, "hill(x, K, n) = (x/K)^n / (1 + (x/K)^n)"),
    "piecewise": (3, None, "piecewise(value1, condition1, ..., otherwise)"),
}

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "^"}
_COMPARE = {ast.Lt: sp.Lt, ast.LtE: sp.Le, ast.Gt: sp.Gt, ast.GtE: sp.Ge}


class ExpressionError(Exception):
    """One problem in one expression; `hint` is the usual fix."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class _AnyUnit:
    """The unit of a bare number: it takes the unit of what it is added to or compared with."""

    def __repr__(self) -> str:
        return "ANY"


ANY = _AnyUnit()


def concrete(unit):
    """A bare number multiplies as a dimensionless factor."""
    return registry().dimensionless if unit is ANY else unit


@dataclass(frozen=True)
class Parsed:
    """An expression as sympy, its unit, and the names it uses.

    unit is None when some input's unit is unknown, and ANY for a bare number (which takes
    whatever unit it is compared with).
    """

    expr: sp.Expr
    unit: pint.Unit | None
    names: frozenset[str]


def suggest(name: str, known: list[str] | set[str] | Mapping[str, object]) -> str | None:
    """'did you mean ...?' for the closest known name, if any is close."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None


def parse_expression(
    text: str | int | float,
    symbol_units: Mapping[str, pint.Unit | None],
    time_unit: pint.Unit,
    check_units: bool = True,
) -> Parsed:
    """Translate expression text to sympy and infer its unit.

    symbol_units: every name the expression may use -> its unit (None: unknown, skip checks).
    Raises ExpressionError for the first problem found.
    """
    if isinstance(text, bool):
        raise ExpressionError(f"expected a number or an expression, got {text!r}")
    if isinstance(text, (int, float)):
        return Parsed(number(text, str(text)), ANY, frozenset())
    source = str(text).strip()
    if not source:
        raise ExpressionError("empty expression")
    try:
        tree = ast.parse(source.replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse '{source}': {exc.msg}",
                              "check brackets and operators (+ - * / ^)") from None
    except (RecursionError, MemoryError):   # Python's parser gives up on very deep nesting
        raise ExpressionError(f"expression of {len(source)} characters is too long or too deeply nested",
                              "split it into named expressions under 'expressions:'") from None
    names: set[str] = set()
    walker = _Translator(symbol_units, time_unit, names, check_units)
    try:
        expr, unit = walker.visit(tree.body)
    except (TypeError, ValueError, ZeroDivisionError, RecursionError) as exc:
        # sympy evaluates as it builds: a comparison or min/max of a constant that is not a
        # finite real number (1/0, log of a negative number) fails there
        reason = "nested too deeply for sympy" if isinstance(exc, RecursionError) else str(exc)
        raise ExpressionError(f"cannot evaluate '{source}': {reason}", FINITE_HINT) from None
    if isinstance(expr, (sp.Rel, BooleanAtom, BooleanFunction)):
        raise ExpressionError(f"'{source}' is a condition, not a number",
                              "use it inside piecewise(value, condition, otherwise)")
    if not_finite(expr):    # elsewhere sympy keeps 1/0 as zoo, 0/0 as nan
        raise ExpressionError(f"'{source}' is not a finite real number: sympy makes it {expr}", FINITE_HINT)
    return Parsed(expr, unit, frozenset(names))


FINITE_HINT = ("every part must be a finite real number: no division by zero, no log of zero or of a negative "
               "constant")
_NOT_FINITE = (sp.zoo, sp.oo, sp.S.NegativeInfinity, sp.nan, sp.I)


def number(value: int | float, text: str) -> sp.Expr:
    """A number written in a spec as sympy; ExpressionError when it is nan or beyond MAX_NUMBER."""
    if abs(value) > MAX_NUMBER:     # exact for integers of any size; true for infinities
        shown = text if len(text) <= 40 else f"{text[:6]}...{text[-3:]} ({len(text)} digits)"
        raise ExpressionError(f"'{shown}' is too large for double precision", "write numbers below 1e300")
    if value != value:
        raise ExpressionError(f"'{text}' is not a number", "write a finite number")
    return sp.Integer(value) if isinstance(value, int) else sp.Float(value)


def not_finite(expr: sp.Basic) -> bool:
    """Whether part of expr is no finite real number: sympy's infinities and nan (1/0, log(0), 0/0),
    an imaginary part (log(-1), sqrt(-1)), or a constant beyond MAX_NUMBER (1e300*1e300, exp(1000))."""
    if expr.has(*_NOT_FINITE):
        return True
    constants = [*expr.atoms(sp.Number), *(f for f in expr.atoms(sp.Function) if f.is_number)]
    return any(not abs(c.evalf()) <= MAX_NUMBER for c in constants)


class _Translator:
    """Walks an allowed Python AST, returning (sympy expression, unit or None)."""

    def __init__(self, symbol_units, time_unit, names: set[str], check_units: bool):
        self.symbol_units = symbol_units
        self.time_unit = time_unit
        self.names = names
        self.check_units = check_units

    def visit(self, node: ast.AST) -> tuple[sp.Basic, pint.Unit | None]:
        method: Callable | None = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise ExpressionError(f"'{ast.unparse(node)}' is not allowed in an expression",
                                  "use numbers, names, + - * / ^, comparisons and the functions "
                                  + ", ".join(FUNCTIONS))
        return method(node)

    # ---- leaves --------------------------------------------------------------------------
    def visit_Constant(self, node: ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ExpressionError(f"'{ast.unparse(node)}' is not a number")
        return number(node.value, ast.unparse(node)), ANY

    def visit_Name(self, node: ast.Name):
        name = node.id
        if name in TIME_NAMES:
            return TIME, self.time_unit
        if name in FUNCTIONS:
            raise ExpressionError(f"function '{name}' used without arguments", f"write {FUNCTIONS[name][2]}")
        if name not in self.symbol_units:
            raise ExpressionError(f"uses undefined symbol '{name}'", suggest(name, self.symbol_units))
        self.names.add(name)
        return sp.Symbol(name, real=True), self.symbol_units[name]

    # ---- arithmetic ----------------------------------------------------------------------
    def visit_UnaryOp(self, node: ast.UnaryOp):
        if isinstance(node.op, ast.USub):
            value, unit = self.visit(node.operand)
            return -value, unit
        if isinstance(node.op, ast.UAdd):
            return self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            value, _ = self._condition(node.operand)
            return sp.Not(value), registry().dimensionless
        raise ExpressionError(f"operator in '{ast.unparse(node)}' is not allowed")

    def visit_BinOp(self, node: ast.BinOp):
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise ExpressionError(f"operator in '{ast.unparse(node)}' is not allowed", "use + - * / ^")
        (a, ua), (b, ub) = self.visit(node.left), self.visit(node.right)
        if op in "+-":
            unit = self._common_unit([(node.left, ua), (node.right, ub)], f"'{ast.unparse(node)}'")
            return (a + b if op == "+" else a - b), unit
        known = ua is not None and ub is not None
        if op == "*":
            return a * b, (concrete(ua) * concrete(ub) if known else None)
        if op == "/":
            return a / b, (concrete(ua) / concrete(ub) if known else None)
        if a.is_number and b.is_number:  # fold in floating point: exact powers of big integers explode
            return self._folded_power(node, a, b), self._power_unit(node, ua, b, ub)
        return sp.Pow(a, b), self._power_unit(node, ua, b, ub)

    def _folded_power(self, node: ast.BinOp, base: sp.Expr, exponent: sp.Expr) -> sp.Expr:
        try:
            value = float(base) ** float(exponent)
        except (OverflowError, ZeroDivisionError, TypeError):
            value = math.nan
        if isinstance(value, complex) or not math.isfinite(value) or abs(value) > MAX_NUMBER:
            raise ExpressionError(f"'{ast.unparse(node)}' is not a finite real number",
                                  "check the numbers in this power")
        exact = base.is_Integer and exponent.is_Integer and exponent >= 0
        return sp.Integer(int(base) ** int(exponent)) if exact else sp.Float(value)

    def _power_unit(self, node, base_unit, exponent, exponent_unit):
        if base_unit is None or exponent_unit is None or not self.check_units:
            return None
        base_unit, exponent_unit = concrete(base_unit), concrete(exponent_unit)
        if not is_dimensionless(exponent_unit):
            raise ExpressionError(f"exponent of '{ast.unparse(node)}' has unit {format_unit(exponent_unit)}",
                                  "exponents must be dimensionless")
        if is_dimensionless(base_unit):
            return registry().dimensionless
        if exponent.is_number:
            return base_unit ** float(exponent)
        raise ExpressionError(
            f"'{ast.unparse(node)}' raises a quantity in {format_unit(base_unit)} to a symbolic power",
            "divide the base by a reference value first, or use hill(x, K, n)")

    # ---- comparisons and logic (inside piecewise) ------------------------------------------
    def visit_Compare(self, node: ast.Compare):
        if len(node.ops) != 1 or type(node.ops[0]) not in _COMPARE:
            raise ExpressionError(f"comparison '{ast.unparse(node)}' is not allowed",
                                  "compare two terms with <, <=, > or >=")
        (a, ua), (b, ub) = self.visit(node.left), self.visit(node.comparators[0])
        self._common_unit([(node.left, ua), (node.comparators[0], ub)], f"'{ast.unparse(node)}'")
        return _COMPARE[type(node.ops[0])](a, b), registry().dimensionless

    def visit_BoolOp(self, node: ast.BoolOp):
        parts = [self._condition(v)[0] for v in node.values]
        return (sp.And(*parts) if isinstance(node.op, ast.And) else sp.Or(*parts)), registry().dimensionless

    def _condition(self, node: ast.AST):
        if not isinstance(node, (ast.Compare, ast.BoolOp, ast.UnaryOp)):
            raise ExpressionError(f"'{ast.unparse(node)}' is not a condition", "write e.g. time < 21")
        return self.visit(node)

    # ---- functions ---------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call):
        if not isinstance(node.func, ast.Name) or node.keywords:
            raise ExpressionError(f"'{ast.unparse(node)}' is not an allowed call")
        name = node.func.id
        if name not in FUNCTIONS:
            raise ExpressionError(f"unknown function '{name}'",
                                  suggest(name, FUNCTIONS) or "allowed: " + ", ".join(FUNCTIONS))
        lo, hi, help_text = FUNCTIONS[name]
        if len(node.args) < lo or (hi is not None and len(node.args) > hi):
            raise ExpressionError(f"'{name}' takes {lo if lo == hi else f'{lo} or more'} arguments, "
                                  f"got {len(node.args)}", help_text)
        if name == "piecewise":
            return self._piecewise(node)
        args = [self.visit(a) for a in node.args]
        return getattr(self, f"_fn_{name}")(node, args)

    def _dimensionless_arg(self, node, arg_unit, fn):
        if self.check_units and arg_unit not in (None, ANY) and not is_dimensionless(arg_unit):
            raise ExpressionError(f"argument of {fn}() in '{ast.unparse(node)}' has unit "
                                  f"{format_unit(arg_unit)}", f"{fn}() needs a dimensionless argument")

    def _fn_exp(self, node, args):
        self._dimensionless_arg(node, args[0][1], "exp")
        return sp.exp(args[0][0]), registry().dimensionless

    def _fn_log(self, node, args):
        self._dimensionless_arg(node, args[0][1], "log")
        return sp.log(args[0][0]), registry().dimensionless

    def _fn_log10(self, node, args):
        self._dimensionless_arg(node, args[0][1], "log10")
        return sp.log(args[0][0], 10), registry().dimensionless

    def _fn_tanh(self, node, args):
        self._dimensionless_arg(node, args[0][1], "tanh")
        return sp.tanh(args[0][0]), registry().dimensionless

    def _fn_sin(self, node, args):
        self._dimensionless_arg(node, args[0][1], "sin")
        return sp.sin(args[0][0]), registry().dimensionless

    def _fn_cos(self, node, args):
        self._dimensionless_arg(node, args[0][1], "cos")
        return sp.cos(args[0][0]), registry().dimensionless

    def _fn_sqrt(self, node, args):
        (x, unit), = args
        return sp.sqrt(x), (concrete(unit) ** 0.5 if unit is not None else None)

    def _fn_abs(self, node, args):
        (x, unit), = args
        return sp.Abs(x), unit

    def _fn_min(self, node, args):
        unit = self._common_unit(list(zip(node.args, (u for _, u in args))), f"'{ast.unparse(node)}'")
        return sp.Min(*(a for a, _ in args)), unit

    def _fn_max(self, node, args):
        unit = self._common_unit(list(zip(node.args, (u for _, u in args))), f"'{ast.unparse(node)}'")
        return sp.Max(*(a for a, _ in args)), unit

    def _fn_hill(self, node, args):
        (x, ux), (k, uk), (n, un) = args
        self._common_unit([(node.args[0], ux), (node.args[1], uk)], f"'{ast.unparse(node)}'")
        self._dimensionless_arg(node, un, "hill's n:")
        ratio = (x / k) ** n
        return ratio / (1 + ratio), registry().dimensionless

    def _piecewise(self, node: ast.Call):
        args = node.args
        if len(args) % 2 == 0:
            raise ExpressionError(f"'{ast.unparse(node)}' needs an odd number of arguments",
                                  "piecewise(value1, condition1, ..., otherwise)")
        values = [self.visit(a) for a in args[0::2]]
        conditions = [self._condition(c)[0] for c in args[1::2]]
        unit = self._common_unit(list(zip(args[0::2], (u for _, u in values))), f"'{ast.unparse(node)}'")
        pieces = [(v, c) for (v, _), c in zip(values[:-1], conditions)] + [(values[-1][0], True)]
        return sp.Piecewise(*pieces), unit

    # ---- units ---------------------------------------------------------------------------------
    def _common_unit(self, terms: list[tuple[ast.AST, pint.Unit | None]], where: str):
        if any(u is None for _, u in terms) or not self.check_units:
            return None
        typed = [(node, u) for node, u in terms if u is not ANY]
        if not typed:
            return ANY
        first_node, first = typed[0]
        for node, unit in typed[1:]:
            if not same_unit(unit, first):
                raise ExpressionError(
                    f"{where} combines '{ast.unparse(first_node)}' in {format_unit(first)} with "
                    f"'{ast.unparse(node)}' in {format_unit(unit)}",
                    "terms that are added, compared or chosen between need the same unit")
        return first


def check_name(name: str) -> str | None:
    """Why `name` cannot name a state, parameter, expression or flow (None when it can)."""
    if not isinstance(name, str) or not name.isidentifier():
        return f"'{name}' is not a valid name (letters, digits and _, not starting with a digit)"
    if keyword.iskeyword(name):
        return f"'{name}' is a reserved word"
    if name in TIME_NAMES or name in FUNCTIONS:
        return f"'{name}' is reserved ({'time' if name in TIME_NAMES else 'a function'})"
    if name.startswith("_"):
        return f"'{name}' starts with '_', which is reserved for generated code"
    return None
