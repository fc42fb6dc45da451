"""`hydra/sweeper=optuna`: a hyperparameter search with Optuna for any Hydra 1.3 app.

No released Optuna sweeper works with hydra-core 1.3 and current Optuna, so the project has its
own. It reads upstream hydra-optuna-sweeper's documented keys (the sampler as the config group
hydra/sweeper/sampler, direction, study_name, storage, n_trials, n_jobs, max_failure_rate, params,
custom_search_space, the deprecated search_space) and adds pruning, resuming and a summary. The
search itself is lenet_fmnist.search.

Hydra imports every module under `hydra_plugins` at start-up, so this one stays cheap (Optuna is
imported only when a search runs) and defines nothing when the `search` extra is missing: the
base install starts without warnings.

    python my_app.py -m hydra/sweeper=optuna hydra/sweeper/sampler=tpe 'x=interval(-5, 5)'
    python -m lenet_fmnist train -m experiment=search
"""

# No `from __future__ import annotations`: Hydra executes this module without registering it in
# sys.modules, where dataclasses would look string annotations up; OmegaConf reads the types below.
import importlib.util
import logging
import shlex
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional  # noqa: UP035  (OmegaConf 2.3 reads typing's forms)

if importlib.util.find_spec("optuna") is not None:
    from hydra.core.config_store import ConfigStore
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from hydra.plugins.sweeper import Sweeper
    from hydra.types import HydraContext, TaskFunction
    from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

    from lenet_fmnist.errors import Reported, UserError
    from lenet_fmnist.search.names import JOURNAL_FILE, PrunerName

    log = logging.getLogger(__name__)

    # ---- hydra/sweeper/sampler: Optuna's samplers, each key an argument with Optuna's default --

    @dataclass
    class TPESamplerConf:
        _target_: str = "optuna.samplers.TPESampler"
        seed: Optional[int] = None  # noqa: UP045
        n_startup_trials: int = 10  # random trials before TPE models the finished ones
        n_ei_candidates: int = 24
        multivariate: Optional[bool] = None  # noqa: UP045  # model the parameters jointly
        group: bool = False
        constant_liar: bool = True  # trials of one batch, asked before any ends, spread out
        consider_endpoints: Optional[bool] = None  # noqa: UP045
        warn_independent_sampling: Optional[bool] = None  # noqa: UP045

    @dataclass
    class RandomSamplerConf:
        _target_: str = "optuna.samplers.RandomSampler"
        seed: Optional[int] = None  # noqa: UP045

    @dataclass
    class CmaEsSamplerConf:  # needs the package cmaes (in the `search` extra)
        _target_: str = "optuna.samplers.CmaEsSampler"
        seed: Optional[int] = None  # noqa: UP045
        x0: Optional[Dict[str, Any]] = None  # noqa: UP006, UP045
        sigma0: Optional[float] = None  # noqa: UP045
        n_startup_trials: int = 1
        warn_independent_sampling: bool = True
        consider_pruned_trials: bool = False
        restart_strategy: Optional[str] = None  # noqa: UP045
        popsize: Optional[int] = None  # noqa: UP045
        inc_popsize: int = -1
        use_separable_cma: bool = False
        with_margin: bool = False
        lr_adapt: bool = False

    @dataclass
    class NSGAIISamplerConf:  # several objectives
        _target_: str = "optuna.samplers.NSGAIISampler"
        seed: Optional[int] = None  # noqa: UP045
        population_size: int = 50
        mutation_prob: Optional[float] = None  # noqa: UP045
        crossover_prob: float = 0.9
        swapping_prob: float = 0.5

    @dataclass
    class GridSamplerConf:  # every combination of the space's values; made with the space as its grid
        _target_: str = "optuna.samplers.GridSampler"
        _partial_: bool = True
        seed: Optional[int] = None  # noqa: UP045

    @dataclass
    class QMCSamplerConf:  # needs scipy (in the `search` extra)
        _target_: str = "optuna.samplers.QMCSampler"
        seed: Optional[int] = None  # noqa: UP045
        qmc_type: str = "sobol"
        scramble: bool = False
        warn_asynchronous_seeding: bool = True
        warn_independent_sampling: bool = True

    @dataclass
    class GPSamplerConf:  # Gaussian process; needs torch and scipy
        _target_: str = "optuna.samplers.GPSampler"
        seed: Optional[int] = None  # noqa: UP045
        n_startup_trials: int = 10
        deterministic_objective: bool = False
        warn_independent_sampling: bool = True

    SAMPLERS = {
        "tpe": TPESamplerConf,
        "random": RandomSamplerConf,
        "cmaes": CmaEsSamplerConf,
        "nsgaii": NSGAIISamplerConf,
        "grid": GridSamplerConf,
        "qmc": QMCSamplerConf,
        "gp": GPSamplerConf,
    }

    @dataclass
    class OptunaSweeperConf:
        """hydra.sweeper.*: upstream's keys, then ours (pruning). conf/experiment/search.yaml sets
        only the keys whose value differs from these defaults (a test checks it)."""

        _target_: str = "hydra_plugins.lenet_fmnist_optuna.OptunaSweeper"
        _recursive_: bool = False  # the sweeper makes the sampler itself (its seed, its errors)
        defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])  # noqa: UP006
        sampler: Any = MISSING  # hydra/sweeper/sampler: tpe, random, cmaes, nsgaii, grid, qmc, gp
        direction: Any = "minimize"  # minimize | maximize, or a list of them: one per objective
        storage: Optional[str] = None  # noqa: UP045  # journal path or database URL; None: <sweep dir>/optuna.journal
        study_name: Optional[str] = None  # noqa: UP045  # None: the sweep directory's name
        n_trials: int = 20  # trials to run (complete, pruned or failed)
        n_jobs: Optional[int] = None  # noqa: UP045  # trials at once; None: the launcher's n_jobs, else 1
        max_failure_rate: float = 0.0  # the share of a batch's trials that may fail before the search stops
        params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045  # the space, in Hydra's override grammar
        custom_search_space: Optional[str] = None  # noqa: UP045  # dotted path of a function (cfg, trial) -> dict | None
        search_space: Optional[Dict[str, Any]] = None  # noqa: UP006, UP045  # deprecated (Hydra 1.1): use params
        pruner: PrunerName = PrunerName.median  # stops trials whose reported values fall behind
        pruner_startup_trials: int = 5  # complete trials before the median pruner prunes any
        pruner_warmup_epochs: int = 2  # steps (epochs) every trial reports before it may be pruned

    ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf)
    for _name, _node in SAMPLERS.items():
        ConfigStore.instance().store(group="hydra/sweeper/sampler", name=_name, node=_node)

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
            except Reported as error:  # one paragraph, exit 1, no traceback (as the callbacks do)
                log.error("%s", error)
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
                raise UserError(
                    f"hydra.launcher.n_jobs={OmegaConf.select(self.config, 'hydra.launcher.n_jobs')} leaves no job to "
                    "run at once; give a positive number, or -1 for every core (or hydra.sweeper.n_jobs=N)."
                )
            return n_jobs

        def _settings(self) -> Any:
            from lenet_fmnist.search.study import Settings, directions_of

            sampler = self.keys["sampler"]
            if not isinstance(sampler, DictConfig):
                raise UserError(
                    f"hydra.sweeper.sampler={sampler} is not allowed: the sampler is the config group "
                    "hydra/sweeper/sampler (tpe, random, cmaes, nsgaii, grid, qmc, gp), chosen with "
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
                storage=self.keys["storage"],
                study_name=self.keys["study_name"],
                sampler=OmegaConf.to_container(sampler, resolve=True),
            )
            settings.check()
            return settings

        def _space(self, arguments: list[str]) -> Any:
            from lenet_fmnist.search.space import legacy_distributions, parse_overrides, parse_space

            assert self.config is not None and self.hydra_context is not None
            legacy = self.keys.get("search_space")
            if legacy:
                log.warning(
                    "hydra.sweeper.search_space is deprecated (Hydra 1.1's form); it is read, but write the space "
                    "as hydra.sweeper.params in the override grammar, e.g. x: interval(-5.5, 5.5), y: choice(-5, 0, 5)."
                )
            parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
            params = [f"{key}={value}" for key, value in (self.keys.get("params") or {}).items()]
            return parse_space(
                parse_overrides([*params, *arguments], parser),
                self.config,
                self.keys.get("custom_search_space"),
                legacy_distributions(OmegaConf.to_container(legacy)) if legacy else None,
            )

        def _search(self, arguments: list[str]) -> None:
            from lenet_fmnist.search.study import open_study, trials_wanted
            from lenet_fmnist.search.sweep import Sweep, search

            assert self.config is not None
            settings, space = self._settings(), self._space(arguments)
            custom = _custom_search_space(space.custom)
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            corners = self.validate([_space_corner(space, point) for point in _corners(space)])
            _refuse_trials_without_validation(self.config, corners)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            resume = bool(OmegaConf.select(self.config, "resume", default=False))
            study = open_study(settings, sweep_dir, space, resume, _trial_command())
            n_trials = trials_wanted(settings, study, space)
            if not (sweep_dir / "multirun.yaml").exists():  # a resumed search keeps the first one's
                OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
            log.info(
                "Study %s (%s): %d trials, %d at once, %s, direction %s",
                study.study_name, settings.storage or sweep_dir / JOURNAL_FILE, n_trials, settings.n_jobs,
                type(study.sampler).__name__, ", ".join(settings.directions),
            )  # fmt: skip
            # Only now: the report's figures import matplotlib, which a refused search does not wait for.
            from lenet_fmnist.report import search_summary

            unnamed = tuple(self.config.hydra.job.config.override_dirname.exclude_keys)
            sweep = Sweep(space, self._launch, self.config, unnamed, custom)
            try:
                failures = search(settings, study, sweep, n_trials)
            finally:  # also when it gives up or is interrupted: the trials so far, summarised
                search_summary.write(sweep_dir)
            if failures:
                log.warning("%d trial(s) failed; search.md lists them.", failures)

        def validate(self, batch: list[list[str]]) -> list[DictConfig]:
            """Compose the jobs' configs before launching, and return them: an unknown key or group
            option in the space is the user's mistake, reported as such. (Hydra's
            validate_batch_is_legal composes them the same way, but keeps none.)"""
            assert self.config is not None and self.hydra_context is not None
            loader = self.hydra_context.config_loader
            try:
                return [loader.load_sweep_config(master_config=self.config, sweep_overrides=job) for job in batch]
            except HydraException as error:
                reason = " ".join(str(error).split())
                raise UserError(
                    f"The search space names something the configuration does not have: {reason} Check the keys "
                    "and options of hydra.sweeper.params and the command line (see --cfg job)."
                ) from None

        def _launch(self, batch: list[list[str]], first_number: int) -> Any:
            self.validate(batch)
            return self.launcher.launch(batch, initial_job_idx=first_number)

    def _answer_to_upstreams_name() -> None:
        """Make this sweeper answer to the class name upstream's configs give as their _target_
        (configs copied from elsewhere, e.g. lightning-hydra-template's hparams_search, name it).
        Hydra finds a plugin class by module and class name, and imports that module to make it:
        so a stand-in module of that name, holding this class, unless upstream's is installed."""
        package = "hydra_plugins.hydra_optuna_sweeper"
        module = f"{package}.optuna_sweeper"
        if package in sys.modules:
            if getattr(sys.modules[package], "__file__", None) is not None:
                return  # upstream's own, imported
        elif importlib.util.find_spec(package) is not None:
            return  # upstream's own, installed
        alias = type("OptunaSweeper", (OptunaSweeper,), {"__module__": module, "__doc__": OptunaSweeper.__doc__})
        for name in (package, module):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules[module].OptunaSweeper = alias  # type: ignore[attr-defined]
        globals()["UpstreamNamedSweeper"] = alias  # found by Hydra's plugin scan, which reads this module

    _answer_to_upstreams_name()

    def _custom_search_space(path: Optional[str]) -> Any:  # noqa: UP045
        """The function hydra.sweeper.custom_search_space names, imported now: a wrong path stops
        the search before any trial."""
        if not path:
            return None
        module_name, _, name = path.rpartition(".")
        try:  # not hydra.utils.get_method: it logs its own error before ours
            function = getattr(importlib.import_module(module_name), name)
            if not callable(function):
                raise TypeError(f"{name} is a {type(function).__name__}, not a function")
        except Exception as error:
            raise UserError(
                f"hydra.sweeper.custom_search_space={path} cannot be used ({type(error).__name__}: "
                f"{' '.join(str(error).split())}). Give the dotted path of a function of the config and the trial, "
                "e.g. mypackage.search.configure (its module importable from where you run the app), which suggests "
                "further parameters with trial.suggest_* and returns None or a dict of overrides."
            ) from None
        return function

    def _refuse_trials_without_validation(config: DictConfig, corners: List[DictConfig]) -> None:  # noqa: UP006
        """Stop a search of lenet_fmnist's trainer before any training when a trial would run with
        data.val_size=0: its objective and its pruner read validation accuracy. The value may come
        from the config, the command line or the space; `corners` (configs of trials that use every
        category and both ends of every range) hold each value a trial can take. The plugin serves
        any Hydra app: only a config with data.val_size is lenet_fmnist's."""
        from lenet_fmnist.validation import refuse_search_without_validation

        if OmegaConf.select(config, "data.val_size", default=None) is None:
            return
        refuse_search_without_validation(OmegaConf.select(corner, "data.val_size") for corner in corners)

    def _trial_command() -> str:
        """The command that runs one trial alone, given its overrides: the app's script, or
        lenet_fmnist's command line (its argv[0] is `lenet-fmnist COMMAND`)."""
        program = sys.argv[0]
        return f"python {shlex.quote(program)}" if program.endswith(".py") else program

    def _corners(space: Any) -> List[Dict[str, Any]]:  # noqa: UP006
        """Points of the space that between them use every category and both ends of every range,
        to check before any training that every trial composes."""
        from optuna.distributions import CategoricalDistribution

        def ends(d: Any) -> List[Any]:  # noqa: UP006
            return list(d.choices) if isinstance(d, CategoricalDistribution) else [d.low, d.high]

        options = {key: ends(d) for key, d in space.distributions.items()}
        first = {key: values[0] for key, values in options.items()}
        return [first] + [{**first, key: value} for key, values in options.items() for value in values[1:]]

    def _space_corner(space: Any, point: Dict[str, Any]) -> List[str]:  # noqa: UP006
        from lenet_fmnist.search.space import trial_overrides

        return trial_overrides(space, point)
