"""The search's names, written once: the files of a search directory, the user attributes it keeps
in its Optuna study and trials, the keys of search.json, and the pruners.

The sweeper, the trials' processes and the summary read them from here. This module does not
import Optuna: the Hydra plugin loads it at every start-up.
"""

from __future__ import annotations

from enum import Enum

# A sweep directory holding this file holds a search: where its Optuna study is stored.
SEARCH_FILE = "search.json"
JOURNAL_FILE = "optuna.journal"  # the default storage, in the sweep directory
RESULTS_FILE = "optimization_results.yaml"  # the best trial or the Pareto set, as upstream's sweeper writes it
SUMMARY_FILE, TABLE_FILE = "search.md", "search.csv"

HYDRA_CONFIG = ".hydra/config.yaml"  # what Hydra composed for a job, written before it starts
SWEEP_CONFIG = "multirun.yaml"  # what Hydra composed for a sweep, in the sweep directory

# The sweeper names each trial's number in `hydra.job.env_set` under this key: part of the job's
# Hydra config (so it reaches the job through every launcher) but not of its own config, so the
# run directory's name and the task's config are those of the same run outside a search.
TRIAL_ENV = "OPTUNA_PRUNING_SWEEPER_TRIAL"

# How a user continues a search: the app's config may have a `resume` key (set it) or not (add
# it); `++` does either, so every message names this form.
RESUME_OVERRIDE = "++resume=true"

# search.json (SEARCH_FILE): where the study of a sweep directory is stored.
STORAGE_KEY, STUDY_NAME_KEY = "storage", "study_name"

# The study's user attributes.
SPACE_ATTR = "space"  # the search space as JSON: a resumed search must search the same one
PRUNER_ATTR = "pruner"  # the pruner its trials consult, as PRUNER_* keys
COMMAND_ATTR = "command"  # the command that runs one trial alone, given the trial's overrides
LEASE_ATTR = "sweeper"  # the search running the study now (lease.Holder): one search per study at a time
PRUNER_NAME, PRUNER_STARTUP, PRUNER_WARMUP = "name", "startup_trials", "warmup_epochs"
SPACE_PARAMS, SPACE_FIXED, SPACE_CUSTOM = "params", "fixed", "custom_search_space"  # SPACE_ATTR's keys
SPACE_STRUCTURED = "structured"  # SPACE_ATTR's keys whose categories are lists or dicts, kept as text

# A trial's user attributes.
OVERRIDES_ATTR = "overrides"  # what the trial ran: the fixed overrides and its sampled values
RUN_DIR_ATTR = "run_dir"  # its run directory's name, in the sweep directory, where it is not the trial's number
ERROR_ATTR = "error"  # why it failed, as its task's exception said
RETRY_OF_ATTR = "retry_of"  # the number of the trial a dead search left running, asked again
STOPPED_ATTR = "machine_fault"  # its task raised StopSearch (a full disk): asked again on resume


class PrunerName(Enum):
    """hydra.sweeper.pruner: how a trial that reports intermediate values may be stopped early."""

    median = "median"
    hyperband = "hyperband"
    none = "none"


def key_of(override: str) -> str:
    """The config key an override is about: `+data.root=/x` -> `data.root`, `~seed` -> `seed`."""
    return override.split("=", 1)[0].lstrip("+~")
