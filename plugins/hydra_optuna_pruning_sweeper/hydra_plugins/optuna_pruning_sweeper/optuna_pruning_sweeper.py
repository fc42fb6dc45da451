"""`hydra/sweeper=optuna`: a hyperparameter search with Optuna for any Hydra 1.3 app.

It reads upstream hydra-optuna-sweeper's documented keys and adds pruning, resuming, a config
check and a summary; the search itself is the library `optuna_pruning_sweeper`. Hydra imports
this module at every start-up, so it stays cheap: Optuna is imported only when a search runs.

    python my_app.py -m hydra/sweeper=optuna hydra/sweeper/sampler=tpe 'x=interval(-5, 5)'
"""

from __future__ import annotations

import logging
import shlex
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

from optuna_pruning_sweeper.errors import SweeperError
from optuna_pruning_sweeper.names import RESULTS_FILE, SUMMARY_FILE, SWEEP_CONFIG, PrunerName
from optuna_pruning_sweeper.urls import absolute, has_clear_password, masked_config

if TYPE_CHECKING:  # Optuna is imported only when a search runs
    import optuna

    from optuna_pruning_sweeper.settings import Settings
    from optuna_pruning_sweeper.sweep import Sweep

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    """Asks Optuna for trials, launches them in batches of n_jobs through the configured
    launcher, and tells Optuna what each trial's task returned (or raised)."""

    def __init__(self, **keys: Any) -> None:
        super().__init__()
        self.keys = keys
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return self._search(arguments)
        except SweeperError as error:  # exit 1 without a traceback: Hydra would print one
            _log_on_stderr(error)
            raise SystemExit(1) from None

    def _n_jobs(self) -> int:
        """hydra.sweeper.n_jobs, else the launcher's n_jobs in joblib's meaning (-1: every core,
        -2: all but one, ...), else 1."""
        assert self.config is not None
        if self.keys["n_jobs"] is not None:
            return int(self.keys["n_jobs"])
        n_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=None)
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            import joblib

            n_jobs = joblib.cpu_count() + 1 + n_jobs
        if n_jobs < 1:
            raise SweeperError(
                f"hydra.launcher.n_jobs={OmegaConf.select(self.config, 'hydra.launcher.n_jobs')} leaves no job to "
                "run at once; give a positive number, or -1 for every core (or hydra.sweeper.n_jobs=N)."
            )
        return n_jobs

    def _settings(self) -> Any:
        from optuna_pruning_sweeper.samplers import for_installed_optuna
        from optuna_pruning_sweeper.settings import Settings, directions_of

        sampler = self.keys["sampler"]
        if not isinstance(sampler, DictConfig):
            raise SweeperError(
                f"hydra.sweeper.sampler={sampler} is not allowed: the sampler is the config group "
                "hydra/sweeper/sampler (tpe, random, cmaes, nsgaii, motpe, grid, qmc, gp), chosen with "
                "hydra/sweeper/sampler=NAME; its arguments are hydra.sweeper.sampler.KEY, e.g. .seed=0."
            )
        direction = self.keys["direction"]
        settings = Settings(
            n_trials=self.keys["n_trials"],
            n_jobs=self._n_jobs(),
            directions=directions_of(list(direction) if isinstance(direction, ListConfig) else direction),
            max_failure_rate=float(self.keys["max_failure_rate"]),
            pruner=PrunerName(self.keys["pruner"]),
            pruner_startup_trials=self.keys["pruner_startup_trials"],
            pruner_warmup_epochs=self.keys["pruner_warmup_epochs"],
            storage=absolute(self.keys["storage"], Path.cwd()),  # trials may run elsewhere (hydra.job.chdir)
            study_name=self.keys["study_name"],
            sampler=for_installed_optuna(OmegaConf.to_container(sampler, resolve=True)),
        )
        settings.check()
        return settings

    def _unnamed(self) -> tuple[str, ...]:
        """The keys the app keeps out of its run directories' names (Hydra's exclude_keys)."""
        assert self.config is not None
        return tuple(self.config.hydra.job.config.override_dirname.exclude_keys)

    def _shortened(self) -> tuple[str, ...] | None:
        """Hydra's exclude_keys where the run directories' names hold both the job's number and
        its overrides (sweep.Sweep.unnamed); None elsewhere."""
        assert self.config is not None
        subdir = str(OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir"))
        return self._unnamed() if "job.num" in subdir and "override_dirname" in subdir else None

    def _space(self, arguments: list[str]) -> Any:
        from optuna_pruning_sweeper.space import legacy_distributions, parse_overrides, parse_space

        assert self.config is not None and self.hydra_context is not None
        legacy = self._legacy_space()
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        params = [f"{key}={value}" for key, value in (self.keys.get("params") or {}).items()]
        space = parse_space(
            parse_overrides([*params, *arguments], parser),
            self.config,
            self.keys.get("custom_search_space"),
            legacy_distributions(legacy) if legacy is not None else None,
        )
        if not space.distributions and space.custom is None:  # as upstream: a way to check a set-up first
            log.info("No parameter to search: every trial runs the configuration as it is.")
        return replace(space, neutral=frozenset({"resume", *self._unnamed()}))

    def _legacy_space(self) -> dict[str, Any] | None:
        """hydra.sweeper.search_space, Hydra 1.1's deprecated form of the space, warned about as
        upstream warns (a Python UserWarning whenever it is set, which `-W` and warnings filters
        govern); where params is set too, params alone is searched, as upstream does."""
        legacy = self.keys.get("search_space")
        if legacy is None:
            return None
        if self.keys.get("params") is not None:
            warnings.warn(
                "hydra.sweeper.search_space and hydra.sweeper.params are both set: the sweeper searches "
                "hydra.sweeper.params only (search_space is Hydra 1.1's deprecated form of the space).",
                UserWarning,
                stacklevel=2,
            )
            return None
        warnings.warn(
            "hydra.sweeper.search_space is deprecated (Hydra 1.1's form); it is read, but write the space as "
            "hydra.sweeper.params in the override grammar, e.g. x: interval(-5.5, 5.5), y: choice(-5, 0, 5).",
            UserWarning,
            stacklevel=2,
        )
        return OmegaConf.to_container(legacy)

    def _search(self, arguments: list[str]) -> None:
        from optuna_pruning_sweeper.hooks import check_configs, named_function
        from optuna_pruning_sweeper.space import enqueued_points
        from optuna_pruning_sweeper.study import StudyRequest, open_study
        from optuna_pruning_sweeper.sweep import Sweep

        assert self.config is not None
        settings, space = self._settings(), self._space(arguments)
        custom = named_function("custom_search_space", space.custom)
        entries = self.keys.get("enqueue_trials")
        enqueue = enqueued_points(
            space, OmegaConf.to_container(entries) if isinstance(entries, ListConfig) else entries
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        corners = self.validate([_space_corner(space, point) for point in _corners(space)])
        check_configs(self.keys.get("check_config"), corners)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        resume = bool(OmegaConf.select(self.config, "resume", default=False))
        study, lease = open_study(settings, space, StudyRequest(sweep_dir, resume, _trial_command(), enqueue))
        try:
            self._run(settings, study, sweep_dir, Sweep(space, self._launch, self.config, self._shortened(), custom))
        finally:
            lease.release()

    def _run(self, settings: Settings, study: optuna.Study, sweep_dir: Path, sweep: Sweep) -> None:
        from optuna_pruning_sweeper.samplers import trials_wanted
        from optuna_pruning_sweeper.storage import Location
        from optuna_pruning_sweeper.sweep import search

        n_trials = trials_wanted(settings, study, sweep.space)
        if not (sweep_dir / SWEEP_CONFIG).exists():  # a resumed search keeps the first one's
            OmegaConf.save(masked_config(self.config), sweep_dir / SWEEP_CONFIG)
        if has_clear_password(self.config):
            log.warning(
                "hydra.sweeper.storage holds a password: the sweeper's files show it as ***, but Hydra writes every "
                "job's hydra.sweeper.storage into its .hydra/hydra.yaml. Give it through the environment instead, "
                "e.g. storage: mysql+pymysql://user:${oc.env:DB_PASSWORD}@host/db."
            )
        log.info(
            "Study %s (%s): %d trials, %d at once, %s, direction %s",
            study.study_name, Location(settings.storage, study.study_name).describe(sweep_dir), n_trials,
            settings.n_jobs, type(study.sampler).__name__, ", ".join(settings.directions),
        )  # fmt: skip
        try:
            failures = search(settings, study, sweep, n_trials)
        except BaseException:  # also when it gives up or is interrupted: the trials so far, summarised
            self._summarise(sweep_dir, study, searched=False)
            raise
        self._summarise(sweep_dir, study, searched=True)
        self._log_results(study, sweep_dir, failures)

    def _log_results(self, study: optuna.Study, sweep_dir: Path, failures: int) -> None:
        """The search's result in the lines upstream's sweeper ends with; a search in which no trial
        completed has none, and stops (exit 1) saying where its trials' errors are."""
        from optuna_pruning_sweeper import summary

        found = summary.results(study)
        if found is None:
            listed = (
                f"listed under 'Failed trials' in {Path.cwd() / sweep_dir / SUMMARY_FILE}"
                if self.keys.get("summary", True)
                else f"kept in the study (python -m optuna_pruning_sweeper.summary {sweep_dir} lists them)"
            )
            raise SweeperError(
                f"No trial completed: {_ended_without_result(study)}, so the search has no best trial and writes no "
                f"{RESULTS_FILE}. Each trial's error is logged above (Trial N failed: ...) and {listed}. Fix the "
                "cause and search again in another hydra.sweep.dir."
            )
        if failures:
            log.warning("%d trial(s) failed; search.md lists them.", failures)
        for line in summary.result_lines(found):
            log.info("%s", line)

    def _summarise(self, sweep_dir: Path, study: optuna.Study, searched: bool) -> None:
        """The summary (or with hydra.sweeper.summary=false, optimization_results.yaml alone). When
        the search itself failed, a summary that cannot be written is only a warning: the search's
        own error is the one to show."""
        # Only now: the summary's figures import matplotlib, which a refused search does not wait for.
        from optuna_pruning_sweeper import summary

        try:
            if self.keys.get("summary", True):
                summary.write(sweep_dir, study)
            else:
                summary.write_results(sweep_dir, study)
        except Exception as error:
            if searched:
                raise
            log.warning("The search's summary could not be written either: %s", error)

    def validate(self, batch: list[list[str]]) -> list[DictConfig]:
        """Compose the jobs' configs before the first trial, and return them: an unknown key or
        group option in the space is the user's mistake, reported as such. (Hydra's
        validate_batch_is_legal composes them the same way, but keeps none.)"""
        assert self.config is not None and self.hydra_context is not None
        loader = self.hydra_context.config_loader
        try:
            return [loader.load_sweep_config(master_config=self.config, sweep_overrides=job) for job in batch]
        except HydraException as error:
            raise _composition_error(error) from None

    def _launch(self, batch: list[list[str]], first_number: int) -> Any:
        """Launch a batch. The launcher composes each job's config (once: the space was checked
        before the first trial); one that does not compose (a custom search space's key the config
        lacks) is the user's mistake."""
        try:
            return self.launcher.launch(batch, initial_job_idx=first_number)
        except HydraException as error:
            raise _composition_error(error) from None


def _log_on_stderr(error: SweeperError) -> None:
    """What stops the search, on stderr, where errors belong (a paragraph per cause), as one record
    in the form of the log's lines around it (Hydra's console format, which writes to stdout: the
    record goes to stderr alone, or it would be said twice)."""
    handler = logging.StreamHandler(sys.stderr)
    console = next((h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)), None)
    if console is not None:
        handler.setFormatter(console.formatter)
    handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (error,), None))
    handler.flush()


def _ended_without_result(study: optuna.Study) -> str:
    """How the trials of a search without a complete trial ended: all failed, or failed and pruned."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    failed, pruned = (sum(t.state is state for t in trials) for state in (TrialState.FAIL, TrialState.PRUNED))
    return f"all {failed} trials failed" if not pruned else f"{failed} trial(s) failed and {pruned} were pruned"


def _composition_error(error: HydraException) -> SweeperError:
    reason = " ".join(str(error).split())
    return SweeperError(
        f"The search space names something the configuration does not have: {reason} Check the keys "
        "and options of hydra.sweeper.params, the custom search space and the command line (see --cfg job)."
    )


def _trial_command() -> str:
    """The command that runs one trial alone, given its overrides: the app's script, or the
    program that started it (an app's console script)."""
    program = sys.argv[0]
    return f"python {shlex.quote(program)}" if program.endswith(".py") else program


def _corners(space: Any) -> list[dict[str, Any]]:
    """Points of the space that between them use every category and both ends of every range,
    to check before any trial that every trial composes."""
    from optuna.distributions import CategoricalDistribution

    def ends(d: Any) -> list[Any]:
        return list(d.choices) if isinstance(d, CategoricalDistribution) else [d.low, d.high]

    options = {key: ends(d) for key, d in space.distributions.items()}
    first = {key: values[0] for key, values in options.items()}
    return [first] + [{**first, key: value} for key, values in options.items() for value in values[1:]]


def _space_corner(space: Any, point: dict[str, Any]) -> list[str]:
    from optuna_pruning_sweeper.space import trial_overrides

    return trial_overrides(space, point)
