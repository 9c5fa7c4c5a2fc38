#!/usr/bin/env python
"""Registers, stack and spills of each model's CUDA solve kernel, built without a GPU.

    python benchmarks/cuda_kernel_resources.py                       # every built-in model, sm_90
    python benchmarks/cuda_kernel_resources.py --models benchmark_reference --cc 8.0

`compile.cuda_offline.build_kernels` compiles the generated kernel to PTX (NVVM) and assembles
it for the architecture (nvJitLink), as the driver would on the GPU; ptxas's report gives the
per-thread registers, stack frame (the `cuda.local` work arrays plus spills) and spill traffic.
From them: the largest block the registers allow, and the theoretical occupancy (resident warps
per multiprocessor / 64) at the backend's default block of 64 threads. These bound what a GPU can
do with the kernel; they are not speed (gpu_throughput.py measures that on a GPU).
Needs numba-cuda's toolkit (pip install -e ".[cuda]"). Writes <out>/cuda_kernel_resources.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))          # the repository, when the package is not installed

WARPS_PER_SM = 64                             # sm_80 / sm_90: 2,048 resident threads
BLOCKS_PER_SM = 32


def occupancy(registers: int, threads_per_block: int) -> float:
    """Resident warps per multiprocessor / 64 for blocks of threads_per_block, registers alone
    limiting (65,536 per multiprocessor, allocated per warp in units of 256)."""
    from immunoedit_models.compile.cuda_offline import REGISTERS_PER_BLOCK

    warps_per_block = -(-threads_per_block // 32)
    warp_registers = -(-registers * 32 // 256) * 256
    blocks = min(BLOCKS_PER_SM, REGISTERS_PER_BLOCK // (warp_registers * warps_per_block))
    return min(WARPS_PER_SM, blocks * warps_per_block) / WARPS_PER_SM


def main() -> int:
    import immunoedit_models as ie
    from immunoedit_models.compile.cuda_backend import THREADS_PER_BLOCK
    from immunoedit_models.compile.cuda_offline import build_kernels
    from immunoedit_models.spec.loader import SPEC_ROOT

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(sorted(p.stem for p in (SPEC_ROOT / "models").glob("*.yaml"))),
                        help="comma-separated built-in names or spec paths")
    parser.add_argument("--precisions", default="float64,float32")
    parser.add_argument("--cc", default="9.0", help="compute capability, e.g. 9.0 (H100/H200)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    cc = tuple(int(x) for x in args.cc.split("."))
    rows = []
    for name in args.models.split(","):
        sym = ie.build_symbolic(ie.load_spec(name))
        for precision in args.precisions.split(","):
            (b,) = build_kernels(sym, precision, cc, kernels=("solve_kernel",))
            rows.append({"model": name, "states": sym.n_states, "precision": precision,
                         "registers": b.registers, "stack_bytes": b.stack_bytes,
                         "spill_store_bytes": b.spill_store_bytes,
                         "spill_load_bytes": b.spill_load_bytes,
                         "max_threads_per_block": b.max_threads_per_block,
                         "occupancy": occupancy(b.registers, THREADS_PER_BLOCK),
                         "ptx_s": b.ptx_s, "link_s": b.link_s})
            print(f"[{time.strftime('%H:%M:%S')}] {name} {precision}: {b.registers} registers, "
                  f"stack {b.stack_bytes} B, spills {b.spill_store_bytes}/{b.spill_load_bytes} "
                  f"B, PTX {b.ptx_s:.1f} s, link {b.link_s:.1f} s", flush=True)
    arch = f"sm_{cc[0]}{cc[1]}"
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "arch": arch,
            "threads_per_block": THREADS_PER_BLOCK,
            "versions": {p: importlib.metadata.version(p) for p in ("numba", "numba-cuda")}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cuda_kernel_resources.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# CUDA solve kernel resources ({arch}, built without a GPU), {meta['date']}", "",
             f"numba {meta['versions']['numba']}, numba-cuda {meta['versions']['numba-cuda']}; "
             f"occupancy at the default block of {THREADS_PER_BLOCK} threads, registers alone "
             "limiting.", "",
             "| model | states | precision | registers | stack B | spill stores / loads B "
             "| max block | occupancy | PTX s | link s |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['states']} | {r['precision']} | {r['registers']} | "
              f"{r['stack_bytes']} | {r['spill_store_bytes']} / {r['spill_load_bytes']} | "
              f"{r['max_threads_per_block']} | {r['occupancy']:.3f} | {r['ptx_s']:.1f} | "
              f"{r['link_s']:.1f} |" for r in rows]
    (args.out / "cuda_kernel_resources.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'cuda_kernel_resources.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
