"""The composed trial models immunoediting_nsclc and immunoediting_melanoma.

Checked against independent references: the contract's sld formula recomputed here from
tumour_cells; the JAX backend (diffrax Kvaerno5) against numba (Rodas5P) on a 1-year dosed run;
conservation laws read from the flows (CD8 exhaustion chain, tumour escape mutations, antibody
mass without elimination); and published ranges for the virtual population drawn from the
priors (RELATIVITY-047 baseline SLD median 59 mm, range 10-317 mm, PD-L1 >= 1 % in 41 %, LAG-3
>= 1 % in 75 %, Tawbi et al. NEJM 2022, ../shared/data/trials/relativity047/published.csv;
NSCLC volume doubling time 139-191 days, Everitt 2012, Mackintosh 2014).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sympy as sp

import immunoedit_models as ie

MODELS = {"immunoediting_nsclc": "abcp_induction4", "immunoediting_melanoma": "nivolumab_relatlimab_q4w"}
CONTRACT_OBSERVABLES = ("tumour_cells", "sld_mm", "pdl1_tumour", "pdl1_immune", "teff_signature",
                        "lag3_immune")
PATIENT_PARAMETERS = ("sld0", "n_lesions", "r_tumour", "cd8_infiltration", "pdl1_basal",
                      "pdl1_myeloid_basal", "treg_infiltration", "nk_infiltration", "tam_density",
                      "m2_bias", "glycolysis", "lag3_level", "f_mhc_low0", "f_ifng_insens0",
                      "weight", "bsa", "gfr")


def draw_priors(spec, n: int, seed: int) -> pd.DataFrame:
    """Independent draws from every prior of a spec, clipped to the parameter's bounds."""
    rng = np.random.default_rng(seed)
    columns = {}
    for name, p in spec.parameters.items():
        prior = p.prior
        if not prior:
            continue
        kind = prior["distribution"]
        if kind == "lognormal":
            x = prior["median"] * np.exp(prior["sigma"] * rng.standard_normal(n))
        elif kind == "normal":
            x = prior["mean"] + prior["sd"] * rng.standard_normal(n)
        elif kind == "uniform":
            x = rng.uniform(prior["low"], prior["high"], n)
        else:
            x = np.exp(rng.uniform(np.log(prior["low"]), np.log(prior["high"]), n))
        columns[name] = np.clip(x, *p.bounds) if p.bounds else x
    return pd.DataFrame(columns)


def best_change_and_orr(sld: np.ndarray, every: int = 42) -> tuple[np.ndarray, float]:
    """Best % change of the sum of diameters at scans every `every` days until RECIST
    progression (+20 % and +5 mm over the nadir); ORR = share with a best change <= -30 %."""
    scans = sld[:, ::every]
    best = np.zeros(len(scans))
    for i, row in enumerate(scans):
        nadir = row[0]
        for value in row[1:]:
            if value >= 1.2 * nadir and value - nadir >= 5:
                break
            best[i] = min(best[i], 100 * (value - row[0]) / row[0])
            nadir = min(nadir, value)
    return best, float(np.mean(best <= -30))


@pytest.fixture(scope="module")
def specs():
    return {name: ie.load_spec(name) for name in MODELS}


@pytest.fixture(scope="module")
def numba_models(specs):
    return {name: ie.compile_model(spec, backend="numba") for name, spec in specs.items()}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_spec_meets_the_trial_contract(specs, name):
    spec = specs[name]
    assert len(spec.states) <= 20, f"{name} has {len(spec.states)} states (limit 20)"
    expected = CONTRACT_OBSERVABLES + (("il2_toxicity",) if "melanoma" in name else ())
    assert set(expected) <= set(spec.observables)
    assert {"untreated", MODELS[name]} <= set(spec.regimens) and spec.default_regimen == MODELS[name]
    assert all(p.source for p in spec.parameters.values())
    varying = PATIENT_PARAMETERS + (("vegf_basal", "mdsc_infiltration") if "nsclc" in name else ())
    assert [p for p in varying if not spec.parameters[p].prior] == []


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sld_is_the_contract_formula_of_tumour_cells(numba_models, name):
    model = numba_models[name]
    ds = ie.simulate(model, np.linspace(0.0, 180.0, 7), params={"n_lesions": 2.5, "sld0": 80.0})
    volume_ml = ds["tumour_cells"].values / 1e9                       # 1e9 cells per cm^3
    expected = 2.5 * 10.0 * (6 * volume_ml / (np.pi * 2.5)) ** (1 / 3)   # mm
    np.testing.assert_allclose(ds["sld_mm"].values, expected, rtol=1e-10)
    assert ds["sld_mm"].values[0] == pytest.approx(80.0, rel=1e-10)     # sld0 is the baseline


@pytest.mark.parametrize("name", sorted(MODELS))
def test_numba_and_jax_agree_on_a_dosed_year(specs, numba_models, name):
    """Two independent solvers and code generators: Rodas5P (numba) vs Kvaerno5 (diffrax)."""
    jax_model = ie.compile_model(specs[name], backend="jax")
    times = np.linspace(0.0, 365.0, 13)
    kw = dict(regimen=MODELS[name], rtol=1e-8, atol=1e-10)
    a = ie.simulate(numba_models[name], times, **kw)
    b = ie.simulate(jax_model, times, **kw)
    assert int(a.status) == 0 and int(b.status) == 0
    for var in (*specs[name].states, *CONTRACT_OBSERVABLES):
        x, y = a[var].values, b[var].values
        atol = max(1e-7 * np.max(np.abs(x)), 1e-12)     # undosed drugs stay at round-off zero
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=atol, err_msg=var)


def test_flows_conserve_cells_and_drug(specs, numba_models):
    """Transfers between compartments conserve what they move (stoichiometry columns sum to 0)."""
    spec = specs["immunoediting_nsclc"]
    sym = numba_models["immunoediting_nsclc"].symbolic
    pools = {"cd8 chain": ("E", "P", "X"), "tumour clones": ("T_s", "T_m", "T_g")}
    transfers = {"cd8 chain": ("exhaustion", "il2_overdrive", "reinvigoration", "terminal_exhaustion"),
                 "tumour clones": ("mhc_loss", "ifng_loss")}
    for pool, flows in transfers.items():
        rows = [sym.states.index(s) for s in pools[pool]]
        for flow in flows:
            column = sym.stoichiometry[:, sym.flows.index(flow)]
            assert sp.simplify(sum(column[r] for r in rows)) == 0, (pool, flow)
            assert set(spec.flows[flow].source) | set(spec.flows[flow].target) <= set(pools[pool])
    # Numerically: without elimination, atezolizumab amount (central + peripheral) stays the dose.
    days = np.linspace(0.0, 365.0, 5)
    ds = ie.simulate(numba_models["immunoediting_nsclc"], days, params={"atezolizumab_CL_ref": 0.0},
                     regimen="atezolizumab_q3w")
    total = ds["atezolizumab_A1"].values + ds["atezolizumab_A2"].values
    doses_given = np.floor(days / 21) + 1          # 1200 mg every 21 days from day 0
    np.testing.assert_allclose(total, 1200.0 * doses_given, rtol=1e-8)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_virtual_patients_from_the_priors_are_plausible(specs, numba_models, name):
    """Baseline observables in their ranges, untreated tumours grow, therapy shrinks some."""
    model = numba_models[name]
    draws = draw_priors(specs[name], 160, seed=7)
    days = np.arange(0.0, 366.0)
    untreated = ie.simulate_batch(model, draws, days, regimen="untreated")
    treated = ie.simulate_batch(model, draws, days, regimen=MODELS[name])
    assert int((untreated["status"] != 0).sum()) == 0 and int((treated["status"] != 0).sum()) == 0

    base = untreated.isel(time=0)
    sld0 = base["sld_mm"].values
    assert 40 <= np.median(sld0) <= 80                      # RELATIVITY-047 median 59 mm
    assert np.percentile(sld0, 2) >= 8 and np.percentile(sld0, 98) <= 400   # range 10-317 mm
    for pct in ("pdl1_tumour", "pdl1_immune", "lag3_immune"):
        assert np.all((base[pct].values >= 0) & (base[pct].values <= 100)), pct
    assert 0.3 <= np.mean(base["pdl1_tumour"].values >= 1) <= 0.8      # 41 % in RELATIVITY-047
    assert 0.5 <= np.mean(base["lag3_immune"].values >= 1) <= 0.95     # 75 % in RELATIVITY-047
    assert np.all(np.isfinite(base["teff_signature"].values))
    assert np.ptp(base["teff_signature"].values) > 2       # a signature that separates patients

    growth = np.log(untreated["tumour_cells"].values[:, 84] / untreated["tumour_cells"].values[:, 0]) / 84
    assert np.mean(growth > 0) >= 0.9                        # escaping tumours at baseline
    assert 40 <= np.log(2) / np.median(growth) <= 250        # volume doubling of months
    assert np.mean(untreated["tumour_cells"].values[:, -1] < 1e8) <= 0.03   # few cleared untreated
    ratio = untreated["effector_ratio"].values[:, 28] / untreated["effector_ratio"].values[:, 0]
    assert 0.75 <= np.median(ratio) <= 1.33                  # effectors start near steady state

    _, orr_untreated = best_change_and_orr(untreated["sld_mm"].values)
    _, orr = best_change_and_orr(treated["sld_mm"].values)
    assert orr_untreated <= 0.05 and 0.15 <= orr <= 0.95 and orr >= orr_untreated + 0.1


MECHANISM_MODULES = ("car_t_cells", "cd8_t_cells", "chemotherapy", "ifng_pdl1", "il2_axis", "il2_toxicity",
                     "lactate_hypoxia", "lag3", "macrophages", "mdsc", "nk_cells", "tregs",
                     "tumour_subclones", "vasculature_vegf")


@pytest.mark.parametrize("module", MECHANISM_MODULES)
def test_every_mechanism_module_has_priors(module):
    """Virtual populations can be drawn from each mechanism module (issue: 'each module has priors')."""
    spec = ie.load_spec(module)
    assert any(p.prior for p in spec.parameters.values())


def test_prior_none_fixes_a_module_parameter_in_a_composed_model(specs):
    """`prior: none` under overrides: the composed trial model keeps the module's value and source
    but draws no patient variability for it; the module alone still has its prior."""
    module = ie.load_spec("chemotherapy").parameters["k_carboplatin"]
    composed = specs["immunoediting_nsclc"].parameters["k_carboplatin"]
    assert module.prior == {"distribution": "lognormal", "median": 0.03, "sigma": 1.0}
    assert composed.prior is None
    assert composed.value == module.value and composed.source == module.source
