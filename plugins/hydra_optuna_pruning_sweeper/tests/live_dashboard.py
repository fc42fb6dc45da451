"""optuna-dashboard on a live search, for the tests that watch one (this folder's, and lenet_fmnist's
SLURM + MariaDB test, which imports this module): start it on a free port, wait on what it serves,
stop every process a test started."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from optuna_pruning_sweeper import SweeperError


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


@dataclass
class Dashboard:
    url: str
    process: subprocess.Popen[bytes]

    def study(self, name: str) -> dict[str, Any]:
        """The study's detail as the dashboard's API serves it."""
        summaries = get_json(f"{self.url}/api/studies")["study_summaries"]
        (study_id,) = [s["study_id"] for s in summaries if s["study_name"] == name]
        return get_json(f"{self.url}/api/studies/{study_id}")

    def trial_states(self, name: str) -> list[str]:
        return [trial["state"] for trial in self.study(name)["trials"]]


def wait_until(condition: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (OSError, ValueError, KeyError, SweeperError):  # not answering yet, or not holding it yet
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def start_dashboard(storage: str, log: Path, env: dict[str, str]) -> Dashboard:
    """optuna-dashboard on a free port of 127.0.0.1, once its API answers."""
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "optuna-dashboard"),
        storage,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=handle, env=env)
    dashboard = Dashboard(f"http://127.0.0.1:{port}", process)
    try:
        wait_until(lambda: "study_summaries" in get_json(f"{dashboard.url}/api/studies"), "the dashboard", 60)
    except BaseException:
        stop(process)
        raise
    return dashboard


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process this test started, by its PID."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts: every one is stopped when it ends, however it ends."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop(process)
