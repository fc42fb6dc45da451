"""Small Hydra apps for the tests, each written into a directory of its own and run as
`python app.py -m ...` in a subprocess, as a user runs it. They know only Hydra, Optuna and the
sweeper's public API."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import optuna
from conftest import output
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

CONFIG_HEAD = """\
defaults:
  - override hydra/sweeper: optuna
  - override hydra/sweeper/sampler: {sampler}
  - _self_
"""


@dataclass
class App:
    """A Hydra app in its own directory: app.py and conf/config.yaml."""

    cwd: Path

    def command(self, args: tuple[str, ...]) -> list[str]:
        return [sys.executable, "app.py", "-m", *args]

    def run(
        self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(args), cwd=self.cwd, capture_output=True, text=True, timeout=timeout, env=env
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(args), cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)  # fmt: skip

    @property
    def sweep_dir(self) -> Path:
        return self.cwd / "sweep"


APP_HEAD = """\
import os, sys, time
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf
"""

APP_MAIN = """
@hydra.main(version_base=None, config_path="conf", config_name="config")
def task(cfg: DictConfig):
{body}

if __name__ == "__main__":
    task()
"""


def make_app(directory: Path, task: str, config: str, sampler: str = "random", header: str = "") -> App:
    """An app whose task function's body is `task` (cfg is its config), with module-level code
    `header`, and whose config selects the sweeper, adds `config` and sweeps into `sweep` (a
    relative directory, as users write it)."""
    body = textwrap.indent(textwrap.dedent(task), "    ")
    (directory / "conf").mkdir(parents=True)
    (directory / "app.py").write_text(APP_HEAD + textwrap.dedent(header) + APP_MAIN.format(body=body))
    sweep = "hydra:\n  sweep:\n    dir: sweep\n"
    (directory / "conf" / "config.yaml").write_text(
        CONFIG_HEAD.format(sampler=sampler) + sweep + textwrap.dedent(config)
    )
    return App(directory)


def assert_one_paragraph_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error a user's mistake gets: exit 1, no traceback; its text."""
    text = output(result)
    assert result.returncode == 1, text
    assert "Traceback" not in text, text
    return text


def journal_study(sweep_dir: Path) -> optuna.Study:
    """The study of a search kept in the default storage, the sweep directory's journal."""
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / "optuna.journal")))
    return optuna.load_study(study_name=None, storage=storage)


def states(study: optuna.Study) -> list[str]:
    return [trial.state.name for trial in study.trials]
