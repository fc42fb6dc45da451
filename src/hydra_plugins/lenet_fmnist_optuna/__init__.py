"""`hydra/sweeper=optuna`: a hyperparameter search with Optuna for Hydra 1.3, written for lenet_fmnist.

No released Optuna sweeper works with hydra-core 1.3 and current Optuna, so the project has its
own. Hydra imports every module under `hydra_plugins` at start-up, so this one stays cheap (Optuna
is imported only when a search runs) and defines nothing when the `search` extra is missing: the
base install starts without warnings. The search itself is lenet_fmnist.search.

    python -m lenet_fmnist train -m hydra/sweeper=optuna hydra.sweeper.n_trials=20 \\
        activation=relu,tanh 'optimizer.lr=tag(log, interval(0.001, 0.3))'
"""

# No `from __future__ import annotations`: Hydra executes this module without registering it in
# sys.modules, where dataclasses would look string annotations up; OmegaConf reads the types below.
import importlib.util
import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Dict, Optional  # noqa: UP035  (OmegaConf 2.3 reads typing's forms)

if importlib.util.find_spec("optuna") is not None:
    from hydra.core.config_store import ConfigStore
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from hydra.plugins.sweeper import Sweeper
    from hydra.types import HydraContext, TaskFunction
    from omegaconf import DictConfig, OmegaConf

    from lenet_fmnist.errors import Reported, UserError

    log = logging.getLogger(__name__)

    class Sampler(Enum):  # the values of lenet_fmnist.search.SamplerName, which imports Optuna
        tpe = "tpe"
        random = "random"

    class Pruner(Enum):  # lenet_fmnist.search.PrunerName
        median = "median"
        hyperband = "hyperband"
        none = "none"

    @dataclass
    class OptunaSweeperConf:
        """hydra.sweeper.*: the keys of the search (conf/experiment/search.yaml sets them all)."""

        _target_: str = "hydra_plugins.lenet_fmnist_optuna.OptunaSweeper"
        n_trials: int = 20  # trials to finish (complete or pruned)
        n_jobs: Optional[int] = None  # noqa: UP045  # trials launched at once; None: the launcher's n_jobs, else 1
        seed: Optional[int] = None  # noqa: UP045  the sampler's seed
        sampler: Sampler = Sampler.tpe
        pruner: Pruner = Pruner.median
        pruner_startup_trials: int = 5  # complete trials before the median pruner prunes any
        pruner_warmup_epochs: int = 2  # epochs every trial trains before it may be pruned
        storage: Optional[str] = None  # noqa: UP045  # journal file path or RDB URL; None: <sweep dir>/optuna.journal
        study_name: Optional[str] = None  # noqa: UP045  # None: the sweep directory's name
        params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045  # the search space, in Hydra's override grammar

    ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf)

    class OptunaSweeper(Sweeper):
        """Asks Optuna for trials, launches them in batches of n_jobs through the configured
        launcher, and tells Optuna each trial's best validation accuracy (maximised)."""

        def __init__(self, params: dict[str, str] | None = None, **keys: Any) -> None:
            super().__init__()
            self.params = dict(params or {})
            self.keys = keys
            self.hydra_context: HydraContext | None = None
            self.config: DictConfig | None = None
            self.launcher: Any = None
            self.naming = ""  # the override that keeps the fixed values out of run directory names

        def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
            from hydra.core.plugins import Plugins

            self.hydra_context, self.config = hydra_context, config
            self.launcher = Plugins.instance().instantiate_launcher(
                hydra_context=hydra_context, task_function=task_function, config=config
            )

        def sweep(self, arguments: list[str]) -> Any:
            try:
                return self._search(arguments)
            except Reported as error:  # one paragraph, exit 1, no traceback (as the callbacks do)
                log.error("%s", error)
                raise SystemExit(1) from None

        def _settings(self) -> Any:
            from lenet_fmnist import search

            assert self.config is not None
            n_jobs = self.keys["n_jobs"]
            if n_jobs is None:  # as many trials at once as the launcher runs jobs at once
                n_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=None) or 1
            values = {**self.keys, "n_jobs": n_jobs}
            values["sampler"] = search.SamplerName(Sampler(values["sampler"]).value)
            values["pruner"] = search.PrunerName(Pruner(values["pruner"]).value)
            settings = search.Settings(**values)
            settings.check()
            return settings

        def _search(self, arguments: list[str]) -> None:
            from lenet_fmnist import search
            from lenet_fmnist.report import search_summary

            assert self.config is not None and self.hydra_context is not None
            settings = self._settings()
            parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
            try:
                overrides = parser.parse_overrides([*(f"{k}={v}" for k, v in self.params.items()), *arguments])
            except HydraException as error:
                raise UserError(f"The search space cannot be read: {error}") from None
            space = search.parse_space(overrides, self.config)
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            self.validate([search.trial_overrides(space, point) for point in _corners(space)])
            sweep_dir.mkdir(parents=True, exist_ok=True)
            study = search.open_study(settings, sweep_dir, space, bool(self.config.get("resume", False)))
            if not (sweep_dir / "multirun.yaml").exists():  # a resumed search keeps the first one's
                OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
            # Run directories are named by trial number and sampled values only: the values every
            # trial shares would only lengthen the names (past the file system's 255 bytes).
            excluded = [*self.config.hydra.job.config.override_dirname.exclude_keys]
            excluded += [fixed.split("=", 1)[0].lstrip("+~") for fixed in space.fixed]
            self.naming = f"hydra.job.config.override_dirname.exclude_keys=[{','.join(excluded)}]"
            try:
                failures = search.search(settings, study, space, self._launch)
            finally:  # also when it gives up or is interrupted: the trials so far, summarised
                search_summary.write(sweep_dir)
            if failures:
                log.warning("%d trial(s) failed; search.md lists them.", failures)

        def validate(self, batch: list[list[str]]) -> None:
            """Compose the jobs' configs before launching: an unknown key or group option in the
            space is the user's mistake, reported as such."""
            try:
                self.validate_batch_is_legal(batch)
            except HydraException as error:
                reason = " ".join(str(error).split())
                raise UserError(
                    f"The search space names something the configuration does not have: {reason} Check the keys "
                    "and options of hydra.sweeper.params and the command line (see --cfg job)."
                ) from None

        def _launch(self, batch: list[list[str]], first_number: int) -> Any:
            batch = [[*job, self.naming] for job in batch]
            self.validate(batch)
            return self.launcher.launch(batch, initial_job_idx=first_number)

    def _corners(space: Any) -> list[dict[str, Any]]:
        """Points of the space that between them use every category and both ends of every range,
        to check before any training that every trial composes."""
        from optuna.distributions import CategoricalDistribution

        def ends(d: Any) -> list[Any]:
            return list(d.choices) if isinstance(d, CategoricalDistribution) else [d.low, d.high]

        options = {key: ends(d) for key, d in space.distributions.items()}
        first = {key: values[0] for key, values in options.items()}
        return [first] + [{**first, key: value} for key, values in options.items() for value in values[1:]]
