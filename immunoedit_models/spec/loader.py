"""Load model specs from YAML with line numbers kept, compose modules, and validate.

`load_spec(name_or_path)` is the one entry point: it collects every problem in the spec and the
modules it uses and raises a single `SpecError` listing each with file:line, item, and a hint.
"""

from __future__ import annotations

import ast
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError

from ..errors import Issue, SpecError
from .expressions import MAX_NUMBER, suggest
from .schema import (DOSE_ITEM_KEYS, DOSE_KEYS, EXPRESSION_KEYS, FLOW_KEYS, KINDS, MAX_DOSE_COUNT,
                     OBSERVABLE_KEYS, OVERRIDE_KEYS, PARAMETER_KEYS, PARAMETER_OVERRIDE_KEYS,
                     REGIMEN_KEYS, REQUIRE_KEYS, STATE_KEYS, STATE_OVERRIDE_KEYS, TOP_LEVEL_KEYS,
                     USE_KEYS, DoseItem, DoseSpec, ExpressionSpec, FlowSpec,
                     Location, ModelSpec, ObservableSpec, ParameterSpec, RegimenSpec, RequireSpec,
                     StateSpec)

#: The built-in spec library, shipped inside the package.
SPEC_ROOT = Path(__file__).resolve().parent.parent / "model_specs"
SPEC_FOLDERS = ("models", "modules", "pk")


def builtin_specs() -> dict[str, Path]:
    """Built-in spec name -> file, over models/, modules/ and pk/."""
    found: dict[str, Path] = {}
    for folder in SPEC_FOLDERS:
        for path in sorted((SPEC_ROOT / folder).glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def resolve_spec_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A file path for a built-in name, a path, or a name next to the composing spec."""
    text = str(name_or_path)
    candidates = [Path(text)]
    if relative_to is not None:
        candidates += [relative_to / text, relative_to / f"{text}.yaml",
                       *(relative_to.parent / folder / f"{text}.yaml" for folder in SPEC_FOLDERS)]
    for path in candidates:
        if path.is_file():
            return path
    builtins = builtin_specs()
    if text in builtins:
        return builtins[text]
    folder, _, stem = text.partition("/")
    if folder in SPEC_FOLDERS and (SPEC_ROOT / folder / f"{stem}.yaml").is_file():   # e.g. pk/nivolumab
        return SPEC_ROOT / folder / f"{stem}.yaml"
    hint = suggest(text, builtins) or "run `immunoedit models` to list the built-in specs"
    raise SpecError(Issue(text, None, f"spec '{text}'", "no such file or built-in spec", hint))


# ---- YAML with locations --------------------------------------------------------------------
def read_yaml(path: Path, issues: list[Issue]) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        issues.append(Issue(str(path), None, "file", f"cannot read: {exc.strerror}"))
        return None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        issues.append(Issue(str(path), line, "file", f"is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} "
                            "cannot be decoded", "save the file as UTF-8"))
        return None
    try:
        return YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        issues.append(Issue(str(path), line, "YAML", f"{exc.problem}", "check indentation and colons"))
    except ReaderError as exc:
        line = text[:exc.position].count("\n") + 1
        issues.append(Issue(str(path), line, "YAML", f"control character U+{exc.character:04X} is not allowed",
                            "delete it: YAML files are printable text"))
    return None


class SpecReader:
    """Turns the YAML tree of one file into spec items, collecting issues with locations."""

    def __init__(self, path: Path, issues: list[Issue]):
        self.file = str(path)
        self.issues = issues

    def line_of(self, mapping: Any, key: Any = None) -> int | None:
        try:
            if key is None:
                return mapping.lc.line + 1
            return mapping.lc.key(key)[0] + 1
        except (AttributeError, KeyError, TypeError):
            return None

    def loc(self, mapping: Any, key: Any = None) -> Location:
        return Location(self.file, self.line_of(mapping, key))

    def at(self, body: Mapping, key: str, loc: Location) -> Location:
        """Where `key` of `body` is written; `loc` (its item) when that is not known."""
        return self.loc(body, key) if self.line_of(body, key) else loc

    def issue(self, loc: Location, item: str, message: str, hint: str | None = None) -> None:
        self.issues.append(Issue(loc.file, loc.line, item, message, hint))

    def check_keys(self, mapping: Mapping, allowed: Iterable[str], item: str) -> None:
        allowed = tuple(allowed)
        for key in mapping:
            if key not in allowed:
                self.issue(self.loc(mapping, key), item, f"unknown key '{key}'",
                           suggest(str(key), allowed) or "allowed: " + ", ".join(allowed))

    def section(self, doc: Mapping, key: str) -> Mapping:
        value = doc.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.issue(self.loc(doc, key), key, "must be a mapping of name: {...}")
            return {}
        return value

    def entry(self, section: Mapping, name: Any, kind: str, allowed: tuple[str, ...],
              shorthand: str | None = None) -> tuple[Mapping, Location, str] | None:
        """The mapping of one named item; `shorthand` names the key a bare scalar stands for."""
        item = f"{kind} '{name}'"
        loc = self.loc(section, name)
        body = section[name]
        if not isinstance(body, Mapping):
            if shorthand is not None and isinstance(body, (int, float, str)):
                return {shorthand: body}, loc, item
            self.issue(loc, item, "must be a mapping of keys " + ", ".join(allowed))
            return None
        self.check_keys(body, allowed, item)
        return body, loc, item

    def number(self, body: Mapping, key: str, loc: Location, item: str, default: Any = ...) -> Any:
        if key not in body:
            if default is ...:
                self.issue(loc, item, f"missing '{key}'")
                return math.nan
            return default
        value = body[key]
        try:
            number = float(str(value) if isinstance(value, bool) or not isinstance(value, (int, float)) else value)
        except ValueError:
            self.issue(self.at(body, key, loc), item, f"'{key}' must be a number, got {value!r}")
            return math.nan
        except OverflowError:   # an integer of hundreds of digits
            self.issue(self.at(body, key, loc), item, f"'{key}' is too large for double precision",
                       "write numbers below 1e300")
            return math.nan
        if not math.isfinite(number):
            self.issue(self.at(body, key, loc), item, f"'{key}' must be a finite number, got {number}")
            return math.nan
        return number

    def count(self, body: Mapping, key: str, loc: Location, item: str, default: int | None,
              minimum: int = 1) -> int | None:
        """An integer setting >= minimum (patients, steps, iterations, a seed); an issue and the
        default otherwise."""
        value = body.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.issue(self.at(body, key, loc), item,
                       f"'{key}' must be an integer >= {minimum}, got {value!r}",
                       f"e.g. '{key}: {max(default or minimum, minimum)}'")
            return default
        return value

    def text(self, body: Mapping, key: str, loc: Location, item: str, default: Any = ...) -> Any:
        if key not in body or body[key] is None:
            if default is ...:
                self.issue(loc, item, f"missing '{key}'")
                return None
            return default
        value = body[key]
        if isinstance(value, float) and not math.isfinite(value):
            self.issue(self.at(body, key, loc), item, f"'{key}' must be a finite number, got {value}")
            return None
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)

    def unit(self, body: Mapping, key: str, loc: Location, item: str, default: str | None) -> str | None:
        """Unit text such as 'cell/day' (a number such as 1 is read as text); None, reported, when
        the value is a mapping, a list or a boolean."""
        value = body.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.issue(self.at(body, key, loc), item, f"'{key}' must be a unit, got {self.plain(value)!r}",
                       "write unit text such as cell/day, ng/mL or dimensionless")
            return None
        return str(value)

    # ---- sections -------------------------------------------------------------------------
    def states(self, doc) -> dict[str, StateSpec]:
        out = {}
        section = self.section(doc, "states")
        for name in section:
            got = self.entry(section, name, "state", STATE_KEYS)
            if got:
                body, loc, item = got
                out[str(name)] = StateSpec(str(name), self.unit(body, "unit", loc, item, "dimensionless"),
                                           self.text(body, "initial", loc, item),
                                           str(body.get("description", "")), loc,
                                           str(body.get("scale", "linear")))
        return out

    def parameters(self, doc) -> dict[str, ParameterSpec]:
        out = {}
        section = self.section(doc, "parameters")
        for name in section:
            got = self.entry(section, name, "parameter", PARAMETER_KEYS, shorthand="value")
            if got:
                body, loc, item = got
                out[str(name)] = ParameterSpec(
                    str(name), self.number(body, "value", loc, item),
                    self.unit(body, "unit", loc, item, "dimensionless"),
                    self.bounds(body, loc, item), self.plain(body.get("prior")),
                    None if body.get("source") is None else str(body["source"]),
                    str(body.get("description", "")), loc)
        return out

    def bounds(self, body, loc, item) -> tuple[float, float] | None:
        value = body.get("bounds")
        if value is None:
            return None
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= MAX_NUMBER
                           for v in value)):
            self.issue(loc, item, f"'bounds' must be [low, high] of finite numbers, got {self.plain(value)!r}")
            return None
        return float(value[0]), float(value[1])

    def expressions(self, doc) -> dict[str, ExpressionSpec]:
        out = {}
        section = self.section(doc, "expressions")
        for name in section:
            got = self.entry(section, name, "expression", EXPRESSION_KEYS, shorthand="value")
            if got:
                body, loc, item = got
                out[str(name)] = ExpressionSpec(str(name), self.text(body, "value", loc, item),
                                                self.unit(body, "unit", loc, item, None),
                                                str(body.get("description", "")), loc)
        return out

    def flows(self, doc) -> dict[str, FlowSpec]:
        out = {}
        section = self.section(doc, "flows")
        for name in section:
            got = self.entry(section, name, "flow", FLOW_KEYS)
            if got:
                body, loc, item = got
                if body.get("from") is None and body.get("to") is None:
                    self.issue(loc, item, "has neither 'from' nor 'to'", "name the state it leaves or enters")
                out[str(name)] = FlowSpec(str(name), self.ends(body, "from", loc, item),
                                          self.ends(body, "to", loc, item),
                                          self.text(body, "rate", loc, item),
                                          str(body.get("description", "")), loc)
        return out

    def ends(self, body, key, loc, item) -> dict[str, str | float]:
        value = body.get(key)
        if value is None:
            return {}
        if isinstance(value, str):
            return {value: 1}
        if isinstance(value, (Mapping, list)) and not value:
            self.issue(loc, item, f"'{key}' names no state", f"name a state, or leave '{key}' out")
            return {}
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                if isinstance(v, float) and not math.isfinite(v):
                    self.issue(loc, item, f"coefficient of '{k}' must be a finite number, got {v}")
                else:
                    out[str(k)] = v if isinstance(v, (int, float)) else str(v)
            return out
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            for v in dict.fromkeys(value):
                if value.count(v) > 1:
                    self.issue(loc, item, f"'{key}' lists '{v}' {value.count(v)} times",
                               f"write {{{v}: {value.count(v)}}}")
            return dict.fromkeys(value, 1)
        self.issue(loc, item, f"'{key}' must be a state name, a list of names, or a mapping "
                              "state: coefficient")
        return {}

    def observables(self, doc) -> dict[str, ObservableSpec]:
        out = {}
        section = self.section(doc, "observables")
        for name in section:
            got = self.entry(section, name, "observable", OBSERVABLE_KEYS)
            if got:
                body, loc, item = got
                out[str(name)] = ObservableSpec(str(name), self.text(body, "value", loc, item),
                                                self.unit(body, "unit", loc, item, "dimensionless"),
                                                str(body.get("description", "")), loc)
        return out

    def doses(self, doc) -> dict[str, DoseSpec]:
        out = {}
        section = self.section(doc, "doses")
        for name in section:
            got = self.entry(section, name, "dose", DOSE_KEYS)
            if got:
                body, loc, item = got
                out[str(name)] = DoseSpec(str(name), self.text(body, "target", loc, item),
                                          self.unit(body, "amount_unit", loc, item, "dimensionless"),
                                          self.text(body, "conversion", loc, item, 1),
                                          str(body.get("description", "")), loc)
        return out

    def regimens(self, doc) -> dict[str, RegimenSpec]:
        out = {}
        section = self.section(doc, "regimens")
        for name in section:
            got = self.entry(section, name, "regimen", REGIMEN_KEYS)
            if not got:
                continue
            body, loc, item = got
            items = body.get("doses") or []
            if not isinstance(items, list):
                self.issue(loc, item, "'doses' must be a list of {drug, amount, start, every, count}")
                items = []
            out[str(name)] = RegimenSpec(str(name), tuple(filter(None, (self.dose_item(d, loc, item, i)
                                                                      for i, d in enumerate(items)))),
                                         str(body.get("description", "")), loc)
        return out

    def dose_item(self, body, parent_loc, parent_item, index) -> DoseItem | None:
        item = f"{parent_item} dose {index + 1}"
        if not isinstance(body, Mapping):
            self.issue(parent_loc, item, "must be a mapping {drug, amount, start, every, count}")
            return None
        loc = self.loc(body)
        self.check_keys(body, DOSE_ITEM_KEYS, item)
        every = self.number(body, "every", loc, item, None)
        count = self.number(body, "count", loc, item, 1.0)
        if math.isnan(count):   # reported by number()
            count = 1
        elif not (1 <= count <= MAX_DOSE_COUNT and count.is_integer()):
            self.issue(loc, item, f"'count' must be a whole number from 1 to {MAX_DOSE_COUNT}, got {count:g}")
            count = 1
        drug = self.text(body, "drug", loc, item)
        return DoseItem(None if drug is None else str(drug),
                        self.text(body, "amount", loc, item), self.number(body, "start", loc, item, 0.0),
                        every, int(count), self.number(body, "duration", loc, item, 0.0), loc)

    def requires(self, doc) -> dict[str, RequireSpec]:
        out = {}
        section = self.section(doc, "requires")
        for name in section:
            got = self.entry(section, name, "required name", REQUIRE_KEYS)
            if got:
                body, loc, item = got
                out[str(name)] = RequireSpec(str(name), self.unit(body, "unit", loc, item, "dimensionless"),
                                             self.number(body, "value", loc, item),
                                             str(body.get("description", "")), loc)
        return out

    def plain(self, value: Any) -> Any:
        """ruamel containers -> plain dicts/lists (for priors and references)."""
        if isinstance(value, Mapping):
            return {str(k): self.plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.plain(v) for v in value]
        return value


# ---- composition ----------------------------------------------------------------------------
def _rename_text(text: str | float | None, names: Mapping[str, str]) -> str | float | None:
    """Rename symbols inside an expression (module binding); numbers pass through."""
    if not names or not isinstance(text, str):
        return text
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval")
    except SyntaxError:
        return text  # reported when the expression is parsed
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in names:
            node.id = names[node.id]
    return ast.unparse(tree)


def _bind(raw: dict[str, dict], names: Mapping[str, str]) -> dict[str, dict]:
    """Apply a module binding (module name -> model name) to every item and expression."""
    if not names:
        return raw
    rn = lambda n: names.get(n, n)  # noqa: E731
    rt = lambda t: _rename_text(t, names)  # noqa: E731
    out = dict(raw)
    out["states"] = {rn(k): replace(s, name=rn(k), initial=rt(s.initial)) for k, s in raw["states"].items()}
    out["parameters"] = {rn(k): replace(p, name=rn(k)) for k, p in raw["parameters"].items()}
    out["expressions"] = {rn(k): replace(e, name=rn(k), value=rt(e.value)) for k, e in raw["expressions"].items()}
    out["flows"] = {k: replace(f, source={rn(s): rt(c) for s, c in f.source.items()},
                               target={rn(s): rt(c) for s, c in f.target.items()}, rate=rt(f.rate))
                    for k, f in raw["flows"].items()}
    out["observables"] = {k: replace(o, value=rt(o.value)) for k, o in raw["observables"].items()}
    out["doses"] = {k: replace(d, target=rn(d.target), conversion=rt(d.conversion)) for k, d in raw["doses"].items()}
    out["requires"] = {rn(k): replace(r, name=rn(k)) for k, r in raw["requires"].items()}
    out["provides"] = {rn(n): loc for n, loc in raw["provides"].items()}
    return out


NAMED_SECTIONS = ("states", "parameters", "expressions", "flows", "observables", "doses", "regimens")
SYMBOL_SECTIONS = ("states", "parameters", "expressions")


def _merge(into: dict[str, dict], part: dict[str, dict], issues: list[Issue]) -> None:
    """Add a module's items; a name defined twice is an error naming both places."""
    defined = {n: item for sec in SYMBOL_SECTIONS for n, item in into[sec].items()}
    for section in NAMED_SECTIONS:
        for name, item in part[section].items():
            other = defined.get(name) if section in SYMBOL_SECTIONS else into[section].get(name)
            if other is not None and other is not item:
                issues.append(Issue(item.loc.file, item.loc.line, f"{section[:-1]} '{name}'",
                                    f"is also defined at {other.loc}",
                                    "rename one, or set a new value under 'overrides:' in the model"))
                continue
            into[section][name] = item
    for name, req in part["requires"].items():
        into["requires"].setdefault(name, req)
    for name, loc in part["provides"].items():
        into["provides"].setdefault(name, loc)


def _read_spec(path: Path, issues: list[Issue], stack: tuple[Path, ...]) -> dict[str, Any] | None:
    """Read one file and, recursively, the modules it uses; returns merged raw sections."""
    reported = len(issues)
    doc = read_yaml(path, issues)
    if doc is None:
        if len(issues) == reported:     # no YAML error: the file holds nothing
            issues.append(Issue(str(path), 1, "spec", "is empty",
                                "write a YAML mapping with 'name', 'states', ..."))
        return None
    reader = SpecReader(path, issues)
    if not isinstance(doc, Mapping):
        issues.append(Issue(str(path), 1, "spec", "must be a YAML mapping with 'name', 'states', ..."))
        return None
    reader.check_keys(doc, TOP_LEVEL_KEYS, "spec")
    kind = str(doc.get("kind", "model"))
    if kind not in KINDS:
        reader.issue(reader.loc(doc, "kind"), "spec", f"'kind' must be one of {', '.join(KINDS)}, got '{kind}'")
    raw: dict[str, Any] = {
        "name": str(doc.get("name", path.stem)), "kind": kind,
        "description": str(doc.get("description", "")).strip(),
        "time_unit": reader.unit(doc, "time_unit", reader.loc(doc), "time_unit", "day"),
        "time_unit_loc": reader.loc(doc, "time_unit"),
        "references": tuple(reader.plain(_listed(doc, "references", reader, "a list of citations",
                                                       "references: [{key: smith2020, title: ...}]"))),
        "states": reader.states(doc), "parameters": reader.parameters(doc),
        "expressions": reader.expressions(doc), "flows": reader.flows(doc),
        "observables": reader.observables(doc), "doses": reader.doses(doc),
        "regimens": reader.regimens(doc), "requires": reader.requires(doc),
        "provides": _provides(doc, reader),
        "default_regimen": None if doc.get("default_regimen") is None else str(doc["default_regimen"]),
        "default_regimen_loc": reader.loc(doc, "default_regimen"),
        "modules": [], "texts": [path.read_text(encoding="utf-8")],
    }
    own = {sec: dict(raw[sec]) for sec in NAMED_SECTIONS}
    merged = {**raw, **{sec: {} for sec in NAMED_SECTIONS}, "requires": {}, "provides": {}}
    for use, use_loc in _uses(doc, reader):
        module_name, binding = use
        try:
            module_path = resolve_spec_path(module_name, relative_to=path.parent)
        except SpecError as exc:
            issues.extend(replace(i, file=use_loc.file, line=use_loc.line, item=f"uses '{module_name}'")
                          for i in exc.issues)
            continue
        if module_path.resolve() in stack:
            reader.issue(use_loc, f"uses '{module_name}'", "circular use of modules",
                         " -> ".join(p.stem for p in (*stack, module_path)))
            continue
        part = _read_spec(module_path, issues, (*stack, module_path.resolve()))
        if part is None:
            continue
        if part["kind"] != "module":
            reader.issue(use_loc, f"uses '{module_name}'", f"'{module_name}' is a {part['kind']}, not a module",
                         "only specs with kind: module can be used")
        names = [n for sec in (*SYMBOL_SECTIONS, "requires") for n in part[sec]]
        for name in binding:
            if name not in names:
                reader.issue(use_loc, f"uses '{module_name}'",
                             f"binds '{name}', which '{module_name}' does not define",
                             suggest(name, names) or "bind: {NAME_IN_MODULE: NAME_HERE}")
        part = _bind(part, binding)
        _merge(merged, part, issues)
        merged["modules"].extend([*part["modules"], part["name"]])
        merged["texts"].extend(part["texts"])
        if part["time_unit"] != raw["time_unit"]:
            reader.issue(use_loc, f"uses '{module_name}'", f"module time unit '{part['time_unit']}' differs "
                         f"from this spec's '{raw['time_unit']}'", "write every spec in one time unit (day)")
    _merge(merged, {**own, "requires": raw["requires"], "provides": raw["provides"]}, issues)
    _apply_overrides(doc, reader, merged)
    return merged


PROVIDES_EXAMPLE = "provides: [T, kill_rate]"


def _listed(doc: Mapping, key: str, reader: SpecReader, what: str, example: str) -> list:
    """The list under `key` (empty when absent); an issue and an empty list when it is no list."""
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        reader.issue(reader.loc(doc, key), key, f"must be {what}, got {reader.plain(value)!r}", f"e.g. {example}")
        return []
    return value


def _provides(doc: Mapping, reader: SpecReader) -> dict[str, Location]:
    """The names a spec provides, each with the line that lists it."""
    names = _listed(doc, "provides", reader, "a list of names", PROVIDES_EXAMPLE)
    out = {}
    for i, name in enumerate(names):
        loc = Location(reader.file, names.lc.item(i)[0] + 1 if hasattr(names, "lc") else None)
        if isinstance(name, str):
            out.setdefault(name, loc)
        else:
            reader.issue(loc, "provides", f"entry {i + 1} must be a name, got {reader.plain(name)!r}",
                         f"e.g. {PROVIDES_EXAMPLE}")
    return out


def _uses(doc: Mapping, reader: SpecReader) -> list[tuple[tuple[str, dict[str, str]], Location]]:
    value = doc.get("uses") or []
    if not isinstance(value, list):
        reader.issue(reader.loc(doc, "uses"), "uses", "must be a list of module names or {module, bind}")
        return []
    out = []
    for i, entry in enumerate(value):
        line = value.lc.item(i)[0] + 1 if hasattr(value, "lc") else None
        loc = Location(reader.file, line)
        if isinstance(entry, str):
            out.append(((entry, {}), loc))
        elif isinstance(entry, Mapping) and "module" in entry:
            item = f"uses '{entry['module']}'"
            reader.check_keys(entry, USE_KEYS, item)
            bind = entry.get("bind") or {}
            if not (isinstance(bind, Mapping) and all(isinstance(v, str) for v in (*bind, *bind.values()))):
                reader.issue(reader.at(entry, "bind", loc), item, f"'bind' must map names to names, got "
                             f"{reader.plain(bind)!r}", "bind: {NAME_IN_MODULE: NAME_HERE}")
                bind = {}
            out.append(((str(entry["module"]), dict(bind)), loc))
        else:
            reader.issue(loc, f"uses entry {i + 1}", "must be a module name or {module: NAME, bind: {...}}")
    return out


def _apply_overrides(doc: Mapping, reader: SpecReader, merged: dict[str, Any]) -> None:
    section = reader.section(doc, "overrides")
    for name in section:
        got = reader.entry(section, name, "override", OVERRIDE_KEYS, shorthand="value")
        if not got:
            continue
        body, loc, item = got
        name = str(name)
        kind = "parameter" if name in merged["parameters"] else "state" if name in merged["states"] else None
        allowed = PARAMETER_OVERRIDE_KEYS if kind == "parameter" else STATE_OVERRIDE_KEYS
        for key in body:
            if kind is not None and key in OVERRIDE_KEYS and key not in allowed:
                reader.issue(reader.at(body, key, loc), item, f"'{key}' does not apply to a {kind}",
                             f"a {kind} override takes {', '.join(allowed)}")
        if kind == "parameter":
            p = merged["parameters"][name]
            # `prior: none` fixes a module's varying parameter for every patient of this model
            fixed = "prior" in body and body["prior"] in (None, "none")
            merged["parameters"][name] = replace(
                p, value=reader.number(body, "value", loc, item, p.value),
                bounds=reader.bounds(body, loc, item) or p.bounds,
                prior=None if fixed else (reader.plain(body.get("prior")) or p.prior),
                source=str(body["source"]) if body.get("source") else p.source, loc=loc)
        elif kind == "state":
            if "initial" in body:
                merged["states"][name] = replace(merged["states"][name],
                                                 initial=reader.text(body, "initial", loc, item), loc=loc)
        else:
            known = list(merged["parameters"]) + list(merged["states"])
            reader.issue(loc, item, "overrides nothing: no such parameter (or state with 'initial')",
                         suggest(name, known))


def _argument_issue(message: str, hint: str | None) -> SpecError:
    """A SpecError about `load_spec`'s argument itself."""
    return SpecError(Issue("load_spec", None, "argument", message, hint))


def _spec_argument(name_or_path: Any) -> str | Path:
    """`load_spec`'s argument checked: a built-in name or a path to a file (with ~ expanded); not
    another object, a directory, YAML text or the name of a trial design."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        loaded = isinstance(name_or_path, ModelSpec) or isinstance(getattr(name_or_path, "spec", None), ModelSpec)
        raise _argument_issue(f"must be a built-in spec name or a path to a YAML spec, got "
                              f"{type(name_or_path).__name__}",
                              "it is loaded already: use it (or its .spec) as is" if loaded else
                              "e.g. load_spec('kuznetsov_1994') or load_spec('my_model.yaml')")
    text = str(name_or_path)
    if "\n" in text:
        raise _argument_issue("is text with line breaks, not a spec name or path",
                              "load_spec reads a file: save the YAML as a .yaml file and pass its path")
    path = Path(text).expanduser() if text.startswith("~") else Path(text)
    if text and path.is_dir():
        found = sorted(p.name for p in path.glob("*.yaml"))
        raise _argument_issue(f"'{text}' is a directory, not a spec file",
                              f"pass one of its specs, e.g. '{path / found[0]}'" if found else "it holds no .yaml specs")
    plain_name = text and Path(text).name == text and not path.is_file()
    if plain_name and (SPEC_ROOT / "trials" / f"{text}.yaml").is_file() and text not in builtin_specs():
        raise _argument_issue(f"'{text}' is a trial design, not a model spec",
                              f"load it with immunoedit_models.trials.load_trial('{text}')")
    return path if text.startswith("~") else name_or_path


def load_spec(name_or_path: str | Path) -> ModelSpec:
    """Load, compose and validate a spec (a built-in name such as 'benchmark_reference', or a path).

    Raises SpecError listing every problem found, each with file:line, item and a hint.
    """
    from .validate import validate  # local import: validate depends on this module's types

    path = resolve_spec_path(_spec_argument(name_or_path))
    issues: list[Issue] = []
    raw = _read_spec(path, issues, (path.resolve(),))
    if raw is None:
        raise SpecError(issues)
    spec, more = validate(raw, str(path))
    issues.extend(more)
    if issues:
        raise SpecError(sorted(issues, key=lambda i: (i.file, i.line or 0)))
    return spec
