"""Fitting: problems as data, likelihoods, optimisers (multistart, CMA-ES), profiles, NUTS, KM reconstruction,
Laplace posteriors of trial fits and posterior predictive trials.

    from immunoedit_models.fit import load_problem, fit
    result = fit(load_problem("fitting/reference_timecourse"), out="fit_out")
"""

import jax

# Likelihoods and priors are JAX code; like the JAX backend, fitting needs float64 throughout.
jax.config.update("jax_enable_x64", True)

from .km import reconstruct_ipd
from .optimize import cmaes, multistart, profile_likelihood
from .parameters import FreeParameter, ParameterSet, PopulationParameter
from .problem import FitProblem, load_problem
from .run import fit
from .timecourse import TimecourseObjective, timecourse_objective
from .trial import TrialObjective, trial_terms
from .bayes import nuts_posterior
from .uncertainty import Laplace, draw_parameters, laplace_from_evaluations
from .predictive import prediction_statistics, predictive_trials

__all__ = ["FitProblem", "FreeParameter", "Laplace", "ParameterSet", "PopulationParameter", "TimecourseObjective",
           "TrialObjective", "cmaes", "draw_parameters", "fit", "laplace_from_evaluations", "load_problem",
           "multistart", "nuts_posterior", "prediction_statistics", "predictive_trials", "profile_likelihood",
           "reconstruct_ipd", "timecourse_objective", "trial_terms"]
