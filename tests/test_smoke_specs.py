"""Every spec shipped in model_specs/ validates, compiles (numba) and simulates its default regimen."""

from __future__ import annotations

import numpy as np
import pytest

import immunoedit_models as ie


@pytest.mark.parametrize("name", sorted(ie.builtin_specs()))
def test_builtin_spec_validates_compiles_and_simulates(name):
    spec = ie.load_spec(name)
    for pname, p in spec.parameters.items():
        assert p.source, f"parameter '{pname}' of '{spec.name}' has no source"
    if not spec.states:     # a parameter-only module (e.g. patient covariates): nothing to simulate
        with pytest.raises(ie.CompileError, match="has no states, so there is nothing to simulate"):
            ie.compile_model(spec)
        return
    model = ie.compile_model(spec, backend="numba")
    ds = ie.simulate(model, np.linspace(0.0, 60.0, 61))
    assert int(ds.status) == 0
    for state in spec.states:
        assert np.all(np.isfinite(ds[state].values)), state
