"""Every spec shipped in model_specs/ validates, compiles (numba) and simulates its default regimen."""

from __future__ import annotations

import numpy as np
import pytest

import immunoedit_models as ie
from immunoedit_models.simulate.core import initial_matrix, output_function, parameter_matrix


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


@pytest.mark.parametrize("name", sorted(p.stem for p in ie.builtin_specs().values() if "models" in p.parts))
def test_each_output_alone_matches_the_outputs_kernel(name):
    """`output_function` (numpy, one output's own expression) against the compiled outputs kernel
    (every output at once), at every output of the built-in models, on a simulated trajectory."""
    model = ie.compile_model(name, backend="numba")
    days = np.linspace(0.0, 60.0, 7)
    P, _ = parameter_matrix(model, {}, 2)
    no_doses = (np.full((2, 1), np.inf), np.zeros((2, 1), np.int64), np.zeros((2, 1), np.int64), np.zeros((2, 1)))
    Y, status, _, _ = model.kernels.solve(initial_matrix(model, P, None), P, 0.0, days, *no_doses, 1e-6, 1e-9)
    assert np.all(status == 0)
    every = model.kernels.outputs(days, Y, P)
    for k, output in enumerate(model.output_names):
        np.testing.assert_allclose(output_function(model, output)(days, Y, P), every[..., k],
                                   rtol=1e-13, atol=0, err_msg=output)
    with pytest.raises(ie.SimulationError, match=f"model '{model.name}' has no output 'nothing'"):
        output_function(model, "nothing")
