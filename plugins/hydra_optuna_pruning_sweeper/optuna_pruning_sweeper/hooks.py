"""The app's own functions that the sweeper calls, named by dotted path in its config:
hydra.sweeper.custom_search_space (config, trial) and hydra.sweeper.check_config (config). Each is
imported before the first trial: a wrong path stops the search before anything runs.
"""

from __future__ import annotations

from typing import Any

from hydra._internal.utils import _locate
from omegaconf import DictConfig

from optuna_pruning_sweeper.errors import SweeperError


def named_function(key: str, path: str | None) -> Any:
    """The function hydra.sweeper.<key> names by its dotted path, imported now: a wrong path stops
    the search before any trial."""
    if not path:
        return None
    try:  # Hydra's own lookup (a module's function, or a class's static method), not its get_method: that logs first
        function = _locate(path)
        if not callable(function):
            raise TypeError(f"{path} is a {type(function).__name__}, not a function")
    except Exception as error:
        raise SweeperError(
            f"hydra.sweeper.{key}={path} cannot be used ({type(error).__name__}: {' '.join(str(error).split())}). "
            "Give the dotted path of a function, e.g. mypackage.search.configure or app.Space.configure (a static "
            "method; its module importable from where you run the app); see the sweeper's README for what it is "
            "called with."
        ) from None
    return function


def check_configs(path: str | None, configs: list[DictConfig]) -> None:
    """hydra.sweeper.check_config: call the function it names with each config; what it raises
    stops the search, before any trial, with its message."""
    check = named_function("check_config", path)
    if check is None:
        return
    for config in configs:
        try:
            check(config)
        except Exception as error:
            raise SweeperError(
                " ".join(str(error).split()) or f"hydra.sweeper.check_config={path} raised {error!r}"
            ) from None
