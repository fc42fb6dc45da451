"""The sampler of hydra/sweeper/sampler, made as the installed Optuna takes it: upstream's configs
name samplers and arguments of older Optuna versions, and a config that worked with upstream's
sweeper must start. The grid sampler is given the space's values as its grid.

- A sampler Optuna removed is made as its successor, with a warning: `motpe` (MOTPESampler,
  removed in Optuna 4) as TPESampler, which handles several objectives, its n_ehvi_candidates as
  TPE's n_ei_candidates (as Optuna's last MOTPESampler passed them on).
- An argument upstream documents that the sampler no longer takes has no effect: set, one line
  says so; left at null (the sweeper's default for such keys), nothing is said. Any other
  argument the sampler does not take is still the user's mistake, which making it reports.
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any

import optuna
from hydra.errors import HydraException
from hydra.utils import get_class, instantiate
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from optuna_pruning_sweeper.errors import SweeperError
from optuna_pruning_sweeper.settings import Settings
from optuna_pruning_sweeper.space import Space

log = logging.getLogger(__name__)

# A removed sampler's _target_ -> its successor's, and the successor's names for its arguments.
SUCCESSORS: dict[str, tuple[str, dict[str, str]]] = {
    "optuna.samplers.MOTPESampler": ("optuna.samplers.TPESampler", {"n_ehvi_candidates": "n_ei_candidates"}),
}

# The sampler arguments upstream hydra-optuna-sweeper's configs document (tpe, random, cmaes,
# nsgaii, motpe, qmc): kept in configs people copied, whatever Optuna later did with them.
UPSTREAM_ARGUMENTS = frozenset(
    {
        "seed", "consider_prior", "prior_weight", "consider_magic_clip", "consider_endpoints", "n_startup_trials",
        "n_ei_candidates", "multivariate", "warn_independent_sampling", "x0", "sigma0", "independent_sampler",
        "consider_pruned_trials", "restart_strategy", "inc_popsize", "use_separable_cma", "source_trials",
        "population_size", "mutation_prob", "crossover_prob", "swapping_prob", "constraints_func",
        "n_ehvi_candidates", "qmc_type", "scramble", "warn_asynchronous_seeding",
    }
)  # fmt: skip


def _successor(node: dict[str, Any]) -> dict[str, Any]:
    target = node.get("_target_")
    if target not in SUCCESSORS:
        return node
    successor, renamed = SUCCESSORS[target]
    names = ", ".join(f"{old} as {new}" for old, new in renamed.items())
    log.warning(
        "hydra.sweeper.sampler: Optuna removed %s (in version 4); its successor %s, which handles several objectives, "
        "samples instead (%s).", target, successor, names,
    )  # fmt: skip
    return {renamed.get(key, key): value for key, value in node.items()} | {"_target_": successor}


def _arguments(target: str) -> set[str] | None:
    """The arguments the class `target` takes; None where it takes any, or cannot be found (making it
    says why)."""
    try:
        parameters = inspect.signature(get_class(target)).parameters.values()
    except Exception:
        return None
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return {parameter.name for parameter in parameters}


def for_installed_optuna(node: dict[str, Any]) -> dict[str, Any]:
    """The hydra/sweeper/sampler node (_target_ and arguments) as the installed Optuna takes it."""
    node = _successor(node)
    taken = _arguments(str(node.get("_target_")))
    if taken is None:
        return node
    kept = {}
    for key, value in node.items():
        if key.startswith("_") or key in taken or key not in UPSTREAM_ARGUMENTS:
            kept[key] = value
        elif value is not None:
            log.warning(
                "hydra.sweeper.sampler.%s=%s has no effect: %s of Optuna %s takes no such argument any more; it is "
                "ignored.", key, value, node["_target_"], optuna.__version__,
            )  # fmt: skip
    return kept


def _grid_values(key: str, distribution: BaseDistribution) -> list[Any]:
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution) and not distribution.log:
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        count = round((distribution.high - distribution.low) / distribution.step) + 1
        return [distribution.low + i * distribution.step for i in range(count)]
    raise SweeperError(
        f"hydra/sweeper/sampler=grid needs a finite set of values, but {key} is a continuous range: give it as "
        "a comma list, choice(...), range(start, stop, step) or int(interval(a, b))."
    )


def grid_of(space: Space) -> dict[str, list[Any]]:
    return {key: _grid_values(key, d) for key, d in space.distributions.items()}


def trials_wanted(settings: Settings, study: optuna.Study, space: Space) -> int:
    """n_trials, or fewer where the grid sampler has fewer points."""
    if isinstance(study.sampler, optuna.samplers.GridSampler):
        return min(settings.n_trials, math.prod(len(values) for values in grid_of(space).values()))
    return settings.n_trials


def make_sampler(node: dict[str, Any], space: Space, asked_before: int) -> optuna.samplers.BaseSampler:
    """The sampler of hydra/sweeper/sampler. A resumed search offsets its seed by the trials
    already asked, so it does not draw the first run's values again; but not the grid sampler's,
    whose grid ids number a shuffle of the grid made from its seed, which must stay the first's."""
    target = node.get("_target_", "?")
    arguments = dict(node)
    if arguments.get("seed") is not None and not node.get("_partial_"):
        arguments["seed"] = arguments["seed"] + asked_before
    try:
        made = instantiate(arguments)
        if node.get("_partial_"):  # the grid sampler: given its grid, made of the space
            made = made(grid_of(space))
    except SweeperError:
        raise
    except (HydraException, ImportError, TypeError, ValueError) as error:
        cause = error.__cause__ or error
        raise SweeperError(
            f"The sampler {target} cannot be made ({type(cause).__name__}: {' '.join(str(cause).split())}). Check "
            "hydra.sweeper.sampler's keys (--cfg hydra -p hydra.sweeper.sampler shows them); a sampler whose package "
            "is missing needs it installed (pip install 'hydra-optuna-pruning-sweeper[samplers]' brings cmaes and scipy)."
        ) from None
    if not isinstance(made, optuna.samplers.BaseSampler):
        raise SweeperError(
            f"hydra.sweeper.sampler._target_={target} makes a {type(made).__name__}, not an Optuna sampler."
        )
    return made
