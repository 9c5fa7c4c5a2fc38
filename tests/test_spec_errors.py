"""Every error message of the model language, verbatim: what, where (file:line), item, and fix."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import immunoedit_models as ie
from immunoedit_models.errors import Issue


def _spec(tmp_path, text: str, name: str = "model.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _messages(path) -> list[str]:
    with pytest.raises(ie.SpecError) as info:
        ie.load_spec(path)
    return [str(i).removeprefix(f"{path}:") for i in info.value.issues]


def test_broken_spec_reports_every_problem_once_sorted_by_line(specs_dir):
    path = specs_dir / "broken.yaml"
    assert _messages(path) == [
        "12: parameter 'Kd': value 5 is outside its bounds [10, 20] (widen the bounds or correct the value)",
        "13: parameter 'ke': lognormal prior needs exactly median, sigma; missing sigma",
        "14: parameter 'n_cells': unknown unit 'cels' (did you mean 'cells'?)",
        "16: expression 'loop_a': is defined in terms of itself: loop_a -> loop_b -> loop_a "
        "(break the cycle: one of these must be a state or a parameter)",
        "20: flow 'kill': rate uses undefined symbol 'k_kil' (did you mean 'k_kill'?)",
        "21: flow 'elimination': rate into/out of 'C' has unit milligram / day, expected milligram / day / liter "
        "(a flow's rate must have its state's unit per day; give a coefficient (e.g. {C1: 1/V1}) when the "
        "rate is an amount and the state a concentration)",
        "22: flow 'influx': unknown key 'rte' (did you mean 'rate'?)",
        "22: flow 'influx': missing 'rate'",
        "28: regimen 'weekly' dose 1: unknown drug 'durg' (did you mean 'drug'?)",
    ]


def test_spec_error_text_lists_count_and_each_issue(specs_dir):
    with pytest.raises(ie.SpecError) as info:
        ie.load_spec(specs_dir / "broken.yaml")
    lines = str(info.value).splitlines()
    assert lines[0] == "9 problems in model spec:"
    assert lines[5] == (f"  {specs_dir / 'broken.yaml'}:20: flow 'kill': rate uses undefined symbol 'k_kil' "
                        "(did you mean 'k_kill'?)")


@pytest.mark.parametrize("rate, message", [
    ("kkil*T", "flow 'kill': rate uses undefined symbol 'kkil' (did you mean 'kkill'?)"),
    ("kkill*T + E", "flow 'kill': rate 'kkill * T + E' combines 'kkill * T' in cell / day with 'E' in cell "
                    "(terms that are added, compared or chosen between need the same unit)"),
    ("exp(T)*kkill", "flow 'kill': rate argument of exp() in 'exp(T)' has unit cell "
                     "(exp() needs a dimensionless argument)"),
    ("kkill*T**n", "flow 'kill': rate 'T ** n' raises a quantity in cell to a symbolic power "
                   "(divide the base by a reference value first, or use hill(x, K, n))"),
    ("foo(T)", "flow 'kill': rate unknown function 'foo' (allowed: exp, log, log10, sqrt, tanh, sin, cos, abs, min, "
               "max, hill, piecewise)"),
    ("__import__('os')", "flow 'kill': rate unknown function '__import__' (allowed: exp, log, log10, sqrt, "
                         "tanh, sin, cos, abs, min, max, hill, piecewise)"),
    ("T.real", "flow 'kill': rate 'T.real' is not allowed in an expression (use numbers, names, + - * / ^, "
               "comparisons and the functions exp, log, log10, sqrt, tanh, sin, cos, abs, min, max, hill, piecewise)"),
    ("kkill*(T", "flow 'kill': rate cannot parse 'kkill*(T': '(' was never closed "
                 "(check brackets and operators (+ - * / ^))"),
    ("hill(T, kkill, 2)", "flow 'kill': rate 'hill(T, kkill, 2)' combines 'T' in cell with 'kkill' in 1 / day "
                          "(terms that are added, compared or chosen between need the same unit)"),
    ("piecewise(kkill*T, time < 1, 0, time)", "flow 'kill': rate 'piecewise(kkill * T, time < 1, 0, time)' "
                                              "needs an odd number of arguments "
                                              "(piecewise(value1, condition1, ..., otherwise))"),
    ("kkill*T*10^400", "flow 'kill': rate '10 ** 400' is not a finite real number "
                       "(check the numbers in this power)"),
    ("kkill*T*1e999", "flow 'kill': rate '1e309' is too large for double precision (write numbers below 1e300)"),
    ("piecewise(kkill*T, time)", "flow 'kill': rate 'piecewise' takes 3 or more arguments, got 2 "
                                 "(piecewise(value1, condition1, ..., otherwise))"),
    ("piecewise(kkill*T, n < log(log(0.5)), 0)",
     "flow 'kill': rate cannot evaluate 'piecewise(kkill*T, n < log(log(0.5)), 0)': Invalid comparison of "
     "non-real -0.366512920581664 + I*pi (every part must be a finite real number: no division by zero, "
     "no log of zero or of a negative constant)"),
    ("kkill*T*max(1, 1/(n - n))",
     "flow 'kill': rate cannot evaluate 'kkill*T*max(1, 1/(n - n))': The argument 'zoo' is not comparable. "
     "(every part must be a finite real number: no division by zero, no log of zero or of a negative "
     "constant)"),
    ("kkill*T/(n - n)",
     "flow 'kill': rate 'kkill*T/(n - n)' is not a finite real number: sympy makes it zoo*T*kkill (every part "
     "must be a finite real number: no division by zero, no log of zero or of a negative constant)"),
])
def test_expression_errors(tmp_path, rate, message):
    assert _messages(_kill_spec(tmp_path, rate)) == [f"9: {message}"]


def _kill_spec(tmp_path, rate: str, extra: str = ""):
    """A two-state spec whose flow 'kill' (line 9) has `rate`; `extra`: YAML lines after it."""
    return _spec(tmp_path, textwrap.dedent(f"""\
        name: one
        states:
          T: {{unit: cell, initial: 1}}
          E: {{unit: cell, initial: 1}}
        parameters:
          kkill: {{value: 1, unit: 1/day}}
          n: {{value: 2}}
        flows:
          kill: {{from: T, rate: "{rate}"}}
        """) + extra)


def test_structure_errors(tmp_path):
    path = _spec(tmp_path, """\
        name: structure
        colour: blue
        states:
          T: {unit: cell, initial: 1}
          lambda: {unit: cell, initial: 1}
        parameters:
          T: {value: 1, unit: cell}
          r: {value: 1, unit: 1/day, prior: {distribution: gamma, k: 2}}
        flows:
          grow: {to: Tumour, rate: r*T}
          nowhere: {rate: r*T}
        doses:
          drug: {target: D, amount_unit: mg}
        default_regimen: weekly
        """)
    assert _messages(path) == [
        "2: spec: unknown key 'colour' (allowed: name, kind, description, time_unit, references, uses, requires, "
        "provides, overrides, states, parameters, expressions, flows, observables, doses, regimens, "
        "default_regimen)",
        "5: state 'lambda': 'lambda' is a reserved word (rename it)",
        "7: parameter 'T': name is also used by a state (every state, parameter, expression and observable "
        "needs its own name)",
        "8: parameter 'r': unknown prior distribution 'gamma' (allowed: lognormal, normal, uniform, loguniform)",
        "10: flow 'grow': 'to' names unknown state 'Tumour' (states: T, lambda)",
        "11: flow 'nowhere': has neither 'from' nor 'to' (name the state it leaves or enters)",
        "13: dose 'drug': target 'D' is not a state (states: T, lambda)",
        "14: default_regimen: no regimen named 'weekly'",
    ]


def test_yaml_syntax_error_names_line(tmp_path):
    path = _spec(tmp_path, "name: bad\nstates:\n  T: {unit: cell, initial: 1\nparameters: {}\n")
    (msg,) = _messages(path)
    assert msg.startswith("4: YAML: ") and msg.endswith("(check indentation and colons)")


def test_composition_conflicts_and_unbound_requirements(tmp_path, specs_dir):
    path = _spec(tmp_path, f"""\
        name: clash
        uses: [{specs_dir / 'tumour_module.yaml'}]
        parameters:
          r: {{value: 0.5, unit: 1/day}}
        overrides:
          rr: 0.4
        """)
    module = specs_dir / "tumour_module.yaml"
    with pytest.raises(ie.SpecError) as info:
        ie.load_spec(path)
    assert sorted(str(i) for i in info.value.issues) == sorted([
        f"{module}:5: required name 'effector': is required by a module but no module or spec defines it "
        "(add a module that provides it, or bind it with uses: [{module: ..., bind: {NAME: EXISTING}}])",
        f"{path}:4: parameter 'r': is also defined at {module}:11 "
        "(rename one, or set a new value under 'overrides:' in the model)",
        f"{path}:6: override 'rr': overrides nothing: no such parameter (or state with 'initial') "
        "(did you mean 'r'?)",
    ])


def test_unknown_builtin_suggests_close_name():
    with pytest.raises(ie.SpecError) as info:
        ie.load_spec("benchmark_referense")
    assert str(info.value.issues[0]) == ("benchmark_referense: spec 'benchmark_referense': no such file or "
                                         "built-in spec (did you mean 'benchmark_reference'?)")


def test_issue_without_line_or_hint_formats_plainly():
    assert str(Issue("m.yaml", None, "spec", "empty")) == "m.yaml: spec: empty"


def test_simulate_on_uncompiled_spec_says_compile_first():
    spec = ie.load_spec("benchmark_reference")
    with pytest.raises(TypeError, match=r"^simulate\(\) needs a compiled model, got the spec "
                                        r"'benchmark_reference': call ie.compile_model\(spec, "
                                        r"backend='numba'\) first$"):
        ie.simulate(spec, times=np.arange(3.0))


def test_dose_amount_expressions_are_checked(tmp_path):
    path = _spec(tmp_path, """\
        name: amounts
        states:
          C: {unit: mg/L, initial: 0}
        parameters:
          V: {value: 3, unit: L}
          dose_per_kg: {value: 10, unit: mg/kg}
          weight: {value: 70, unit: kg}
          ke: {value: 0.1, unit: 1/day}
        flows:
          out: {from: C, rate: ke*C}
        doses:
          drug: {target: C, amount_unit: mg, conversion: 1/V}
        regimens:
          by_weight:
            doses:
              - {drug: drug, amount: dose_per_kg*weight, every: 21, count: 4}
              - {drug: drug, amount: dose_per_kg, every: 21, count: 4}
              - {drug: drug, amount: dose_per_kgg, every: 21, count: 4}
        """)
    assert _messages(path) == [
        "17: regimen 'by_weight' dose 2: amount has unit milligram / kilogram, expected milligram "
        "(doses of 'drug' are in mg)",
        "18: regimen 'by_weight' dose 3: amount uses undefined symbol 'dose_per_kgg' (did you mean 'dose_per_kg'?)",
    ]


@pytest.mark.parametrize("rate, message", [
    ("kkill*T*max(1, 1/x)", "rate cannot be evaluated once named expressions are substituted: The argument 'zoo' "
                            "is not comparable."),
    ("kkill*T/x", "rate is not a finite real number once named expressions are substituted: sympy makes it "
                  "zoo*T*kkill"),
])
def test_rates_that_are_not_finite_once_substituted_are_spec_errors(tmp_path, rate, message):
    """x = n - n is 0, which the rates only meet when the named expression is substituted."""
    path = _kill_spec(tmp_path, rate, 'expressions:\n  x: {value: "n - n"}\n')
    assert _messages(path) == [f"9: flow 'kill': {message} (every part must be a finite real number: no division "
                               "by zero, no log of zero or of a negative constant)"]
