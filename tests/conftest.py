"""Shared test fixtures: synthetic Fashion-MNIST files in the real IDX format, and a runner for
the command line in a subprocess.

Nothing here downloads: every run gets `data.root=` a directory these fixtures wrote (but the
real-data run, which finds Debian's copy), and XDG_CACHE_HOME points at an empty directory so the
user cache can never be found by accident. Runs are expensive (each subprocess imports torch), so
the ones several tests read are made once per session (`made_once`), shared by pytest-xdist's
workers.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from filelock import FileLock
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lenet_fmnist import data
from lenet_fmnist.host.threads import usable_cores
from lenet_fmnist.run.files import LOCK_FILE
from lenet_fmnist.run.next_step import RESUME_WITH, RUN_AGAIN_WITH
from lenet_fmnist.training.checkpoint import AVERAGES

REPO = Path(__file__).resolve().parents[1]
IMAGE_FILES = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
LABEL_FILES = ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")
# Keys of metrics.json that users and the report rely on (docs/configuration.md, "metrics.json").
METRICS_KEYS = {
    "status", "train_acc", "val_acc", "test_acc", "train_loss", "val_loss", "test_loss", "best_epoch",
    "epochs_completed", "train_seconds", "images_per_second", "history",
}  # fmt: skip
HISTORY_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"}
# Per-epoch values that measure time, so differ between two otherwise identical runs.
TIMING_KEYS = {"seconds", "train_seconds", "images_per_second"}
# What metrics.json says of how a run was started, which two runs computing the same bits may not
# share: its thread count and why (speed only).
CIRCUMSTANCE_KEYS = {"threads", "threads_reason"}


# Fixtures that start the command line in subprocesses (each imports torch: seconds apiece). A test
# that uses one is marked `slow`, so `pytest -m "not slow"` is a quick inner loop.
SUBPROCESS_FIXTURES = {
    "cli", "sweep_env", "tiny_run", "reference_run", "flip_run", "ema_run", "real_run", "built_wheel", "search_app",
}  # fmt: skip
# Tests that must have the machine to themselves (`serial`: README's test command runs them after the
# others, one at a time): the SLURM tests pace their jobs by this machine's measured speed.
SERIAL_MARKERS = {"serial", "slurm"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SUBPROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if SERIAL_MARKERS & {mark.name for mark in item.iter_markers()}:
            item.add_marker(pytest.mark.serial)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: a worker per core this process may use, as a training run counts them (xdist's
    own count is the physical cores where psutil is installed: one on a 2-vCPU machine)."""
    return usable_cores()


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker, torch computes with the worker's share of the cores, as each job of
    a launcher does: two OpenMP teams that each take every core wait on each other's threads."""
    if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
        torch.set_num_threads(max(1, usable_cores() // int(workers)))


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], object]) -> Path:
    """The directory `name`, filled by `make` once per test session: pytest-xdist's workers share it
    (it lies beside their own base directories), the first to ask makes it while the others wait on
    a file lock. A `make` that failed part-way is started afresh by the next test that asks."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "made_once"
    shared.mkdir(exist_ok=True)
    directory, done = shared / name, shared / f"{name}.done"
    with FileLock(shared / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            make(directory)
            done.touch()
    return directory


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


# The data sets are shared by all workers (made_once), as the runs trained on them are: a run's
# data.root is then the very directory that the tests resuming or evaluating it pass.
@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 training and 64 test images, gzip-compressed like the official files."""
    return made_once(tmp_path_factory, "tiny_data", lambda out: write_dataset(out, train=256, test=64, gz=True))


@pytest.fixture(scope="session")
def plain_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A larger set in plain (uncompressed) IDX files: 1,536 + 256 training images, so that an
    epoch lasts long enough (24 steps) to be interrupted in the middle."""
    return made_once(
        tmp_path_factory, "plain_data", lambda out: write_dataset(out, train=1792, test=256, gz=False, seed=7)
    )


# ---------------------------------------------------------------------------------------------
# The command line in a subprocess


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("env")
    env = dict(os.environ)
    env.update(
        XDG_CACHE_HOME=str(base / "empty-cache"),  # no cached dataset can be found or written
        # The tests' runs see each other, not the user's runs training beside the suite (host.registry).
        XDG_RUNTIME_DIR=str(base / "runtime"),
        MPLCONFIGDIR=str(base / "matplotlib"),  # one font cache for all runs, outside $HOME
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("HYDRA_FULL_ERROR", None)  # Hydra must report errors the way users see them
    return env


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from this checkout, once per session (--no-build-isolation: the
    installed hatchling builds it, nothing is downloaded)."""

    def build(out: Path) -> None:
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert built.returncode == 0, built.stdout + built.stderr

    (wheel,) = made_once(tmp_path_factory, "wheel", build).glob("lenet_fmnist-*.whl")
    return wheel


@pytest.fixture(scope="session")
def sweep_env(cli_env: dict[str, str]) -> dict[str, str]:
    """The command line's environment without thread settings: launchers must set them."""
    return {key: value for key, value in cli_env.items() if not key.endswith("_NUM_THREADS")}


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


def comparable(metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json without the figures that measure time and the circumstances of its start, which
    differ between runs that compute the same bits."""
    kept = {key: value for key, value in metrics.items() if key not in TIMING_KEYS | CIRCUMSTANCE_KEYS}
    kept["history"] = [{k: v for k, v in record.items() if k not in TIMING_KEYS} for record in metrics["history"]]
    return kept


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


def next_steps(text: str) -> list[str]:
    """Every "what to do next" a command printed: its resume or run-again lines, the prefix kept."""
    return [
        line[line.index(prefix) :].strip()
        for line in text.splitlines()
        for prefix in (RESUME_WITH, RUN_AGAIN_WITH)
        if prefix in line
    ]


# Several command lines in one Python process, one after another, each as `python -m lenet_fmnist`
# runs it (cli.main): torch is imported once for all of them. A line after each gives its exit status.
_IN_ONE_PROCESS = """
import json, sys
from lenet_fmnist.cli import main
for args in json.loads(sys.argv[1]):
    try:
        code = main(args)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    print(f"\\n@@exit {code}", flush=True)
"""


def run_each(cli: CLI, commands: list[list[str]], timeout: float = 600) -> list[tuple[int, str]]:
    """Run `commands` in one process (see _IN_ONE_PROCESS); each one's exit status and output."""
    result = subprocess.run(
        [sys.executable, "-c", _IN_ONE_PROCESS, json.dumps(commands)],
        cwd=cli.cwd, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    parts = result.stdout.split("\n@@exit ")
    assert len(parts) == len(commands) + 1, result.stdout
    codes = [int(part.split("\n", 1)[0]) for part in parts[1:]]
    texts = [parts[0], *(part.split("\n", 1)[1] if "\n" in part else "" for part in parts[1:-1])]
    return list(zip(codes, texts, strict=True))


# ---------------------------------------------------------------------------------------------
# Shared runs


# The runs below are made once per session (made_once) and only read by the tests: a test that
# changes one works on a copy of its own.


def trained_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, cli: CLI, args: Callable[[Path], list[str]]
) -> Path:
    """The run directory of `cli.run(*args(run_dir))`, trained once per session (made_once); what
    the command printed is kept beside it, in `name`/output.txt."""

    def train(out: Path) -> None:
        result = cli.run(*args(out / "run"), timeout=300)
        assert_ok(result)
        (out / "output.txt").write_text(output(result))

    return made_once(tmp_path_factory, name, train) / "run"


@pytest.fixture(scope="session")
def tiny_run(cli: CLI, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch on the tiny synthetic set through the command line; its run directory."""
    return trained_once(tmp_path_factory, "tiny_run", cli, lambda run_dir: tiny_args(tiny_data, run_dir))


@pytest.fixture(scope="session")
def reference_run(cli: CLI, plain_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted 3-epoch run that the interrupted and resumed runs must reproduce."""
    return trained_once(tmp_path_factory, "reference", cli, lambda run_dir: plain_args(plain_data, run_dir))


@pytest.fixture(scope="session")
def real_run(cli: CLI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of the default model on the real Fashion-MNIST, with no data.root: the standard
    search finds Debian's copy. One thread: robust on shared cores. Its run directory; what the
    command printed is in ../output.txt."""
    if not all((data.SYSTEM_DIR / f"{name}.gz").is_file() for pair in data.FILES.values() for name in pair):
        pytest.skip(
            f"the real Fashion-MNIST is not installed in {data.SYSTEM_DIR} (apt-get install dataset-fashion-mnist)"
        )
    return trained_once(
        tmp_path_factory, "real_run", cli,
        lambda run_dir: ["train", "epochs=1", "threads=1", "device=cpu", f"hydra.run.dir={run_dir}"],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Checks shared by several test files


def assert_imports_no_torch(imports: str) -> None:
    """Run `imports` (Python statements) in a fresh interpreter: no torch or torchvision module may
    be loaded afterwards (the report, the plugin and `--help` must not wait for torch)."""
    code = (
        imports + "\nimport sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# Hydra's own report of a wrong option, type or key ends with this line.
HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."


def assert_same_weights(mine: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], where: str) -> None:
    assert mine.keys() == theirs.keys(), where
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), f"{where}: {key}"


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Final metrics, every weight (the weight average's too, when the run keeps one) and
    optimizer buffer, the random number generators and the TensorBoard curves identical."""
    assert comparable(read_metrics(run_dir)) == comparable(read_metrics(reference))
    for name in ("best.pt", "last.pt"):
        mine = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        theirs = torch.load(reference / "checkpoints" / name, weights_only=True)
        assert mine["epoch"] == theirs["epoch"]
        assert_same_weights(mine["model"], theirs["model"], name)
        for average in AVERAGES:
            assert (average in mine) == (average in theirs), f"{name}: a weight average in one run only"
            if average in mine:
                assert_same_weights(mine[average]["model"], theirs[average]["model"], f"{name}: {average}")
                assert mine[average]["updates"] == theirs[average]["updates"], name
        for index, buffers in mine["optimizer"]["state"].items():
            for key, value in buffers.items():
                assert torch.equal(value, theirs["optimizer"]["state"][index][key]), f"{name}: optimizer {key}"
        assert torch.equal(mine["rng"]["generator"], theirs["rng"]["generator"])
        assert torch.equal(mine["rng"]["torch"], theirs["rng"]["torch"])
    assert scalars(run_dir) == scalars(reference)


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every per-epoch TensorBoard curve as (step, value) pairs, as TensorBoard reads them."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "learning_rate", "accuracy/test")
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags if tag in events.Tags()["scalars"]}


def interrupt_when(
    cli: CLI, args: list[str], log: Path, ready: Callable[[], bool], sig: signal.Signals
) -> tuple[int, str]:
    """Start a command, send `sig` once `ready()` holds, and return the exit status and
    everything the command printed."""
    process = cli.start(*args, log=log)
    try:
        wait_for(ready, process, log)
        process.send_signal(sig)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, log.read_text()


def interrupt_after_first_epoch(cli: CLI, args: list[str], run_dir: Path, sig: signal.Signals) -> tuple[int, str]:
    """Send `sig` as soon as epoch 1 is on disk, so that it lands early in epoch 2."""
    log = run_dir.parent / f"{run_dir.name}.{sig.name}.log"
    return interrupt_when(cli, args, log, lambda: epochs_done(run_dir) >= 1, sig)


def sigterm_in_epoch_2(cli: CLI, args: list[str], run_dir: Path) -> str:
    """SIGTERM as soon as epoch 1 is on disk: the run stops with exit 130, no traceback, status
    "interrupted" after epoch 1, and prints one resume command, which is returned."""
    code, text = interrupt_after_first_epoch(cli, args, run_dir, signal.SIGTERM)
    assert code == 130, text
    assert "Traceback" not in text, text
    # Mid-epoch the epoch in flight is abandoned; a signal that lands while epoch 1 is still being
    # saved stops the run right after it. Either way epoch 1 is what is on disk.
    assert "Interrupted in epoch 2" in text or "Interrupted after epoch 1" in text, text
    (hint,) = resume_hints(text)  # one line says how to resume
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 1
    return hint


def assert_clear_failure(result: subprocess.CompletedProcess[str], pattern: str) -> None:
    text = output(result)
    assert result.returncode != 0, text
    assert "Traceback" not in text and 'File "' not in text, text
    assert re.search(pattern, text), f"{pattern!r} not in:\n{text}"
    if HYDRA_HINT in text:
        return  # Hydra's own report of a wrong option, type or key: its message, then the hint
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    assert len(paragraphs) == 1, f"expected one paragraph:\n{text}"
    assert len(re.findall(r"\]\[(ERROR|HYDRA)\]", text)) == 1, f"expected one logged error:\n{text}"


def train_args(data: Path, run_dir: Path, *overrides: str) -> list[str]:
    """tiny_args with `overrides` replacing the defaults of the same keys."""
    keys = {o.lstrip("+").split("=", 1)[0] for o in overrides}
    base = [a for a in tiny_args(data, run_dir) if a.split("=", 1)[0] not in keys]
    return [*base, *overrides]


def snapshot(directory: Path, skip: Callable[[Path], bool] = lambda p: False) -> dict[Path, bytes]:
    """Every file's bytes, but the lock file's: it only says which process last worked there."""
    return {
        p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file() and p.name != LOCK_FILE and not skip(p)
    }


def random_images(count: int, seed: int = 0) -> torch.Tensor:
    """Images with no zero pixel, so a shift shows as a zero border and no two differ by one."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (count, 28, 28), dtype=torch.uint8, generator=generator)


def transform_of(output: torch.Tensor, image: torch.Tensor, max_shift: int) -> tuple[bool, int, int] | None:
    """(mirrored, dy, dx) such that `output` is `image`, mirrored or not, shifted by (dy, dx);
    None when it is no such transform of `image`. Shifts one pixel beyond `max_shift` are
    searched too, so that the callers' bound checks can fail."""
    reach = range(-max_shift - 1, max_shift + 2)
    for mirrored in (False, True):
        source = image.flip(-1) if mirrored else image
        for dy in reach:
            for dx in reach:
                if torch.equal(output, shift(source, dy, dx)):
                    return mirrored, dy, dx
    return None


def shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`image` moved down by dy and right by dx pixels, the uncovered border zero."""
    padded = F.pad(image, (8, 8, 8, 8))
    return padded[8 - dy : 8 - dy + 28, 8 - dx : 8 - dx + 28]


@pytest.fixture(scope="session")
def flip_run(cli: CLI, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch on the tiny set with relu, max pooling, augmentation and test-time flip: a
    checkpoint whose predictions average each image and its mirror image (predict, export)."""
    flip = ("activation=relu", "pool=max", "augmentation=standard", "augmentation.test_flip=true")
    return trained_once(tmp_path_factory, "flip_run", cli, lambda run_dir: tiny_args(tiny_data, run_dir, *flip))


EMA_DECAY = 0.99  # ema_run's
# ema_run's training: 24 steps at a rate that moves the weights, so that the average, which lags
# them by a few steps, is clearly not the trained weights (the tests' controls check it).
EMA_TRAINING = (f"ema.decay={EMA_DECAY}", "batch_size=8", "optimizer.lr=0.05")


@pytest.fixture(scope="session")
def ema_run(cli: CLI, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch on the tiny set with a moving average of the weights (ema.decay): its checkpoints
    hold the average beside the trained weights, and eval, predict and export must use it."""
    return trained_once(tmp_path_factory, "ema_run", cli, lambda run_dir: tiny_args(tiny_data, run_dir, *EMA_TRAINING))


@pytest.fixture(scope="session")
def fuzz_world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The fuzz campaign's world (tests/fuzz/world.py: a tiny data set, a run trained on it, good
    images, a small search), made once per session and shared by pytest-xdist's workers; the cases
    work on copies."""
    from fuzz import world

    return world.at(made_once(tmp_path_factory, "fuzz_world", world.build))


@pytest.fixture(scope="module")
def hydra_conf() -> Iterator[None]:
    """Hydra's compose API on conf/, for the tests that compose configs without training."""
    from hydra import initialize_config_dir

    from lenet_fmnist import config
    from lenet_fmnist.cli import config_dir

    config.register()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        yield
