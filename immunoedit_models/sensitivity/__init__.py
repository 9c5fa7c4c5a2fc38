"""Sensitivity analysis on any scalar or time-resolved model output.

    from immunoedit_models import sensitivity as sa
    model = ie.compile_model("benchmark_reference", backend="numba")
    sa.sobol(model, ["T@365", "auc(T, 0, 365)"], n=1024)        # S1, ST with bootstrap CIs
    sa.morris(model, "max(E)", n=20)                             # mu, mu*, sigma
    sa.local_sensitivity(jax_model, ["T"])                       # d ln T / d ln p over time
    sa.trial_sobol("impower150", ["pfs@12:ABCP"], [("K_pd1", 0.05, 0.5)], n=32)   # trial endpoints

Outputs: `outputs.parse_output` text forms or `Output(name, function)`; parameter ranges:
`designs.parameter_ranges`; results are xarray Datasets over (output, [time,] param).
"""

from .designs import (Design, ParameterRange, morris_design, parameter_ranges, run_design, salib_problem,
                      sobol_design)
from .indices import STATUS_RAISED, FailedRunsError, morris, morris_indices, sobol, sobol_indices
from .local import local_sensitivity
from .outputs import Output, evaluate_outputs, output_grid, parse_output, parse_outputs
from .plots import plot_sensitivity, plot_sobol, plot_time_resolved, plot_tornado
from .trial import TrialEndpoint, parse_endpoint, run_trial_design, trial_morris, trial_ranges, trial_sobol

__all__ = [
    "STATUS_RAISED", "Design", "FailedRunsError", "Output", "ParameterRange", "TrialEndpoint", "evaluate_outputs",
    "local_sensitivity", "morris", "morris_design", "morris_indices", "output_grid", "parameter_ranges",
    "parse_endpoint", "parse_output", "parse_outputs", "plot_sensitivity", "plot_sobol", "plot_time_resolved",
    "plot_tornado", "run_design", "run_trial_design", "salib_problem", "sobol", "sobol_design", "sobol_indices",
    "trial_morris", "trial_ranges", "trial_sobol",
]
