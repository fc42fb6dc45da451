"""Shared test fixtures: synthetic Fashion-MNIST files in the real IDX format, and a runner for
the command line in a subprocess.

Nothing here downloads: every run gets `data.root=` a directory these fixtures wrote, and
XDG_CACHE_HOME points at an empty directory so the user cache can never be found by accident.
Runs are expensive (each subprocess imports torch), so the ones several tests read are
session-scoped fixtures.
"""

from __future__ import annotations

import gzip
import json
import os
import shlex
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
IMAGE_FILES = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
LABEL_FILES = ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")
# Keys of metrics.json that issue 2 makes a contract.
METRICS_KEYS = {
    "status", "train_acc", "val_acc", "test_acc", "train_loss", "val_loss", "test_loss", "best_epoch",
    "epochs_completed", "train_seconds", "images_per_second", "history",
}  # fmt: skip
HISTORY_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"}
# Per-epoch values that measure time, so differ between two otherwise identical runs.
TIMING_KEYS = {"seconds", "train_seconds", "images_per_second"}


# ---------------------------------------------------------------------------------------------
# IDX files


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x0000 08 NDIM, big-endian sizes, then the data."""
    assert array.dtype == np.uint8
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write `array` as an IDX file, gzip-compressed when `path` ends in .gz."""
    payload = idx_bytes(array)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
    return path


def synthetic_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` 28 x 28 images in 10 classes: noise plus a brighter block whose place depends on
    the class (row band by class // 5, column band by class % 5) give or take 2 pixels, and 20%
    of the labels replaced at random, so a model learns them well but never perfectly."""
    rng = np.random.default_rng(seed)
    classes = (np.arange(count) % 10).astype(np.uint8)
    rng.shuffle(classes)
    images = rng.integers(0, 110, size=(count, 28, 28), dtype=np.uint8)
    for index, label in enumerate(classes):
        row = 3 + 12 * (label // 5) + rng.integers(-2, 3)
        col = 3 + 5 * (label % 5) + rng.integers(-2, 3) - 2
        row, col = max(row, 0), max(col, 0)
        images[index, row : row + 6, col : col + 4] = rng.integers(110, 230, size=(6, 4), dtype=np.uint8)[
            : 28 - row, : 28 - col
        ]
    labels = np.where(rng.random(count) < 0.2, rng.integers(0, 10, size=count), classes).astype(np.uint8)
    return images, labels


def write_dataset(directory: Path, train: int, test: int, gz: bool, seed: int = 0) -> Path:
    """The four Fashion-MNIST files with synthetic contents in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for (image_name, label_name), count, split_seed in zip(
        zip(IMAGE_FILES, LABEL_FILES, strict=True), (train, test), (seed, seed + 1), strict=True
    ):
        images, labels = synthetic_split(count, split_seed)
        write_idx(directory / f"{image_name}{suffix}", images)
        write_idx(directory / f"{label_name}{suffix}", labels)
    return directory


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 training and 64 test images, gzip-compressed like the official files."""
    return write_dataset(tmp_path_factory.mktemp("tiny_data"), train=256, test=64, gz=True)


@pytest.fixture(scope="session")
def plain_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A larger set in plain (uncompressed) IDX files: 1,536 + 256 training images, so that an
    epoch lasts long enough (24 steps) to be interrupted in the middle."""
    return write_dataset(tmp_path_factory.mktemp("plain_data"), train=1792, test=256, gz=False, seed=7)


# ---------------------------------------------------------------------------------------------
# The command line in a subprocess


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("env")
    env = dict(os.environ)
    env.update(
        XDG_CACHE_HOME=str(base / "empty-cache"),  # no cached dataset can be found or written
        MPLCONFIGDIR=str(base / "matplotlib"),  # one font cache for all runs, outside $HOME
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("HYDRA_FULL_ERROR", None)  # Hydra must report errors the way users see them
    return env


def tiny_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    """Overrides for a fast, deterministic training run on synthetic data."""
    return [
        "train", f"data.root={data}", "data.val_size=64", "threads=1", "device=cpu", "epochs=1",
        f"hydra.run.dir={run_dir}", *extra,
    ]  # fmt: skip


def plain_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    """Overrides for the longer runs of the fault-injection tests (3 epochs of 24 steps)."""
    return [
        "train", f"data.root={data}", "data.val_size=256", "threads=1", "device=cpu", "epochs=3",
        f"hydra.run.dir={run_dir}", *extra,
    ]  # fmt: skip


@dataclass
class CLI:
    env: dict[str, str]
    cwd: Path

    def command(self, args: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "lenet_fmnist", *args]

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(args), cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        """Start a run in the background, its stdout and stderr going to `log` (a file, not a
        pipe that could fill up while the test waits)."""
        with open(log, "wb") as handle:
            return subprocess.Popen(self.command(args), cwd=self.cwd, env=self.env, stdout=handle, stderr=handle)

    def run_hint(self, hint: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run a `python -m lenet_fmnist ...` command line exactly as the program printed it."""
        words = shlex.split(hint)
        assert words[:3] == ["python", "-m", "lenet_fmnist"], hint
        return self.run(*words[3:], timeout=timeout)


@pytest.fixture(scope="session")
def cli(cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> CLI:
    """Runs `python -m lenet_fmnist` from an empty directory, so a stray default output dir
    cannot land in the repository."""
    return CLI(cli_env, tmp_path_factory.mktemp("cwd"))


def output(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout or "") + (result.stderr or "")


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, output(result)
    assert "Traceback" not in output(result), output(result)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Poll `condition` until it holds; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before the awaited state:\n{log.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"timed out waiting for the run:\n{log.read_text()}")
        time.sleep(0.01)


def epochs_done(run_dir: Path) -> int:
    """Epochs recorded in metrics.json so far (0 while it does not exist)."""
    try:
        return read_metrics(run_dir)["epochs_completed"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def resume_hints(text: str) -> list[str]:
    """The resume commands a run printed (the text after "Resume with: " on each line)."""
    return [line.split("Resume with: ", 1)[1].strip() for line in text.splitlines() if "Resume with: " in line]


# ---------------------------------------------------------------------------------------------
# Shared runs


@pytest.fixture(scope="session")
def tiny_run(cli: CLI, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch on the tiny synthetic set through the command line; its run directory."""
    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    assert_ok(cli.run(*tiny_args(tiny_data, run_dir)))
    return run_dir


@pytest.fixture(scope="session")
def reference_run(cli: CLI, plain_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted 3-epoch run that the interrupted and resumed runs must reproduce."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert_ok(cli.run(*plain_args(plain_data, run_dir)))
    return run_dir


@pytest.fixture(scope="session")
def flip_run(cli: CLI, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch on the tiny set with relu, max pooling, augmentation and test-time flip: a
    checkpoint whose predictions average each image and its mirror image (predict, export)."""
    run_dir = tmp_path_factory.mktemp("flip_run") / "run"
    flip = ("activation=relu", "pool=max", "augmentation=standard", "augmentation.test_flip=true")
    assert_ok(cli.run(*tiny_args(tiny_data, run_dir, *flip)))
    return run_dir
