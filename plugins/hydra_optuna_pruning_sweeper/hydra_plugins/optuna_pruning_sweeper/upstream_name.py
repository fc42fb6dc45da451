"""This sweeper under the class name that upstream's configs give as their `_target_`
(`hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper`: configs copied from elsewhere,
e.g. lightning-hydra-template's hparams_search, name it), unless upstream's plugin is installed.

Hydra 1.3 makes a plugin of a `_target_` only if its plugin scan registered that class, by its
module's and its own name, and the scan registers the classes it finds in the modules under
hydra_plugins: this one holds a subclass that calls its module upstream's, and that module is
put into sys.modules by hand so that the name also imports. The package's one use of that device;
tests/test_compat.py pins it to the Hydra versions it works with.
"""

from __future__ import annotations

import importlib.util
import sys
import types

from hydra_plugins.optuna_pruning_sweeper.optuna_pruning_sweeper import OptunaSweeper

UPSTREAM_PACKAGE = "hydra_plugins.hydra_optuna_sweeper"
UPSTREAM_MODULE = f"{UPSTREAM_PACKAGE}.optuna_sweeper"


def _upstream_installed() -> bool:
    if UPSTREAM_PACKAGE in sys.modules:  # upstream's own has a file; the stand-in below has none
        return getattr(sys.modules[UPSTREAM_PACKAGE], "__file__", None) is not None
    return importlib.util.find_spec(UPSTREAM_PACKAGE) is not None


def upstream_named() -> type[OptunaSweeper] | None:
    """The sweeper as upstream's class, its stand-in module in sys.modules; None where upstream's
    plugin is installed, which then answers to its own name."""
    if _upstream_installed():
        return None
    alias = type("OptunaSweeper", (OptunaSweeper,), {"__module__": UPSTREAM_MODULE, "__doc__": OptunaSweeper.__doc__})
    for name in (UPSTREAM_PACKAGE, UPSTREAM_MODULE):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules[UPSTREAM_MODULE].OptunaSweeper = alias  # type: ignore[attr-defined]
    return alias


UpstreamNamedSweeper = upstream_named()  # where Hydra's plugin scan finds it
