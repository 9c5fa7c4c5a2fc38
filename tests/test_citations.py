"""`immunoedit cite` and immunoedit_models.citations: the BibTeX of every built-in spec parses back
(a small brace-matching parser below) to the fields written in the specs' YAML `references:`."""

from __future__ import annotations

import re
import textwrap

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

import immunoedit_models as ie
from immunoedit_models.citations import cite, references, to_bibtex, to_text
from immunoedit_models.cli import app


def parse_bibtex(text: str) -> dict[str, tuple[str, dict[str, str]]]:
    """key -> (entry type, {field: value}); values unescaped. Fails on unbalanced braces."""
    entries = {}
    for match in re.finditer(r"@(\w+)\{([^,\s]+),", text):
        i, fields = match.end(), {}
        while True:
            field = re.compile(r"\s*(\w+)\s*=\s*\{").match(text, i)
            if not field:
                break
            depth, j = 1, field.end()
            while depth:
                assert j < len(text), f"unbalanced braces in {match.group(2)}"
                depth += {"{": 1, "}": -1}.get(text[j], 0) if text[j - 1] != "\\" else 0
                j += 1
            fields[field.group(1)] = re.sub(r"\\([&%#_$])", r"\1", text[field.end():j - 1])
            i = j + 1                                              # past the comma
        assert re.compile(r"\s*\}").match(text, i), f"entry {match.group(2)} is not closed"
        assert match.group(2) not in entries, f"key {match.group(2)} printed twice"
        entries[match.group(2)] = (match.group(1), fields)
    return entries


def yaml_references(name):
    return YAML(typ="safe").load(ie.builtin_specs()[name].read_text()).get("references") or []


@pytest.mark.parametrize("name", sorted(ie.builtin_specs()))
def test_every_builtin_spec_cites_as_parseable_bibtex(name):
    refs = references(name)
    text = to_bibtex(refs)
    entries = parse_bibtex(text)
    assert len(entries) == len(refs) == text.count("\n@")
    for entry in yaml_references(name):
        kind, fields = entries[entry["key"]]
        if entry.get("title"):
            assert fields["title"] == " ".join(str(entry["title"]).split())
        for field in ("year", "volume", "pages", "doi", "journal"):
            if field in entry:
                assert fields[field] == str(entry[field]), (entry["key"], field)
    assert to_text(refs).count("\n[") + 1 == len(entries)


def test_every_builtin_model_has_a_reference():
    models = [n for n, path in ie.builtin_specs().items() if path.parent.name == "models"]
    assert "kuznetsov_1994" in models and "de_pillis_2006" in models
    for name in models:
        assert yaml_references(name), f"model '{name}' lists no references"


def test_authors_and_article_fields_are_structured():
    kind, fields = parse_bibtex(cite("kuznetsov_1994"))["kuznetsov1994"]
    assert kind == "article"
    assert fields["author"] == "Kuznetsov, V. A. and Makalkin, I. A. and Taylor, M. A. and Perelson, A. S."
    assert (fields["journal"], fields["year"], fields["volume"], fields["number"], fields["pages"]) == \
        ("Bull Math Biol", "1994", "56", "2", "295-321")
    text = cite("de_pillis_2006", format="text")
    assert text.startswith("[depillis2006] de Pillis LG, Gu W, Radunskaya AE. Mixed immunotherapy and chemotherapy "
                           "of tumors: modeling, applications and biological interpretations. J Theor Biol "
                           "2006;238(4):841-862. doi:10.1016/j.jtbi.2005.06.037\n")
    assert parse_bibtex(cite("de_pillis_2006"))["depillis2006"][1]["author"].startswith("{de Pillis}, L. G. and")


def test_a_model_cites_its_modules_once_per_key():
    text = cite("de_pillis_2005_ll")
    entries = parse_bibtex(text)
    assert set(entries) == {"depillis2005", "getparameters_m"}                # the second comes from the module
    assert "cited by de_pillis_2005_ll: Table 1, ligand variant ll" in text and "; de_pillis_2005_core:" in text


def write(tmp_path, name, text):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


MODULE = """\
    name: part
    kind: module
    references:
      - {key: shared, title: "One title", year: 2001}
    states:
      X: {unit: cell, initial: 1}
    """


def test_conflicting_and_malformed_references_are_errors(tmp_path):
    write(tmp_path, "part", MODULE)
    model = write(tmp_path, "whole", """\
        name: whole
        uses: [part]
        references:
          - {key: shared, title: "Another title", year: 2001}
          - {key: 9bad, title: x}
          - {key: fine, titel: "typo"}
        """)
    with pytest.raises(ie.SpecError) as info:
        cite(model)
    issues = [str(i) for i in info.value.issues]
    assert issues == [
        f"{model}:5: reference '9bad': 'key' must start with a letter and use only letters, digits and _ : - . "
        "(got '9bad') (e.g. key: kuznetsov1994)",
        f"{model}:6: reference 'fine': unknown field 'titel' (did you mean 'title'?)",
        f"{model}:6: reference 'fine': has neither 'title' nor 'text' (give the work's title)",
        f"{tmp_path / 'part.yaml'}:4: reference 'shared': differs from the entry at {model}:4 in title "
        "(give one work one key, with the same fields wherever it is cited)",
    ]


def test_special_characters_are_escaped(tmp_path):
    path = write(tmp_path, "m", """\
        name: m
        references:
          - key: odd
            title: "R&D at 50% {unbalanced"
            note: "see published_models.md #2 @ home"
        states:
          X: {unit: cell, initial: 1}
        """)
    text = cite(path)
    assert r"title = {R\&D at 50\% \{unbalanced}" in text
    assert text.splitlines()[0] == "% cited by m: see published_models.md #2 at home"   # no @ outside entries
    assert parse_bibtex(text)["odd"] == ("misc", {"title": r"R&D at 50% \{unbalanced",
                                                  "note": "see published_models.md #2 @ home"})


def test_cite_cli(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["cite", "kirschner_panetta_1998"])
    assert ok.exit_code == 0 and set(parse_bibtex(ok.output)) == {"kirschner1998", "biomd732"}
    text = runner.invoke(app, ["cite", "kirschner_panetta_1998", "--format", "text"])
    assert text.exit_code == 0 and text.output.startswith("[kirschner1998] Kirschner D, Panetta JC. Modeling")
    unknown = runner.invoke(app, ["cite", "kuznetsov"])
    assert unknown.exit_code == 1
    assert "spec 'kuznetsov': no such file or built-in spec (did you mean 'kuznetsov_1994'?)" in unknown.output
    bad = runner.invoke(app, ["cite", "kuznetsov_1994", "--format", "xml"])
    assert bad.exit_code == 1 and "format must be one of bibtex, text, got 'xml'" in bad.output
