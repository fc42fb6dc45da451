"""The private parts of Hydra that the sweeper relies on, each wrapped here once; the package's
requirements pin the versions they hold in (hydra-core 1.3), and tests/test_compat.py checks them
there. (The plugin's other device, a module put into sys.modules so that upstream's class name
imports, is hydra_plugins/optuna_pruning_sweeper/upstream_name.py: Hydra's plugin scan finds
classes under hydra_plugins only.)
"""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.types import Override


def value_text(value: Any) -> str:
    """A parsed value (a list or dict category, an element of one) as Hydra's grammar writes it,
    `[128,128]`, `{a:1}`: the text a study keeps for such a category, so it must stay the same
    from one version of the sweeper to the next (a resumed search compares it). Hydra writes an
    override's whole value with a public method, but a single element only with this one."""
    return Override._get_value_element_as_str(value)
