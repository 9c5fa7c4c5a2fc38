"""immunoedit: mechanistic models of cancer immunoediting, compiled to numba and JAX.

    import immunoedit_models as ie
    model = ie.compile_model(ie.load_spec("benchmark_reference"), backend="numba")
    ds = ie.simulate(model, times=range(366))
"""

from .compile import CompiledModel, compile_model
from .errors import (BackendUnavailable, CompileError, FitError, ImmunoeditError, SimulationError,
                     SpecError)
from .io.results import load as load_result
from .io.results import save as save_result
from .simulate import Dose, Regimen, simulate, simulate_batch
from .spec.loader import builtin_specs, load_spec
from .spec.schema import ModelSpec
from .symbolic import SymbolicModel, build_symbolic

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable", "CompileError", "CompiledModel", "Dose", "FitError", "ImmunoeditError",
    "ModelSpec", "Regimen", "SimulationError", "SpecError", "SymbolicModel", "build_symbolic",
    "builtin_specs", "compile_model", "load_result", "load_spec", "save_result", "simulate",
    "simulate_batch",
]
