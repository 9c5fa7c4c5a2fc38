"""Compile once per structure: parameters, initial states, dose schedules, tolerances and methods
are runtime inputs, so changing them neither recompiles (numba) nor retraces (JAX)."""

from __future__ import annotations

import numpy as np
import pandas as pd

import immunoedit_models as ie
from immunoedit_models.compile import numba_solvers

DAYS = np.arange(0.0, 120.0, 5.0)
VARIATIONS = [
    dict(params={"kkill": 1.0, "V1": 4.0}),
    dict(initial={"T": 5e8, "E": 2e5}),
    dict(regimen=ie.Regimen.repeated("anti_pdl1", 840, 14, 5, 3.0)),
    dict(regimen=ie.Regimen.repeated("anti_pdl1", 600, 7, 3, 0.0, duration=0.04)),  # infusion
    dict(regimen="untreated"),
    dict(rtol=1e-8, atol=1e-11),
]


def _numba_signatures(model) -> dict[str, int]:
    kernels = model.kernels
    functions = {"rhs": kernels.rhs, "jac": kernels.jac, "tgrad": kernels.tgrad,
                 "solve_single": numba_solvers.SOLVE_SINGLE[numba_solvers.RODAS5P],
                 "solve_single_tsit5": numba_solvers.SOLVE_SINGLE[numba_solvers.TSIT5],
                 "solve_batch": numba_solvers.SOLVE_BATCH[numba_solvers.RODAS5P]}
    return {name: len(f.signatures) for name, f in functions.items()}


def test_numba_kernels_compile_once():
    model = ie.compile_model("benchmark_reference", backend="numba")
    ie.simulate(model, DAYS)
    ie.simulate(model, DAYS, method="tsit5")
    ie.simulate_batch(model, pd.DataFrame({"kkill": [1.0, 2.0]}), DAYS)
    before = _numba_signatures(model)
    for change in VARIATIONS:
        ie.simulate(model, DAYS, **change)
        ie.simulate(model, DAYS, method="tsit5", **change)
    ie.simulate_batch(model, pd.DataFrame({"kkill": [1.0, 2.0, 3.0], "rT": 0.04}), DAYS,
                      regimen=ie.Regimen.repeated("anti_pdl1", 1200, 21, 9, 1.0))
    assert _numba_signatures(model) == before
    assert all(n == 1 for n in before.values())


def test_jax_traces_once_per_event_bucket():
    model = ie.compile_model("benchmark_reference", backend="jax")
    ie.simulate(model, DAYS)  # the default 18 doses: event bucket 32
    ie.simulate(model, DAYS, regimen=ie.Regimen.repeated("anti_pdl1", 1200, 21, 5, 7.5))  # bucket 8
    before = dict(model.kernels.traces)  # compiled code is shared per structure across the session
    for change in VARIATIONS:
        ie.simulate(model, DAYS, **change)
    assert dict(model.kernels.traces) == before
    ie.simulate(model, DAYS, regimen=ie.Regimen.repeated("anti_pdl1", 1200, 7, 20, 0.0))  # bucket 32 too
    assert dict(model.kernels.traces) == before


def test_same_structure_shares_compiled_code():
    first = ie.compile_model("benchmark_reference", backend="numba")
    second = ie.compile_model("benchmark_reference", backend="numba")
    assert first.kernels.rhs is second.kernels.rhs
    assert first.symbolic.structure_hash == second.symbolic.structure_hash
