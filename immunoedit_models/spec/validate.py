"""Validation of a composed spec: names, units, expressions, flows, doses, regimens.

Every check appends an `Issue`; nothing stops at the first problem. What parses is kept in
`ModelSpec.parsed` (sympy expressions with units) for `symbolic.build_symbolic`.
"""

from __future__ import annotations

import math
import tokenize
from graphlib import CycleError, TopologicalSorter
from typing import Any, Mapping

import pint
import sympy as sp

from ..errors import Issue
from ..symbolic import substituter
from .expressions import (ANY, FINITE_HINT, MAX_NUMBER, ExpressionError, Parsed, check_name, concrete,
                          not_finite, parse_expression, suggest)
from .schema import PRIORS, SCALES, Location, ModelSpec, ParameterSpec
from .units import format_unit, parse_unit, registry, same_unit


class _Checker:
    def __init__(self, raw: dict[str, Any], path: str):
        self.raw = raw
        self.path = path
        self.issues: list[Issue] = []
        self.bad_units: set[tuple[str, Location]] = set()    # reported once, however often used
        self.time_unit = self._time_unit(raw["time_unit"], raw.get("time_unit_loc") or Location(path, None))

    def issue(self, loc: Location, item: str, message: str, hint: str | None = None) -> None:
        self.issues.append(Issue(loc.file, loc.line, item, message, hint))

    def _time_unit(self, text: str | None, loc: Location) -> pint.Unit:
        """The unit of time (day when it is missing or wrong, which is reported)."""
        unit = self.unit(text, loc, "time_unit")
        if unit is not None and unit.dimensionality != registry().day.dimensionality:
            self.issue(loc, "time_unit", f"'{text}' is not a unit of time", "write day or hour")
            unit = None
        return unit or registry().day

    def unit(self, text: Any, loc: Location, item: str) -> pint.Unit | None:
        """The unit `text` names; None when it names none (reported) or is None (reported by the reader)."""
        if text is None or (str(text), loc) in self.bad_units:
            return None
        try:
            return parse_unit(text)
        except (pint.UndefinedUnitError, pint.DefinitionSyntaxError, tokenize.TokenError, AttributeError,
                TypeError, ValueError, AssertionError) as exc:
            names = getattr(exc, "unit_names", None) or (text,)
            bad = names[0] if isinstance(names, (tuple, list)) else names
            self.bad_units.add((str(text), loc))
            self.issue(loc, item, f"unknown unit '{text}'",
                       suggest(str(bad), dir(registry()))
                       or "units are pint expressions such as cell, 1/day, ng/mL, mM, mg, L, fold")
            return None

    def parse(self, text: Any, symbols: Mapping[str, Any], loc: Location, item: str,
              what: str = "") -> Parsed | None:
        if text is None:
            return None
        try:
            return parse_expression(text, symbols, self.time_unit)
        except ExpressionError as exc:
            self.issue(loc, item, f"{what}{exc.message}", exc.hint)
            return None

    def expect_unit(self, got: pint.Unit | None, want: pint.Unit | None, loc: Location, item: str,
                    what: str, hint: str) -> None:
        if got is None or want is None or got is ANY or want is ANY:
            return
        if not same_unit(got, want):
            self.issue(loc, item, f"{what} has unit {format_unit(got)}, expected {format_unit(want)}", hint)


def validate(raw: dict[str, Any], path: str) -> tuple[ModelSpec, list[Issue]]:
    """Check a merged raw spec; returns the ModelSpec (meaningful only without issues) and issues."""
    c = _Checker(raw, path)
    states, params, exprs = raw["states"], dict(raw["parameters"]), raw["expressions"]
    _check_names(c, raw)
    unbound = _resolve_requires(c, raw, params)

    symbols: dict[str, pint.Unit | None] = dict.fromkeys(unbound)  # unknown unit: no cascading issues
    for name, s in states.items():
        symbols[name] = c.unit(s.unit, s.loc, f"state '{name}'")
        if s.scale not in SCALES:
            c.issue(s.loc, f"state '{name}'", f"unknown scale '{s.scale}'", "allowed: " + ", ".join(SCALES))
    for name, p in params.items():
        symbols[name] = c.unit(p.unit, p.loc, f"parameter '{name}'")
        _check_parameter(c, p)
    parsed: dict[str, Any] = {"expressions": {}, "initial": {}, "flows": {}, "observables": {}, "doses": {}}
    _parse_expressions(c, exprs, symbols, parsed)

    param_units = {n: symbols.get(n) for n in params}
    for name, s in states.items():
        item = f"state '{name}'"
        got = c.parse(s.initial, param_units, s.loc, item, "initial value ")
        if got is not None:
            c.expect_unit(got.unit, symbols[name], s.loc, item, "initial value",
                          "initial values are numbers or expressions of parameters in the state's unit")
            if s.scale == "log" and got.expr.is_number and got.expr <= 0:
                c.issue(s.loc, item, f"a log-scale state needs initial > 0, got {got.expr}",
                        "start it at a small positive value, or use scale: linear")
            parsed["initial"][name] = got
    for name, f in raw["flows"].items():
        parsed["flows"][name] = _check_flow(c, f, symbols, param_units, states)
    for name, o in raw["observables"].items():
        item = f"observable '{name}'"
        got = c.parse(o.value, symbols, o.loc, item)
        if got is not None:
            c.expect_unit(got.unit, c.unit(o.unit, o.loc, item), o.loc, item, "value",
                          "convert with a parameter that carries the unit (e.g. cell_volume)")
            parsed["observables"][name] = got
    for name, d in raw["doses"].items():
        parsed["doses"][name] = _check_dose(c, d, param_units, symbols, states)
    _check_regimens(c, raw, param_units)
    _check_substituted(c, parsed)
    defined = [*states, *params, *exprs, *raw["flows"], *raw["observables"]]
    for name, loc in raw["provides"].items():
        if name not in defined:
            c.issue(loc, f"provides '{name}'", "is not defined in this spec", suggest(name, defined))
    parsed["symbols"] = symbols
    spec = ModelSpec(
        name=raw["name"], kind=raw["kind"], description=raw["description"], path=path,
        time_unit=raw["time_unit"], states=states, parameters=params, expressions=exprs,
        flows=raw["flows"], observables=raw["observables"], doses=raw["doses"],
        regimens=raw["regimens"], default_regimen=raw["default_regimen"],
        references=raw["references"], modules=tuple(dict.fromkeys(raw["modules"])),
        provides=tuple(raw["provides"]), source_text="\n---\n".join(raw["texts"]), parsed=parsed)
    return spec, c.issues


def _check_names(c: _Checker, raw) -> None:
    for section in ("states", "parameters", "expressions", "flows", "observables", "doses", "requires"):
        for name, item in raw[section].items():
            problem = check_name(name)
            if problem:
                c.issue(item.loc, f"{section[:-1]} '{name}'", problem, "rename it")
    seen: dict[str, str] = {}
    for section in ("states", "parameters", "expressions", "observables"):
        for name, item in raw[section].items():
            if name in seen and seen[name] != section:
                c.issue(item.loc, f"{section[:-1]} '{name}'", f"name is also used by a {seen[name][:-1]}",
                        "every state, parameter, expression and observable needs its own name")
            seen.setdefault(name, section)


def _resolve_requires(c: _Checker, raw, params: dict[str, ParameterSpec]) -> list[str]:
    """Bind required names to definitions; a module run alone uses the stand-in values.

    Returns the names that stay unbound (already reported)."""
    defined = {**raw["states"], **raw["parameters"], **raw["expressions"]}
    unbound = []
    for name, req in raw["requires"].items():
        item = f"required name '{name}'"
        if name in defined:
            have = defined[name]
            unit = getattr(have, "unit", None)
            if unit is not None:
                got, want = c.unit(unit, have.loc, item), c.unit(req.unit, req.loc, item)
                if got is not None and want is not None and not same_unit(got, want):
                    c.issue(req.loc, item, f"is required in {format_unit(want)} but defined at {have.loc} "
                            f"in {format_unit(got)}", "bind it to a quantity in the required unit")
        elif raw["kind"] == "module":
            params[name] = ParameterSpec(name, req.value, req.unit, source="stand-in value for a module run alone",
                                         description=req.description, loc=req.loc)
        else:
            unbound.append(name)
            c.issue(req.loc, item, "is required by a module but no module or spec defines it",
                    suggest(name, defined) or "add a module that provides it, or bind it with "
                    "uses: [{module: ..., bind: {NAME: EXISTING}}]")
    return unbound


def _check_parameter(c: _Checker, p: ParameterSpec) -> None:
    item = f"parameter '{p.name}'"
    if not math.isfinite(p.value):
        return  # reported by the reader
    if p.bounds is not None:
        lo, hi = p.bounds
        if not lo < hi:
            c.issue(p.loc, item, f"bounds [{lo:g}, {hi:g}] are not increasing", "write [low, high]")
        elif not lo <= p.value <= hi:
            c.issue(p.loc, item, f"value {p.value:g} is outside its bounds [{lo:g}, {hi:g}]",
                    "widen the bounds or correct the value")
    if p.prior is not None:
        _check_prior(c, p, item)


def _check_prior(c: _Checker, p: ParameterSpec, item: str) -> None:
    prior = p.prior
    if not isinstance(prior, Mapping) or "distribution" not in prior:
        c.issue(p.loc, item, "prior must be a mapping with 'distribution'",
                "e.g. prior: {distribution: lognormal, median: 0.05, sigma: 0.3}")
        return
    dist = str(prior["distribution"])
    if dist not in PRIORS:
        c.issue(p.loc, item, f"unknown prior distribution '{dist}'",
                suggest(dist, PRIORS) or "allowed: " + ", ".join(PRIORS))
        return
    need = PRIORS[dist]
    extra = sorted(set(prior) - {"distribution", *need})
    missing = [k for k in need if k not in prior]
    if missing or extra:
        c.issue(p.loc, item, f"{dist} prior needs exactly {', '.join(need)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(extra)}" if extra else ""))
        return
    values = {k: prior[k] for k in need}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= MAX_NUMBER
               for v in values.values()):
        c.issue(p.loc, item, f"{dist} prior values must be finite numbers, got {values}")
    elif dist in ("uniform", "loguniform") and not values["low"] < values["high"]:
        c.issue(p.loc, item, f"{dist} prior needs low < high, got {values}")
    elif dist in ("uniform", "loguniform") and p.bounds and not (p.bounds[0] <= values["low"]
                                                                  and values["high"] <= p.bounds[1]):
        c.issue(p.loc, item, f"{dist} prior [{values['low']:g}, {values['high']:g}] reaches outside the bounds "
                f"[{p.bounds[0]:g}, {p.bounds[1]:g}]", "narrow the prior or widen the bounds")
    elif dist == "loguniform" and values["low"] <= 0:
        c.issue(p.loc, item, "loguniform prior needs low > 0")
    elif dist == "lognormal" and (values["median"] <= 0 or values["sigma"] <= 0):
        c.issue(p.loc, item, "lognormal prior needs median > 0 and sigma > 0")
    elif dist == "normal" and values["sd"] <= 0:
        c.issue(p.loc, item, "normal prior needs sd > 0")


def _parse_expressions(c: _Checker, exprs, symbols: dict, parsed: dict) -> None:
    """Parse named expressions in dependency order; report cycles with the chain."""
    known = {**symbols, **{n: None for n in exprs}}
    graph: dict[str, set[str]] = {}
    for name, e in exprs.items():
        if e.value is None:     # missing: reported by the reader
            continue
        try:
            first = parse_expression(e.value, known, c.time_unit, check_units=False)
            graph[name] = {n for n in first.names if n in exprs}
        except ExpressionError as exc:
            c.issue(e.loc, f"expression '{name}'", exc.message, exc.hint)
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        chain = exc.args[1]
        first = exprs[chain[0]]
        c.issue(first.loc, f"expression '{chain[0]}'", "is defined in terms of itself: " + " -> ".join(chain),
                "break the cycle: one of these must be a state or a parameter")
        return
    symbols.update(dict.fromkeys(set(exprs) - set(graph)))    # not parsed (reported): no cascading issues
    for name in order:
        e = exprs[name]
        item = f"expression '{name}'"
        got = c.parse(e.value, symbols, e.loc, item) if name in graph else None
        if got is None:
            symbols[name] = None
            continue
        if e.unit is not None:
            c.expect_unit(got.unit, c.unit(e.unit, e.loc, item), e.loc, item, "value",
                          "correct the declared unit or the formula")
        symbols[name] = got.unit
        parsed["expressions"][name] = got


def _check_flow(c: _Checker, f, symbols, param_units, states) -> dict[str, Any] | None:
    item = f"flow '{f.name}'"
    rate = c.parse(f.rate, symbols, f.loc, item, "rate ")
    ends: dict[str, dict[str, Parsed]] = {"from": {}, "to": {}}
    for side, mapping in (("from", f.source), ("to", f.target)):
        for state, coef in mapping.items():
            if state not in states:
                c.issue(f.loc, item, f"'{side}' names unknown state '{state}'",
                        suggest(state, states) or "states: " + ", ".join(states))
                continue
            got = c.parse(coef, param_units, f.loc, item, f"coefficient of '{state}' ")
            if got is None:
                continue
            ends[side][state] = got
            if rate is not None and rate.unit is not None and got.unit is not None and symbols.get(state):
                c.expect_unit(concrete(rate.unit) * concrete(got.unit), symbols[state] / c.time_unit, f.loc, item,
                              f"rate into/out of '{state}'" if coef == 1 else f"rate x coefficient for '{state}'",
                              f"a flow's rate must have its state's unit per {format_unit(c.time_unit)}"
                              + ("" if coef != 1 else "; give a coefficient (e.g. {C1: 1/V1}) when "
                                 "the rate is an amount and the state a concentration"))
    return None if rate is None else {"rate": rate, **ends}


def _check_dose(c: _Checker, d, param_units, symbols, states) -> Parsed | None:
    item = f"dose '{d.drug}'"
    if d.target is None:    # missing: reported by the reader
        return None
    if d.target not in states:
        c.issue(d.loc, item, f"target '{d.target}' is not a state",
                suggest(str(d.target), states) or "states: " + ", ".join(states))
        return None
    if states[d.target].scale == "log":
        c.issue(d.loc, item, f"target '{d.target}' is integrated on a log scale, where a dose is no jump",
                "dose into a linear-scale state")
        return None
    got = c.parse(d.conversion, param_units, d.loc, item, "conversion ")
    amount = c.unit(d.amount_unit, d.loc, item)
    if got is not None and amount is not None:
        c.expect_unit(amount * concrete(got.unit), symbols.get(d.target), d.loc, item, "amount x conversion",
                      f"conversion turns {format_unit(amount)} into the unit of '{d.target}', e.g. 1/V1")
    return got


def _check_substituted(c: _Checker, parsed: dict) -> None:
    """Named expressions substituted into expressions, rates and observables must leave them finite
    (with x: n - n, a rate T/x is infinite only then); what uses a reported expression is skipped."""
    definitions = {sp.Symbol(n, real=True): p.expr for n, p in parsed["expressions"].items()}
    expand = substituter(definitions)

    def reported(expr: sp.Expr, loc: Location, item: str, what: str) -> bool:
        if not expr.free_symbols & definitions.keys():
            return False    # nothing to substitute: checked when parsed
        done = "once named expressions are substituted"
        try:
            full = expand(expr)
            problem = f"is not a finite real number {done}: sympy makes it {full}" if not_finite(full) else None
        except (TypeError, ValueError, ZeroDivisionError, RecursionError) as exc:
            problem = f"cannot be evaluated {done}: {exc}"
        if problem:
            c.issue(loc, item, what + problem, FINITE_HINT)
        return problem is not None

    bad: set[sp.Symbol] = set()     # expressions reported, or using one that is
    for name, p in parsed["expressions"].items():
        if p.expr.free_symbols & bad or reported(p.expr, c.raw["expressions"][name].loc, f"expression '{name}'", ""):
            bad.add(sp.Symbol(name, real=True))
    for name, f in parsed["flows"].items():
        if f and not f["rate"].expr.free_symbols & bad:
            reported(f["rate"].expr, c.raw["flows"][name].loc, f"flow '{name}'", "rate ")
    for name, o in parsed["observables"].items():
        if not o.expr.free_symbols & bad:
            reported(o.expr, c.raw["observables"][name].loc, f"observable '{name}'", "")


def _check_regimens(c: _Checker, raw, param_units) -> None:
    for name, reg in raw["regimens"].items():
        for i, dose in enumerate(reg.doses):
            item = f"regimen '{name}' dose {i + 1}"
            drug = raw["doses"].get(dose.drug)
            if drug is None and dose.drug is not None:   # a missing drug is reported by the reader
                c.issue(dose.loc, item, f"unknown drug '{dose.drug}'",
                        suggest(dose.drug, raw["doses"]) or "declare it under 'doses:'")
            amount = c.parse(dose.amount, param_units, dose.loc, item, "amount ")
            if amount is not None and drug is not None:
                c.expect_unit(amount.unit, c.unit(drug.amount_unit, drug.loc, item), dose.loc, item, "amount",
                              f"doses of '{dose.drug}' are in {drug.amount_unit}")
            if isinstance(dose.amount, (int, float)) and dose.amount < 0:
                c.issue(dose.loc, item, f"amount {dose.amount:g} is negative")
            if dose.every is not None and dose.every <= 0:
                c.issue(dose.loc, item, f"'every' must be > 0 (the interval between doses), got {dose.every:g}")
            elif dose.count > 1 and dose.every is None:
                c.issue(dose.loc, item, f"{dose.count} doses need 'every' > 0 (the interval)")
            if dose.duration < 0:
                c.issue(dose.loc, item, "duration must be >= 0 (0 = bolus)")
            elif dose.every is not None and 0 < dose.every < dose.duration:
                c.issue(dose.loc, item, f"infusions of {dose.duration:g} overlap when given every {dose.every:g}")
    default = raw["default_regimen"]
    if default is not None and default not in raw["regimens"]:
        c.issue(raw["default_regimen_loc"], "default_regimen", f"no regimen named '{default}'",
                suggest(default, raw["regimens"]))
