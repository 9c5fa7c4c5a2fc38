"""de_pillis_2005 (four ligand variants, composed from one module) against the computed checks of
shared/references/published_models.md §1.3: N(0) = sigma/f, L(0) = 0; 'nn' grows from 1e4 cells
to 1.16e8 by day 30 and ~9.77e8 by day 45; 'll' eliminates every challenge up to 1e8."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import immunoedit_models as ie

SOLVER = dict(rtol=1e-8, atol=1e-6)


@pytest.mark.parametrize("method", ["rodas5p", "tsit5"])
def test_nn_variant_growth(method):
    model = ie.compile_model("de_pillis_2005", backend="numba")
    ds = ie.simulate(model, [0.0, 30.0, 45.0], initial={"T": 1e4}, method=method, **SOLVER)
    assert float(ds["N"][0]) == pytest.approx(1.3e4 / 4.12e-2)
    assert float(ds["T"][1]) == pytest.approx(1.16e8, rel=5e-3)
    assert float(ds["T"][2]) == pytest.approx(9.77e8, rel=1e-2)
    for T0 in (1e5, 1e6):
        big = ie.simulate(model, [0.0, 45.0], initial={"T": T0}, method=method, **SOLVER)
        assert float(big["T"][-1]) == pytest.approx(9.77e8, rel=1e-2)


def test_ll_variant_eliminates_every_challenge():
    model = ie.compile_model("de_pillis_2005_ll", backend="numba")
    challenges = pd.DataFrame({"T": [1e4, 1e6, 1e7, 1e8]})
    batch = ie.simulate_batch(model, pd.DataFrame({"a": [0.514] * 4}), [0.0, 45.0], initial=challenges, **SOLVER)
    assert np.all(batch["status"].values == 0)
    assert np.all(batch["T"].values[:, -1] < 1.0)


def test_variants_differ_only_in_their_overrides():
    specs = {v: ie.load_spec(f"de_pillis_2005{v}") for v in ("", "_nl", "_ln", "_ll")}
    base = specs[""].parameters
    for name, spec in specs.items():
        assert spec.modules == ("de_pillis_2005_core",)
        changed = {p for p in base if spec.parameters[p].value != base[p].value}
        assert changed <= {"c", "g", "d", "lambda_", "s", "j"}, name
    assert specs["_ll"].parameters["d"].value == 7.17 and specs["_ll"].parameters["s"].value == 0.40
