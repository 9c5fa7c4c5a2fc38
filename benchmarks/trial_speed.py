"""Time an in-silico trial end to end: compile, cohort, kernel (scans and dosing), readouts.

    python benchmarks/trial_speed.py impower150 --patients 10000 --repeats 3

Target (issue "In-silico combination trials"): the three-arm IMpower150 trial with 10,000 virtual
patients per arm in <= 60 s on the 2-core CPU. Writes JSON and Markdown to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import immunoedit_models as ie
from immunoedit_models.trials import load_trial, run_trial, sample_cohort

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("design", nargs="?", default="impower150")
    ap.add_argument("--patients", type=int, default=10_000, help="patients per arm")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    design = load_trial(args.design)
    t = time.perf_counter()
    model = ie.compile_model(design.model)
    compile_s = time.perf_counter() - t
    n_total = args.patients * len(design.arms)

    cohort_s, trial_s = [], []
    for r in range(args.repeats):
        t = time.perf_counter()
        cohort = sample_cohort(model, n_total, args.seed + r, **dict(design.cohort))
        cohort_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        trial = run_trial(design, model=model, patients_per_arm=args.patients, seed=args.seed + r,
                          cohort=cohort)
        trial_s.append(time.perf_counter() - t)
    total = [c + s for c, s in zip(cohort_s, trial_s)]
    result = {
        "design": design.name, "model": model.name, "states": len(model.states),
        "patients_per_arm": args.patients, "arms": len(design.arms), "trajectories": n_total,
        "horizon_days": design.horizon_days, "compile_s": compile_s,
        "cohort_s_median": statistics.median(cohort_s), "trial_s_median": statistics.median(trial_s),
        "total_s_median": statistics.median(total), "target_s": 60.0,
        "trajectories_per_s": n_total / statistics.median(trial_s),
        "failed_runs": int(trial.attrs["failed_runs"]),
        "pfs_median_months": {str(a): float(trial.pfs_median_months.sel(arm=a)) for a in trial.arm.values},
        "hr_pfs": {str(c): float(trial.hr_pfs.sel(comparison=c)) for c in trial.comparison.values},
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"trial_speed_{design.name}_{args.patients}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    rows = [("compile (s)", compile_s), ("cohort, median (s)", result["cohort_s_median"]),
            ("trial: kernel + readouts, median (s)", result["trial_s_median"]),
            ("total, median (s)", result["total_s_median"]),
            ("trajectories / s (trial)", result["trajectories_per_s"])]
    table = "\n".join(["| measure | value |", "| --- | --- |",
                       *(f"| {k} | {v:,.2f} |" for k, v in rows)])
    stem.with_suffix(".md").write_text(
        f"# {design.name}: {args.patients:,} patients per arm x {len(design.arms)} arms "
        f"({len(model.states)}-state model, {design.horizon_days:.0f} days)\n\n{table}\n\n"
        f"Target: total <= 60 s. Load average at the end: {result['load_average_1min']:.2f}.\n")
    print(table)


if __name__ == "__main__":
    main()
