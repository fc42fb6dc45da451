"""The plugin's tests run example apps as a user would: `python app.py -m ...` in a subprocess,
from an empty directory, with the environment a user has (no HYDRA_FULL_ERROR)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start an app in a subprocess are `slow`: -m "not slow" is the quick loop."""
    for item in items:
        if "search_app" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("env")
    env = dict(os.environ)
    env.update(MPLCONFIGDIR=str(base / "matplotlib"), PYTHONUNBUFFERED="1")
    env.pop("HYDRA_FULL_ERROR", None)  # Hydra must report errors the way users see them
    return env


def output(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout or "") + (result.stderr or "")


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, output(result)
    assert "Traceback" not in output(result), output(result)
