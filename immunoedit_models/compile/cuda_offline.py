"""Build a model's CUDA kernels for a GPU architecture on a machine without a GPU.

numba.cuda compiles the generated kernels (`cuda_backend.generate_source`) to PTX with NVVM, and
nvJitLink assembles the PTX into machine code for `arch` (sm_90: H100 / H200), as the driver
would at the first launch. What this checks, that numba's CUDA simulator cannot: the kernels
type and lower for the real target (the simulator runs any Python), and each kernel's registers,
stack and spills, which bound the threads a block can hold. What it cannot check: speed.

Needs numba-cuda with its NVVM, NVRTC and nvJitLink libraries (`pip install numba-cuda[cu13]`,
or `[cu12]`), no driver. Used by the tests and `benchmarks/cuda_kernel_resources.py`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numba
import numpy as np

from ..errors import BackendUnavailable
from ..symbolic import SymbolicModel
from .cuda_backend import PRECISIONS, _toolkit_errors, generate_source

#: 32-bit registers one block may use, and threads one block may hold (sm_50 to sm_90).
REGISTERS_PER_BLOCK = 65_536
THREADS_PER_BLOCK_LIMIT = 1024
#: Registers are given to warps of 32 threads in units of 256 (8 per thread).
_REGISTER_UNIT = 8
_WARP = 32
_NO_TOOLKIT = ("building CUDA kernels without a GPU needs numba-cuda with NVVM, NVRTC and "
               "nvJitLink: pip install 'numba-cuda[cu13]' (or [cu12] for CUDA 12 drivers)")


@dataclass(frozen=True)
class KernelBuild:
    """One kernel assembled for `arch`: its PTX and ptxas's resource report (per thread)."""

    kernel: str
    precision: str
    arch: str
    ptx: str
    registers: int
    stack_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int
    ptx_s: float               # NVVM: Python -> PTX
    link_s: float              # nvJitLink: PTX -> machine code

    @property
    def max_threads_per_block(self) -> int:
        """The largest block (a multiple of 32 threads) whose registers fit one block's file."""
        per_thread = -(-self.registers // _REGISTER_UNIT) * _REGISTER_UNIT
        return min(THREADS_PER_BLOCK_LIMIT, REGISTERS_PER_BLOCK // (per_thread * _WARP) * _WARP)


def kernel_signatures(precision: str) -> dict[str, tuple[Any, ...]]:
    """numba argument types of the generated kernels, as `CudaKernels` launches them (C arrays;
    y0, p and y_out of solve_kernel in `precision`, everything else float64 / int64)."""
    def arr(ndim: int, dtype: Any = np.float64) -> Any:
        return numba.typeof(np.zeros((1,) * ndim, dtype))

    x, f8, i8 = PRECISIONS[precision], numba.float64, numba.int64
    events = (arr(2), arr(2, np.int64), arr(2, np.int64), arr(2), arr(2), arr(2))
    return {
        "solve_kernel": (arr(2, x), arr(2, x), f8, arr(1), *events, arr(2), i8, i8, f8, f8, f8,
                         f8, f8, i8, i8, f8, arr(3, x), arr(1, np.int64), arr(1, np.int64),
                         arr(1, np.int64), arr(2), arr(1)),
        "initial_kernel": (arr(2), arr(2)),
        "dose_factors_kernel": (arr(2), arr(2)),
        "outputs_kernel": (arr(1), arr(3), arr(2), arr(3)),
    }


def build_kernels(sym: SymbolicModel, precision: str = "float64", cc: tuple[int, int] = (9, 0),
                  kernels: tuple[str, ...] | None = None) -> list[KernelBuild]:
    """Compile and assemble the kernels (default: all four) of `sym` in `precision` for compute
    capability `cc`. BackendUnavailable without the toolkit; numba's TypingError / LoweringError
    when a kernel does not compile for the target."""
    cuda = _cuda_compiler()
    signatures = kernel_signatures(precision)
    with tempfile.TemporaryDirectory() as tmp:
        module = _load(Path(tmp) / f"offline_{sym.structure_hash}_{precision}.py",
                       generate_source(sym, precision))
        builds = []
        with _compute_capability(cc):
            for name in kernels or tuple(signatures):
                start = time.perf_counter()
                try:
                    ptx, _ = cuda.compile_ptx(getattr(module, name).py_func, signatures[name],
                                              device=False, cc=cc)
                except _missing_toolkit() as exc:
                    raise BackendUnavailable(f"{_NO_TOOLKIT} ({exc})") from exc
                compiled = time.perf_counter()
                report = _assemble(ptx, f"sm_{cc[0]}{cc[1]}")
                builds.append(KernelBuild(name, precision, f"sm_{cc[0]}{cc[1]}", ptx, **report,
                                          ptx_s=compiled - start,
                                          link_s=time.perf_counter() - compiled))
    return builds


def _cuda_compiler() -> Any:
    try:
        from numba import cuda
    except ImportError as exc:
        raise BackendUnavailable(f"{_NO_TOOLKIT} ({exc})") from exc
    if numba.config.ENABLE_CUDASIM:
        raise BackendUnavailable("NUMBA_ENABLE_CUDASIM=1 replaces numba.cuda's compiler with "
                                 "the simulator: build kernels in a process without it")
    return cuda


def _missing_toolkit() -> tuple[type[BaseException], ...]:
    """The errors of a missing NVVM / NVRTC: numba.cuda's toolkit errors, cuda.pathfinder's."""
    try:
        from cuda.pathfinder import DynamicLibNotFoundError
    except ImportError:
        return _toolkit_errors()
    return (*_toolkit_errors(), DynamicLibNotFoundError)


def _load(path: Path, source: str) -> Any:
    """Import the generated module at path (its kernels stay uncompiled until asked)."""
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _compute_capability(cc: tuple[int, int]) -> Iterator[None]:
    """numba.cuda compiles a kernel's device functions for the current device's compute
    capability (`dispatcher.get_current_device`); without a GPU there is none, so this names
    `cc` for the duration. numba has no option for it: compile_ptx's `cc` reaches the kernel
    only."""
    import numba.cuda.dispatcher as dispatcher

    device = type("OfflineDevice", (), {"compute_capability": cc})()
    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: device
    try:
        yield
    finally:
        dispatcher.get_current_device = saved


def _assemble(ptx: str, arch: str) -> dict[str, int]:
    """nvJitLink's ptxas report of the entry function in `ptx` for `arch`."""
    try:
        from cuda.core import Linker, LinkerOptions, ObjectCode
        from cuda.pathfinder import DynamicLibNotFoundError
    except ImportError as exc:
        raise BackendUnavailable(f"{_NO_TOOLKIT} ({exc})") from exc
    try:
        linker = Linker(ObjectCode.from_ptx(ptx.encode()),
                        options=LinkerOptions(arch=arch, verbose=True))
        linker.link("cubin")
    except DynamicLibNotFoundError as exc:       # no nvJitLink library
        raise BackendUnavailable(f"{_NO_TOOLKIT} ({exc})") from exc
    return parse_ptxas_report(linker.get_info_log())


_ENTRY = re.compile(r"Compiling entry function '[^']+'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def parse_ptxas_report(log: str) -> dict[str, int]:
    """registers, stack_bytes, spill_store_bytes, spill_load_bytes of the (single) entry function
    in a ptxas verbose log; device functions compiled apart come before it and are skipped."""
    entry = _ENTRY.search(log)
    frame = _FRAME.search(log, entry.end()) if entry else None
    registers = _REGISTERS.search(log, entry.end()) if entry else None
    if frame is None or registers is None:
        raise ValueError(f"no entry function's resources in the ptxas report:\n{log}")
    stack, stores, loads = (int(g) for g in frame.groups())
    return {"registers": int(registers.group(1)), "stack_bytes": stack,
            "spill_store_bytes": stores, "spill_load_bytes": loads}
