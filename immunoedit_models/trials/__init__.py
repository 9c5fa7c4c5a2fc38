"""In-silico trials: cohorts, trial designs as data, in-kernel scans, RECIST, PFS/OS, KM and HRs.

    import immunoedit_models.trials as trials
    trial = trials.run_trial("impower150", patients_per_arm=1000, seed=1)
    trials.write_report(trial, "report/")
"""

from .analysis import summarise_trial, trial_replicates
from .cohort import Cohort, sample_cohort
from .design import TrialDesign, builtin_trials, load_trial
from .run import run_trial

__all__ = ["Cohort", "TrialDesign", "builtin_trials", "load_trial", "run_trial", "sample_cohort",
           "summarise_trial", "trial_replicates"]
