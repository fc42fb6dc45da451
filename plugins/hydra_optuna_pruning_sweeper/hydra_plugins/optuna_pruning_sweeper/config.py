"""The sweeper's configuration: `hydra/sweeper=optuna` and the config group hydra/sweeper/sampler.

Upstream hydra-optuna-sweeper's documented keys (the sampler as a config group, direction,
study_name, storage, n_trials, n_jobs, max_failure_rate, params, custom_search_space, the
deprecated search_space) and ours (check_config, the pruner). Hydra imports this module at every
start-up: it imports neither Optuna nor anything heavy.
"""

# No `from __future__ import annotations`: Hydra executes this module before registering it in
# sys.modules, where dataclasses would look string annotations up; OmegaConf reads the types below.
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035  (OmegaConf 2.3 reads typing's forms)

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from optuna_pruning_sweeper.names import PrunerName

# ---- hydra/sweeper/sampler: Optuna's samplers, each key an argument with Optuna's default ------


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None  # noqa: UP045
    # Upstream documents these three; Optuna 5 takes them but calls them deprecated (null: Optuna's
    # default, without its warning).
    consider_prior: Optional[bool] = None  # noqa: UP045
    prior_weight: Optional[float] = None  # noqa: UP045
    consider_magic_clip: Optional[bool] = None  # noqa: UP045
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
class CmaEsSamplerConf:  # needs the package cmaes (the `samplers` extra)
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Optional[int] = None  # noqa: UP045
    x0: Optional[Dict[str, Any]] = None  # noqa: UP006, UP045
    sigma0: Optional[float] = None  # noqa: UP045
    # A sampler for what CMA-ES cannot sample, as a node: {_target_: optuna.samplers.RandomSampler}.
    independent_sampler: Optional[Any] = None  # noqa: UP045
    source_trials: Optional[Any] = None  # noqa: UP045  # FrozenTrials to warm-start from (null: none)
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
    # A function (trial) -> constraint values, as a node: {_target_: mymodule.constraints, _partial_: true}.
    constraints_func: Optional[Any] = None  # noqa: UP045


@dataclass
class MOTPESamplerConf:  # removed in Optuna 4: the sweeper makes its successor, TPE (several objectives too)
    _target_: str = "optuna.samplers.MOTPESampler"
    seed: Optional[int] = None  # noqa: UP045
    consider_prior: Optional[bool] = None  # noqa: UP045
    prior_weight: Optional[float] = None  # noqa: UP045
    consider_magic_clip: Optional[bool] = None  # noqa: UP045
    consider_endpoints: Optional[bool] = None  # noqa: UP045
    n_startup_trials: int = 10
    n_ehvi_candidates: int = 24  # TPE's n_ei_candidates


@dataclass
class GridSamplerConf:  # every combination of the space's values; made with the space as its grid
    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    seed: Optional[int] = None  # noqa: UP045


@dataclass
class QMCSamplerConf:  # needs scipy (the `samplers` extra)
    _target_: str = "optuna.samplers.QMCSampler"
    seed: Optional[int] = None  # noqa: UP045
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Optional[Any] = None  # noqa: UP045  # as CMA-ES's
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class GPSamplerConf:  # Gaussian process; needs torch and scipy (torch is in no extra: too large)
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
    "motpe": MOTPESamplerConf,
    "grid": GridSamplerConf,
    "qmc": QMCSamplerConf,
    "gp": GPSamplerConf,
}


@dataclass
class OptunaSweeperConf:
    """hydra.sweeper.*: upstream's keys, then ours (check_config, pruning)."""

    _target_: str = "hydra_plugins.optuna_pruning_sweeper.optuna_pruning_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sweeper makes the sampler itself (its seed, its errors)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])  # noqa: UP006
    sampler: Any = MISSING  # hydra/sweeper/sampler: tpe, random, cmaes, nsgaii, motpe, grid, qmc, gp
    direction: Any = "minimize"  # minimize | maximize, or a list of them: one per objective
    storage: Optional[str] = None  # noqa: UP045  # journal path or database URL; None: <sweep dir>/optuna.journal
    study_name: Optional[str] = None  # noqa: UP045  # None: the sweep directory's name
    n_trials: int = 20  # trials to run (complete, pruned or failed)
    n_jobs: Optional[int] = None  # noqa: UP045  # trials at once; None: the launcher's n_jobs, else 1
    max_failure_rate: float = 0.0  # the share of a batch's trials that may fail before the search stops
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045  # the space, in Hydra's override grammar
    custom_search_space: Optional[str] = None  # noqa: UP045  # dotted path of a function (cfg, trial) -> dict | None
    search_space: Optional[Dict[str, Any]] = None  # noqa: UP006, UP045  # deprecated (Hydra 1.1): use params
    # Dotted path of a function of a composed job config, called before the first trial with the
    # configs of trials that between them take every category and both ends of every range; what
    # it raises stops the search with its message (e.g. a value the task cannot search with).
    check_config: Optional[str] = None  # noqa: UP045
    # Trials asked first, each a point of the space given in part ({activation: relu, pool: max}):
    # the sampler draws the keys a point leaves out. Enqueued once, when the study is made; e.g.
    # to make sure the random start-up trials try every category of a key that matters.
    enqueue_trials: Optional[List[Dict[str, Any]]] = None  # noqa: UP006, UP045
    pruner: PrunerName = PrunerName.median  # stops trials whose reported values fall behind
    pruner_startup_trials: int = 5  # complete trials before the median pruner prunes any
    pruner_warmup_epochs: int = 2  # steps (epochs) every trial reports before it may be pruned
    # search.md, search.csv and the figures, written when the search ends (a fixed cost, matplotlib's
    # import the most of it); optimization_results.yaml, upstream's file, is written either way.
    summary: bool = True


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf)
for _name, _node in SAMPLERS.items():
    ConfigStore.instance().store(group="hydra/sweeper/sampler", name=_name, node=_node)
