"""Which side of the toolkit may import torch: one contract per package instead of a list kept by
hand. The run directory's rules, the machine's facts, what Hydra calls, the report, the command
line and the config schema answer without torch (so `--help`, config errors and `report` answer
at once, and the sweeper's process never loads it); training and inference use it."""

from __future__ import annotations

import pkgutil

import pytest

from conftest import assert_imports_no_torch
from lenet_fmnist import host, launch, report, run

NO_TORCH_PACKAGES = {"run": run, "host": host, "launch": launch, "report": report}
NO_TORCH_MODULES = ("lenet_fmnist.cli", "lenet_fmnist.config")


@pytest.mark.parametrize("name", sorted(NO_TORCH_PACKAGES))
def test_every_module_of_a_torch_free_package_loads_without_torch(name: str) -> None:
    package = NO_TORCH_PACKAGES[name]
    modules = [f"lenet_fmnist.{name}.{module.name}" for module in pkgutil.iter_modules(package.__path__)]
    assert modules, name
    assert_imports_no_torch("\n".join(f"import {module}" for module in modules))


def test_the_command_line_and_the_schema_load_without_torch() -> None:
    assert_imports_no_torch("\n".join(f"import {module}" for module in NO_TORCH_MODULES))
