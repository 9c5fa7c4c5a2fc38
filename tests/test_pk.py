"""The drug PK modules (model_specs/pk/) and the patient module against published PK.

References (each test names the ones it uses):
- Atezolizumab: Stroh M et al. Clin Pharmacol Ther 2017;102:305, values via Centanni M et al.
  Clin Pharmacokinet 2019;58:835 Table 2 (CL 0.20 L/day, V1 3.28 L, V2 3.63 L, Q 0.546 L/day at
  77 kg); Tecentriq label: terminal t1/2 27 days; Css,avg 1200/(21 x 0.20) = 286 mg/L; Marolleau S
  et al. CPT PSP 2023;12:1795 (trough after the first 1200 mg dose 78.3 +/- 17 ug/mL, n = 27);
  Tecentriq EU SmPC 5.2 via galenreasoner.com (accumulation of AUC 1.91, Cmax 1.46, trough 2.75).
- Bevacizumab: Han K et al. Cancer Chemother Pharmacol 2016;78:341 (Table 3); terminal t1/2 19.6
  days (Han 2016 Results, base model, as quoted in the nlmixr2lib vignette); 1050 mg q3w typical
  steady-state trough 143 mg/L (../shared/references/published_models.md section 6, [C]).
- Nivolumab: Bajaj G et al. CPT PSP 2017;6:58 (Table 1); t1/2 20.9 days at baseline CL and 27.6
  days at steady-state CL, 480 mg q4w typical steady-state trough 67 mg/L (published_models.md
  section 6, [C] from Bajaj's parameters).
- Relatlimab: Zhao Y et al. Clin Cancer Res 2024;30:3050: structure (2-cmt, time-varying linear
  CL + Michaelis-Menten), non-linear share of CL 31 % at 160 mg q4w (abstract), and Table 3
  first-line melanoma geometric means (via the pharmacolibrary-docs transcription cited in the
  spec): CL0 6.06 / CLss 5.48 mL/h, Vc 3.59 / Vp 3.00 L, Vmax 80.3 ug/h; 160 mg q4w Cmax1 44.4,
  Cavg1 14.8, Cmin1 5.7, Cmaxss 62.2, Cavgss 28.8, Cminss 15.3 ug/mL. Opdualag label (via
  published_models.md section 6, [R]): effective t1/2 ~26 days.
- Carboplatin: Calvert AH et al. J Clin Oncol 1989;7:1748 (dose = AUC x (GFR + 25); AUC 6 at GFR
  100 -> 750 mg); Ekhart C et al. Cancer Chemother Pharmacol 2009;64:115 (distribution); free-Pt
  terminal t1/2 2.0 h (Elferink 1987, 120 +/- 11 min) to ~6 h (carboplatin SmPC), Gaver 1988: 3.0 h.
- Paclitaxel: Crombag MRBS et al. Pharm Res 2019;36:33 via Janssen JM et al. Clin Pharmacokinet
  2023;62:1157 Table 1; Taxol label Table 1 (3-h infusions; 135 mg/m^2: Cmax 2170 ng/mL, AUC 7952
  ng h/mL, t1/2 13.1 h; 175 mg/m^2: Cmax 3650 ng/mL, AUC 15007 ng h/mL, t1/2 20.2 h).
- Aldesleukin: Konrad MW et al. Cancer Res 1990;50:2009 (t1/2 alpha 12.9 min, beta 85 min; bolus
  peak 650 U/mL per 1e6 U/m^2); Proleukin label (18e6 IU = 1.1 mg).
- Bempegaldesleukin: no human PK numbers were found; the module's rates are stated assumptions,
  so its test checks the implementation against the closed-form (Bateman) solution only.
- Patient covariates: Bajaj 2017 Table 3 (weight mean 79.1 kg SD 19.3; eGFR mean 78.5 SD 21.6
  mL/min/1.73 m^2); Sacco JJ et al. PLoS One 2010;5:e8933 (mean BSA 1.79 m^2).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from scipy.integrate import simpson
from scipy.linalg import expm

import immunoedit_models as ie

LN2 = np.log(2.0)
TIGHT = dict(rtol=1e-10, atol=1e-14)
HOUR, MINUTE = 1.0 / 24.0, 1.0 / 1440.0


@lru_cache(maxsize=None)
def pk_model(name: str) -> ie.CompiledModel:
    return ie.compile_model(ie.load_spec(name), backend="numba")


def value(name: str, parameter: str) -> float:
    """A parameter's value as written in the spec (read independently of the compiled kernel)."""
    return pk_model(name).spec.parameters[parameter].value


def one_dose(drug: str, amount: float | str, duration: float = 0.0) -> ie.Regimen:
    return ie.Regimen.repeated(drug, amount, count=1, duration=duration)


def tail_half_life(times: np.ndarray, conc: np.ndarray) -> float:
    """Half-life of the log-linear fit of conc over times (same time unit as times)."""
    slope = np.polyfit(times, np.log(conc), 1)[0]
    return LN2 / -slope


def terminal_eigen_half_life(rate_matrix: np.ndarray) -> float:
    """Half-life of the slowest mode of a linear system dA/dt = K A."""
    return LN2 / np.min(-np.linalg.eigvals(rate_matrix).real)


def two_cmt_matrix(CL: float, V1: float, Q: float, V2: float) -> np.ndarray:
    """Rate matrix of a two-compartment model in amounts (central, peripheral)."""
    return np.array([[-(CL + Q) / V1, Q / V2], [Q / V1, -Q / V2]])


# ---- closed form ---------------------------------------------------------------------------------
def test_atezolizumab_matches_matrix_exponential():
    """A 1200 mg bolus in the 77 kg reference patient (Stroh 2017 values) against expm(K t) A0."""
    model = pk_model("atezolizumab")
    times = np.linspace(0.0, 120.0, 121)
    ds = ie.simulate(model, times, params={"weight": 77.0}, regimen=one_dose("atezolizumab", 1200.0), **TIGHT)
    K = two_cmt_matrix(0.20, 3.28, 0.546, 3.63)
    exact = np.array([expm(K * t) @ np.array([1200.0, 0.0]) for t in times])
    got = np.stack([ds["atezolizumab_A1"].values, ds["atezolizumab_A2"].values], axis=1)
    np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ds["atezolizumab_conc"].values, exact[:, 0] / 3.28, rtol=1e-6)


def test_bempegaldesleukin_matches_bateman_solution():
    """Prodrug -> active chain after a bolus against the closed form. The rates are the module's
    stated assumptions (no human bempegaldesleukin PK was found), so this checks the structure
    and the mg -> ug -> ng/mL conversions, not published data."""
    model = pk_model("bempegaldesleukin")
    ka, ke = value("bempegaldesleukin", "bempegaldesleukin_release_rate"), value(
        "bempegaldesleukin", "bempegaldesleukin_elimination_rate")
    V = value("bempegaldesleukin", "bempegaldesleukin_v_per_bsa") * 1.8  # stand-in BSA 1.8 m^2
    dose_ug = 0.006 * 70.0 * 1000.0  # 0.006 mg/kg x 70 kg, in ug
    times = np.linspace(0.0, 15.0, 301)
    ds = ie.simulate(model, times, regimen=one_dose("bempegaldesleukin", 0.006 * 70.0), **TIGHT)
    exact = dose_ug / V * ka / (ke - ka) * (np.exp(-ka * times) - np.exp(-ke * times))  # ug/L = ng/mL
    np.testing.assert_allclose(ds["bempegaldesleukin_conc"].values, exact, rtol=1e-6, atol=1e-12)
    t_max = np.log(ke / ka) / (ke - ka)
    assert abs(times[np.argmax(ds["bempegaldesleukin_conc"].values)] - t_max) <= 0.05 + 1e-12
    late = times >= 10.0  # flip-flop: the tail follows the slower release
    assert tail_half_life(times[late], ds["bempegaldesleukin_conc"].values[late]) == pytest.approx(LN2 / ka, rel=1e-3)


# ---- terminal half-lives -------------------------------------------------------------------------
ANTIBODIES = [
    # drug, published t1/2 (days), relative tolerance, parameter changes, rate matrix from the paper
    pytest.param("atezolizumab", 27.0, 0.05, {"weight": 77.0}, two_cmt_matrix(0.20, 3.28, 0.546, 3.63),
                 id="atezolizumab"),
    pytest.param("bevacizumab", 19.6, 0.05, {}, two_cmt_matrix(8.6e-3 * 24, 2.678, 18.6e-3 * 24, 2.423),
                 id="bevacizumab"),
    pytest.param("nivolumab", 20.9, 0.02, {"nivolumab_cl_emax": 0.0},
                 two_cmt_matrix(9.4e-3 * 24, 3.63, 32.1e-3 * 24, 2.78), id="nivolumab-baseline-CL"),
    pytest.param("nivolumab", 27.6, 0.02, {"nivolumab_cl_t50": 1e-3},  # CL at steady state from day 0
                 two_cmt_matrix(9.4e-3 * 24 * np.exp(-0.295), 3.63, 32.1e-3 * 24, 2.78), id="nivolumab-steady-CL"),
]


@pytest.mark.parametrize("name, published_days, tolerance, params, K", ANTIBODIES)
def test_antibody_terminal_half_life(name, published_days, tolerance, params, K):
    """Log-linear tail of a single label dose: equals the slowest eigenvalue of the published
    parameters (0.5 %) and the published half-life (5 % atezolizumab label 27 d, Han 2016 19.6 d;
    2 % nivolumab [C] 20.9 / 27.6 d). Relatlimab (non-linear) has its own tests below."""
    model = pk_model(name)
    times = np.linspace(60.0, 150.0, 91)
    regimen = one_dose(name, {"nivolumab": 480.0}.get(name, 1200.0), duration=HOUR)
    ds = ie.simulate(model, times, params=params, regimen=regimen, t0=0.0, **TIGHT)
    got = tail_half_life(times, ds[f"{name}_conc"].values)
    assert got == pytest.approx(terminal_eigen_half_life(K), rel=5e-3)
    assert got == pytest.approx(published_days, rel=tolerance)


def test_carboplatin_terminal_half_life():
    """Free-Pt tail after an AUC 6 dose at GFR 100: the slowest eigenvalue of Ekhart's distribution
    with the Calvert CL (0.5 %), inside the published 2-6 h range (Elferink 1987: 2.0 h; Gaver
    1988: 3.0 h; carboplatin SmPC: ~6 h)."""
    model = pk_model("carboplatin")
    times = np.linspace(12 * HOUR, 36 * HOUR, 49)
    ds = ie.simulate(model, times, params={"gfr": 100.0}, regimen=one_dose("carboplatin", 750.0, 0.5 * HOUR),
                     t0=0.0, **TIGHT)
    got = tail_half_life(times, ds["carboplatin_conc"].values) / HOUR
    V1, k12, k21 = 15.4, 0.135, 0.215  # Ekhart 2009, per hour
    K = two_cmt_matrix((100 + 25) * 60 / 1000, V1, k12 * V1, k12 * V1 / k21)  # L/h
    assert got == pytest.approx(terminal_eigen_half_life(K), rel=5e-3)
    assert 2.0 <= got <= 6.0


def test_paclitaxel_terminal_half_life_is_the_linear_limit():
    """Far below KM the saturable model is linear: the tail of a 200 mg/m^2 3-h infusion equals
    the slowest eigenvalue of Crombag's parameters linearised (k10 = VM_EL/KM_EL/V1, k12 =
    VM_TR/KM_TR/V1) to 1 %, and lies in the label's range of 3-h infusions (13.1-20.2 h)."""
    model = pk_model("paclitaxel")
    times = np.linspace(150 * HOUR, 300 * HOUR, 61)
    ds = ie.simulate(model, times, params={"bsa": 1.8}, regimen=one_dose("paclitaxel", 360.0, 3 * HOUR),
                     t0=0.0, rtol=1e-10, atol=1e-20)
    got = tail_half_life(times, ds["paclitaxel_conc"].values) / HOUR
    V1, k21, Q, V3 = 12.0, 1.21, 16.8, 268.0
    k10, k12 = 33.8 / 0.44 / V1, 177.0 / 1.61 / V1
    K = np.array([[-(k10 + k12 + Q / V1), k21, Q / V3], [k12, -k21, 0.0], [Q / V1, 0.0, -Q / V3]])
    assert got == pytest.approx(terminal_eigen_half_life(K), rel=1e-2)
    assert 13.1 <= got <= 20.2


def test_aldesleukin_two_half_lives_and_peak():
    """600,000 IU/kg bolus (70 kg, 1.8 m^2): Konrad 1990 t1/2 beta 85 min (1 %, tail 4-8 h) and
    alpha 12.9 min (2 %, residual after removing the tail, 0-40 min); peak = Konrad's 650 U/mL per
    1e6 U/m^2 converted with the label's 18e6 IU = 1.1 mg (1 %)."""
    model = pk_model("aldesleukin")
    dose_iu = 600_000 * 70.0
    early = np.linspace(0.0, 40 * MINUTE, 41)
    late = np.linspace(4 * HOUR, 8 * HOUR, 41)
    times = np.concatenate([early, late])
    ds = ie.simulate(model, times, regimen=one_dose("aldesleukin", dose_iu), **TIGHT)
    conc = ds["aldesleukin_conc"].values
    beta = tail_half_life(late, conc[41:])
    assert beta / MINUTE == pytest.approx(85.0, rel=1e-2)
    slope, intercept = np.polyfit(late, np.log(conc[41:]), 1)
    residual = conc[:41] - np.exp(intercept + slope * early)
    assert tail_half_life(early, residual) / MINUTE == pytest.approx(12.9, rel=2e-2)
    peak_iu_per_ml = 650.0 * dose_iu / 1.8 / 1e6  # U/mL
    assert conc[0] == pytest.approx(peak_iu_per_ml * 1.1e6 / 18e6, rel=1e-2)  # ng/mL


def test_aldesleukin_infusion_matches_matrix_exponential():
    """The label's 15-min infusion: concentrations during and after it against the closed form of
    a constant input (augmented matrix exponential) with the module's parameter values."""
    model = pk_model("aldesleukin")
    p = {k: value("aldesleukin", f"aldesleukin_{k}") for k in ("v1_per_bsa", "CL", "Q", "V2")}
    V1 = p["v1_per_bsa"] * 1.8
    dose_ug = 600_000 * 70.0 * 1100.0 / 18e6
    T = 15 * MINUTE
    K = np.zeros((3, 3))
    K[:2, :2] = two_cmt_matrix(p["CL"], V1, p["Q"], p["V2"])
    K[0, 2] = dose_ug / T  # third coordinate: a constant 1 that feeds the input rate
    times = np.linspace(0.0, 2 * HOUR, 49)
    ds = ie.simulate(model, times, regimen=one_dose("aldesleukin", 600_000 * 70.0, T), **TIGHT)
    during = lambda t: expm(K * t) @ np.array([0.0, 0.0, 1.0])  # noqa: E731
    exact = np.array([during(t)[0] if t <= T else (expm(K[:2, :2] * (t - T)) @ during(T)[:2])[0]
                      for t in times]) / V1
    np.testing.assert_allclose(ds["aldesleukin_conc"].values, exact, rtol=1e-6, atol=1e-9)


# ---- steady state --------------------------------------------------------------------------------
def test_nivolumab_steady_state_trough():
    """480 mg q4w (30-min infusions), reference patient: trough before the 20th dose 67 mg/L
    (published_models.md [C] from Bajaj 2017) within 2 %."""
    model = pk_model("nivolumab")
    regimen = ie.Regimen.repeated("nivolumab", 480.0, every=28.0, count=20, duration=0.5 * HOUR)
    ds = ie.simulate(model, [0.0, 19 * 28.0 - 1e-6], regimen=regimen, **TIGHT)
    assert ds["nivolumab_conc"].values[-1] == pytest.approx(67.0, rel=0.02)


RELATLIMAB_ZHAO2024 = dict(CL0=6.06e-3 * 24, CLss=5.48e-3 * 24, V1=3.59, V2=3.00, Vmax=80.3e-3 * 24)  # L, day, mg


def relatlimab_rhs(t: float, A: np.ndarray, rate: float, Km: float, Q: float, t50: float, hill: float) -> list[float]:
    """Zhao 2024's structure written out independently: d(A1, A2)/dt in mg/day at time t (days)."""
    p = RELATLIMAB_ZHAO2024
    C = A[0] / p["V1"]
    CL = p["CL0"] * (p["CLss"] / p["CL0"]) ** ((t / t50) ** hill / (1 + (t / t50) ** hill))
    transfer = Q * (C - A[1] / p["V2"])
    return [rate - CL * C - p["Vmax"] * C / (Km + C) - transfer, transfer]


def test_relatlimab_matches_scipy_implementation_of_zhao_2024():
    """First two 160 mg q4w 30-min infusions (time-varying linear CL + Michaelis-Menten) against
    scipy solve_ivp of the same equations with Zhao 2024's Table 3 values typed in (Km, Q, T50 and
    Hill from the spec: derived/borrowed there), to 1e-6."""
    from scipy.integrate import solve_ivp

    model = pk_model("relatlimab")
    borrowed = {k: value("relatlimab", f"relatlimab_{k}") for k in ("km", "Q", "cl_t50", "cl_hill")}
    T = 30 * MINUTE
    times = np.linspace(0.0, 56.0, 113)
    ds = ie.simulate(model, times, regimen=ie.Regimen.repeated("relatlimab", 160.0, every=28.0, count=2, duration=T),
                     **TIGHT)
    A, exact = np.zeros(2), []
    for start in (0.0, 28.0):
        args = tuple(borrowed.values())
        A = solve_ivp(relatlimab_rhs, (start, start + T), A, args=(160.0 / T, *args), rtol=1e-11, atol=1e-12).y[:, -1]
        grid = times[(times > start + T) & (times <= start + 28.0)]
        sol = solve_ivp(relatlimab_rhs, (start + T, start + 28.0), A, args=(0.0, *args), t_eval=grid,
                        rtol=1e-11, atol=1e-12)
        exact.append(sol.y[0] / RELATLIMAB_ZHAO2024["V1"])
        A = sol.y[:, -1]
    got = ds["relatlimab_conc"].values
    np.testing.assert_allclose(got[1:], np.concatenate(exact), rtol=1e-6)


def relatlimab_intervals(doses: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """160 mg q4w (30-min infusions), typical patient: times and concentrations over the first and
    the last of `doses` dosing intervals."""
    first = np.concatenate([np.linspace(0.0, 30 * MINUTE, 31), np.linspace(30 * MINUTE, 28.0, 2801)[1:]])
    last = first + 28.0 * (doses - 1)
    regimen = ie.Regimen.repeated("relatlimab", 160.0, every=28.0, count=doses, duration=30 * MINUTE)
    ds = ie.simulate(pk_model("relatlimab"), np.concatenate([first, last[1:]]), regimen=regimen, **TIGHT)
    conc = ds["relatlimab_conc"].values
    return first, conc[:first.size], last, np.concatenate([[conc[first.size - 1]], conc[first.size:]])


def test_relatlimab_exposures_against_zhao_2024():
    """160 mg q4w, first interval and steady state (20th dose), typical patient against Zhao 2024
    Table 3 geometric means of first-line melanoma patients (RELATIVITY-047): Cmax and Cavg within
    5 % (44.4 / 14.8 after dose 1, 62.2 / 28.8 mg/L at steady state); troughs within 30 %
    (5.7 / 15.3 mg/L; the model gives 7.2 / 18.2: the typical patient is built from geometric means
    of post-hoc parameters with Q borrowed from nivolumab, and troughs carry the largest spread,
    CV ~50 %); accumulation Cavgss/Cavg1 = 28.8/14.8 = 1.95 within 2 %."""
    t1, c1, tss, css = relatlimab_intervals(20)
    c_avg1, c_avgss = simpson(c1, x=t1) / 28.0, simpson(css, x=tss) / 28.0
    assert c1.max() == pytest.approx(44.4, rel=0.05)
    assert c_avg1 == pytest.approx(14.8, rel=0.05)
    assert css.max() == pytest.approx(62.2, rel=0.05)
    assert c_avgss == pytest.approx(28.8, rel=0.05)
    assert c1[-1] == pytest.approx(5.7, rel=0.30)
    assert css[-1] == pytest.approx(15.3, rel=0.30)
    assert c_avgss / c_avg1 == pytest.approx(28.8 / 14.8, rel=0.02)


def test_relatlimab_nonlinear_share_and_effective_half_life():
    """Steady state of 160 mg q4w: the saturable route removes 31 % of an interval's elimination
    (Zhao 2024 abstract; the module's Km is derived from it, so this checks the derivation, 1 %),
    and the effective half-life from the accumulation ratio, ln2 tau / ln(R/(R - 1)), is the
    label's ~26 days within 10 %."""
    t1, c1, tss, css = relatlimab_intervals(20)
    p = RELATLIMAB_ZHAO2024
    km = value("relatlimab", "relatlimab_km")
    saturable = simpson(p["Vmax"] * css / (km + css), x=tss)
    linear = simpson(p["CLss"] * css, x=tss)  # day 532 >> T50: linear CL is CLss to 1e-4
    assert saturable / (saturable + linear) == pytest.approx(0.31, rel=0.01)
    ratio = simpson(css, x=tss) / simpson(c1, x=t1)
    assert LN2 * 28.0 / np.log(ratio / (ratio - 1.0)) == pytest.approx(26.0, rel=0.10)


def test_bevacizumab_steady_state_trough():
    """Label regimen 15 mg/kg q3w at the 70 kg female reference (1050 mg, 90-min infusions):
    trough before the 18th dose 143 mg/L (published_models.md [C] from Han 2016) within 2 %."""
    model = pk_model("bevacizumab")
    ds = ie.simulate(model, [0.0, 17 * 21.0 - 1e-6], regimen="q3w_15mg_per_kg", **TIGHT)
    assert ds["bevacizumab_conc"].values[-1] == pytest.approx(143.0, rel=0.02)


def test_atezolizumab_average_steady_state_concentration():
    """1200 mg q3w at 77 kg: AUC over the 17th interval / 21 days = Dose/(CL tau) = 286 mg/L (0.5 %),
    the one-compartment check of published_models.md (linear PK: exact at steady state)."""
    model = pk_model("atezolizumab")
    times = np.linspace(16 * 21.0, 17 * 21.0, 2101)
    ds = ie.simulate(model, times, params={"weight": 77.0}, regimen="q3w_1200mg", t0=0.0, **TIGHT)
    c_avg = simpson(ds["atezolizumab_conc"].values, x=times) / 21.0
    assert c_avg == pytest.approx(1200.0 / 21.0 / 0.20, rel=5e-3)


def test_atezolizumab_first_trough_and_accumulation():
    """1200 mg q3w (60-min infusions) at the 77 kg reference: trough after the first dose against
    the real-world mean 78.3 +/- 17 mg/L (Marolleau 2023, n = 27: SE 3.3) within 10 %; accumulation
    (20th interval over the first) of AUC and Cmax within 10 % of the SmPC's 1.91 and 1.46, of the
    trough within 20 % of 2.75 (model 2.07 / 1.53 / 2.37; it omits the ~17 % fall of CL over time)."""
    first = np.concatenate([np.linspace(0.0, HOUR, 61), np.linspace(HOUR, 21.0, 2101)[1:]])
    last = first + 19 * 21.0
    regimen = ie.Regimen.repeated("atezolizumab", 1200.0, every=21.0, count=20, duration=HOUR)
    ds = ie.simulate(pk_model("atezolizumab"), np.concatenate([first, last[1:]]), params={"weight": 77.0},
                     regimen=regimen, **TIGHT)
    conc = ds["atezolizumab_conc"].values
    c1, css = conc[:first.size], np.concatenate([[conc[first.size - 1]], conc[first.size:]])
    assert c1[-1] == pytest.approx(78.3, rel=0.10)
    assert simpson(css, x=last) / simpson(c1, x=first) == pytest.approx(1.91, rel=0.10)
    assert css.max() / c1.max() == pytest.approx(1.46, rel=0.10)
    assert css[-1] / c1[-1] == pytest.approx(2.75, rel=0.20)


# ---- exposure ------------------------------------------------------------------------------------
@pytest.mark.parametrize("gfr, cl_scale", [(100.0, 1.0), (60.0, 1.0), (100.0, 1.25)])
def test_carboplatin_calvert_auc(gfr, cl_scale):
    """Calvert 1989: the AUC 6 regimen gives 6 x (GFR + 25) mg (750 mg at GFR 100) and AUC = dose/CL
    = 6 mg min/mL when CL = GFR + 25 mL/min; a patient whose CL is 25 % above Calvert's gets 6/1.25.
    AUC of the first cycle (0-3 days, Simpson) to 1 %."""
    model = pk_model("carboplatin")
    end = 0.5 * HOUR
    times = np.concatenate([np.linspace(0.0, end, 201), np.linspace(end, 3.0, 20001)[1:]])
    params = {"gfr": gfr, "carboplatin_cl_per_gfr": 1.44 * cl_scale}
    ds = ie.simulate(model, times, params=params, regimen="auc6_q3w", **TIGHT)
    conc = ds["carboplatin_conc"].values
    auc = simpson(conc[:201], x=times[:201]) + simpson(conc[200:], x=times[200:])  # mg day/L
    assert auc * 1440 / 1000 == pytest.approx(6.0 / cl_scale, rel=1e-2)  # mg min/mL


def test_paclitaxel_exposure_against_label():
    """3-h infusions at 135 and 175 mg/m^2 (BSA 1.8 m^2): Cmax and AUC within 20 % of the Taxol
    label means (n = 5-7 per arm), and exposure more than dose-proportional (label AUC +89 % for
    +30 % dose; the model must exceed +30 %)."""
    model = pk_model("paclitaxel")
    times = np.concatenate([np.linspace(0.0, 3 * HOUR, 301), np.linspace(3 * HOUR, 10.0, 24001)[1:]])
    label = {135.0: (2170.0, 7952.0), 175.0: (3650.0, 15007.0)}  # Cmax ng/mL, AUC ng h/mL
    auc = {}
    for dose_per_m2, (cmax_label, auc_label) in label.items():
        ds = ie.simulate(model, times, params={"bsa": 1.8, "paclitaxel_dose_per_m2": dose_per_m2},
                         regimen="q3w_200mg_per_m2", **TIGHT)
        conc = ds["paclitaxel_conc"].values * 1000.0  # ng/mL
        auc[dose_per_m2] = (simpson(conc[:301], x=times[:301]) + simpson(conc[300:], x=times[300:])) * 24
        assert conc.max() == pytest.approx(cmax_label, rel=0.20)
        assert auc[dose_per_m2] == pytest.approx(auc_label, rel=0.20)
    assert auc[175.0] / auc[135.0] > 1.05 * 175.0 / 135.0


@pytest.mark.parametrize("name, no_elimination, covariates, states, expected", [
    ("bevacizumab", {"bevacizumab_CL_ref": 0.0}, {"weight": 80.0}, ["bevacizumab_A1", "bevacizumab_A2"], 15 * 80.0),
    ("carboplatin", {"carboplatin_cl_per_gfr": 0.0}, {"gfr": 100.0}, ["carboplatin_A1", "carboplatin_A2"], 750.0),
    ("paclitaxel", {"paclitaxel_vmax_elimination": 0.0}, {"bsa": 1.9},
     ["paclitaxel_A1", "paclitaxel_A2", "paclitaxel_A3"], 200 * 1.9 / 0.8539),
    ("aldesleukin", {"aldesleukin_CL": 0.0}, {"weight": 80.0}, ["aldesleukin_A1", "aldesleukin_A2"],
     600_000 * 80.0 * 1100.0 / 18e6),
    ("bempegaldesleukin", {"bempegaldesleukin_release_rate": 0.0}, {"weight": 80.0},
     ["bempegaldesleukin_prodrug", "bempegaldesleukin_active"], 0.006 * 80.0 * 1000.0),
])
def test_body_size_dose_through_the_regimen(name, no_elimination, covariates, states, expected):
    """Label regimens whose amount is an expression of patient covariates (15 mg/kg x weight,
    200 mg/m^2 x BSA, Calvert AUC x (GFR + 25), 600,000 IU/kg x weight, 0.006 mg/kg x weight):
    with elimination switched off, the amount in the body after the first infusion is the label
    dose in the state's unit (mg, umol via 853.9 g/mol, ug via 18e6 IU = 1.1 mg)."""
    model = pk_model(name)
    ds = ie.simulate(model, [0.0, 0.2], params={**no_elimination, **covariates}, **TIGHT)
    assert sum(ds[s].values[-1] for s in states) == pytest.approx(expected, rel=1e-9)


# ---- patient module and composition --------------------------------------------------------------
def test_patient_priors_reproduce_the_cited_populations():
    """Lognormal priors: weight mean 79.1 kg and SD 19.3 kg (Bajaj 2017, 1 %); GFR normalised to
    1.73 m^2 at the median BSA has mean 78.5 and CV 0.275 (Bajaj 2017, 1 %); median BSA 1.79 m^2
    (Sacco 2010); male fraction 0.667 (Bajaj 2017)."""
    spec = ie.load_spec("patient")

    def moments(name):
        prior = spec.parameters[name].prior
        mu, s = np.log(prior["median"]), prior["sigma"]
        mean = np.exp(mu + s**2 / 2)
        return mean, mean * np.sqrt(np.exp(s**2) - 1)

    mean, sd = moments("weight")
    assert (mean, sd) == (pytest.approx(79.1, rel=1e-2), pytest.approx(19.3, rel=1e-2))
    mean, sd = moments("gfr")
    bsa = spec.parameters["bsa"].prior["median"]
    assert mean * 1.73 / bsa == pytest.approx(78.5, rel=1e-2)
    assert sd / mean == pytest.approx(21.6 / 78.5, rel=1e-2)
    assert bsa == pytest.approx(1.79)
    assert spec.parameters["male_fraction"].value == pytest.approx(1 - 0.333, abs=1e-3)


def test_pk_modules_compose_with_the_patient_module(tmp_path):
    """patient + nivolumab + bevacizumab + carboplatin in one model: the PK covariates bind to the
    patient module (not the stand-ins), and the uniform sex draw switches the sex effects
    (Han 2016: male CL x1.14; Bajaj 2017: exp(0.165))."""
    path = tmp_path / "pk_composition.yaml"
    path.write_text("name: pk_composition\nkind: model\nuses: [patient, nivolumab, bevacizumab, carboplatin]\n")
    model = ie.compile_model(ie.load_spec(path), backend="numba")
    male = ie.simulate(model, [0.0], params={"sex_draw": 0.2, "weight": 70.0, "gfr": 100.0}, regimen="none")
    female = ie.simulate(model, [0.0], params={"sex_draw": 0.9, "weight": 70.0, "gfr": 100.0}, regimen="none")
    assert (float(male["male"][0]), float(female["male"][0])) == (1.0, 0.0)
    assert float(female["bevacizumab_CL"][0]) == pytest.approx(0.2064, rel=1e-9)  # 70 kg female reference
    assert float(male["bevacizumab_CL"][0] / female["bevacizumab_CL"][0]) == pytest.approx(1.14, rel=1e-9)
    assert float(male["nivolumab_CL0"][0] / female["nivolumab_CL0"][0]) == pytest.approx(np.exp(0.165), rel=1e-9)
    assert float(female["carboplatin_CL"][0]) == pytest.approx((100 + 25) * 1.44, rel=1e-9)  # L/day
