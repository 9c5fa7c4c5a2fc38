"""Backends: one spec -> kernels for numba (CPU), JAX (diffrax; CPU or GPU) or CUDA (numba.cuda:
one trajectory per GPU thread)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import BackendUnavailable, CompileError, SpecError
from ..spec.expressions import not_finite, suggest
from ..spec.schema import ModelSpec
from ..symbolic import SymbolicModel, build_symbolic

BACKENDS = ("numba", "jax", "cuda")
#: The solver each backend uses unless told otherwise (both stiff, both adaptive).
DEFAULT_METHOD = {"numba": "rodas5p", "jax": "kvaerno5", "cuda": "rodas5p"}
METHODS = {"numba": ("rodas5p", "tsit5"), "jax": ("kvaerno5", "tsit5"),
           "cuda": ("rodas5p", "tsit5")}


def cache_root() -> Path:
    """Where compiled kernels are kept: `$IMMUNOEDIT_CACHE_DIR`, else the user cache directory of
    immunoedit (numba's kernels in `numba/`, JAX's compiled solves in `jax/`)."""
    import platformdirs

    return Path(os.environ.get("IMMUNOEDIT_CACHE_DIR") or platformdirs.user_cache_dir("immunoedit"))


@dataclass(frozen=True, eq=False)
class CompiledModel:
    """A spec compiled for one backend; immutable. Parameters, initial states, doses and
    tolerances are runtime inputs, so one CompiledModel serves every patient, arm and sample."""

    spec: ModelSpec
    symbolic: SymbolicModel
    backend: str
    kernels: Any
    compile_seconds: float = field(default=0.0, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def states(self) -> tuple[str, ...]:
        return self.symbolic.states

    @property
    def parameters(self) -> tuple[str, ...]:
        return self.symbolic.parameters

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.kernels.output_names)

    def __reduce__(self):
        # Workers (Dask) rebuild from the spec file; numba reuses its on-disk cache (JAX its
        # compilation cache, where enabled: see `cli._keep_jax_compiles`).
        return (_recompile, (self.spec.path, self.backend))

    def __repr__(self) -> str:
        return f"CompiledModel({self.spec.summary()}, backend={self.backend!r})"


def _recompile(path: str, backend: str) -> CompiledModel:
    from ..spec.loader import load_spec

    return compile_model(load_spec(path), backend)


def compile_model(spec: ModelSpec | str | Path, backend: str = "numba") -> CompiledModel:
    """Compile a spec (or a built-in name / path, loaded first) for `backend`: 'numba', 'jax' or
    'cuda' (an NVIDIA GPU, or numba's simulator with NUMBA_ENABLE_CUDASIM=1).

    Code is printed from sympy once per model structure and cached on disk.
    """
    _check_backend(backend)
    spec = _model_spec(spec)
    if not spec.states:
        raise CompileError(f"{spec.path}: '{spec.name}' has no states, so there is nothing to simulate; "
                           "a module like this supplies parameters to the models that use it")
    compile_backend = _backend_compiler(backend)
    start = time.perf_counter()
    try:
        symbolic = build_symbolic(spec)
    except (TypeError, ValueError, ZeroDivisionError, RecursionError) as exc:  # as in parse_expression
        raise CompileError(f"{spec.path}: could not build the equations of '{spec.name}' (sympy: {exc}); "
                           "every expression must be a finite real number once named expressions "
                           "are substituted") from exc
    broken = [f"flow '{f}'" for f, e in zip(symbolic.flows, symbolic.flow_rates) if not_finite(e)]
    broken += [f"'{name}'" for name, e in symbolic.outputs.items() if not_finite(e)]
    if broken:
        raise CompileError(f"{spec.path}: not a finite real number once named expressions are substituted: "
                           f"{', '.join(broken)} of '{spec.name}' (a division by zero, or a log of zero?)")
    try:
        kernels = compile_backend(symbolic)
    except (SpecError, BackendUnavailable):
        raise
    except Exception as exc:  # a code-generation failure is a bug or an unsupported construct
        raise CompileError(f"{spec.path}: could not compile '{spec.name}' for {backend}: {exc}") from exc
    return CompiledModel(spec, symbolic, backend, kernels, time.perf_counter() - start)


def _check_backend(backend: Any) -> None:
    """CompileError unless `backend` is one of BACKENDS (exactly: names are lower case)."""
    if isinstance(backend, str) and backend in BACKENDS:
        return
    hint = suggest(backend.lower(), BACKENDS) if isinstance(backend, str) else None
    raise CompileError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}"
                       + (f" ({hint})" if hint else ""))


def _model_spec(spec: Any) -> ModelSpec:
    """The ModelSpec to compile: `spec` itself, or loaded from a built-in name or a path."""
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, CompiledModel):
        raise CompileError(f"'{spec.name}' is compiled already (backend '{spec.backend}'); to compile it for "
                           "another backend pass its spec: compile_model(model.spec, backend=...)")
    if not isinstance(spec, (str, os.PathLike)):
        raise CompileError(f"compile_model takes a ModelSpec, a built-in spec name or a path to a YAML spec, "
                           f"got {type(spec).__name__}; e.g. compile_model('kuznetsov_1994')")
    from ..spec.loader import load_spec

    return load_spec(spec)


def _backend_compiler(backend: str) -> Callable[[SymbolicModel], Any]:
    """The compile function of `backend`; BackendUnavailable when its libraries are missing, or,
    for 'cuda', when there is neither a GPU nor numba's simulator (checked before any work)."""
    try:
        if backend == "numba":
            from .numba_backend import compile_numba as compiler
        elif backend == "cuda":
            from .cuda_backend import compile_cuda as compiler
            from .cuda_backend import require_device
        else:
            from .jax_backend import compile_jax as compiler
    except BackendUnavailable:
        raise
    except ImportError as exc:
        raise BackendUnavailable(f"backend '{backend}' needs {exc.name}: pip install {exc.name}") from exc
    if backend == "cuda":
        require_device()
    return compiler
