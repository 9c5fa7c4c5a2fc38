"""The references of a model and of every module it uses, as BibTeX or text (`immunoedit cite`).

Each spec lists its sources under `references:`, one mapping per work:

    references:
      - key: kuznetsov1994                 # citation key: letters, digits and _ : - . only
        type: article                      # BibTeX entry type (default: article with a journal, else misc)
        authors: [Kuznetsov VA, Makalkin IA, Taylor MA, Perelson AS]   # "Last AB" or "Last, First"
        title: "Nonlinear dynamics of immunogenic tumors: ..."
        journal: Bull Math Biol
        year: 1994
        volume: 56
        number: 2
        pages: 295-321
        doi: 10.1007/BF02460644
        note: what the spec takes from it  # free text; `text:` (a whole citation as one string) also works

The loader keeps `references` as plain data; this module checks them when they are cited. A key
cited by several specs is printed once; two specs giving one key different bibliographic data is an
error naming both places.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ruamel.yaml import YAML

from .errors import Issue, SpecError
from .spec.expressions import suggest

#: Bibliographic fields, in the order they are printed; `authors` becomes BibTeX `author`.
BIB_FIELDS = ("authors", "title", "journal", "booktitle", "year", "volume", "number", "pages", "publisher",
              "howpublished", "doi", "url")
ENTRY_KEYS = ("key", "type", *BIB_FIELDS, "note", "text")
ENTRY_TYPES = ("article", "book", "incollection", "inproceedings", "misc", "online", "software", "techreport")
FORMATS = ("bibtex", "text")
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_:.\-]*$")
_INITIALS = re.compile(r"^[A-Z]{1,4}$")


@dataclass(frozen=True)
class Reference:
    """One cited work: its key, BibTeX entry type and fields, and the specs citing it.

    fields: BIB_FIELDS present (strings; `authors` a tuple of names). free_text: only a `text:`
    citation was given (kept whole as the title). notes: (spec name, note) for every spec citing
    it, in citing order. file, line: where the entry kept is written.
    """

    key: str
    entry_type: str
    fields: Mapping[str, Any]
    free_text: bool
    notes: tuple[tuple[str, str], ...]
    file: str
    line: int | None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


def references(name_or_path: str | Path) -> list[Reference]:
    """References of a spec and of every module it uses (the spec's own first, then modules in use order)."""
    from .spec.loader import load_spec, resolve_spec_path

    spec = load_spec(name_or_path)
    path = Path(spec.path)
    files = [(spec.name, path)] + [(m, resolve_spec_path(m, relative_to=path.parent)) for m in spec.modules]
    merged: dict[str, Reference] = {}
    issues: list[Issue] = []
    for spec_name, file in files:
        for ref in _read_references(spec_name, file, issues):
            known = merged.get(ref.key)
            merged[ref.key] = ref if known is None else _merge(known, ref, issues)
    if issues:
        raise SpecError(issues)
    return list(merged.values())


def cite(name_or_path: str | Path, format: str = "bibtex") -> str:  # noqa: A002 - the CLI option's name
    """The references of a model and its modules as BibTeX (`format='bibtex'`) or text (`'text'`)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got '{format}'")
    refs = references(name_or_path)
    return to_bibtex(refs) if format == "bibtex" else to_text(refs)


# ---- reading --------------------------------------------------------------------------------------
def _read_references(spec_name: str, file: Path, issues: list[Issue]) -> list[Reference]:
    doc = YAML(typ="rt").load(file.read_text(encoding="utf-8")) or {}
    entries = doc.get("references") or []
    if not isinstance(entries, list):
        issues.append(Issue(str(file), _line(doc, "references"), "references",
                            "must be a list of {key, title, authors, ...} mappings"))
        return []
    return [ref for i, entry in enumerate(entries)
            if (ref := _reference(spec_name, file, entries, i, entry, issues)) is not None]


def _reference(spec_name: str, file: Path, entries: Any, index: int, entry: Any,
               issues: list[Issue]) -> Reference | None:
    line = _item_line(entries, index)
    item = f"reference {index + 1}"
    if not isinstance(entry, Mapping):
        issues.append(Issue(str(file), line, item, "must be a mapping with at least 'key' and 'title' (or 'text')"))
        return None
    key = str(entry.get("key", ""))
    item = f"reference '{key}'" if key else item
    before = len(issues)
    for name in entry:
        if name not in ENTRY_KEYS:
            issues.append(Issue(str(file), line, item, f"unknown field '{name}'",
                                suggest(str(name), ENTRY_KEYS) or "allowed: " + ", ".join(ENTRY_KEYS)))
    mistyped = [name for name in ENTRY_KEYS if name != "authors" and not _scalar(entry.get(name))]
    for name in mistyped:
        issues.append(Issue(str(file), line, item, f"'{name}' must be text or a number, got {_kind(entry[name])}",
                            "write one value, in quotes if it holds [ ] { } or :"))
    if "key" not in mistyped and not _KEY.match(key):
        issues.append(Issue(str(file), line, item, f"'key' must start with a letter and use only letters, digits "
                            f"and _ : - . (got {key!r})", "e.g. key: kuznetsov1994"))
    if not {"title", "text"} & set(mistyped) and not _text(entry.get("title")) and not _text(entry.get("text")):
        issues.append(Issue(str(file), line, item, "has neither 'title' nor 'text'", "give the work's title"))
    entry_type = str(entry.get("type") or ("article" if entry.get("journal") else "misc"))
    if "type" not in mistyped and entry_type not in ENTRY_TYPES:
        issues.append(Issue(str(file), line, item, f"unknown type '{entry_type}'",
                            suggest(entry_type, ENTRY_TYPES) or "allowed: " + ", ".join(ENTRY_TYPES)))
    authors = entry.get("authors")
    if authors is not None and not (isinstance(authors, list) and authors
                                    and all(isinstance(a, str) and a.strip() for a in authors)):
        issues.append(Issue(str(file), line, item, "'authors' must be a non-empty list of names",
                            "e.g. authors: [Kuznetsov VA, Makalkin IA], or leave the field out"))
    if len(issues) > before:
        return None
    fields: dict[str, Any] = {name: _text(entry.get(name)) for name in BIB_FIELDS
                              if name != "authors" and _text(entry.get(name))}
    if authors:
        fields["authors"] = tuple(a.strip() for a in authors)
    free_text = not fields.get("title")
    if free_text:
        fields["title"] = _text(entry.get("text"))
    note = _text(entry.get("note")) or (_text(entry.get("text")) if not free_text else "")
    return Reference(key, entry_type, fields, free_text, ((spec_name, note),), str(file), line)


def _scalar(value: Any) -> bool:
    """True for a field YAML read as one value: missing, text or a number (not true/false)."""
    return value is None or isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _text(value: Any) -> str:
    """A scalar field's text, stripped ("" when missing)."""
    return "" if value is None else str(value).strip()


def _kind(value: Any) -> str:
    """What a YAML value is, in words, for an error message."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "true/false" if isinstance(value, bool) else type(value).__name__


def _merge(known: Reference, other: Reference, issues: list[Issue]) -> Reference:
    """One key cited twice: the structured entry wins; conflicting bibliographic data is an error."""
    if not known.free_text and not other.free_text:
        a, b = known.fields, other.fields
        clash = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
        if clash or known.entry_type != other.entry_type:
            issues.append(Issue(other.file, other.line, f"reference '{other.key}'",
                                f"differs from the entry at {known.where} in {', '.join(clash) or 'type'}",
                                "give one work one key, with the same fields wherever it is cited"))
    kept = other if known.free_text and not other.free_text else known
    return Reference(kept.key, kept.entry_type, kept.fields, kept.free_text, known.notes + other.notes,
                     kept.file, kept.line)


def _line(mapping: Any, key: str) -> int | None:
    try:
        return mapping.lc.key(key)[0] + 1
    except (AttributeError, KeyError, TypeError):
        return None


def _item_line(sequence: Any, index: int) -> int | None:
    try:
        return sequence.lc.item(index)[0] + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        return None


# ---- writing --------------------------------------------------------------------------------------
def to_bibtex(refs: list[Reference]) -> str:
    """BibTeX entries, each preceded by a comment line naming the specs that cite it."""
    blocks = []
    for ref in refs:
        cited = "; ".join(f"{spec}: {note}" if note else spec for spec, note in ref.notes)
        comment = " ".join(cited.replace("@", " at ").split())      # an @ would open an entry
        lines = [f"% cited by {comment}", f"@{ref.entry_type}{{{ref.key},"]
        for name in BIB_FIELDS:
            if name in ref.fields:
                value = ref.fields[name]
                text = _bibtex_authors(value) if name == "authors" else str(value)
                bib_name = "author" if name == "authors" else name
                lines.append(f"  {bib_name} = {{{text if name in ('doi', 'url') else _escape(text)}}},")
        first_note = next((note for _, note in ref.notes if note), "")
        if first_note:
            lines.append(f"  note = {{{_escape(first_note)}}},")
        lines.append("}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def to_text(refs: list[Reference]) -> str:
    """One citation per reference (Vancouver style), then what each citing spec takes from it."""
    out = []
    for ref in refs:
        out.append(f"[{ref.key}] {_text_citation(ref)}")
        out += [f"    {spec}: {note}" for spec, note in ref.notes if note]
    return "\n".join(out) + "\n"


def _text_citation(ref: Reference) -> str:
    f = ref.fields
    if ref.free_text:
        return f["title"]
    parts = []
    if "authors" in f:
        parts.append(", ".join(_vancouver(a) for a in f["authors"]) + ".")
    title = f["title"].rstrip(".")
    parts.append(title if title.endswith(("?", "!")) else title + ".")
    source = f.get("journal") or f.get("booktitle") or f.get("publisher") or f.get("howpublished") or ""
    issue = "".join([f.get("year", ""), f";{f['volume']}" if "volume" in f else "",
                     f"({f['number']})" if "number" in f else "", f":{f['pages']}" if "pages" in f else ""])
    if source or issue:
        parts.append(" ".join(x for x in (source, issue) if x) + ".")
    if "doi" in f:
        parts.append(f"doi:{f['doi']}")
    elif "url" in f:
        parts.append(f["url"])
    return " ".join(parts)


def _split_name(name: str) -> tuple[str, str]:
    """(last, first-or-initials) from 'Last AB' or 'Last, First'."""
    if "," in name:
        last, first = (s.strip() for s in name.split(",", 1))
        return last, first
    *last, tail = name.split()
    if last and _INITIALS.match(tail):
        return " ".join(last), tail
    return name.strip(), ""


def _bibtex_authors(authors: tuple[str, ...]) -> str:
    names = []
    for name in authors:
        if name.strip().rstrip(".").lower() in ("et al", "others"):
            names.append("others")
            continue
        last, first = _split_name(name)
        if _INITIALS.match(first):
            first = " ".join(f"{c}." for c in first)
        names.append(f"{{{last}}}, {first}" if " " in last else (f"{last}, {first}" if first else last))
    return " and ".join(names)


def _vancouver(name: str) -> str:
    if name.strip().rstrip(".").lower() in ("et al", "others"):
        return "et al"
    last, first = _split_name(name)
    if first and not _INITIALS.match(first):
        first = "".join(part[0].upper() for part in re.split(r"[\s.\-]+", first) if part)
    return f"{last} {first}".strip()


def _escape(text: str) -> str:
    """TeX specials escaped, and braces kept balanced (an unbalanced one is escaped)."""
    text = re.sub(r"(?<!\\)([&%#_$])", r"\\\1", " ".join(text.split()))
    depth = 0
    for ch in text:
        depth += (ch == "{") - (ch == "}")
        if depth < 0:
            break
    if depth != 0:
        text = text.replace("{", r"\{").replace("}", r"\}")
    return text
