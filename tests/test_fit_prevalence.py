"""Prevalence targets (`kind: prevalence`): the binomial likelihood of a published biomarker
fraction under the simulated cohort's fraction of patients positive for a rule of the trial design.

References: hand computation -ln[C(n, k) p^k (1 - p)^(n - k)] with k = round(value * n) (math.lgamma),
counts of a hand-made (arm, patient) flag table, and the RELATIVITY-047 Table 1 fraction 0.411 of
355 (Tawbi 2022, fitting/relativity047/published.csv).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from immunoedit_models.errors import FitError
from immunoedit_models.fit import load_problem
from immunoedit_models.fit.problem import Target
from immunoedit_models.fit.trial import simulated_prevalence, simulated_statistic, target_nll

FITTING = Path(__file__).resolve().parents[1] / "fitting"


def _trial() -> xr.Dataset:
    """Two arms of 10 patients; arm A: 4 of 9 present positive (patient 9 failed: NaN PFS), B: 7 of 10."""
    flag = np.zeros((2, 10), bool)
    flag[0, [0, 2, 4, 6, 9]] = True          # patient 9 is positive but failed: not counted
    flag[1, :7] = True
    pfs = np.ones((2, 10))
    pfs[0, 9] = np.nan
    return xr.Dataset({"pfs_months": (("arm", "patient"), pfs), "pdl1_high": (("arm", "patient"), flag),
                       "lag3_positive": (("arm", "patient"), ~flag)},
                      coords={"arm": ["A", "B"], "patient": np.arange(10)})


def _binomial_nll_by_hand(k: int, n: int, p: float) -> float:
    log_comb = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return -(log_comb + k * math.log(p) + (n - k) * math.log(1 - p))


def test_simulated_prevalence_counts_present_patients_per_arm_and_pooled():
    ds = _trial()
    assert simulated_prevalence(ds, "pdl1_high", "A") == pytest.approx(4 / 9, rel=1e-15)
    assert simulated_prevalence(ds, "pdl1_high", "B") == pytest.approx(7 / 10, rel=1e-15)
    assert simulated_prevalence(ds, "pdl1_high") == pytest.approx(11 / 19, rel=1e-15)
    assert simulated_prevalence(ds, "lag3_positive", "A") == pytest.approx(5 / 9, rel=1e-15)


def test_prevalence_term_is_the_binomial_likelihood_by_hand():
    ds = _trial()
    t = Target(id="pdl1_a", kind="prevalence", biomarker="pdl1_high", arm="A", value=0.411, n=355)
    assert simulated_statistic(ds, t) == pytest.approx(4 / 9)
    k = round(0.411 * 355)
    assert k == 146
    assert target_nll(ds, t) == pytest.approx(_binomial_nll_by_hand(146, 355, 4 / 9), rel=1e-12)
    pooled = Target(id="pdl1_all", kind="prevalence", biomarker="pdl1_high", value=0.41, n=714)
    assert target_nll(ds, pooled) == pytest.approx(_binomial_nll_by_hand(round(0.41 * 714), 714, 11 / 19), rel=1e-12)
    # the term is smallest when the simulated fraction equals the published one
    at = _binomial_nll_by_hand(146, 355, 146 / 355)
    assert at < _binomial_nll_by_hand(146, 355, 0.38) and at < _binomial_nll_by_hand(146, 355, 0.45)


def test_unknown_biomarker_or_arm_is_a_clear_error():
    ds = _trial()
    with pytest.raises(FitError, match="no biomarker rule 'pdl1_neg'.*pdl1_high, lag3_positive"):
        simulated_prevalence(ds, "pdl1_neg", "A")
    with pytest.raises(FitError, match="no arm 'C'"):
        simulated_prevalence(ds, "pdl1_high", "C")


def test_problem_reads_prevalence_targets_and_checks_them(tmp_path):
    problem = load_problem(FITTING / "relativity047")
    prevalence = [t for t in problem.targets if t.kind == "prevalence"]
    pdl1 = next(t for t in prevalence if t.biomarker == "pdl1_high" and t.arm == "NIVO_RELA")
    assert (pdl1.value, pdl1.n) == (0.411, 355)                  # Tawbi 2022 Table 1
    assert "Tawbi" in pdl1.source
    (tmp_path / "problem.yaml").write_text("""
name: bad
kind: trial
model: immunoediting_melanoma
trial: relativity047
parameters:
  K_pd1: {bounds: [0.05, 2.0]}
targets:
  - {id: a, kind: prevalence, arm: NIVO, value: 0.4, n: 359}
  - {id: b, kind: prevalence, biomarker: pdl1_high, value: 41, n: 359}
""")
    with pytest.raises(FitError) as err:
        load_problem(tmp_path)
    text = str(err.value)
    assert "a prevalence target needs 'biomarker'" in text
    assert "value is a fraction in [0, 1], got 41" in text
