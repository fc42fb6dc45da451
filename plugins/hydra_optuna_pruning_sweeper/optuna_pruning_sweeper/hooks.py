"""The app's own functions that the sweeper calls, named by dotted path in its config:
hydra.sweeper.custom_search_space (config, trial) and hydra.sweeper.check_config (config). Each is
imported before the first trial: a wrong path stops the search before anything runs.
"""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import DictConfig

from optuna_pruning_sweeper.errors import SweeperError


def _imported(path: str) -> Any:
    """The object a dotted path names: the longest part of it that imports as a module (a module
    beside the app's script too, whatever its file is called), then attributes of it (a function,
    or a class's static method)."""
    parts = path.split(".")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"'{path}' is not a dotted path of the form module.function")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        try:
            found = importlib.import_module(module)
        except (
            ModuleNotFoundError
        ) as error:  # this prefix is no module; one that its code imports is the module's own problem
            if error.name is None or not (module == error.name or module.startswith(f"{error.name}.")):
                raise
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(f"No module named '{parts[0]}'")


def named_function(key: str, path: str | None) -> Any:
    """The function hydra.sweeper.<key> names by its dotted path, imported now: a wrong path stops
    the search before any trial."""
    if not path:
        return None
    try:
        function = _imported(path)
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
