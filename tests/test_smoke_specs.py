"""Every spec shipped in model_specs/ validates, compiles (numba) and simulates its default regimen."""

from __future__ import annotations

import numpy as np
import pytest

import immunoedit_models as ie


@pytest.mark.parametrize("name", sorted(ie.builtin_specs()))
def test_builtin_spec_validates_compiles_and_simulates(name):
    spec = ie.load_spec(name)
    model = ie.compile_model(spec, backend="numba")
    ds = ie.simulate(model, np.linspace(0.0, 60.0, 61))
    assert int(ds.status) == 0
    for state in spec.states:
        assert np.all(np.isfinite(ds[state].values)), state
    for name in spec.parameters:
        p = spec.parameters[name]
        assert p.source, f"parameter '{name}' of '{spec.name}' has no source"
