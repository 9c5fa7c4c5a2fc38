"""Bad fitting problems and trial designs give one typed error listing every problem, verbatim.

Each case copies a shipped problem (fitting/reference_timecourse, fitting/relativity047) or the
small test design (tests/specs/trial_small.yaml) into tmp_path, mutates it by text replacement,
and compares the error's issues, `file:line: item: message (hint)`, with the expected text; the
line is that of a marker written in the mutated file.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Callable, Iterable

import pytest

from immunoedit_models.errors import FitError, SpecError
from immunoedit_models.fit.problem import load_problem
from immunoedit_models.trials.design import load_trial

ROOT = Path(__file__).resolve().parent.parent
TIMECOURSE = ROOT / "fitting" / "reference_timecourse"
TRIAL = ROOT / "fitting" / "relativity047"
DESIGN = ROOT / "tests" / "specs" / "trial_small.yaml"
HEADER = "observableId\tsimulationConditionId\ttime\tmeasurement\n"
TSV_HINT = "observableId, simulationConditionId, time, measurement [, noise]"
PUBLISHED_HINT = "analysis, population, endpoint, arm, statistic, value, ci_low, ci_high, source"
NOT_REACHED = "a statistic not reached (NR, NE) cannot be a target: drop the target, or write the number"
BOUNDS_HINT = ("each patient's value (median x exp(sigma z), positive) is clipped to them: give the model "
               "parameter's bounds")
CI_HINT = "the 95 % confidence interval, e.g. ci: [3.4, 5.6]"
IPD_TARGET = "  - {id: ipd_nivo, kind: ipd, arm: NIVO, data: ipd.csv, hazard_bins_months: [0, 3, 6]}\n"

Mutation = tuple[str, str, str]     # (file, old text or "@WRITE", new text)


def copy(source: Path, tmp_path: Path, files: tuple[str, ...]) -> Path:
    folder = tmp_path / source.name
    folder.mkdir()
    for name in files:
        shutil.copy(source / name, folder / name)
    return folder


def mutate(folder: Path, mutations: Iterable[Mutation]) -> None:
    for name, old, new in mutations:
        path = folder / name
        if old == "@WRITE":
            path.write_bytes(new.encode("utf-8", "surrogateescape"))
            continue
        text = path.read_text(encoding="utf-8")
        assert old in text, old
        path.write_text(text.replace(old, new, 1), encoding="utf-8")


def where(path: Path, marker: str | None) -> str:
    """`file:line` of the first line of `path` holding `marker`; `file` when no marker."""
    if marker is None:
        return str(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    return f"{path}:{next(i + 1 for i, line in enumerate(lines) if marker in line)}"


def issues(load: Callable[[Path], object], target: Path, error: type[Exception]) -> list[str]:
    with pytest.raises(error) as caught:
        load(target)
    return [str(issue) for issue in caught.value.issues]


# ---- time courses --------------------------------------------------------------------------------
TIMECOURSE_CASES = {
    "solver tolerances and method": (
        [("problem.yaml", "solver: {rtol: 1.0e-6, atol: 1.0e-9}", "solver: {rtol: 2, atol: 1.0e-9, method: rodas4}")],
        [("problem.yaml", "solver:", "solver: tolerances must satisfy 0 < rtol < 1 and atol > 0, got rtol=2, "
          "atol=1e-09 (e.g. solver: {rtol: 1.0e-6, atol: 1.0e-9})"),
         ("problem.yaml", "solver:", "solver: backend 'numba' has no method 'rodas4' (methods: rodas5p, tsit5)")]),
    "unknown backend": (
        [("problem.yaml", "backend: numba ", "backend: nunba ")],
        [("problem.yaml", "backend: nunba", "problem: unknown backend 'nunba' (did you mean 'numba'?)")]),
    "condition parameter not a number": (
        [("problem.yaml", "treated: {regimen: q21d_x18,", "treated: {regimen: q21d_x18, parameters: {rT: abc},")],
        [("problem.yaml", "treated:", "condition 'treated' parameters: 'rT' must be a number, got 'abc'")]),
    "condition parameters a list": (
        [("problem.yaml", "treated: {regimen: q21d_x18,", "treated: {regimen: q21d_x18, parameters: [rT, 1],")],
        [("problem.yaml", "treated:", "condition 'treated': 'parameters' must be a mapping of name: number, "
          "got ['rT', 1] (e.g. parameters: {NAME: 1.0})")]),
    "condition initial null": (
        [("problem.yaml", "treated: {regimen: q21d_x18,", "treated: {regimen: q21d_x18, initial: {T: null},")],
        [("problem.yaml", "treated:", "condition 'treated' initial: 'T' must be a number, got None")]),
    "observable sigma a list": (
        [("problem.yaml", "sigma: 1.0,", "sigma: [1],")],
        [("problem.yaml", "sigma: [1]", "observable 'log_tumour': sigma must be a number > 0 or a noise "
          "parameter's name, got [1]")]),
    "parameter bounds not numbers": (
        [("problem.yaml", "bounds: [0.005, 0.5]", "bounds: [a, 0.5]")],
        [("problem.yaml", "rT:", "parameter 'rT': 'bounds' must be two finite numbers [low, high], got ['a', 0.5]")]),
    "prior sigma negative": (
        [("problem.yaml", "median: 0.05, sigma: 0.3", "median: 0.05, sigma: -0.3")],
        [("problem.yaml", "rT:", "parameter 'rT': free parameter 'rT': lognormal prior needs median > 0 and "
          "sigma > 0, got median 0.05, sigma -0.3")]),
    "prior unknown key": (
        [("problem.yaml", "median: 3, sigma: 0.3}", "median: 3, sigma: 0.3, mode: 2}")],
        [("problem.yaml", "kkill:", "parameter 'kkill': free parameter 'kkill': lognormal prior has no 'mode' "
          "(it takes median, sigma)")]),
    "prior sd null": (
        [("problem.yaml", "{distribution: lognormal, median: 0.05, sigma: 0.3}",
         "{distribution: normal, mean: 0.05, sd: null}")],
        [("problem.yaml", "rT:", "parameter 'rT': free parameter 'rT': normal prior mean 0.05, sd None: each "
          "must be a finite number")]),
    "uniform prior low above high": (
        [("problem.yaml", "{distribution: lognormal, median: 0.05, sigma: 0.3}",
         "{distribution: uniform, low: 0.4, high: 0.1}")],
        [("problem.yaml", "rT:", "parameter 'rT': free parameter 'rT': uniform prior needs low < high, "
          "got low 0.4, high 0.1")]),
    "fit settings": (
        [("problem.yaml", "  profiles: true\n", "  profiles: 5\n  sigma0: 0\n  use_priors: 'false'\n  posterior: 5\n")],
        [("problem.yaml", "profiles: 5", "fit: 'profiles' must be a list of free parameter names or true (all), "
          "got 5 (e.g. profiles: [rT])"),
         ("problem.yaml", "sigma0: 0", "fit: 'sigma0' must be > 0, got 0 (the initial CMA-ES step on the fit "
          "scale, e.g. sigma0: 0.25)"),
         ("problem.yaml", "use_priors:", "fit: 'use_priors' must be true or false, got 'false' (write "
          "use_priors: true (unquoted))"),
         ("problem.yaml", "posterior: 5", "fit: 'posterior' must be a mapping of num_warmup, num_samples, "
          "num_chains, target_accept, got 5 (e.g. posterior: {num_samples: 500})")]),
    "sources not a list": (
        [("problem.yaml", "sources:\n  - \"Observations", "sources: 5\ndescription_:\n  - \"Observations")],
        [("problem.yaml", "sources: 5", "sources: must be a list of references, got 5 (write one '- author, "
          "journal year' item per reference)"),
         ("problem.yaml", "description_:", "problem: unknown key 'description_' (did you mean 'description'?)")]),
    "measurements before t0": (
        [("problem.yaml", "t0: 0", "t0: 30")],
        [("problem.yaml", "measurements:", "measurements: measurements.tsv: 1 measurement times are before "
          "t0 = 30 (the simulation starts at t0: set 't0:' to the earliest time, or drop those rows)")]),
    "noise not positive": (
        [("measurements.tsv", "@WRITE", "observableId\tsimulationConditionId\ttime\tmeasurement\tnoise\n"
         "log_tumour\ttreated\t18\t18.8\t0\n")],
        [("problem.yaml", "measurements:", "measurements: measurements.tsv: noise must be > 0 (the standard "
          "deviation of each measurement), got 0 (leave the noise column out to use the observable's sigma)")]),
    "empty measurement file": (
        [("measurements.tsv", "@WRITE", "")],
        [("measurements.tsv", None, f"measurements: is empty (write the header row ({TSV_HINT}), then one row "
          "per line)")]),
    "header only": (
        [("measurements.tsv", "@WRITE", HEADER)],
        [("measurements.tsv", None, f"measurements: has no rows (add one row per line under the header "
          f"({TSV_HINT}))")]),
    "ragged later row": (
        [("measurements.tsv", "@WRITE", HEADER + "log_tumour\ttreated\t18\t18.8\nlog_tumour\ttreated\t36\t19\tx\ty\n")],
        [("measurements.tsv", "36", "measurements: is not a valid TSV table: Expected 4 fields in line 3, saw 6 "
          "(give every row one field per header column, separated by tabs, and close every quote)")]),
    "ragged first row": (
        [("measurements.tsv", "@WRITE", HEADER + "log_tumour\ttreated\t18\t18.8\tx\nlog_tumour\ttreated\t36\t19\n")],
        [("measurements.tsv", "18.8", "measurements: is not a valid TSV table: a row has more fields than the "
          "header (give every row one field per header column, separated by tabs)")]),
    "unterminated quote": (
        [("measurements.tsv", "@WRITE", HEADER + "log_tumour\ttreated\t18\t18.8\n\"log_tumour\ttreated\t36\t19\n")],
        [("measurements.tsv", "36", "measurements: is not a valid TSV table: EOF inside string starting at row 2 "
          "(give every row one field per header column, separated by tabs, and close every quote)")]),
    "not UTF-8": (
        [("measurements.tsv", "@WRITE", HEADER + "log_tumour\ttreat\udce9d\t18\t18.8\n")],
        [("measurements.tsv", "18.8", "measurements: is not UTF-8 text: byte 0xe9 cannot be decoded (save the "
          "file as UTF-8)")]),
}


@pytest.mark.parametrize("case", list(TIMECOURSE_CASES))
def test_timecourse_problem_errors(tmp_path, case):
    mutations, expected = TIMECOURSE_CASES[case]
    folder = copy(TIMECOURSE, tmp_path, ("problem.yaml", "measurements.tsv"))
    mutate(folder, mutations)
    want = [f"{where_bytes(folder / name, marker)}: {message}" for name, marker, message in expected]
    assert issues(load_problem, folder, FitError) == want


def where_bytes(path: Path, marker: str | None) -> str:
    """`where`, for files that may not be UTF-8 (lines are found in their bytes)."""
    if marker is None:
        return str(path)
    lines = path.read_bytes().splitlines()
    return f"{path}:{next(i + 1 for i, line in enumerate(lines) if marker.encode() in line)}"


# ---- trial problems ------------------------------------------------------------------------------
FIRST_TARGET = "id: pfs_median_nivo_rela, kind: median, endpoint: pfs, arm: NIVO_RELA,"
ORR_TARGET = "id: orr_nivo_rela, kind: response, arm: NIVO_RELA, n: 355,"
LANDMARK_TARGET = "id: pfs_12mo_nivo_rela, kind: landmark, endpoint: pfs, arm: NIVO_RELA, months: 12,"
TRIAL_CASES = {
    "predictions of arms and subgroups the design lacks": (
        [("problem.yaml", "statistics: [hazard_ratio],\n     subgroups: [all, pdl1_high,",
          "statistics: [hazard_ratio],\n     subgroups: [all, pdl1_hihg,"),
         ("problem.yaml", "- {endpoint: os, arms: [NIVO_RELA, NIVO], statistics: [median, landmark_12, landmark_24]}",
          "- {endpoint: os, arms: [NIVO_RELX], statistics: [median]}")],
        [("problem.yaml", "predictions:", "predictions: 'os_median:NIVO_RELX': trial design 'relativity047' has no "
          "arm 'NIVO_RELX' (did you mean 'NIVO_RELA'?)"),
         ("problem.yaml", "predictions:", "predictions: 'os_hr:NIVO_RELA_vs_NIVO:pdl1_hihg': trial design "
          "'relativity047' has no subgroup 'pdl1_hihg' (did you mean 'pdl1_high'?)")]),
    "duplicate target id": (
        [("problem.yaml", "id: pfs_median_nivo, kind: median", "id: pfs_median_nivo_rela, kind: median")],
        [("problem.yaml", "id: pfs_median_nivo_rela, kind: median, endpoint: pfs, arm: NIVO,",
          "target 2: id 'pfs_median_nivo_rela' is used by an earlier target (give each target its own id "
          "(reports and checkpoints name terms by id))")]),
    "weight not a number": (
        [("problem.yaml", FIRST_TARGET, FIRST_TARGET + " weight: abc,")],
        [("problem.yaml", "pfs_median_nivo_rela", "target 1: 'weight' must be a number, got 'abc'")]),
    "weight negative": (
        [("problem.yaml", FIRST_TARGET, FIRST_TARGET + " weight: -1,")],
        [("problem.yaml", "pfs_median_nivo_rela", "target 1: weight must be >= 0, got -1")]),
    "ci of one number": (
        [("problem.yaml", FIRST_TARGET, FIRST_TARGET + " ci: [1],")],
        [("problem.yaml", "pfs_median_nivo_rela", f"target 1: ci must be [low, high] with low < high, got [1] "
          f"({CI_HINT})")]),
    "ci reversed": (
        [("problem.yaml", FIRST_TARGET, FIRST_TARGET + " ci: [15.7, 6.4],")],
        [("problem.yaml", "pfs_median_nivo_rela", "target 1: ci must be [low, high] with low < high, got "
          f"[15.7, 6.4] ({CI_HINT})")]),
    "median not positive": (
        [("problem.yaml", FIRST_TARGET, FIRST_TARGET + " value: -3,")],
        [("problem.yaml", "pfs_median_nivo_rela", "target 1: a median target's value must be > 0, got -3 (its "
          "likelihood is read on the log scale)")]),
    "n zero": (
        [("problem.yaml", ORR_TARGET, ORR_TARGET.replace("n: 355", "n: 0"))],
        [("problem.yaml", "orr_nivo_rela", "target 6: 'n' must be an integer >= 1, got 0 (e.g. 'n: 1')")]),
    "months negative": (
        [("problem.yaml", LANDMARK_TARGET, LANDMARK_TARGET.replace("months: 12", "months: -12"))],
        [("problem.yaml", "pfs_12mo_nivo_rela", "target 4: months must be > 0, got -12")]),
    "published a string": (
        [("problem.yaml", "published: {analysis: primary, endpoint: PFS_BICR, arm: NIVO_RELA, statistic: median}",
         "published: primary")],
        [("problem.yaml", "published: primary", "target 1: 'published' must be a mapping of column: value, got "
          "'primary' (it selects one row of published.csv, e.g. published: {endpoint: PFS, arm: NIVO, "
          "statistic: median})")]),
    "published value not reached": (
        [("published.csv", "PFS_BICR,NIVO_RELA,median,10.1,", "PFS_BICR,NIVO_RELA,median,NR,")],
        [("published.csv", "PFS_BICR,NIVO_RELA,median", f"target 1: 'value' must be a number, got 'NR' "
          f"({NOT_REACHED})")]),
    "published ci not estimable": (
        [("published.csv", "PFS_BICR,NIVO_RELA,median,10.1,6.4,", "PFS_BICR,NIVO_RELA,median,10.1,NE,")],
        [("published.csv", "PFS_BICR,NIVO_RELA,median", f"target 1: 'ci_low' must be a number, got 'NE' "
          f"({NOT_REACHED})")]),
    "published value empty": (
        [("published.csv", "PFS_BICR,NIVO_RELA,median,10.1,", "PFS_BICR,NIVO_RELA,median,,")],
        [("published.csv", "PFS_BICR,NIVO_RELA,median", "target 1: the 'value' cell is empty (give the "
          "published number, or 'value:' in the target)")]),
    "published without value column": (
        [("published.csv", "statistic,value,", "statistic,val,")],
        [("published.csv", "analysis,", "published: has no column 'value' (published rows give value, and "
          "ci_low, ci_high for a confidence interval)")]),
    "published empty": (
        [("published.csv", "@WRITE", "")],
        [("published.csv", None, f"published: is empty (write the header row ({PUBLISHED_HINT}), then one row "
          "per line)")]),
    "unknown arm": (
        [("problem.yaml", "endpoint: pfs, arm: NIVO_RELA,", "endpoint: pfs, arm: NIVO_RELAX,")],
        [("problem.yaml", "pfs_median_nivo_rela", "target 1: trial design 'relativity047' has no arm "
          "'NIVO_RELAX' (did you mean 'NIVO_RELA'?)")]),
    "unknown comparison arm": (
        [("problem.yaml", "comparison: NIVO_RELA_vs_NIVO,", "comparison: NIVO_RELA_vs_FOO,")],
        [("problem.yaml", "id: pfs_hr", "target 3: trial design 'relativity047' has no arm 'FOO' (its arms: "
          "NIVO_RELA, NIVO)")]),
    "unknown biomarker": (
        [("problem.yaml", "biomarker: lag3_positive", "biomarker: lag3_pos")],
        [("problem.yaml", "lag3_ge1_nivo_rela", "target 10: trial design 'relativity047' has no biomarker rule "
          "'lag3_pos' (did you mean 'lag3_positive'?)")]),
    "population bounds a number": (
        [("problem.yaml", "bounds: [0.001, 0.1]", "bounds: 5")],
        [("problem.yaml", "bounds: 5", f"population 'r_tumour': 'bounds' must be [low, high] with 0 < low < high, "
          f"got 5 ({BOUNDS_HINT})")]),
    "population bounds negative": (
        [("problem.yaml", "bounds: [0.001, 0.1]", "bounds: [-1, 0.1]")],
        [("problem.yaml", "bounds: [-1", f"population 'r_tumour': 'bounds' must be [low, high] with 0 < low < "
          f"high, got [-1, 0.1] ({BOUNDS_HINT})")]),
    "population bounds of three": (
        [("problem.yaml", "bounds: [0.001, 0.1]", "bounds: [0.001, 0.1, 1]")],
        [("problem.yaml", "bounds: [0.001, 0.1, 1]", f"population 'r_tumour': 'bounds' must be [low, high] with "
          f"0 < low < high, got [0.001, 0.1, 1] ({BOUNDS_HINT})")]),
    "ipd header only": (
        [("problem.yaml", "predictions:\n", IPD_TARGET + "predictions:\n"),
        ("ipd.csv", "@WRITE", "time_months,event\n")],
        [("ipd.csv", None, "target 12: has no rows (add one row per line under the header (time_months, event))")]),
    "ipd bins and smoothing": (
        [("problem.yaml", "predictions:\n", IPD_TARGET.replace("[0, 3, 6]", "5, smoothing_months: -1")
         + "predictions:\n"),
        ("ipd.csv", "@WRITE", "time_months,event\n1.5,1\n4,0\n")],
        [("problem.yaml", "ipd_nivo", "target 12: 'hazard_bins_months' must be increasing numbers >= 0, at least "
          "two, got 5 (bin edges in months, e.g. [0, 3, 6, 12])"),
         ("problem.yaml", "ipd_nivo", "target 12: smoothing_months must be > 0, got -1")]),
}


@pytest.mark.parametrize("case", list(TRIAL_CASES))
def test_trial_problem_errors(tmp_path, case):
    mutations, expected = TRIAL_CASES[case]
    folder = copy(TRIAL, tmp_path, ("problem.yaml", "published.csv"))
    mutate(folder, mutations)
    want = [f"{where(folder / name, marker)}: {message}" for name, marker, message in expected]
    assert issues(load_problem, folder, FitError) == want


def test_predictions_must_be_a_list(tmp_path):
    folder = copy(TRIAL, tmp_path, ("problem.yaml", "published.csv"))
    path = folder / "problem.yaml"
    path.write_text(re.sub(r"predictions:\n(  .*\n)+", "predictions: 5\n", path.read_text()))
    assert issues(load_problem, folder, FitError) == [
        f"{where(path, 'predictions: 5')}: predictions: must be a list of entries, got 5 (entries: {{endpoint, "
        "arms: [...], statistics: [median, landmark_<months>]} or {endpoint, comparisons: [...], statistics: "
        "[hazard_ratio], subgroups: [...]})"]


# ---- trial designs -------------------------------------------------------------------------------
SCANS = "scans:\n  - {from_week: 0, every_weeks: 6, until_week: 48}\n  - {from_week: 48, every_weeks: 9}\n"
CONSTRAINT = "{output: sld_mm, time: 0, low: 10, high: 150}"
COHORT_KEYS = "constraints, target, correlations, oversample, max_rounds"
DOSE = "{drug: chemo, amount: 300, duration: 0.125}"
PHASE_DOSE = "arm 'COMBO' phase 1 dose 2"
DESIGN_CASES = {
    "scans a number": (
        [(SCANS, "scans: 5\n")],
        [("scans: 5", "scans: must be a list, got 5 (write one '- {from_week, every_weeks[, until_week]}' item "
          "per line, or [{from_week, every_weeks[, until_week]}, ...])")]),
    "scan window ends before it starts": (
        [("until_week: 48}", "until_week: -1}")],
        [("until_week: -1", "scan window 1: 'until_week' -1 must be after 'from_week' 0 (leave 'until_week' out "
          "for a window to the end of follow-up)")]),
    "comparisons a number": (
        [("comparisons: [COMBO vs CHEMO]", "comparisons: 5")],
        [("comparisons: 5", "comparisons: must be a list, got 5 (write one '- EXPERIMENTAL vs CONTROL' item per "
          "line, or [EXPERIMENTAL vs CONTROL, ...])")]),
    "comparison of an arm with itself": (
        [("comparisons: [COMBO vs CHEMO]", "comparisons: [CHEMO vs CHEMO]")],
        [("comparisons:", "comparison 'CHEMO vs CHEMO': compares an arm with itself (name two different arms)")]),
    "unknown control": (
        [("control: CHEMO", "control: CHEM")],
        [("control: CHEM", "trial: control 'CHEM' is not an arm (did you mean 'CHEMO'?)")]),
    "subgroups a string": (
        [("subgroups: [pdl1_high, pdl1_negative, teff_high]", "subgroups: pdl1_high")],
        [("subgroups:", "subgroups: must be a list, got 'pdl1_high' (write one '- RULE' item per line, or "
          "[RULE, ...])")]),
    "unknown subgroup": (
        [("subgroups: [pdl1_high,", "subgroups: [pdl1_hi,")],
        [("subgroups:", "subgroups: no biomarker rule 'pdl1_hi' (did you mean 'pdl1_high'?)")]),
    "biomarkers a number": (
        [("biomarkers: impower150", "biomarkers: 5")],
        [("biomarkers: 5", "biomarkers: must be a built-in rule set (impower150, relativity047) or a mapping of "
          "name: rule, got 5 (a rule: {output: pdl1_tumour, op: '>=', value: 1})")]),
    "references a number": (
        [("name: trial_small\n", "name: trial_small\nreferences: 5\n")],
        [("references: 5", "references: must be a list, got 5 (write one '- {key, text}' item per line, or "
          "[{key, text}, ...])")]),
    "cohort a number": (
        [("cohort:\n  constraints:\n    - " + CONSTRAINT + "", "cohort: 5\nxconstraints:\n    - " + CONSTRAINT)],
        [("cohort: 5", f"cohort: must be a mapping of {COHORT_KEYS}"),
         ("xconstraints:", "trial: unknown key 'xconstraints' (allowed: name, description, references, model, "
          "arms, control, comparisons, patients_per_arm, accrual_months, data_cut_months, scans, recist, visits, "
          "survival, cohort, biomarkers, subgroups, solver)")]),
    "cohort unknown key": (
        [("cohort:\n", "cohort:\n  size: 5\n")],
        [("size: 5", f"cohort: unknown key 'size' (allowed: {COHORT_KEYS})")]),
    "constraint bound not a number": (
        [(CONSTRAINT, CONSTRAINT.replace("low: 10", "low: abc"))],
        [("low: abc", "cohort constraint 1: constraint {'output': 'sld_mm', 'time': 0, 'low': 'abc', "
          "'high': 150}: 'low' must be a finite number, got 'abc'")]),
    "cohort target range not numbers": (
        [("cohort:\n", "cohort:\n  target: {output: sld_mm, distribution: lognormal, median: 59, range: [a, 317], "
         "n: 355}\n")],
        [("target:", "cohort target: target {'output': 'sld_mm', 'distribution': 'lognormal', 'median': 59, "
          "'range': ['a', 317], 'n': 355}: its distribution needs numbers (median, sigma, mean, sd, range "
          "[low, high], n, quantiles), got ValueError: could not convert string to float: 'a'")]),
    "accrual negative": (
        [("accrual_months: 12", "accrual_months: -1")],
        [("accrual_months", "trial: 'accrual_months' must be >= 0, got -1")]),
    "data cut zero": (
        [("data_cut_months: 36", "data_cut_months: 0")],
        [("data_cut_months", "trial: 'data_cut_months' must be > 0, got 0 (months from the first patient in to "
          "the data cut-off)")]),
    "accrual after the data cut": (
        [("accrual_months: 12", "accrual_months: 40")],
        [("data_cut_months", "trial: 'data_cut_months' 36 must be after 'accrual_months' 40 (the data cut-off "
          "follows the last patient's enrolment)")]),
    "output step zero": (
        [("name: trial_small\n", "name: trial_small\nsolver: {output_every_days: 0}\n")],
        [("solver:", "solver: output_every_days must be > 0, got 0")]),
    "lethal burden zero": (
        [("lethal_tumour_cells: 1.0e12", "lethal_tumour_cells: 0")],
        [("survival:", "survival: 'lethal_tumour_cells' must be > 0, got 0 (the tumour burden at which a patient "
          "dies, e.g. 1.0e12)")]),
    "dose amount negative": (
        [(DOSE, DOSE.replace("300", "-300"))],
        [("-300", f"{PHASE_DOSE}: 'amount' must be >= 0, got -300")]),
    "dose day outside the cycle": (
        [(DOSE, DOSE.replace("amount: 300", "amount: 300, day: 21"))],
        [("day: 21", f"{PHASE_DOSE}: 'day' must be in [0, cycle_days) = [0, 21), got 21 (the day of the cycle, 0 "
          "for its first day)")]),
    "dose duration negative": (
        [(DOSE, DOSE.replace("0.125", "-1"))],
        [("duration: -1", f"{PHASE_DOSE}: 'duration' must be >= 0, got -1 (the infusion length in days, 0 for a "
          "bolus)")]),
    "phase start day negative": (
        [("{name: maintenance,", "{name: maintenance, start_day: -1,")],
        [("start_day: -1", "arm 'COMBO' phase 2: 'start_day' must be >= 0, got -1")]),
    "cycles with a boolean": (
        [("cycles: [4, 6]", "cycles: [true, 6]")],
        [("cycles: [true", "arm 'COMBO' phase 1: 'cycles' must be a positive integer, a list of them (chosen per "
          "patient) or 'until_progression', got [True, 6]")]),
}


@pytest.mark.parametrize("case", list(DESIGN_CASES))
def test_trial_design_errors(tmp_path, case):
    mutations, expected = DESIGN_CASES[case]
    path = tmp_path / "design.yaml"
    shutil.copy(DESIGN, path)
    mutate(tmp_path, tuple(("design.yaml", old, new) for old, new in mutations))
    want = [f"{where(path, marker)}: {message}" for marker, message in expected]
    assert issues(load_trial, path, SpecError) == want


@pytest.mark.parametrize("text, message", [
    ("", "trial: is empty"),
    ("- COMBO\n- CHEMO\n", "trial: must be a YAML mapping, got a list")])
def test_design_file_must_be_a_mapping(tmp_path, text, message):
    path = tmp_path / "design.yaml"
    path.write_text(text)
    assert issues(load_trial, path, SpecError) == [
        f"{path}: {message} (a trial design maps name, model, arms, scans, data_cut_months, ...)"]


def test_problem_reports_its_design_problems(tmp_path):
    folder = copy(TRIAL, tmp_path, ("problem.yaml", "published.csv"))
    design = folder / "design.yaml"
    shutil.copy(ROOT / "immunoedit_models" / "model_specs" / "trials" / "relativity047.yaml", design)
    mutate(folder, (("problem.yaml", "trial: relativity047", "trial: design.yaml"),
                    ("design.yaml", "data_cut_months: 34", "data_cut_months: 0")))
    assert issues(load_problem, folder, FitError) == [
        f"{where(design, 'data_cut_months: 0')}: trial: 'data_cut_months' must be > 0, got 0 (months from the "
        "first patient in to the data cut-off)"]


def test_timecourse_names_are_checked_against_the_model(tmp_path):
    folder = copy(TIMECOURSE, tmp_path, ("problem.yaml", "measurements.tsv"))
    mutate(folder, [("problem.yaml", "treated: {regimen: q21d_x18,",
                     "treated: {regimen: q21d_x81, parameters: {kkil: 2}, initial: {TT: 1.0e6},"),
                    ("problem.yaml", "log_tumour: {output: T,", "log_tumour: {output: TT,")])
    with pytest.raises(FitError) as info:
        load_problem(folder)
    at = where(folder / "problem.yaml", "treated:")
    model = "model 'benchmark_reference'"
    assert str(info.value).splitlines()[1:] == [
        f"  {at}: condition 'treated': 'kkil' is not a parameter of {model} (did you mean 'kkill'?)",
        f"  {at}: condition 'treated': 'TT' is not a state of {model} (did you mean 'T'?)",
        f"  {at}: condition 'treated': {model} has no regimen 'q21d_x81' (did you mean 'q21d_x18'?)",
        f"  {where(folder / 'problem.yaml', 'log_tumour:')}: observable 'log_tumour': output 'TT' is not a "
        f"state, expression or observable of {model} (did you mean 'T'?)"]


def test_validate_checks_a_designs_model_and_drugs(tmp_path):
    from typer.testing import CliRunner

    from immunoedit_models.cli import app

    design = tmp_path / "design.yaml"
    shutil.copy(DESIGN.parent / "trial_model.yaml", tmp_path / "trial_model.yaml")
    design.write_text(DESIGN.read_text().replace("drug: antibody", "drug: antibodie"))
    result = CliRunner().invoke(app, ["validate", str(design)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "1 problem in trial design:",
        f"  {where(design, 'COMBO:')}: arm 'COMBO': doses 'antibodie', which model 'trial_model' does not "
        "declare (did you mean 'antibody'?)"]
    design.write_text(DESIGN.read_text().replace("model: trial_model.yaml", "model: nosuch"))
    result = CliRunner().invoke(app, ["validate", str(design)])
    assert result.exit_code == 1
    assert result.output.splitlines()[:2] == [
        "2 problems in trial design:",
        f"  {where(design, 'model: nosuch')}: trial: model 'nosuch' does not load (its problems follow)"]
