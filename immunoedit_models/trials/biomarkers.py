"""Baseline biomarker covariates (PD-L1, Teff signature, LAG-3) from model outputs at day 0.

A covariate is a threshold rule written as data, so a trial file can define its own:

    {output: pdl1_tumour, op: ">=", value: 50}          compare an output with a number
    {output: teff_signature, op: ">", value: median}     ... or with a statistic of the cohort:
                                                          median, or {quantile: q}
    {any: [rule, ...]}   {all: [rule, ...]}   {not: rule}
    top-level rules may also carry `source`, `description` and `published_fraction` (ignored
    when evaluating; kept for reports and calibration).

Outputs are the composed trial models' observables (percent for PD-L1 and LAG-3; see
../shared/contracts: pdl1_tumour, pdl1_immune, teff_signature, lag3_immune). Cohort statistics
are computed over the `reference` population (default: the patients being classified): classify
all arms together so a trial has one Teff cut-off, as a real trial has.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import SimulationError
from ..spec.expressions import suggest
from .cohort import Cohort

_OPS: dict[str, Callable[[Any, Any], Any]] = {">=": operator.ge, ">": operator.gt, "<=": operator.le,
                                              "<": operator.lt}
_NOTES = ("source", "description", "published_fraction")

_IMPOWER150_SOURCE = "Socinski MA et al. N Engl J Med 2018;378:2288-2301 (IMpower150)"
_RELATIVITY047_SOURCE = "Tawbi HA et al. N Engl J Med 2022;386:24-34 (RELATIVITY-047), Table 1"

#: IMpower150 (SP142 assay). TC: % PD-L1+ tumour cells; IC: % tumour area of PD-L1+ immune cells.
IMPOWER150: dict[str, dict[str, Any]] = {
    "pdl1_high": {
        "any": [{"output": "pdl1_tumour", "op": ">=", "value": 50},
                {"output": "pdl1_immune", "op": ">=", "value": 10}],
        "description": "PD-L1 high: TC3 (TC >= 50 %) or IC3 (IC >= 10 %), SP142",
        "source": _IMPOWER150_SOURCE},
    "pdl1_negative": {
        "all": [{"output": "pdl1_tumour", "op": "<", "value": 1},
                {"output": "pdl1_immune", "op": "<", "value": 1}],
        "description": "PD-L1 negative: TC0 and IC0 (TC < 1 % and IC < 1 %), SP142",
        "source": _IMPOWER150_SOURCE},
    "teff_high": {
        "output": "teff_signature", "op": ">", "value": "median",
        "description": "Teff-high: T-effector gene signature above the cohort median",
        "source": _IMPOWER150_SOURCE},
    "lag3_positive": {
        "output": "lag3_immune", "op": ">=", "value": 1,
        "description": "LAG-3 >= 1 % of immune cells; not an IMpower150 subgroup: the RELATIVITY-047 "
                       "definition, so every trial result carries the covariate",
        "source": _RELATIVITY047_SOURCE},
}

#: RELATIVITY-047: PD-L1 >= 1 % of tumour cells; LAG-3 >= 1 % of immune cells.
RELATIVITY047: dict[str, dict[str, Any]] = {
    "pdl1_high": {
        "output": "pdl1_tumour", "op": ">=", "value": 1,
        "description": "PD-L1 >= 1 % of tumour cells (the trial's PD-L1 subgroup)",
        "source": _RELATIVITY047_SOURCE, "published_fraction": 0.411},
    "pdl1_negative": {
        "output": "pdl1_tumour", "op": "<", "value": 1,
        "description": "PD-L1 < 1 % of tumour cells",
        "source": _RELATIVITY047_SOURCE},
    "teff_high": {
        "output": "teff_signature", "op": ">", "value": "median",
        "description": "Teff signature above the cohort median; not a RELATIVITY-047 subgroup: the "
                       "IMpower150 definition, so every trial result carries the covariate",
        "source": _IMPOWER150_SOURCE},
    "lag3_positive": {
        "output": "lag3_immune", "op": ">=", "value": 1,
        "description": "LAG-3 >= 1 % of immune cells",
        "source": _RELATIVITY047_SOURCE, "published_fraction": 0.755},
}

#: Rule sets by trial name (the trial files may name one or write their own).
TRIAL_RULES: dict[str, dict[str, dict[str, Any]]] = {"impower150": IMPOWER150, "relativity047": RELATIVITY047}

Table = pd.DataFrame | xr.Dataset | Mapping[str, Any]


def rule_outputs(rule: Mapping[str, Any]) -> set[str]:
    """The outputs a rule reads."""
    if "output" in rule:
        return {str(rule["output"])}
    parts = rule.get("any") or rule.get("all") or ([rule["not"]] if "not" in rule else [])
    return set().union(*(rule_outputs(p) for p in parts)) if parts else set()


def resolve_rules(rules: Mapping[str, Mapping[str, Any]] | str, reference: Table) -> dict[str, dict[str, Any]]:
    """The rules with every cohort statistic ('median', {quantile: q}) replaced by its number
    over `reference` (its values of the rule's output, NaN-free). A string names a TRIAL_RULES set."""
    rules = _named(rules)
    return {name: _resolve(rule, reference, name) for name, rule in rules.items()}


def baseline_covariates(baseline: Table | Cohort, rules: Mapping[str, Mapping[str, Any]] | str,
                        reference: Table | Cohort | None = None) -> pd.DataFrame | xr.Dataset | dict[str, np.ndarray]:
    """Boolean covariates, one per rule, for every patient of `baseline` (day-0 outputs).

    baseline: a DataFrame (one row per patient), an xarray Dataset (any dims, e.g. (arm,
    patient)) or a mapping name -> array; a Cohort is read through its `baseline`. The result
    has the same form: DataFrame with the same index, Dataset with the same dims, or dict.
    reference: the population over which cohort statistics (Teff median) are taken; default
    `baseline` itself.
    """
    baseline = baseline.baseline if isinstance(baseline, Cohort) else baseline
    reference = baseline if reference is None else (reference.baseline if isinstance(reference, Cohort)
                                                    else reference)
    resolved = resolve_rules(rules, reference)
    flags = {name: _evaluate(rule, baseline, name) for name, rule in resolved.items()}
    if isinstance(baseline, pd.DataFrame):
        return pd.DataFrame(flags, index=baseline.index)
    if isinstance(baseline, xr.Dataset):
        return xr.Dataset({name: (baseline[sorted(rule_outputs(resolved[name]))[0]].dims, flag,
                                  {"rule": repr(resolved[name])}) for name, flag in flags.items()},
                          coords=baseline.coords)
    return flags


# ---- internals ---------------------------------------------------------------------------------
def _named(rules: Mapping[str, Mapping[str, Any]] | str) -> Mapping[str, Mapping[str, Any]]:
    if isinstance(rules, str):
        if rules not in TRIAL_RULES:
            hint = suggest(rules, TRIAL_RULES)
            raise SimulationError(f"no biomarker rule set '{rules}'" + (f" ({hint})" if hint else "")
                                  + f"; built in: {', '.join(TRIAL_RULES)}")
        return TRIAL_RULES[rules]
    return rules


def _column(table: Table, output: str, where: str) -> np.ndarray:
    names = list(table.columns) if isinstance(table, pd.DataFrame) else list(
        table.data_vars if isinstance(table, xr.Dataset) else table)
    if output not in names:
        hint = suggest(output, names)
        raise SimulationError(f"biomarker rule '{where}' reads '{output}', which the baseline table does not "
                              "have" + (f" ({hint})" if hint else f"; it has {', '.join(map(str, names))}"))
    values = np.asarray(table[output], dtype=float)
    if not np.all(np.isfinite(values)):
        raise SimulationError(f"biomarker rule '{where}': '{output}' has {int((~np.isfinite(values)).sum())} "
                              "non-finite baseline values; drop failed patients before classifying")
    return values


def _resolve(rule: Mapping[str, Any], reference: Table, where: str) -> dict[str, Any]:
    out = dict(rule)
    if "output" in rule:
        unknown = sorted(set(rule) - {"output", "op", "value", *_NOTES})
        if unknown or "op" not in rule or "value" not in rule or rule["op"] not in _OPS:
            raise SimulationError(f"biomarker rule '{where}': {dict(rule)} must be {{output, op, value}} with op "
                                  f"one of {', '.join(_OPS)}" + (f"; unknown keys {unknown}" if unknown else ""))
        out["value"] = _threshold(rule["value"], _column(reference, str(rule["output"]), where), where)
        return out
    keys = [k for k in ("any", "all", "not") if k in rule]
    if len(keys) != 1 or set(rule) - {keys[0], *_NOTES}:
        raise SimulationError(f"biomarker rule '{where}': {dict(rule)} must be a comparison {{output, op, value}} "
                              "or exactly one of any: [...], all: [...], not: {...}")
    key = keys[0]
    if key == "not":
        out["not"] = _resolve(rule["not"], reference, where)
    else:
        if not isinstance(rule[key], (list, tuple)) or not rule[key]:
            raise SimulationError(f"biomarker rule '{where}': '{key}' needs a non-empty list of rules")
        out[key] = [_resolve(r, reference, where) for r in rule[key]]
    return out


def _threshold(value: Any, reference: np.ndarray, where: str) -> float:
    if isinstance(value, str) and value == "median":
        return float(np.median(reference))
    if isinstance(value, Mapping) and set(value) == {"quantile"} and 0 <= float(value["quantile"]) <= 1:
        return float(np.quantile(reference, float(value["quantile"])))
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        return float(value)
    raise SimulationError(f"biomarker rule '{where}': threshold {value!r} must be a number, 'median' or "
                          "{quantile: q} with q in [0, 1]")


def _evaluate(rule: Mapping[str, Any], table: Table, where: str) -> np.ndarray:
    if "output" in rule:
        return _OPS[rule["op"]](_column(table, str(rule["output"]), where), rule["value"])
    if "not" in rule:
        return ~_evaluate(rule["not"], table, where)
    parts = [_evaluate(r, table, where) for r in rule.get("any") or rule["all"]]
    return np.logical_or.reduce(parts) if "any" in rule else np.logical_and.reduce(parts)
