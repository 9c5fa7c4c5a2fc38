"""The CUDA kernels build for a real GPU (sm_90: H100 / H200) on this machine without one.

numba's CUDA simulator (test_cuda_backend.py) runs the kernels' Python, which any Python passes;
here NVVM must type and lower them for the target, and nvJitLink must assemble the PTX, as the
driver does at the first launch on a GPU. Needs numba-cuda's toolkit libraries (the test extra
installs them); the report parser and block arithmetic are tested without.
"""

from __future__ import annotations

import pytest

import immunoedit_models as ie
from immunoedit_models.compile import cuda_offline
from immunoedit_models.compile.cuda_backend import THREADS_PER_BLOCK
from immunoedit_models.compile.cuda_offline import KernelBuild, parse_ptxas_report

from .test_cuda_backend import switch_model

# A ptxas verbose report as nvJitLink writes it (abridged): a device function compiled apart,
# then the entry function.
PTXAS_LOG = """\
ptxas info    : 0 bytes gmem
ptxas info    : Function properties for _ZN3gen3rhsB2v1E
ptxas         .     16 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads
ptxas info    : Compiling entry function '_ZN3gen12solve_kernelB2v1E' for 'sm_90'
ptxas info    : Function properties for _ZN3gen12solve_kernelB2v1E
ptxas         .     3392 bytes stack frame, 2372 bytes spill stores, 3680 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers
ptxas info    : Compile time = 2198.592 ms
"""


def toolkit_or_skip() -> None:
    try:
        cuda_offline._cuda_compiler()
        from cuda.core import Linker  # noqa: F401
    except (ie.BackendUnavailable, ImportError) as exc:
        pytest.skip(f"numba-cuda's toolkit is not installed ({exc}); the test extra installs it: "
                    "pip install -e '.[test]'")


def test_ptxas_report_of_the_entry_function():
    assert parse_ptxas_report(PTXAS_LOG) == {
        "registers": 255, "stack_bytes": 3392, "spill_store_bytes": 2372,
        "spill_load_bytes": 3680}
    with pytest.raises(ValueError, match="no entry function"):
        parse_ptxas_report(PTXAS_LOG.replace("Compiling entry", "Compiling"))


@pytest.mark.parametrize("registers, threads", [
    (255, 256),      # 256 registers x 32 threads per warp: 8 warps fill 65,536
    (72, 896),       # 65,536 / (72 x 32) = 28.4 warps -> 28
    (64, 1024),      # exactly 32 warps
    (57, 1024),      # rounded up to 64 registers
    (20, 1024),      # capped at 1,024 threads per block
])
def test_max_threads_per_block_by_hand(registers, threads):
    build = KernelBuild("k", "float64", "sm_90", "", registers, 0, 0, 0, 0.0, 0.0)
    assert build.max_threads_per_block == threads


def test_reference_model_kernels_build_for_sm90_in_both_precisions():
    toolkit_or_skip()
    sym = ie.build_symbolic(ie.load_spec("benchmark_reference"))
    builds = {(b.kernel, b.precision): b for precision in ("float64", "float32")
              for b in cuda_offline.build_kernels(sym, precision)}
    assert len(builds) == 8
    for build in builds.values():
        assert ".entry _ZN" in build.ptx and build.kernel in build.ptx
        assert 0 < build.registers <= 255
    for precision in ("float64", "float32"):
        solve = builds["solve_kernel", precision]
        # the default block must fit the register file, or the launch fails on the GPU
        assert solve.max_threads_per_block >= THREADS_PER_BLOCK
    # float32 work arrays take half the bytes: a float32 module that computed in float64
    # would not shrink its stack
    assert (builds["solve_kernel", "float32"].stack_bytes
            < 0.6 * builds["solve_kernel", "float64"].stack_bytes)


def test_every_printing_rule_builds_for_sm90():
    """min, max, piecewise, rational powers and pi, as the CUDA printer writes them."""
    toolkit_or_skip()
    (build,) = cuda_offline.build_kernels(switch_model(), "float32", kernels=("solve_kernel",))
    assert build.arch == "sm_90" and build.max_threads_per_block >= THREADS_PER_BLOCK
