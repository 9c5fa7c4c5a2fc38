"""A small trial report: Markdown and HTML with summary tables, figures (PNG) and provenance."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from immunoedit_models.errors import ResultError
from immunoedit_models.plots import save_figure
from immunoedit_models.trials.analysis import ENDPOINTS, check_trial, summarise_trial
from immunoedit_models.trials.plots import check_observed, plot_forest, plot_km, plot_spider, plot_waterfall

#: Dataset attributes listed under provenance, in this order, when present.
PROVENANCE_KEYS = ("trial", "model", "seed", "spec_hash", "structure_hash", "backend", "solver", "rtol",
                   "atol", "visits", "n_patients", "created", "spec_path")

Table = tuple[list[str], list[list[str]]]

#: The files a trial report writes; a folder holding only these (and our report.md) is rewritten.
REPORT_FILES = re.compile(r"report\.(md|html)|(km|waterfall|spider|forest)_.+\.png")


def write_report(trial: xr.Dataset, out_dir: str | Path, *, summary: xr.Dataset | None = None,
                 comparisons: Sequence[str | tuple[str, str]] | None = None,
                 observed: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]] | None = None,
                 title: str | None = None) -> Path:
    """Write report.md, report.html and the figures into out_dir; return the Markdown path.

    summary: from `analysis.summarise_trial`; by default the trial Dataset itself when it already
    carries the summaries (`hr_pfs`), else computed here for `comparisons`. observed: optional
    data to overlay on the KM plots, endpoint -> {label: (months, events)}.
    """
    out = report_folder(out_dir)
    check_trial(trial, ENDPOINTS, "write_report")
    for endpoint, data in (observed or {}).items():
        if endpoint not in ENDPOINTS:
            raise ResultError(f"write_report: observed has endpoint {endpoint!r}; its keys are endpoints "
                              f"({', '.join(ENDPOINTS)}), each mapping a label to (months, events)")
        check_observed(data, "write_report")
    summary = _summary(trial, summary, comparisons)
    out.mkdir(parents=True, exist_ok=True)
    title = title or f"In-silico trial: {trial.attrs.get('trial', trial.attrs.get('model', 'simulation'))}"
    figures = _figures(trial, summary, out, observed or {})
    sections: list[tuple[str, Table, str]] = [
        ("Arms", _arm_table(summary), "Medians from Kaplan-Meier (95 % CI, exponential Greenwood); "
         "ORR = CR + PR over all patients (95 % Clopper-Pearson CI). Months = days / 30.4375."),
        ("Comparisons", _comparison_table(summary), "Cox hazard ratio (Efron ties) with 95 % CI, "
         "experimental vs control; two-sided log-rank p."),
    ]
    if "hr_pfs_subgroup" in summary:
        sections.append(("Subgroups", _subgroup_table(summary), "Cox hazard ratios within each subgroup."))
    beyond = _beyond_progression_table(trial)
    if beyond[1]:
        sections.append(("Treatment beyond progression", beyond, "Doses given on or after the first "
                         "RECIST progression (arms with treat_beyond_progression), until a later scan "
                         "confirmed it (iRECIST), death or the data cut-off."))
    sections.append(("Provenance", _provenance_table(trial), ""))
    (out / "report.md").write_text(_markdown(title, sections, figures))
    (out / "report.html").write_text(_html(title, sections, figures))
    return out / "report.md"


def report_folder(out_dir: str | Path) -> Path:
    """out_dir, checked before anything is computed: a new or empty folder, or one holding only an
    earlier trial report (which is rewritten). A file, or a folder with anything else, is refused
    (ResultError), so nothing a user saved is replaced."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ResultError(f"write_report: '{out}' is a file, not a folder: give a folder for report.md, "
                          "report.html and the figures")
    foreign = sorted(p.name for p in out.iterdir() if not REPORT_FILES.fullmatch(p.name)) if out.is_dir() else []
    if not foreign and (out / "report.md").is_file() and not _is_trial_report(out / "report.md"):
        foreign = ["report.md"]
    if foreign:
        raise ResultError(f"write_report: '{out}' holds files that are not an earlier trial report's "
                          f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}): not writing there, "
                          "so none is replaced; choose a new or empty folder")
    return out


def _is_trial_report(path: Path) -> bool:
    """Whether report.md was written by write_report (its Provenance and Figures sections)."""
    text = path.read_text(errors="replace")
    return "\n## Provenance\n" in text and "\n## Figures\n" in text


def _summary(trial, summary, comparisons) -> xr.Dataset:
    if summary is not None:
        return summary
    if "pfs_median_months" in trial and comparisons is None:    # summaries of run_trial (single-arm: no HRs)
        return trial
    if comparisons is None:
        raise ResultError("write_report: the trial carries no summaries (pfs_median_months); pass summary= from "
                         "analysis.summarise_trial or comparisons=[('EXPERIMENTAL', 'CONTROL')]")
    return summarise_trial(trial, comparisons)


def _figures(trial, summary, out: Path, observed) -> list[tuple[str, str]]:
    """Render every figure the data allow; return (caption, file name) pairs."""
    made = []

    def save(fig, name, caption):
        save_figure(fig, out / name)
        made.append((caption, name))

    for endpoint in ("pfs", "os"):
        save(plot_km(trial, endpoint, observed=observed.get(endpoint)), f"km_{endpoint}.png",
             f"Kaplan-Meier: {endpoint.upper()}")
    for arm in trial["arm"].values:
        if "best_pct_change" in trial and np.isfinite(trial["best_pct_change"].sel(arm=arm)).any():
            save(plot_waterfall(trial, str(arm)), f"waterfall_{arm}.png", f"Waterfall: {arm}")
        if "sld_mm" in trial and "best_response" in trial:
            save(plot_spider(trial, str(arm)), f"spider_{arm}.png", f"Spider plot: {arm}")
    if "hr_pfs_subgroup" in summary:
        for comparison in summary["comparison"].values:
            for endpoint in ("pfs", "os"):
                save(plot_forest(summary, endpoint, str(comparison)), f"forest_{endpoint}_{comparison}.png",
                     f"Subgroup hazard ratios, {endpoint.upper()}: {comparison}")
    return made


def _arm_table(s: xr.Dataset) -> Table:
    header = ["arm", "n", "PFS median, months", "OS median, months"]
    landmarks = s["landmark_month"].values if "landmark_month" in s.coords else []
    header += [f"PFS at {m:g} months" for m in landmarks] + (["ORR"] if "orr" in s else [])
    rows = []
    for i, arm in enumerate(s["arm"].values):
        row = [str(arm), str(int(s["n_patients"].values[i])) if "n_patients" in s else ""]
        for e in ("pfs", "os"):
            row.append(_ci(s, f"{e}_median_months", i, "{:.1f}"))
        for k in range(len(landmarks)):
            row.append(_ci(s, "pfs_landmark", (i, k), "{:.1%}"))
        if "orr" in s:
            row.append(_ci(s, "orr", i, "{:.1%}"))
        rows.append(row)
    return header, rows


def _comparison_table(s: xr.Dataset) -> Table:
    header = ["comparison", "HR PFS (95 % CI)", "log-rank p (PFS)", "HR OS (95 % CI)", "log-rank p (OS)"]
    rows = [[str(c).replace("_vs_", " vs "),
             _ci(s, "hr_pfs", i, "{:.2f}"), _p(s, "logrank_p_pfs", i),
             _ci(s, "hr_os", i, "{:.2f}"), _p(s, "logrank_p_os", i)]
            for i, c in enumerate(s["comparison"].values)] if "comparison" in s.coords else []
    return header, rows


def _subgroup_table(s: xr.Dataset) -> Table:
    header = ["comparison", "subgroup", "n", "HR PFS (95 % CI)", "HR OS (95 % CI)"]
    rows = []
    for i, c in enumerate(s["comparison"].values):
        for j, g in enumerate(s["subgroup"].values):
            rows.append([str(c).replace("_vs_", " vs "), str(g), str(int(s["n_subgroup"].values[i, j])),
                         _ci(s, "hr_pfs_subgroup", (i, j), "{:.2f}"), _ci(s, "hr_os_subgroup", (i, j), "{:.2f}")])
    return header, rows


def _beyond_progression_table(trial: xr.Dataset) -> Table:
    """Per arm with doses after progression: patients progressed and so treated, doses after
    progression (median, 90th percentile, among those treated) and days from progression to its
    confirmation (median). No rows when no arm treats beyond progression."""
    header = ["arm", "progressed", "treated after progression", "doses after progression: median (90th pct)",
              "days to confirmation: median"]
    if not {"dose_day", "progression_day_kernel", "confirmed_progression_day"} <= set(trial):
        return header, []
    rows = []
    for arm in trial["arm"].values:
        s = trial.sel(arm=arm)
        pd_day = s["progression_day_kernel"].values
        progressed = np.isfinite(pd_day)
        after = np.sum(s["dose_day"].values >= pd_day[:, None], axis=-1)       # NaN (no dose) counts 0
        treated = progressed & (after > 0)
        if not treated.any():
            continue
        wait = s["confirmed_progression_day"].values[treated] - pd_day[treated]
        rows.append([str(arm), str(int(progressed.sum())), str(int(treated.sum())),
                     f"{np.median(after[treated]):g} ({np.percentile(after[treated], 90):g})",
                     number_text(np.median(wait), "{:.0f}")])
    return header, rows


def _provenance_table(trial: xr.Dataset) -> Table:
    rows = [[key, str(trial.attrs[key])] for key in PROVENANCE_KEYS if key in trial.attrs]
    versions = trial.attrs.get("versions")
    if versions:
        parsed = json.loads(versions) if isinstance(versions, str) else dict(versions)
        rows += [[f"version: {name}", str(v)] for name, v in parsed.items()]
    return ["item", "value"], rows


def _ci(s, name, index, fmt) -> str:
    if name not in s:
        return ""
    value = s[name].values[index]
    text = number_text(value, fmt)
    lower, upper = f"{name}_lower", f"{name}_upper"
    if lower in s and upper in s:
        text += f" ({number_text(s[lower].values[index], fmt)} to {number_text(s[upper].values[index], fmt)})"
    return text


def number_text(value, fmt: str = "{:.1f}") -> str:
    """A statistic as the papers print it: NR (not reached) for an infinite median, NA for none."""
    value = float(value)
    if np.isnan(value):
        return "NA"
    return "NR" if np.isinf(value) else fmt.format(value)


def _p(s, name, index) -> str:
    if name not in s:
        return ""
    p = float(s[name].values[index])
    return "NA" if np.isnan(p) else ("< 0.0001" if p < 1e-4 else f"{p:.4f}")


def _markdown(title, sections, figures) -> str:
    lines = [f"# {title}", ""]
    for heading, (header, rows), note in sections:
        lines += [f"## {heading}", ""]
        if note:
            lines += [note, ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    lines += ["## Figures", ""] + [f"![{caption}]({name})\n" for caption, name in figures]
    return "\n".join(lines)


def _html(title, sections, figures) -> str:
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}</style>",
             f"</head><body><h1>{esc(title)}</h1>"]
    for heading, (header, rows), note in sections:
        parts.append(f"<h2>{esc(heading)}</h2>" + (f"<p>{esc(note)}</p>" if note else ""))
        parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    parts.append("<h2>Figures</h2>")
    parts += [f"<figure><img src='{esc(name)}' alt='{esc(caption)}'><figcaption>{esc(caption)}</figcaption></figure>"
              for caption, name in figures]
    parts.append("</body></html>")
    return "\n".join(parts)
