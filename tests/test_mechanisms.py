"""Mechanism signatures of the composed models: each test fails if its mechanism is broken.

The behaviours are those the source reviews attribute to each mechanism
(../shared/references/seed_catalogue.md sections 3a-3c and 2.4.2; published_models.md sections
2-4); every criterion is stated in the test. Patients are the specs' default parameter sets
(the prior medians) unless a test states its own; tumour size is compared between regimens at
the same day, so the criteria do not depend on a response threshold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import immunoedit_models as ie
from immunoedit_models.simulate.regimen import Regimen


@pytest.fixture(scope="module")
def nsclc():
    return ie.compile_model(ie.load_spec("immunoediting_nsclc"), backend="numba")


@pytest.fixture(scope="module")
def melanoma():
    return ie.compile_model(ie.load_spec("immunoediting_melanoma"), backend="numba")


def run(model, days, regimen, **params):
    ds = ie.simulate(model, np.asarray(days, dtype=float), regimen=regimen, params=params)
    assert int(ds["status"]) == 0
    return ds


def at(ds, var, day):
    return float(ds[var].sel(time=float(day)))


# ---- IL-2 dose duality (seed catalogue 3b; published_models.md section 3) --------------------
def test_il2_dose_response_is_non_monotone(melanoma):
    """Constant aldesleukin infusion for 28 days: low doses (pM, the CD25 band) expand Tregs and
    do not help; high doses (nM, the IL-2Rbeta-gamma band) expand effectors and shrink the
    tumour; persistent very high exposure exhausts effectors, loses the benefit and raises the
    toxicity marker."""
    days = [0, 14, 28, 84]
    rates = {"low": 1e6, "high": 2e8, "very high": 3e9}          # IU per day
    none = run(melanoma, days, "untreated")
    runs = {k: run(melanoma, days, Regimen.repeated("aldesleukin", 28 * r, start=0.0, duration=28.0))
            for k, r in rates.items()}
    fold = {k: {v: at(ds, v, 14) / at(none, v, 14) for v in ("R", "E")} for k, ds in runs.items()}
    tumour = {k: at(ds, "tumour_cells", 84) / at(none, "tumour_cells", 84) for k, ds in runs.items()}
    toxicity = {k: at(ds, "il2_toxicity", 28) for k, ds in runs.items()}

    assert fold["low"]["R"] >= 1.5 and fold["low"]["E"] <= 1.1 and tumour["low"] >= 1.0
    assert fold["high"]["E"] >= 2.0 and tumour["high"] <= 0.9
    assert at(runs["very high"], "il2_exhaustion", 14) >= 10 * at(runs["high"], "il2_exhaustion", 14)
    assert fold["very high"]["E"] < fold["high"]["E"] and at(runs["very high"], "X", 28) > at(runs["high"], "X", 28)
    assert tumour["very high"] > tumour["high"] + 0.05                 # non-monotone outcome
    assert toxicity["low"] < 0.05 < toxicity["high"] < toxicity["very high"] and toxicity["very high"] > 0.8


# ---- IFN-gamma -> PD-L1 adaptive resistance (seed catalogue 3a) ----------------------------
def test_anti_pdl1_benefit_grows_with_ifng_driven_pdl1(nsclc):
    """An inflamed tumour whose PD-L1 is mostly adaptive (low constitutive PD-L1): the benefit of
    atezolizumab, log(untreated / treated tumour) at 26 weeks, rises with the IFN-gamma -> PD-L1
    induction, and cutting the link (fold 0) removes at least half of the benefit at the QSP-IO
    value (6-fold). The nodal priming effect, which does not depend on tumour PD-L1, is off
    (gain 0) so that only the tumour's PD-L1 is measured."""
    adaptive = dict(pdl1_basal=0.02, pdl1_myeloid_basal=0.05, cd8_infiltration=0.03, pd1_priming_gain=0.0)
    benefit = []
    for fold in (0.0, 3.0, 6.0, 12.0):
        u = run(nsclc, [0, 182], "untreated", pdl1_ifng_fold=fold, **adaptive)
        a = run(nsclc, [0, 182], "atezolizumab_q3w", pdl1_ifng_fold=fold, **adaptive)
        benefit.append(np.log(at(u, "tumour_cells", 182) / at(a, "tumour_cells", 182)))
    assert np.all(np.diff(benefit) > 0)
    assert benefit[0] < 0.5 * benefit[2]


def test_nodal_priming_follows_lymph_node_occupancy(nsclc):
    """checkpoint_priming = 1 + gain x lymph-node occupancy, with the plasma atezolizumab
    concentration scaled by the lymph-node partition 0.2 (QSP-IO gamma_LN) against Kd 0.058 mg/L
    (hand computation at every output day of a q3w course), and 1 without the drug."""
    days = np.arange(0.0, 64.0)
    ds = run(nsclc, days, "atezolizumab_q3w", pd1_priming_gain=2.5)
    lymph = 0.2 * ds["atezolizumab_conc"].values
    np.testing.assert_allclose(ds["checkpoint_priming"].values, 1 + 2.5 * lymph / (lymph + 0.058), rtol=1e-12)
    u = run(nsclc, days, "untreated", pd1_priming_gain=2.5)
    np.testing.assert_array_equal(u["checkpoint_priming"].values, 1.0)


def test_anti_pdl1_helps_pdl1_negative_tumours_through_nodal_priming(nsclc):
    """A tumour with no functional PD-L1 (TC0/IC0-like, engagement ~0): without the nodal effect
    (gain 0) atezolizumab changes the tumour at 26 weeks by < 2 %; with it (gain 1 and 3)
    effectors at 6 weeks and the benefit rise with the gain (Oh 2020: anti-PD-L1 works without
    tumour PD-L1 through DC PD-L1)."""
    negative = dict(pdl1_basal=0.001, pdl1_myeloid_basal=0.001, cd8_infiltration=0.03)
    benefit, effectors = [], []
    for gain in (0.0, 1.0, 3.0):
        u = run(nsclc, [0, 42, 182], "untreated", pd1_priming_gain=gain, **negative)
        a = run(nsclc, [0, 42, 182], "atezolizumab_q3w", pd1_priming_gain=gain, **negative)
        benefit.append(np.log(at(u, "tumour_cells", 182) / at(a, "tumour_cells", 182)))
        effectors.append(at(a, "E", 42) / at(u, "E", 42))
    assert abs(benefit[0]) < 0.02 and abs(effectors[0] - 1) < 0.02
    assert benefit[0] + 0.1 < benefit[1] < benefit[2] and 1.2 < effectors[1] < effectors[2]


def test_unscored_pdl1_engages_pd1_without_changing_ihc(nsclc):
    """PD-L1 below the IHC assay's detection (`pdl1_unscored`): the SP142-like readouts (TC %, IC %)
    are the same with and without it at baseline, PD-1 engagement rises by exactly
    unscored / K_pd1 (hand computation, no antibody), and atezolizumab's benefit at 26 weeks in an
    IHC-negative tumour grows with it."""
    negative = dict(pdl1_basal=0.002, pdl1_myeloid_basal=0.002, cd8_infiltration=0.03, K_pd1=0.25)
    base = run(nsclc, [0.0], "untreated", **negative)
    more = run(nsclc, [0.0], "untreated", pdl1_unscored=0.5, **negative)
    for ihc in ("pdl1_tumour", "pdl1_immune"):
        assert at(more, ihc, 0) == pytest.approx(at(base, ihc, 0), rel=1e-12)
    assert at(base, "pdl1_tumour", 0) < 1.0 and at(base, "pdl1_immune", 0) < 1.0          # TC0/IC0
    assert at(more, "pdl1_engagement", 0) - at(base, "pdl1_engagement", 0) == pytest.approx(0.5 / 0.25, rel=1e-9)
    benefit = []
    for unscored in (0.0, 0.25, 0.5):
        u = run(nsclc, [0, 182], "untreated", pdl1_unscored=unscored, **negative)
        a = run(nsclc, [0, 182], "atezolizumab_q3w", pdl1_unscored=unscored, **negative)
        benefit.append(np.log(at(u, "tumour_cells", 182) / at(a, "tumour_cells", 182)))
    assert abs(benefit[0]) < 0.05 and np.all(np.diff(benefit) > 0.1)


def test_norton_simon_coupling_scales_chemotherapy_kill_with_proliferation(nsclc):
    """chemo_kill = delivery x (1 - c + c r_tumour crowding / r_reference) x raw kill at every
    output day of a carboplatin-paclitaxel course (hand computation, crowding = 1 - N / 1e12);
    c = 0 leaves the kill independent of r_tumour. With c = 1, at week 6, a tumour growing at 4 x
    the reference rate has e-fold fewer cells than at c = 0, and one growing at a quarter of it
    has over 20 % more (Norton & Simon 1977: regression rate proportional to the unperturbed
    growth rate)."""
    days = np.arange(0.0, 43.0)
    for c, r in ((0.0, 0.03), (0.6, 0.03), (1.0, 0.002)):
        ds = run(nsclc, days, "cp_induction4", chemo_proliferation_coupling=c, r_tumour=r, r_reference=0.008)
        crowding = 1 - ds["tumour_burden"].values / 1e12
        expected = ds["drug_delivery"].values * (1 - c + c * r * crowding / 0.008) * ds["chemo_kill_raw"].values
        np.testing.assert_allclose(ds["chemo_kill"].values, expected, rtol=1e-12)
    for r, faster in ((0.032, True), (0.002, False)):
        kw = dict(r_tumour=r, r_reference=0.008)
        plain = run(nsclc, [0, 42], "cp_induction4", chemo_proliferation_coupling=0.0, **kw)
        coupled = run(nsclc, [0, 42], "cp_induction4", chemo_proliferation_coupling=1.0, **kw)
        shrink = np.log(at(plain, "tumour_cells", 42) / at(coupled, "tumour_cells", 42))
        assert (shrink > 1.0) if faster else (shrink < -0.2)      # measured 1.81 and -0.46


def test_escape_subclones_grow_through_checkpoint_therapy(nsclc):
    """In a patient who responds to atezolizumab (inflamed tumour), the MHC-I-normal
    IFN-gamma-responsive clone shrinks while the MHC-I-low and IFN-gamma-insensitive clones keep
    growing, so the escape fraction rises (acquired resistance by selection, seed 000
    L1291-1298); a tumour made of escape clones alone gains little from the same therapy."""
    responder = dict(cd8_infiltration=0.05, pdl1_basal=0.3)
    days = [0, 182, 365]
    a = run(nsclc, days, "atezolizumab_q3w", **responder)
    assert at(a, "T_s", 182) < 0.5 * at(a, "T_s", 0)
    assert at(a, "T_m", 182) > at(a, "T_m", 0) and at(a, "T_g", 182) > at(a, "T_g", 0)
    assert at(a, "escape_fraction", 365) >= 5 * at(a, "escape_fraction", 0)

    def benefit(**clones):
        u = run(nsclc, days, "untreated", **responder, **clones)
        t = run(nsclc, days, "atezolizumab_q3w", **responder, **clones)
        return np.log(at(u, "tumour_cells", 182) / at(t, "tumour_cells", 182))

    sensitive = benefit(f_mhc_low0=1e-5, f_ifng_insens0=1e-5)
    assert benefit(f_mhc_low0=0.3, f_ifng_insens0=1e-5) < 0.5 * sensitive
    assert benefit(f_mhc_low0=1e-5, f_ifng_insens0=0.3) < sensitive


# ---- lactate / hypoxia / vessels (seed catalogue 3c) -------------------------------------------
def test_glycolysis_raises_lactate_and_lowers_killing(nsclc):
    """More tumour glycolysis: more lactate, a lower mean CD8 kill rate per tumour cell (at
    baseline and after 6 weeks) and a larger untreated tumour at 26 weeks."""
    runs = [run(nsclc, [0, 42, 182], "untreated", glycolysis=g) for g in (0.5, 1.0, 2.0, 4.0)]
    lactate = [at(ds, "lactate", 0) for ds in runs]
    for day in (0, 42):
        kill = [at(ds, "ctl_kill_rate", day) for ds in runs]
        assert np.all(np.diff(kill) < 0), day
    tumour = [at(ds, "tumour_cells", 182) for ds in runs]
    assert np.all(np.diff(lactate) > 0) and np.all(np.diff(tumour) > 0)
    assert 10 <= lactate[1] <= 40                       # Walenta 2000: 10-40 mM in tumours


def test_vessel_normalisation_lowers_hypoxia_and_raises_infiltration(nsclc):
    """Bevacizumab normalises vessels: after 6 weeks, vessel function and oxygen up, hypoxic
    fraction down by at least a third, effector CD8 per tumour cell up by at least 20 %."""
    u = run(nsclc, [0, 42], "untreated")
    b = run(nsclc, [0, 42], "bevacizumab_q3w")
    assert at(b, "V", 42) > at(u, "V", 42) and at(b, "oxygen", 42) > at(u, "oxygen", 42)
    assert at(b, "hypoxic_fraction", 42) <= (2 / 3) * at(u, "hypoxic_fraction", 42)
    assert at(b, "effector_ratio", 42) >= 1.2 * at(u, "effector_ratio", 42)


def test_anti_vegf_and_anti_pdl1_are_synergistic(nsclc):
    """Bliss independence on tumour size at 26 weeks: the fractional inhibition of
    atezolizumab + bevacizumab exceeds the Bliss expectation I_A + I_B - I_A I_B (and each
    single agent), for the median patient and for most of a small virtual cohort."""
    def inhibition(params: pd.DataFrame):
        size = {reg: ie.simulate_batch(nsclc, params, [0.0, 182.0], regimen=reg)["tumour_cells"].values[:, -1]
                for reg in ("untreated", "atezolizumab_q3w", "bevacizumab_q3w", "atezolizumab_bevacizumab_q3w")}
        return {reg: 1 - size[reg] / size["untreated"] for reg in size}

    rng = np.random.default_rng(3)
    cohort = pd.DataFrame({"cd8_infiltration": 0.015 * np.exp(0.5 * rng.standard_normal(40)),
                           "pdl1_basal": 0.08 * np.exp(1.0 * rng.standard_normal(40)),
                           "vegf_basal": 1.5 * np.exp(0.5 * rng.standard_normal(40))})
    median = pd.DataFrame({"cd8_infiltration": [0.015]})
    for params, share in ((median, 1.0), (cohort, 0.75)):
        i = inhibition(params)
        a, b, ab = i["atezolizumab_q3w"], i["bevacizumab_q3w"], i["atezolizumab_bevacizumab_q3w"]
        excess = ab - (a + b - a * b)
        assert np.mean(excess > 0) >= share and np.mean(ab > np.maximum(a, b)) >= share


# ---- exhaustion chain (seed catalogue 2.4.2) ----------------------------------------------------
def test_pd1_blockade_expands_progenitors_not_terminally_exhausted(melanoma):
    """Nivolumab: progenitor-exhausted cells expand (>= 20 % above untreated at 2 weeks) more than
    terminally exhausted cells; and blockade reinvigorates only progenitors: starting from
    progenitors alone it produces effectors, from terminally exhausted cells alone nothing."""
    u = run(melanoma, [0, 14], "untreated")
    n = run(melanoma, [0, 14], "nivolumab_q4w")
    p_fold, x_fold = at(n, "P", 14) / at(u, "P", 14), at(n, "X", 14) / at(u, "X", 14)
    assert p_fold >= 1.2 and p_fold > x_fold + 0.05

    def effectors(regimen, state):
        # no priming (cd8_infiltration 0 sets the priming rate to 0): only the given pool acts
        ds = ie.simulate(melanoma, np.array([0.0, 21.0]), regimen=regimen,
                         params={"cd8_infiltration": 0.0}, initial={"E": 0.0, "P": 0.0, "X": 0.0, state: 1e9})
        return float(ds["E"].values[-1])

    assert effectors("nivolumab_q4w", "P") >= 3 * effectors("untreated", "P") > 0
    assert effectors("nivolumab_q4w", "X") == effectors("untreated", "X") == 0.0


def test_pd1_plus_lag3_blockade_beats_pd1_alone(melanoma):
    """Relatlimab adds LAG-3 release to nivolumab's PD-1 release: tumours at 26 weeks are never
    larger and are smaller for the median patient, and more virtual patients respond
    (best change <= -30 % at 8-weekly scans in the first year)."""
    rng = np.random.default_rng(11)
    n = 60
    cohort = pd.DataFrame({"cd8_infiltration": 0.04 * np.exp(0.5 * rng.standard_normal(n)),
                           "pdl1_basal": 0.08 * np.exp(1.4 * rng.standard_normal(n)),
                           "lag3_level": np.exp(1.2 * rng.standard_normal(n)),
                           "r_tumour": 0.018 * np.exp(0.35 * rng.standard_normal(n))})
    days = np.arange(0.0, 365.0, 56.0)
    runs = {reg: ie.simulate_batch(melanoma, cohort, days, regimen=reg)
            for reg in ("nivolumab_q4w", "nivolumab_relatlimab_q4w")}
    size = {reg: ds["tumour_cells"].values[:, days.tolist().index(168.0)] for reg, ds in runs.items()}
    assert np.all(size["nivolumab_relatlimab_q4w"] <= size["nivolumab_q4w"] * (1 + 1e-6))
    response = {reg: np.mean(np.min(ds["sld_mm"].values, axis=1) <= 0.7 * ds["sld_mm"].values[:, 0])
                for reg, ds in runs.items()}
    assert response["nivolumab_relatlimab_q4w"] > response["nivolumab_q4w"]
    u = run(melanoma, [0, 182], "nivolumab_q4w")
    c = run(melanoma, [0, 182], "nivolumab_relatlimab_q4w")
    assert at(c, "tumour_cells", 182) < 0.9 * at(u, "tumour_cells", 182)
