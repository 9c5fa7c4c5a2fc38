"""kirschner_panetta_1998 against the published analysis (shared/references/published_models.md
§1.2), and log-scale states (the tumour is integrated as ln T) against the linear scale."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import immunoedit_models as ie

MU2, R2, G2, A = 0.03, 0.18, 1e5, 1.0
TIGHT = dict(rtol=1e-9, atol=1e-10)


@pytest.fixture(scope="module")
def model():
    return ie.compile_model("kirschner_panetta_1998", backend="numba")


def test_low_antigenicity_gives_the_large_tumour_equilibrium(model):
    ds = ie.simulate(model, np.linspace(0, 1000, 11), params={"c": 5e-5}, **TIGHT)
    assert float(ds["T"][-1]) == pytest.approx(9.88e8, rel=1e-3)  # published y ~ 9.88e8
    assert float(ds["E"][-1]) == pytest.approx(2.07e6, rel=1e-2)  # published x ~ 2.07e6


@pytest.mark.parametrize("c", [0.0, 0.035])
def test_adoptive_transfer_threshold_540(model, c):
    """Tumour-free state stable iff s1 > r2 g2 mu2 / a = 540 cells/day: 550 clears 1e3 cells, 530 not."""
    assert R2 * G2 * MU2 / A == pytest.approx(540.0)
    days = np.linspace(0, 3000, 31)
    runs = {s1: ie.simulate(model, days, params={"c": c, "s1": s1}, initial={"T": 1e3, "E": s1 / MU2, "IL": 0.0},
                            **TIGHT) for s1 in (530.0, 550.0)}
    assert float(runs[550.0]["T"][-1]) < 1.0  # below one cell (the log scale keeps it positive)
    assert float(runs[530.0]["T"][-1]) > 100.0
    assert int(runs[550.0]["status"]) == 0


def test_il2_alone_runaway_threshold(model):
    """Effectors expand without bound iff s2 > mu3 g1 mu2 / (p1 - mu2) = 6.35e7 IU/day."""
    threshold = 10 * 2e7 * MU2 / (0.1245 - MU2)
    assert threshold == pytest.approx(6.35e7, rel=1e-3)
    days = np.linspace(0, 400, 5)
    below = ie.simulate(model, days, params={"s2": 0.95 * threshold}, initial={"T": 1e6, "E": 1e4}, **TIGHT)
    above = ie.simulate(model, days, params={"s2": 1.05 * threshold}, initial={"T": 1e6, "E": 1e4}, **TIGHT)
    assert np.all(np.diff(below["E"].values[1:]) < 0) and np.all(np.diff(above["E"].values[1:]) > 0)


def test_log_scale_state_matches_linear_scale(tmp_path):
    text = textwrap.dedent("""\
        name: logistic_{scale}
        states:
          T: {{unit: cell, initial: 1e3, scale: {scale}}}
          E: {{unit: cell, initial: 10}}
        parameters:
          r: {{value: 0.2, unit: 1/day}}
          K: {{value: 1e9, unit: cell}}
          k: {{value: 1e-3, unit: 1/cell/day}}
          q: {{value: 1e-3, unit: 1/day}}
        flows:
          growth: {{to: T, rate: r*T*(1 - T/K)}}
          killing: {{from: T, rate: k*E*T}}
          influx: {{to: E, rate: q*T}}
        observables:
          log10_T: {{value: log10(T/K), unit: dimensionless}}
        """)
    days = np.linspace(0, 100, 21)
    runs = {}
    for scale in ("linear", "log"):
        path = tmp_path / f"{scale}.yaml"
        path.write_text(text.format(scale=scale))
        model = ie.compile_model(ie.load_spec(path), backend="numba")
        runs[scale] = ie.simulate(model, days, initial={"T": 2e3}, rtol=1e-10, atol=1e-12)
    for name in ("T", "E", "log10_T"):
        np.testing.assert_allclose(runs["log"][name].values, runs["linear"][name].values, rtol=1e-7)
    assert float(runs["log"]["T"][0]) == pytest.approx(2e3)  # initial overrides are natural units


def test_dose_into_log_scale_state_is_an_error(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nstates:\n  T: {unit: cell, initial: 1, scale: log}\n"
                    "doses:\n  cells: {target: T, amount_unit: cell}\n")
    with pytest.raises(ie.SpecError) as info:
        ie.load_spec(path)
    assert [str(i) for i in info.value.issues] == [
        f"{path}:5: dose 'cells': target 'T' is integrated on a log scale, where a dose is no jump "
        "(dose into a linear-scale state)"]
