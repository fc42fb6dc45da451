"""What the sweeper takes from Hydra, OmegaConf and Optuna beyond their public APIs, pinned to the
versions its requirements name: each such use is wrapped in one place (optuna_pruning_sweeper/
compat.py, hydra_plugins/optuna_pruning_sweeper/upstream_name.py), and these tests say whether it
still holds. The public ways the sweeper found for the rest are checked here too."""

from __future__ import annotations

import importlib.metadata
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from packaging.version import Version

from hydra_plugins.optuna_pruning_sweeper.optuna_pruning_sweeper import OptunaSweeper
from optuna_pruning_sweeper.compat import value_text
from optuna_pruning_sweeper.errors import SweeperError
from optuna_pruning_sweeper.hooks import named_function
from optuna_pruning_sweeper.space import _inside, parse_space

SUPPORTED = {"hydra-core": ("1.3", "1.4"), "omegaconf": ("2.3", "2.4"), "optuna": ("5", "6")}


@pytest.mark.parametrize("distribution", sorted(SUPPORTED))
def test_the_installed_versions_are_those_the_private_uses_were_checked_with(distribution: str) -> None:
    low, high = SUPPORTED[distribution]
    assert Version(low) <= Version(importlib.metadata.version(distribution)) < Version(high)


def test_a_category_of_lists_keeps_hydras_text() -> None:
    """The study keeps such a category as this text: a resumed search compares it with its own."""
    assert [value_text(v) for v in ([64], [128, 128], {"a": 1, "b": [1, 2]}, None, "relu")] == [
        "[64]", "[128,128]", "{a:1,b:[1,2]}", "null", "relu"
    ]  # fmt: skip


def test_upstreams_class_name_is_this_sweeper_to_hydras_plugin_scan() -> None:
    """Without upstream's plugin installed, Hydra's scan finds a Sweeper under upstream's module
    and class name, and that name imports (Hydra makes a plugin of its _target_ so)."""
    # Loaded already (this package stands in for it as soon as it loads), it is upstream's only if
    # it has a file; not loaded, only if it is there to find.
    module = sys.modules.get("hydra_plugins.hydra_optuna_sweeper")
    if module is not None:
        installed = getattr(module, "__file__", None) is not None
    else:
        installed = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
    if installed:
        pytest.skip("upstream's plugin is installed: it answers to its own name")
    from hydra.utils import get_class

    upstream = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    found = {f"{c.__module__}.{c.__name__}": c for c in Plugins.instance().discover(Sweeper)}
    ours = f"{OptunaSweeper.__module__}.{OptunaSweeper.__name__}"  # by name: Hydra's scan imports the module anew
    assert [f"{c.__module__}.{c.__name__}" for c in found[upstream].__mro__[1:2]] == [ours]
    assert get_class(upstream) is found[upstream]


def test_a_function_is_found_by_its_dotted_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module's function, a class's static method, a module beside the app whose file name is
    no identifier; a module that fails to import is named with its own error."""
    (tmp_path / "my-space.py").write_text(
        "class Space:\n    @staticmethod\n    def configure(cfg, trial):\n        pass\n"
    )
    (tmp_path / "broken.py").write_text("import not_installed_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert named_function("custom_search_space", "my-space.Space.configure").__name__ == "configure"
    assert named_function("check_config", "os.path.join").__name__ == "join"
    with pytest.raises(SweeperError, match=r"ModuleNotFoundError: No module named 'not_installed_anywhere'"):
        named_function("check_config", "broken.check")
    with pytest.raises(SweeperError, match=r"AttributeError: .*no attribute 'nothing'"):
        named_function("check_config", "os.path.nothing")
    with pytest.raises(SweeperError, match=r"is not a dotted path"):
        named_function("check_config", "configure")


@dataclass
class Schema:
    count: int = 1
    maybe: Optional[int] = None  # noqa: UP045  (OmegaConf reads typing's form)
    rate: float = 0.5
    flag: bool = False


def test_an_interval_on_a_key_the_schema_declares_an_integer_is_refused() -> None:
    """OmegaConf's own rules say which keys are integers: a schema's int or Optional[int]; a plain
    YAML integer, a float, a bool are not."""
    config = OmegaConf.create({"plain": 3, "schema": OmegaConf.structured(Schema)})
    OmegaConf.set_readonly(config, True)  # as Hydra may hand it over

    def space(override: str) -> object:
        return parse_space(OverridesParser.create().parse_overrides([override]), config).distributions

    for key in ("schema.count", "schema.maybe"):
        with pytest.raises(SweeperError, match=rf"{key} is an integer.*int\(interval\(0, 5\)\)"):
            space(f"{key}=interval(0, 5)")
    for key in ("plain", "schema.rate", "schema.flag", "absent"):
        assert space(f"{key}=interval(0, 5)") == {key: FloatDistribution(0.0, 5.0)}


def test_a_value_inside_a_distribution_is_on_its_steps() -> None:
    assert _inside(FloatDistribution(0.0, 1.0, step=0.25), 0.5) and not _inside(
        FloatDistribution(0.0, 1.0, step=0.25), 0.3
    )
    assert _inside(IntDistribution(0, 10, step=2), 4) and not _inside(IntDistribution(0, 10, step=2), 5)
    assert _inside(CategoricalDistribution(["a", None]), None) and not _inside(CategoricalDistribution(["a"]), "b")
    assert not _inside(FloatDistribution(0.0, 1.0), 1.5) and not _inside(FloatDistribution(0.0, 1.0), "x")
