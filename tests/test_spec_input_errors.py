"""Bad input in a model spec gives one SpecError listing each problem as file:line: item: message (hint):
never another exception, never a silent load. Every message verbatim."""

from __future__ import annotations

import textwrap

import pytest

import immunoedit_models as ie

#: A small valid spec; each test edits one line of it.
BASE = textwrap.dedent("""\
    name: one
    time_unit: day
    states:
      T: {unit: cell, initial: 1}
      E: {unit: cell, initial: 1}
    parameters:
      kkill: {value: 1, unit: 1/day, bounds: [0, 10]}
      n: {value: 2}
    flows:
      kill: {from: T, to: E, rate: kkill*T}
    observables:
      total: {value: T + E, unit: cell}
    doses:
      drug: {target: T, amount_unit: cell}
    regimens:
      weekly:
        doses:
          - {drug: drug, amount: 1, every: 7, count: 3}
    """)

#: A module that needs 'effector' and provides T; USER binds effector to its own state E.
MODULE = textwrap.dedent("""\
    name: tum
    kind: module
    requires:
      effector: {unit: cell, value: 0}
    provides: [T]
    states:
      T: {unit: cell, initial: 1}
    parameters:
      kkill: {value: 1, unit: 1/cell/day}
    flows:
      kill: {from: T, rate: kkill*effector*T}
    """)
USER = textwrap.dedent("""\
    name: user
    uses:
      - {module: tum, bind: {effector: E}}
    states:
      E: {unit: cell, initial: 1}
    """)

FINITE = ("(every part must be a finite real number: no division by zero, no log of zero or of a negative "
          "constant)")
UNIT_TEXT = "(write unit text such as cell/day, ng/mL or dimensionless)"
EMPTY = "spec: is empty (write a YAML mapping with 'name', 'states', ...)"
BIG = "1" + "0" * 400


def _edited(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new)


def _messages(tmp_path, text: str | bytes, module: str | bytes | None = None) -> list[str]:
    """The issues of loading `text` (model.yaml, beside `module` as tum.yaml), paths relative to tmp_path."""
    if module is not None:
        (tmp_path / "tum.yaml").write_bytes(module.encode() if isinstance(module, str) else module)
    path = tmp_path / "model.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(ie.SpecError) as info:
        ie.load_spec(path)
    return [str(issue).removeprefix(f"{tmp_path}/") for issue in info.value.issues]


def test_base_specs_load(tmp_path):
    (tmp_path / "tum.yaml").write_text(MODULE)
    (tmp_path / "model.yaml").write_text(USER)
    (tmp_path / "base.yaml").write_text(BASE)
    assert ie.load_spec(tmp_path / "model.yaml").modules == ("tum",)
    assert ie.load_spec(tmp_path / "base.yaml").name == "one"


@pytest.mark.parametrize("old, new, message", [
    ("T: {unit: cell,", "T: {unit: 'cell/(day',", "4: state 'T': unknown unit 'cell/(day' (did you mean 'cell'?)"),
    ("amount_unit: cell", "amount_unit: 'cell)'", "14: dose 'drug': unknown unit 'cell)' (did you mean 'cell'?)"),
    ("time_unit: day", "time_unit: 'day)'", "2: time_unit: unknown unit 'day)' (did you mean 'day'?)"),
    ("time_unit: day", "time_unit: dya", "2: time_unit: unknown unit 'dya' (did you mean 'dyn'?)"),
    ("time_unit: day", "time_unit: mg", "2: time_unit: 'mg' is not a unit of time (write day or hour)"),
    ("time_unit: day", "time_unit: [day]", f"2: time_unit: 'time_unit' must be a unit, got ['day'] {UNIT_TEXT}"),
    ("n: {value: 2}", "n: {value: 2, unit: {a: 1}}",
     f"8: parameter 'n': 'unit' must be a unit, got {{'a': 1}} {UNIT_TEXT}"),
    ("n: {value: 2}", "n: {value: 2, unit: [cell]}",
     f"8: parameter 'n': 'unit' must be a unit, got ['cell'] {UNIT_TEXT}"),
    ("n: {value: 2}", "n: {value: 2, unit: true}", f"8: parameter 'n': 'unit' must be a unit, got True {UNIT_TEXT}"),
])
def test_bad_units(tmp_path, old, new, message):
    assert _messages(tmp_path, _edited(old, new)) == [f"model.yaml:{message}"]


def test_unbalanced_bracket_in_a_required_unit(tmp_path):
    module = _edited("effector: {unit: cell,", "effector: {unit: 'cell/(day',", MODULE)
    assert _messages(tmp_path, USER, module) == [
        "tum.yaml:4: required name 'E': unknown unit 'cell/(day' (did you mean 'cell'?)"]


@pytest.mark.parametrize("old, new, message", [
    ("n: {value: 2}", "n: {value: .nan}", "8: parameter 'n': 'value' must be a finite number, got nan"),
    ("n: {value: 2}", "n: {value: 'nan'}", "8: parameter 'n': 'value' must be a finite number, got nan"),
    ("n: {value: 2}", "n: {value: .inf}", "8: parameter 'n': 'value' must be a finite number, got inf"),
    ("n: {value: 2}", "n: {value: 1e400}", "8: parameter 'n': 'value' must be a finite number, got inf"),
    ("n: {value: 2}", "n: .nan", "8: parameter 'n': 'value' must be a finite number, got nan"),
    ("n: {value: 2}", f"n: {{value: {BIG}}}",
     "8: parameter 'n': 'value' is too large for double precision (write numbers below 1e300)"),
    ("T: {unit: cell, initial: 1}", "T: {unit: cell, initial: .nan}",
     "4: state 'T': 'initial' must be a finite number, got nan"),
    ("T: {unit: cell, initial: 1}", f"T: {{unit: cell, initial: {BIG}}}",
     "4: state 'T': initial value '100000...000 (401 digits)' is too large for double precision "
     "(write numbers below 1e300)"),
    ("rate: kkill*T}", f"rate: kkill*T*{BIG}}}",
     "10: flow 'kill': rate '100000...000 (401 digits)' is too large for double precision "
     "(write numbers below 1e300)"),
    ("from: T,", "from: {T: .nan},", "10: flow 'kill': coefficient of 'T' must be a finite number, got nan"),
    ("value: T + E,", "value: .inf,", "12: observable 'total': 'value' must be a finite number, got inf"),
    ("amount: 1,", "amount: .inf,", "18: regimen 'weekly' dose 1: 'amount' must be a finite number, got inf"),
    ("every: 7,", "every: .nan,", "18: regimen 'weekly' dose 1: 'every' must be a finite number, got nan"),
    ("count: 3}", "count: 3, start: .inf}", "18: regimen 'weekly' dose 1: 'start' must be a finite number, got inf"),
    ("count: 3}", "count: 3, duration: .nan}",
     "18: regimen 'weekly' dose 1: 'duration' must be a finite number, got nan"),
    ("bounds: [0, 10]", "bounds: [0, .inf]",
     "7: parameter 'kkill': 'bounds' must be [low, high] of finite numbers, got [0, inf]"),
    ("regimens:", "overrides:\n  kkill: {value: .nan}\n  T: {initial: .inf}\nregimens:",
     "16: override 'kkill': 'value' must be a finite number, got nan"),
])
def test_numbers_must_be_finite(tmp_path, old, new, message):
    messages = _messages(tmp_path, _edited(old, new))
    assert messages[0] == f"model.yaml:{message}"
    if "overrides" in new:
        assert messages[1:] == ["model.yaml:17: override 'T': 'initial' must be a finite number, got inf"]


@pytest.mark.parametrize("rate, characters", [("+".join(["kkill*T"] * 40000), 319999),     # RecursionError
                                              ("-" * 100000 + "kkill*T", 100007)])            # MemoryError
def test_very_long_expressions(tmp_path, rate, characters):
    assert _messages(tmp_path, _edited("rate: kkill*T}", f"rate: '{rate}'}}")) == [
        f"model.yaml:10: flow 'kill': rate expression of {characters} characters is too long or too deeply nested "
        "(split it into named expressions under 'expressions:')"]


@pytest.mark.parametrize("rate, sympy", [
    ("kkill*T*log(-1)", "I*pi*T*kkill"),
    ("kkill*T*sqrt(-1)", "I*T*kkill"),
    ("kkill*T*1e300*1e300", "1.0e+600*T*kkill"),
    ("kkill*T*exp(1000)", "T*kkill*exp(1000)"),
])
def test_complex_or_overflowing_expressions(tmp_path, rate, sympy):
    assert _messages(tmp_path, _edited("rate: kkill*T}", f"rate: {rate}}}")) == [
        f"model.yaml:10: flow 'kill': rate '{rate}' is not a finite real number: sympy makes it {sympy} {FINITE}"]


def test_division_by_zero_once_named_expressions_are_substituted(tmp_path):
    text = _edited("regimens:", "expressions:\n  x: n - n\n  y: kkill/x\nregimens:").replace("rate: kkill*T}",
                                                                                             "rate: y*T}")
    assert _messages(tmp_path, text) == [
        "model.yaml:17: expression 'y': is not a finite real number once named expressions are substituted: "
        f"sympy makes it zoo*kkill {FINITE}"]


@pytest.mark.parametrize("old, new, message", [
    ("rate: kkill*T}", "rate: kkill*T > 1e6}", "10: flow 'kill': rate 'kkill*T > 1e6' is a condition, not a number"),
    ("value: T + E,", "value: T > E,", "12: observable 'total': 'T > E' is a condition, not a number"),
])
def test_conditions_are_not_numbers(tmp_path, old, new, message):
    assert _messages(tmp_path, _edited(old, new)) == [
        f"model.yaml:{message} (use it inside piecewise(value, condition, otherwise))"]


@pytest.mark.parametrize("old, new, message", [
    ("E: {unit: cell, initial: 1}", "E: {unit: cell, initial: 0, scale: log}",
     "5: state 'E': a log-scale state needs initial > 0, got 0 (start it at a small positive value, or use "
     "scale: linear)"),
    ("from: T, to: E,", "from: null, to: null,",
     "10: flow 'kill': has neither 'from' nor 'to' (name the state it leaves or enters)"),
    ("from: T, to: E,", "from: [], to: E,",
     "10: flow 'kill': 'from' names no state (name a state, or leave 'from' out)"),
    ("from: T, to: E,", "from: [T, T], to: E,", "10: flow 'kill': 'from' lists 'T' 2 times (write {T: 2})"),
    ("bounds: [0, 10]}", "bounds: [0, 10], prior: {distribution: uniform, low: -1, high: 5}}",
     "7: parameter 'kkill': uniform prior [-1, 5] reaches outside the bounds [0, 10] (narrow the prior or widen "
     "the bounds)"),
    ("bounds: [0, 10]}", "bounds: [0, 10], prior: {distribution: loguniform, low: 1, high: 50}}",
     "7: parameter 'kkill': loguniform prior [1, 50] reaches outside the bounds [0, 10] (narrow the prior or "
     "widen the bounds)"),
    ("bounds: [0, 10]}", "bounds: [0, 10], prior: {distribution: lognormal, median: true, sigma: 0.3}}",
     "7: parameter 'kkill': lognormal prior values must be finite numbers, got {'median': True, 'sigma': 0.3}"),
    ("count: 3}", "count: 1e12}", "18: regimen 'weekly' dose 1: 'count' must be a whole number from 1 to 100000, "
                                  "got 1e+12"),
    ("count: 3}", "count: 100001}", "18: regimen 'weekly' dose 1: 'count' must be a whole number from 1 to "
                                    "100000, got 100001"),
    ("count: 3}", "count: true}", "18: regimen 'weekly' dose 1: 'count' must be a number, got True"),
    ("every: 7,", "every: -21,", "18: regimen 'weekly' dose 1: 'every' must be > 0 (the interval between doses), "
                                 "got -21"),
    ("every: 7, count: 3", "every: 0, count: 1",
     "18: regimen 'weekly' dose 1: 'every' must be > 0 (the interval between doses), got 0"),
    ("{drug: drug, amount", "{amount", "18: regimen 'weekly' dose 1: missing 'drug'"),
    ("{drug: drug, amount", "{drug: null, amount", "18: regimen 'weekly' dose 1: missing 'drug'"),
    ("target: T, ", "", "14: dose 'drug': missing 'target'"),
    ("regimens:", "expressions:\n  x: {unit: cell}\nregimens:", "16: expression 'x': missing 'value'"),
])
def test_items_that_made_no_sense_are_reported_once(tmp_path, old, new, message):
    assert _messages(tmp_path, _edited(old, new)) == [f"model.yaml:{message}"]


def test_overrides_name_keys_their_item_takes(tmp_path):
    text = _edited("regimens:", "overrides:\n  T: {value: 5}\n  E: 3\n  kkill: {initial: 2}\n"
                                "  n: {bounds: [0, 1], prior: none}\nregimens:")
    assert _messages(tmp_path, text) == [
        "model.yaml:16: override 'T': 'value' does not apply to a state (a state override takes initial)",
        "model.yaml:17: override 'E': 'value' does not apply to a state (a state override takes initial)",
        "model.yaml:18: override 'kkill': 'initial' does not apply to a parameter (a parameter override takes "
        "value, bounds, prior, source)",
        "model.yaml:19: parameter 'n': value 2 is outside its bounds [0, 1] (widen the bounds or correct the value)",
    ]


UNBOUND = ("tum.yaml:4: required name 'effector': is required by a module but no module or spec defines it (add a "
           "module that provides it, or bind it with uses: [{module: ..., bind: {NAME: EXISTING}}])")


@pytest.mark.parametrize("bind, message", [
    ("[a, b]", "'bind' must map names to names, got ['a', 'b'] (bind: {NAME_IN_MODULE: NAME_HERE})"),
    ("a", "'bind' must map names to names, got 'a' (bind: {NAME_IN_MODULE: NAME_HERE})"),
    ("5", "'bind' must map names to names, got 5 (bind: {NAME_IN_MODULE: NAME_HERE})"),
    ("{effector: null}",
     "'bind' must map names to names, got {'effector': None} (bind: {NAME_IN_MODULE: NAME_HERE})"),
    ("{efector: E}", "binds 'efector', which 'tum' does not define (did you mean 'effector'?)"),
])
def test_bad_bindings(tmp_path, bind, message):
    text = _edited("bind: {effector: E}", f"bind: {bind}", USER)
    assert _messages(tmp_path, text, MODULE) == [f"model.yaml:3: uses 'tum': {message}", UNBOUND]


@pytest.mark.parametrize("line, message", [
    ("provides: 5", "provides: must be a list of names, got 5 (e.g. provides: [T, kill_rate])"),
    ("provides: true", "provides: must be a list of names, got True (e.g. provides: [T, kill_rate])"),
    ("provides: T", "provides: must be a list of names, got 'T' (e.g. provides: [T, kill_rate])"),
    ("provides: {T: 1}", "provides: must be a list of names, got {'T': 1} (e.g. provides: [T, kill_rate])"),
    ("provides: [T, [zz]]", "provides: entry 2 must be a name, got ['zz'] (e.g. provides: [T, kill_rate])"),
    ("provides: [T, zz]", "provides 'zz': is not defined in this spec"),
    ("references: 5", "references: must be a list of citations, got 5 "
                      "(e.g. references: [{key: smith2020, title: ...}])"),
    ("references: true", "references: must be a list of citations, got True "
                         "(e.g. references: [{key: smith2020, title: ...}])"),
])
def test_bad_provides_and_references_name_the_module_line(tmp_path, line, message):
    assert _messages(tmp_path, USER, _edited("provides: [T]", line, MODULE)) == [f"tum.yaml:5: {message}"]


@pytest.mark.parametrize("text, message", [
    ("", EMPTY),
    ("# nothing yet\n", EMPTY),
    ("~\n", EMPTY),
    (b"name: one\n# 5 \xb5g\n", "file: is not UTF-8 text: byte 0xb5 cannot be decoded (save the file as UTF-8)"),
    ("name: one\nstates:\n  T: {unit: cell\x07, initial: 1}\n",
     "YAML: control character U+0007 is not allowed (delete it: YAML files are printable text)"),
])
def test_unreadable_or_empty_files(tmp_path, text, message):
    line = 2 if isinstance(text, bytes) else 3 if "states" in text else 1
    assert _messages(tmp_path, text) == [f"model.yaml:{line}: {message}"]
    assert _messages(tmp_path, USER, text) == [f"tum.yaml:{line}: {message}"]
