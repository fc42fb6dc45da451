"""The sweeper stands alone: its distribution requires neither torch nor lenet_fmnist, importing it
(as Hydra does at every start-up) imports neither, and in its own venv (the one .ci/run makes, with
only hydra-core, Optuna and this distribution) neither is even installed."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

FOREIGN = ("torch", "lenet_fmnist")


def test_its_requirements_name_neither_torch_nor_lenet_fmnist() -> None:
    required = importlib.metadata.requires("hydra-optuna-pruning-sweeper") or []
    names = {Requirement(requirement).name.lower() for requirement in required}
    assert {"hydra-core", "optuna"} <= names
    assert not names & {"torch", "lenet-fmnist", "lenet_fmnist"}, names


def test_the_plugin_and_its_library_import_neither_torch_nor_lenet_fmnist() -> None:
    code = (
        "import sys, hydra_plugins.optuna_pruning_sweeper.config, hydra_plugins.optuna_pruning_sweeper.optuna_pruning_sweeper\n"
        "import optuna_pruning_sweeper.sweep, optuna_pruning_sweeper.summary\n"
        f"print(sorted(m for m in {FOREIGN!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_its_own_venv_holds_neither_torch_nor_lenet_fmnist() -> None:
    installed = {(dist.metadata["Name"] or "").lower() for dist in importlib.metadata.distributions()}
    if "lenet-fmnist" in installed:
        pytest.skip("this venv is lenet_fmnist's; the sweeper's own (made by .ci/run) checks itself")
    for module in FOREIGN:
        assert importlib.util.find_spec(module) is None, f"{module} is importable in the sweeper's own venv"


def test_no_module_of_the_package_names_the_repositorys_app() -> None:
    """The sweeper is for any Hydra app: its code speaks of none (lenet_fmnist is one user)."""
    package = Path(__file__).resolve().parents[1]
    sources = [*(package / "optuna_pruning_sweeper").glob("*.py"), *(package / "hydra_plugins").rglob("*.py")]
    assert sources and [str(p) for p in sources if "lenet" in p.read_text().lower()] == []
