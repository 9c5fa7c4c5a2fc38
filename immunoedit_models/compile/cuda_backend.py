"""Compile a `SymbolicModel` to a CUDA ensemble kernel: one trajectory per GPU thread (numba.cuda).

`compile_cuda` prints the model (right-hand side, dense Jacobian, time gradient, initial values,
outputs, dose factors, the sparse LU of W) as `@cuda.jit(device=True)` functions with the printer, CSE and kernel
list of `numba_backend`, and appends the solver of `cuda_solvers` (Rodas5P with the analytic
Jacobian, Tsit5; per-thread doses, scans and progression). One module is written per model
structure and precision, `<cache_dir>/cuda_model_<structure_hash>_<precision>_<tag>.py`, in the
numba backend's cache directory: the state, parameter and output counts are constants there, so
per-thread work arrays are `cuda.local` arrays of fixed size, and numba caches the compiled
kernels beside the file (`cache=True`). Kernels compile on their first launch (then load from
that cache); the float32 module is only compiled when float32 is used.

Precision: float64 by default; `kernels.with_precision("float32")` (or `use_precision(model,
"float32")`) runs states, parameters and stages in float32 (time and step size stay float64).
float32 results carry ~1e-4 relative error and need rtol >= ~1e-5; the error estimate cannot
resolve tighter tolerances in float32.

Without a GPU, `compile_cuda` raises `BackendUnavailable` unless numba's CUDA simulator is on
(`NUMBA_ENABLE_CUDASIM=1` before Python starts), which runs the same kernels, slowly, on the CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import sympy as sp

from ..errors import BackendUnavailable, CompileError, SimulationError
from ..symbolic import SymbolicModel
from . import cuda_solvers, numba_backend, numba_solvers
from .cuda_solvers import SHARED_CONSTANTS, solver_source
from .numba_backend import (METHODS, _c_array, _import_generated, _kernel_source, _NumbaPrinter,
                            _rows, _write_atomic, check_solve_inputs, default_cache_dir,
                            kernel_definitions, lu_kernel_sources, symbol_names)

PRECISIONS = {"float64": np.float64, "float32": np.float32}
THREADS_PER_BLOCK = 64      # register-heavy kernel: small blocks keep occupancy up
_DEVICE_MEMORY_FRACTION = 0.8

# Any change to the generator, the solver template or the coefficient tables invalidates caches.
_GENERATOR_HASH = hashlib.sha256(b"".join(
    Path(m.__file__).read_bytes() for m in (numba_backend, numba_solvers, cuda_solvers)
) + Path(__file__).read_bytes()).hexdigest()[:8]
VERSION_TAG = numba_backend.VERSION_TAG.replace(f"g{numba_backend._GENERATOR_HASH}",
                                                f"g{_GENERATOR_HASH}")

NO_DEVICE_MESSAGE = (
    "backend 'cuda' needs an NVIDIA GPU with a working CUDA driver, and numba.cuda finds none. "
    "Use backend='numba' (CPU) or 'jax' instead; to run the CUDA kernels on numba's CPU simulator "
    "(slow, for tests), set NUMBA_ENABLE_CUDASIM=1 in the environment before Python starts.")


# ---- device access --------------------------------------------------------------------------
def _cuda() -> Any:
    """numba.cuda, or BackendUnavailable when numba has no CUDA target."""
    try:
        from numba import cuda
    except ImportError as exc:     # numba without its CUDA target (numba-cuda)
        raise BackendUnavailable(f"backend 'cuda' needs numba's CUDA target: {exc}; "
                                 "pip install numba-cuda") from exc
    return cuda


def require_device() -> Any:
    """numba.cuda when a GPU (or the simulator) is usable; BackendUnavailable otherwise."""
    cuda = _cuda()
    if not cuda.is_available():
        raise BackendUnavailable(NO_DEVICE_MESSAGE)
    return cuda


def simulator_enabled() -> bool:
    """True when numba.cuda runs on its CPU simulator (NUMBA_ENABLE_CUDASIM=1)."""
    return bool(numba.config.ENABLE_CUDASIM)


# ---- printing -------------------------------------------------------------------------------
class _CudaPrinter(_NumbaPrinter):
    """The numba printer with every literal written F(...), F the module's scalar type, so the
    float32 kernels do float32 arithmetic (a bare literal would promote it to float64), and
    min / max as the solver's `_fmin` / `_fmax` (numba.cuda cannot compile the builtins)."""

    def _print_Integer(self, expr: sp.Integer) -> str:
        return self._literal(float(expr))

    def _print_Float(self, expr: sp.Float) -> str:
        return self._literal(float(expr))

    def _print_Rational(self, expr: sp.Rational) -> str:
        sign = "-" if expr.p < 0 else ""
        return f"{sign}F({abs(expr.p)}.0/{expr.q}.0)"

    @staticmethod
    def _literal(value: float) -> str:
        """F(|value|) with the sign outside, so sums print as a - F(1.0), not a + F(-1.0)."""
        return f"-F({-value!r})" if value < 0 else f"F({value!r})"

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        base, exp = expr.as_base_exp()
        if (exp.is_Integer and -4 <= int(exp) <= -1) or exp == sp.Rational(-1, 2):
            return f"(F(1.0)/{self._print(sp.Pow(base, -exp, evaluate=False))})"
        return super()._print_Pow(expr, rational)

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        return super()._print_Piecewise(expr).replace("math.nan", "F(math.nan)")

    def _print_Heaviside(self, expr: sp.Heaviside) -> str:
        x = self._print(expr.args[0])
        h0 = self._print(expr.args[1]) if len(expr.args) > 1 else "F(0.5)"
        return f"(F(1.0) if ({x}) > F(0.0) else (F(0.0) if ({x}) < F(0.0) else {h0}))"

    def _print_DiracDelta(self, expr: sp.Expr) -> str:
        return "F(0.0)"

    def _print_Min(self, expr: sp.Expr) -> str:
        return self._fold("_fmin", expr.args)

    def _print_Max(self, expr: sp.Expr) -> str:
        return self._fold("_fmax", expr.args)

    def _fold(self, func: str, args: tuple[sp.Expr, ...]) -> str:
        """func(func(a, b), c)...: Python's min / max of several arguments, left to right."""
        code = self._print(args[0])
        for arg in args[1:]:
            code = f"{func}({code}, {self._print(arg)})"
        return code

    def _print_Pi(self, expr: sp.Expr) -> str:
        return "F(math.pi)"

    def _print_Exp1(self, expr: sp.Expr) -> str:
        return "F(math.e)"


def model_functions_source(sym: SymbolicModel) -> str:
    """The model's device functions rhs, jac (dense), tgrad, initial, outputs, dose_factors, and
    the sparse LU of W (lu_factor, lu_solve; see `numba_backend.lu_kernel_sources`)."""
    names = symbol_names(sym)
    device = "@cuda.jit(device=True)"
    sources = [_kernel_source(k.name, k.signature, k.args, k.targets, k.exprs, names, k.prologue,
                              decorator=device, printer_cls=_CudaPrinter)
               for k in kernel_definitions(sym, dense_jacobian=True)]
    sources += lu_kernel_sources(sym.sparse_lu, sym.n_states, device, device,
                                 lit=_CudaPrinter._literal, pointers=False)
    return "".join("\n\n" + source for source in sources)


def generate_source(sym: SymbolicModel, precision: str = "float64",
                    model_functions: str | None = None) -> str:
    """Source of the generated CUDA module of `sym` in `precision` (see module docstring)."""
    dtype = PRECISIONS[precision].__name__
    constants = "".join(f"{name} = {value!r}\n" for name, value in SHARED_CONSTANTS.items())
    tables = "".join(f"{name} = _TABLES[{name!r}]\n"
                     for name in cuda_solvers.coefficient_tables(np.float64))
    header = (
        f'"""CUDA kernels generated by immunoedit_models {VERSION_TAG} ({precision}); do not '
        f'edit."""\n'
        f"# model: {sym.name!r}, structure hash {sym.structure_hash}\n"
        f"# states: {list(sym.states)!r}\n# parameters: {list(sym.parameters)!r}\n"
        f"# outputs: {list(sym.outputs)!r}\n"
        "import math\n\nimport numpy as np\nfrom numba import cuda\n\n"
        "from immunoedit_models.compile.cuda_solvers import coefficient_tables\n\n"
        f"N = {sym.n_states}\nN_PAR_A = {max(1, sym.n_params)}\n"
        f"N_OUT_A = {max(1, len(sym.outputs))}\n"
        f"F = DTYPE = np.{dtype}\n{constants}"
        f"_TABLES = coefficient_tables(DTYPE)\n{tables}"
    )
    body = model_functions if model_functions is not None else model_functions_source(sym)
    return (header + body + "\n\n# ---- solver (immunoedit_models/compile/cuda_solvers.py) ----"
            "\n\n" + solver_source())


# ---- launching ------------------------------------------------------------------------------
def _compile_errors() -> tuple[type[BaseException], ...]:
    """numba's errors for a kernel that cannot be typed or lowered."""
    return (numba.core.errors.TypingError, numba.core.errors.LoweringError)


def _toolkit_errors() -> tuple[type[BaseException], ...]:
    """numba.cuda's errors for a missing or broken CUDA toolkit / driver."""
    try:
        from numba.cuda.cudadrv.error import CudaSupportError, NvvmError, NvvmSupportError
    except ImportError:
        return ()
    return (CudaSupportError, NvvmSupportError, NvvmError)


def _launch(kernel: Any, n_threads: int, threads_per_block: int, *args: Any) -> None:
    """kernel over n_threads threads; numba compile failures as CompileError /
    BackendUnavailable."""
    block = max(1, min(threads_per_block, n_threads))
    try:
        kernel[(n_threads + block - 1) // block, block](*args)
    except _compile_errors() as exc:
        raise CompileError(f"numba.cuda could not compile {kernel.__name__}: {exc}") from exc
    except _toolkit_errors() as exc:
        raise BackendUnavailable(
            f"numba.cuda could not build or launch {kernel.__name__}: {exc}. The CUDA toolkit's "
            "NVVM and libdevice must be findable (pip install numba-cuda[cu12], or set "
            "CUDA_HOME)") from exc


def _chunks(n: int, bytes_per_row: int, max_chunk: int | None) -> list[slice]:
    """Row slices of a batch of n that fit the device memory free now (or max_chunk rows)."""
    if max_chunk is None:
        free = float(_cuda().current_context().get_memory_info()[0])
        size = n if math.isinf(free) else int(_DEVICE_MEMORY_FRACTION * free // bytes_per_row)
    else:
        size = int(max_chunk)
    size = max(1, min(n, size))
    return [slice(a, min(a + size, n)) for a in range(0, n, size)]


# ---- kernels object -------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CudaKernels:
    """The CUDA kernels of one model, with the numpy-level interface of `NumbaKernels`.

    precision: 'float64' (default) or 'float32' for `solve`; threads_per_block: CUDA block
    size; max_chunk: trajectories per launch (None: as many as fit in 80% of the free device
    memory). `initial`, `dose_factors` and `outputs` always run in float64.
    """

    model_name: str
    structure_hash: str
    source_paths: dict[str, Path]
    state_names: tuple[str, ...]
    param_names: tuple[str, ...]
    output_names: tuple[str, ...]
    drug_names: tuple[str, ...]
    precision: str = "float64"
    threads_per_block: int = THREADS_PER_BLOCK
    max_chunk: int | None = None

    @property
    def n_states(self) -> int:
        return len(self.state_names)

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    @property
    def source_path(self) -> Path:
        return self.source_paths[self.precision]

    def with_precision(self, precision: str) -> "CudaKernels":
        """The same kernels solving in `precision` ('float64' or 'float32')."""
        if precision not in PRECISIONS:
            raise SimulationError(f"unknown precision {precision!r}: choose one of "
                                  f"{', '.join(PRECISIONS)}")
        return dataclasses.replace(self, precision=precision)

    def module(self, precision: str | None = None) -> Any:
        """The generated module (its kernels: solve_kernel, initial_kernel, ...)."""
        return _import_generated(self.source_paths[precision or self.precision])

    # ---- per-row maps (float64) ----
    def _map_rows(self, kernel_name: str, P: Any, width: int) -> np.ndarray:
        cuda = _cuda()
        params = _rows(P, self.n_params, "P")
        out = np.zeros((params.shape[0], width))
        if params.shape[0] == 0 or width == 0:
            return out
        d_out = cuda.device_array(out.shape, np.float64)
        _launch(getattr(self.module("float64"), kernel_name), params.shape[0],
                self.threads_per_block, cuda.to_device(params), d_out)
        return d_out.copy_to_host()

    def initial(self, P: Any) -> np.ndarray:
        """Initial states (B, n_states) from parameters P (B, n_params)."""
        return self._map_rows("initial_kernel", P, self.n_states)

    def dose_factors(self, P: Any) -> np.ndarray:
        """Dose factor of each drug (B, n_drugs), order `drug_names`, from P (B, n_params)."""
        return self._map_rows("dose_factors_kernel", P, len(self.drug_names))

    def outputs(self, t_out: Any, Y: Any, P: Any) -> np.ndarray:
        """Outputs (B, n_out, n_outputs) from times (n_out,), states (B, n_out, n), P (B, n_par)."""
        cuda = _cuda()
        t = _c_array(t_out)
        y = _c_array(Y)
        params = _rows(P, self.n_params, "P")
        n_traj, n_outputs = params.shape[0], len(self.output_names)
        if y.shape != (n_traj, t.size, self.n_states):
            raise SimulationError(f"Y must have shape {(n_traj, t.size, self.n_states)},"
                                  f" got {y.shape}")
        out = np.zeros((n_traj, t.size, n_outputs))
        if out.size == 0:
            return out
        kernel = self.module("float64").outputs_kernel
        d_t = cuda.to_device(t)
        row_bytes = 8 * t.size * (self.n_states + n_outputs) + 8 * self.n_params
        for s in _chunks(n_traj, row_bytes, self.max_chunk):
            d_out = cuda.device_array(out[s].shape, np.float64)
            _launch(kernel, (s.stop - s.start) * t.size, self.threads_per_block, d_t,
                    cuda.to_device(y[s]), cuda.to_device(params[s]), d_out)
            d_out.copy_to_host(out[s])
        return out

    # ---- solving ----
    def solve(self, Y0: Any, P: Any, t0: float, t_out: Any, ev_t: Any, ev_state: Any,
              ev_kind: Any, ev_value: Any, rtol: float, atol: float, method: str = "rodas5p",
              max_steps: int = 100_000, h0: float = 0.0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Integrate B trajectories, one per GPU thread (arguments and results as
        `NumbaKernels.solve`; Y in this kernel's precision)."""
        return self.solve_scanned(Y0, P, t0, t_out, ev_t, ev_state, ev_kind, ev_value, rtol,
                                  atol, method, max_steps, h0)[:4]

    def solve_scanned(self, Y0: Any, P: Any, t0: float, t_out: Any, ev_t: Any, ev_state: Any,
                      ev_kind: Any, ev_value: Any, rtol: float, atol: float,
                      method: str = "rodas5p", max_steps: int = 100_000, h0: float = 0.0,
                      scan_t: Any = (), burden_index: int = 0, pd_rel: float = 0.2,
                      pd_abs: float = 5.0, ev_guard: Any = None, cpd_abs: float = 5.0,
                      ev_guard_c: Any = None, timings: dict[str, float] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                 np.ndarray]:
        """`solve` with in-kernel scans and progression (as `NumbaKernels.solve_scanned`).

        Returns Y (B, n_out, n) in this kernel's precision, status, accepted and rejected steps
        (B,), scan values (B, n_scan) and progression times (B,) (+inf: none). timings: a dict
        that receives the seconds spent copying to the device ('h2d_s'), in the kernel
        ('kernel_s', the first launch includes compiling it) and copying back ('d2h_s').
        """
        y0, params, t, scans, ev = check_solve_inputs(
            self, Y0, P, t0, t_out, ev_t, ev_state, ev_kind, ev_value, rtol, atol, method,
            max_steps, scan_t, burden_index, ev_guard, ev_guard_c)
        if t.size == 0:
            raise SimulationError("t_out must hold at least one output time")
        cuda = _cuda()
        dtype = PRECISIONS[self.precision]
        kernel = self.module().solve_kernel
        n_traj, n, n_out, n_scan = y0.shape[0], self.n_states, t.size, scans.shape[1]
        Y = np.empty((n_traj, n_out, n), dtype)
        counts = np.empty((3, n_traj), np.int64)
        scan_value = np.empty((n_traj, max(1, n_scan)))
        pd_time = np.empty(n_traj)
        clock = {"h2d_s": 0.0, "kernel_s": 0.0, "d2h_s": 0.0}
        d_t = cuda.to_device(t)
        shared = scans.shape[0] == 1
        if not n_scan:
            scans = np.zeros((1, 1))
        d_shared_scan = cuda.to_device(scans) if shared else None
        row_bytes = (np.dtype(dtype).itemsize * (n_out * n + n + self.n_params)
                     + 8 * (len(ev) * ev[0].shape[1] + (1 if shared else 2) * scan_value.shape[1] + 4))
        opts = (n_scan, int(burden_index), float(pd_rel), float(pd_abs), float(cpd_abs),
                float(rtol), float(atol), METHODS[method], int(max_steps), float(h0))
        for s in _chunks(n_traj, row_bytes, self.max_chunk):
            m = s.stop - s.start
            start = time.perf_counter()
            inputs = [cuda.to_device(np.ascontiguousarray(a[s], dtype)) for a in (y0, params)]
            d_ev = [cuda.to_device(a[s]) for a in ev]
            d_scan = d_shared_scan if shared else cuda.to_device(scans[s])
            d_Y = cuda.device_array((m, n_out, n), dtype)
            d_counts = [cuda.device_array(m, np.int64) for _ in range(3)]
            d_scan_value = cuda.device_array((m, scan_value.shape[1]), np.float64)
            d_pd = cuda.device_array(m, np.float64)
            cuda.synchronize()
            launched = time.perf_counter()
            _launch(kernel, m, self.threads_per_block, *inputs, float(t0), d_t, *d_ev, d_scan,
                    *opts, d_Y, *d_counts, d_scan_value, d_pd)
            cuda.synchronize()
            done = time.perf_counter()
            d_Y.copy_to_host(Y[s])
            for i in range(3):
                d_counts[i].copy_to_host(counts[i, s])
            d_scan_value.copy_to_host(scan_value[s])
            d_pd.copy_to_host(pd_time[s])
            clock["h2d_s"] += launched - start
            clock["kernel_s"] += done - launched
            clock["d2h_s"] += time.perf_counter() - done
        if timings is not None:
            timings.update(clock)
        return Y, counts[0], counts[1], counts[2], scan_value[:, :n_scan], pd_time


def use_precision(model: Any, precision: str) -> Any:
    """A copy of a CUDA-compiled model whose kernels solve in `precision` ('float32' or
    'float64'). Note: a model sent to Dask workers is recompiled there in float64."""
    backend = getattr(model, "backend", None)
    if not isinstance(backend, str):
        raise SimulationError(f"use_precision takes a model compiled with backend='cuda', got "
                              f"{type(model).__name__}; e.g. use_precision(compile_model(spec, backend='cuda'), "
                              "'float32')")
    if backend != "cuda":
        raise SimulationError(f"precision applies to backend 'cuda', not '{backend}'")
    return dataclasses.replace(model, kernels=model.kernels.with_precision(precision))


def compile_cuda(sym: SymbolicModel, cache_dir: Path | None = None,
                 precision: str = "float64") -> CudaKernels:
    """Generate (or reuse) the CUDA modules of `sym` (both precisions) and import the one of
    `precision`; see the module docstring. BackendUnavailable without a GPU or the simulator.

    cache_dir defaults to the numba backend's `default_cache_dir()`.
    """
    if not isinstance(sym, SymbolicModel):
        raise CompileError(f"compile_cuda takes a SymbolicModel, got {type(sym).__name__}; for a spec, a "
                           "built-in name or a path use compile_model(spec, backend='cuda')")
    require_device()
    if precision not in PRECISIONS:
        raise CompileError(f"unknown precision {precision!r}: choose one of "
                           f"{', '.join(PRECISIONS)}")
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    paths = {p: directory / f"cuda_model_{sym.structure_hash}_{p}_{VERSION_TAG}.py"
             for p in PRECISIONS}
    missing = [p for p, path in paths.items() if not path.exists()]
    if missing:
        directory.mkdir(parents=True, exist_ok=True)
        body = model_functions_source(sym)
        for p in missing:
            _write_atomic(paths[p], generate_source(sym, p, body))
    kernels = CudaKernels(
        model_name=sym.name, structure_hash=sym.structure_hash, source_paths=paths,
        state_names=tuple(sym.states), param_names=tuple(sym.parameters),
        output_names=tuple(sym.outputs), drug_names=tuple(sym.dose_targets),
        precision=precision)
    kernels.module()
    return kernels
