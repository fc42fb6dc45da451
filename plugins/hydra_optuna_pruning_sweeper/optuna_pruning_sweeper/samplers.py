"""hydra/sweeper/sampler as the installed Optuna takes it: upstream's configs name samplers and
arguments of older Optuna versions, and a config that worked with upstream's sweeper must start.

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
from typing import Any

import optuna
from hydra.utils import get_class

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
