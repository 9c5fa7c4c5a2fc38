"""Bad input to regimens built in Python, `compile_model`, `load_spec` and the CUDA backend's
entry points: one typed error naming the problem and the fix, before any solve.

The CUDA-simulator check runs in a subprocess (NUMBA_ENABLE_CUDASIM must be set before numba.cuda
is first imported; see tests/test_cuda_backend.py) on kuznetsov_1994 with four rows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import immunoedit_models as ie
from immunoedit_models import Dose, Regimen
from immunoedit_models.compile.cuda_backend import compile_cuda, use_precision
from immunoedit_models.errors import CompileError, SimulationError, SpecError

SPECS = Path(__file__).resolve().parent / "specs"
PK = SPECS / "pk_one_compartment.yaml"
DAYS = np.arange(0.0, 15.0)
AMOUNT = "a number >= 0 in the drug's amount unit, or an expression of parameters such as 'dose_per_kg*weight'"


def raises(error: type[Exception], message: str):
    return pytest.raises(error, match=f"^{re.escape(message)}$")


@pytest.fixture(scope="module")
def pk():
    return ie.compile_model(PK, backend="numba")


# ---- doses and regimens ---------------------------------------------------------------------
@pytest.mark.parametrize("build, message", [
    (lambda: Dose("drug", 1.0, -100.0), f"dose of 'drug' on day 1: amount -100 is negative; give {AMOUNT}"),
    (lambda: Dose("drug", 1.0, np.nan), "dose of 'drug' on day 1: amount must be a finite number, got nan"),
    (lambda: Dose("drug", 1.0, None), f"dose of 'drug' on day 1: amount must be {AMOUNT}, got None"),
    (lambda: Dose("drug", 1.0, True), f"dose of 'drug' on day 1: amount must be {AMOUNT}, got True"),
    (lambda: Dose("drug", 1.0, " "), f"dose of 'drug' on day 1: amount is empty; give {AMOUNT}"),
    (lambda: Dose("drug", np.inf, 1.0), "time of a dose of 'drug' (day) must be a finite number, got inf"),
    (lambda: Dose("drug", "1", 1.0), "time of a dose of 'drug' (day) must be a number, got '1'"),
    (lambda: Dose("drug", 1.0, 1.0, duration=-1.0),
     "dose of 'drug' on day 1: duration -1 is negative; give 0 for a bolus or the infusion's length in days"),
    (lambda: Dose("drug", 1.0, 1.0, duration=np.nan),
     "dose of 'drug' on day 1: duration must be a finite number, got nan"),
    (lambda: Dose("drug", 1.0, 1.0, until_progression="yes"),
     "dose of 'drug' on day 1: until_progression must be True or False, got 'yes'"),
    (lambda: Dose(3, 1.0, 1.0), "a dose's drug must be the name of one of the model's drugs, got 3"),
    (lambda: Regimen(Dose("drug", 0.0, 1.0)),
     "regimen 'custom': doses must be a tuple of Dose, got Dose; e.g. Regimen((Dose('drug', 0.0, 100.0),))"),
    (lambda: Regimen(((0.0, 1.0),)), "regimen 'custom': dose 1 is a tuple, not a Dose; write Dose(drug, time, amount)"),
    (lambda: Regimen((), None), "a regimen's name must be text, got None"),
    (lambda: Regimen() + Dose("drug", 0.0, 1.0),
     "a Regimen adds only another Regimen, got Dose; wrap a single dose as Regimen((dose,))"),
    (lambda: Regimen.from_spec("weekly_x5"), "Regimen.from_spec takes a RegimenSpec (a value of spec.regimens), got "
                                             "str; for a regimen by name pass regimen='name' to simulate"),
])
def test_bad_doses_and_regimens_raise_one_clear_error(build, message):
    with raises(SimulationError, message):
        build()


@pytest.mark.parametrize("kwargs, message", [
    ({"count": 0}, "count of 'drug' doses must be a whole number from 1 to 100000, got 0"),
    ({"count": 2.5}, "count of 'drug' doses must be a whole number from 1 to 100000, got 2.5"),
    ({"count": True}, "count of 'drug' doses must be a whole number from 1 to 100000, got True"),
    ({"count": 10**9}, "count of 'drug' doses must be a whole number from 1 to 100000, got 1000000000"),
    ({"count": 3}, "3 doses of 'drug' need every > 0 (the dosing interval in days)"),
    ({"count": 3, "every": -7}, "every (the interval between doses of 'drug', days) must be > 0, got -7"),
    ({"count": 3, "every": np.inf},
     "every (the interval between doses of 'drug', days) must be a finite number, got inf"),
    ({"count": 3, "every": 1, "duration": 2},
     "infusions of 'drug' over 2 days overlap when given every 1 days; durations are in days (30 minutes is 30/1440)"),
    ({"start": np.nan}, "time of a dose of 'drug' (day) must be a finite number, got nan"),
    ({"amount": -5}, f"dose of 'drug' on day 0: amount -5 is negative; give {AMOUNT}"),
])
def test_bad_repeated_doses_raise_one_clear_error(kwargs, message):
    with raises(SimulationError, message):
        Regimen.repeated(**{"drug": "drug", "amount": 100.0, **kwargs})


def test_regimens_are_sorted_hashable_tuples_and_whole_counts_are_accepted():
    late, early = Dose("drug", 10, 1), Dose("drug", 1.0, 1.0)
    listed = Regimen([late, early])
    assert listed.doses == (early, late) and isinstance(listed.doses[1].time, float)
    assert hash(listed) == hash(Regimen((early, late))) and listed == Regimen((early, late))
    assert listed.describe() == "custom (drug: 2 doses, days 1-10)"
    assert Regimen.repeated("drug", 1.0, every=7, count=3.0) == Regimen.repeated("drug", 1, every=7.0, count=np.int64(3))


def test_a_list_of_doses_simulates_like_the_tuple(pk):
    doses = [Dose("drug", 1.0, 100.0), Dose("drug", 3.0, 50.0, duration=0.5)]
    got = ie.simulate(pk, DAYS, regimen=Regimen(doses)).C.values
    np.testing.assert_array_equal(got, ie.simulate(pk, DAYS, regimen=Regimen(tuple(doses))).C.values)


def test_overlapping_infusions_of_separate_doses_add_up(pk):
    a, b = Dose("drug", 1.0, 100.0, 2.0), Dose("drug", 2.0, 50.0, 2.0)
    tight = dict(rtol=1e-10, atol=1e-12)
    both = ie.simulate(pk, DAYS, regimen=Regimen((a, b)), **tight).C.values
    alone = sum(ie.simulate(pk, DAYS, regimen=Regimen((d,)), **tight).C.values for d in (a, b))
    np.testing.assert_allclose(both, alone, rtol=1e-7, atol=1e-9)


def test_an_amount_expression_that_evaluates_negative_or_nan_is_an_error(pk):
    with raises(SimulationError, "regimen 'custom': the amount 'V - 4' of 'drug' is -1 in 1 of 2 runs (first: run 1); "
                                 "a dose amount must be a finite number >= 0: check the expression and the parameters "
                                 "it uses"):
        ie.simulate_batch(pk, params=pd.DataFrame({"V": [5.0, 3.0]}), times=DAYS,
                          regimen=Regimen((Dose("drug", 1.0, "V - 4"),)))
    with np.errstate(invalid="ignore"), raises(SimulationError, "regimen 'custom': the amount 'log(V - 10)' of 'drug' "
                                               "is nan in 1 of 1 runs (first: run 0); a dose amount must be a finite "
                                               "number >= 0: check the expression and the parameters it uses"):
        ie.simulate(pk, DAYS, regimen=Regimen((Dose("drug", 1.0, "log(V - 10)"),)))


# ---- load_spec and compile_model ------------------------------------------------------------
def _argument(message: str, hint: str) -> str:
    return f"1 problem in model spec:\n  load_spec: argument: {message} ({hint})"


@pytest.mark.parametrize("argument, message", [
    (None, _argument("must be a built-in spec name or a path to a YAML spec, got NoneType",
                     "e.g. load_spec('kuznetsov_1994') or load_spec('my_model.yaml')")),
    (SPECS, _argument(f"'{SPECS}' is a directory, not a spec file",
                      f"pass one of its specs, e.g. '{SPECS / 'blocks_model.yaml'}'")),
    ("name: x\nstates: {}\n", _argument("is text with line breaks, not a spec name or path",
                                        "load_spec reads a file: save the YAML as a .yaml file and pass its path")),
    ("impower150", _argument("'impower150' is a trial design, not a model spec",
                             "load it with immunoedit_models.trials.load_trial('impower150')")),
])
def test_bad_load_spec_arguments_raise_one_spec_error(argument, message):
    with raises(SpecError, message):
        ie.load_spec(argument)


def test_load_spec_names_a_loaded_spec_and_takes_paths_and_home_relative_paths(monkeypatch, tmp_path):
    spec = ie.load_spec(PK)
    with raises(SpecError, _argument("must be a built-in spec name or a path to a YAML spec, got ModelSpec",
                                     "it is loaded already: use it (or its .spec) as is")):
        ie.load_spec(spec)
    (tmp_path / "pk.yaml").write_text(PK.read_text())
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ie.load_spec("~/pk.yaml").name == ie.load_spec(str(PK)).name == spec.name


@pytest.mark.parametrize("backend, message", [
    ("Numba", "unknown backend 'Numba': choose one of numba, jax, cuda (did you mean 'numba'?)"),
    ("cdua", "unknown backend 'cdua': choose one of numba, jax, cuda (did you mean 'cuda'?)"),
    (None, "unknown backend None: choose one of numba, jax, cuda"),
])
def test_unknown_backends_are_named_before_the_spec_is_loaded(backend, message):
    with raises(CompileError, message):
        ie.compile_model("no_such_spec", backend=backend)


def test_compile_model_names_what_it_got_instead_of_a_spec(pk):
    with raises(CompileError, "'pk_one_compartment' is compiled already (backend 'numba'); to compile it for another "
                              "backend pass its spec: compile_model(model.spec, backend=...)"):
        ie.compile_model(pk, backend="jax")
    with raises(CompileError, "compile_model takes a ModelSpec, a built-in spec name or a path to a YAML spec, got "
                              "SymbolicModel; e.g. compile_model('kuznetsov_1994')"):
        ie.compile_model(pk.symbolic)


def test_cuda_entry_points_name_what_they_got(pk):
    with raises(CompileError, "compile_cuda takes a SymbolicModel, got ModelSpec; for a spec, a built-in name or a "
                              "path use compile_model(spec, backend='cuda')"):
        compile_cuda(pk.spec)
    with raises(SimulationError, "use_precision takes a model compiled with backend='cuda', got ModelSpec; e.g. "
                                 "use_precision(compile_model(spec, backend='cuda'), 'float32')"):
        use_precision(pk.spec, "float32")
    with raises(SimulationError, "precision applies to backend 'cuda', not 'numba'"):
        use_precision(pk, "float32")


def test_without_gpu_the_cuda_backend_is_refused_before_the_equations_are_built(monkeypatch):
    cuda = pytest.importorskip("numba.cuda")
    if cuda.is_available():
        pytest.skip("this checks the refusal on machines without a GPU; here a GPU (or "
                    "NUMBA_ENABLE_CUDASIM) makes the cuda backend available, and test_cuda_backend runs it")

    def never(spec):
        raise AssertionError("build_symbolic ran")
    monkeypatch.setattr("immunoedit_models.compile.build_symbolic", never)
    with pytest.raises(ie.BackendUnavailable, match="NUMBA_ENABLE_CUDASIM=1"):
        ie.compile_model("kuznetsov_1994", backend="cuda")


# ---- the CUDA backend on numba's simulator --------------------------------------------------
CUDA_SCRIPT = """
import json, sys, warnings
import numpy as np, pandas as pd
import immunoedit_models as ie
warnings.simplefilter("ignore")
model = ie.compile_model("kuznetsov_1994", backend="cuda")
draws = pd.DataFrame({"d": [0.03, 0.04, 0.05, np.nan], "s": [1e4, 1.3e4, 2e4, 1e4]})
batch = ie.simulate_batch(model, params=draws, times=np.linspace(0.0, 30.0, 7))
errors = {}
for name, kwargs in json.loads(sys.argv[1]).items():
    try:
        ie.simulate_batch(model, **{"params": draws.iloc[:2], "times": np.linspace(0.0, 30.0, 7), **kwargs})
    except ie.ImmunoeditError as exc:
        errors[name] = [type(exc).__name__, str(exc)]
print(json.dumps({"status": batch.status.values.tolist(), "E": batch.E.values.tolist(), "T": batch["T"].values.tolist(),
                  "errors": errors, "max_steps_status": ie.simulate_batch(model, params=draws.iloc[:2],
                  times=[0.0, 30.0], max_steps=3).status.values.tolist()}))
"""
BAD_BATCH = {"rtol": {"rtol": 0.0}, "method": {"method": "kvaerno5"}, "max_steps": {"max_steps": 0},
             "times": {"times": [3.0, 1.0]}, "regimen": {"regimen": "foo"}, "params": {"params": {"zz": 1.0}}}


def test_cuda_simulator_matches_numba_results_statuses_and_errors():
    pytest.importorskip("numba.cuda")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run([sys.executable, "-c", CUDA_SCRIPT, json.dumps(BAD_BATCH)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    cuda = json.loads(proc.stdout.strip().splitlines()[-1])
    model = ie.compile_model("kuznetsov_1994", backend="numba")
    draws = pd.DataFrame({"d": [0.03, 0.04, 0.05, np.nan], "s": [1e4, 1.3e4, 2e4, 1e4]})
    with pytest.warns(RuntimeWarning, match="1 of 4 runs failed"):
        cpu = ie.simulate_batch(model, params=draws, times=np.linspace(0.0, 30.0, 7))
    assert cuda["status"] == cpu.status.values.tolist() == [0, 0, 0, 2]
    for name in ("E", "T"):
        np.testing.assert_allclose(np.array(cuda[name], dtype=float), cpu[name].values, rtol=1e-6, equal_nan=True)
    assert cuda["max_steps_status"] == [1, 1]
    for name, kwargs in BAD_BATCH.items():
        with pytest.raises(ie.ImmunoeditError) as err:
            ie.simulate_batch(model, **{"params": draws.iloc[:2], "times": np.linspace(0.0, 30.0, 7), **kwargs})
        assert cuda["errors"][name] == [type(err.value).__name__, str(err.value).replace("'numba'", "'cuda'")]
