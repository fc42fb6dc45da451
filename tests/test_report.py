"""The `report` command: real sweeps on tiny synthetic data, then the report; and its statistics.

The synthetic data set is written here (not shared with other test files): 128 training and 32
test images in the real IDX format, so `data.root=` reads them like the real Fashion-MNIST files.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lenet_fmnist.report import analysis, runs, stats
from lenet_fmnist.cli import main

TRAIN_IMAGES, TEST_IMAGES, VAL_IMAGES = 128, 32, 32


def write_idx(path: Path, values: bytes, dims: tuple[int, ...]) -> None:
    """An IDX file: magic (0, 0, type 0x08 = unsigned byte, number of dimensions), the sizes, the data."""
    header = bytes([0, 0, 0x08, len(dims)]) + b"".join(struct.pack(">I", size) for size in dims)
    path.write_bytes(header + values)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Fashion-MNIST look-alike: each class a brighter square at its own place, plus noise,
    so one epoch can learn something and the numbers are not all equal."""
    import random

    root = tmp_path_factory.mktemp("data")
    generator = random.Random(0)
    for prefix, count in (("train", TRAIN_IMAGES), ("t10k", TEST_IMAGES)):
        labels = [index % 10 for index in range(count)]
        pixels = bytearray()
        for label in labels:
            image = [generator.randrange(0, 40) for _ in range(28 * 28)]
            top, left = 2 + (label // 5) * 12, 2 + (label % 5) * 5
            for row in range(top, top + 10):
                for col in range(left, left + 4):
                    image[row * 28 + col] = 200 + generator.randrange(0, 55)
            pixels.extend(image)
        write_idx(root / f"{prefix}-images-idx3-ubyte", bytes(pixels), (count, 28, 28))
        # The labels compressed, as Debian ships them: the loader reads both forms.
        labels_path = root / f"{prefix}-labels-idx1-ubyte"
        write_idx(labels_path, bytes(labels), (count,))
        labels_path.with_suffix(".gz").write_bytes(gzip.compress(labels_path.read_bytes()))
        labels_path.unlink()
    return root


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m lenet_fmnist ARGS` in a fresh process, one thread: tests share the machine."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lenet_fmnist", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def tiny(data_root: Path) -> list[str]:
    return [f"data.root={data_root}", f"data.val_size={VAL_IMAGES}", "epochs=2", "threads=1", "batch_size=32"]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict[str, Path]:
    """Three real sweeps: two activations x two seeds; one that diverges; and, made by hand from
    the first, a run killed before its first epoch ended and one interrupted."""
    where = tmp_path_factory.mktemp("sweeps")
    activation = where / "activation"
    done = run_cli(
        "train", "-m", "experiment=activation", "+variant=base,tanh", "seed=0,1", *tiny(data_root),
        f"hydra.sweep.dir={activation}", cwd=where,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    diverged = where / "diverged"
    blown = run_cli(
        "train", "-m", "experiment=optimizer", "+variant=base", "optimizer.lr=1e6", "seed=0", *tiny(data_root),
        "batch_size=8", f"hydra.sweep.dir={diverged}", cwd=where,
    )  # fmt: skip
    assert blown.returncode == 1, blown.stderr[-3000:]  # a failed job makes the sweep exit 1
    extra = where / "extra"
    source = next(activation.glob("0_*"))
    never = shutil.copytree(source, extra / "never_started", ignore=shutil.ignore_patterns("checkpoints", "events*"))
    (never / "metrics.json").unlink()
    stopped = shutil.copytree(source, extra / "interrupted", ignore=shutil.ignore_patterns("checkpoints", "events*"))
    metrics = json.loads((stopped / "metrics.json").read_text())
    (stopped / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted", "test_acc": None}))
    return {"activation": activation, "diverged": diverged, "extra": extra, "root": where}


def test_sweep_job_directories_read_as_run_names(sweeps: dict[str, Path]) -> None:
    # TensorBoard names each run by its directory: the overrides, no data path, no `experiment=`.
    names = sorted(path.name for path in sweeps["activation"].iterdir() if path.is_dir())
    assert names == [
        f"{num}_+variant={variant},batch_size=32,data.val_size=32,epochs=2,seed={seed}"
        for num, (seed, variant) in enumerate([(0, "base"), (0, "tanh"), (1, "base"), (1, "tanh")])
    ]


def test_report_of_real_sweeps_lists_every_configuration_and_every_failure(sweeps: dict[str, Path]) -> None:
    result = run_cli(
        "report", str(sweeps["activation"]), str(sweeps["diverged"]), str(sweeps["extra"]), cwd=sweeps["root"]
    )
    assert result.returncode == 0, result.stderr
    table = [
        line for line in result.stdout.splitlines() if line.startswith("| activation") or line.startswith("| optimizer")
    ]
    # relu (2 seeds + the two hand-made unfinished copies of its seed-0 run), tanh, the diverged SGD.
    assert len(table) == 3, result.stdout
    relu, tanh, blown = table
    assert "| relu |" in relu and "| 2 | 2 completed, 2 unfinished |" in relu
    assert "| tanh |" in tanh and "| 2 | 2 completed |" in tanh
    assert "| 0 | 1 diverged |" in blown and "optimizer.lr=1000000.0" in blown

    report = (sweeps["activation"] / "report.md").read_text()
    assert "## Experiment `activation` (one factor)" in report
    assert "| activation | relu (base) |" in report and "| activation | tanh |" in report
    assert "status 'diverged' after" in report  # the epoch it stopped in depends on the trainer
    assert "no metrics.json" in report and "status 'interrupted'" in report
    pngs = sorted(path.name for path in sweeps["activation"].glob("*.png"))
    assert "curves_activation.png" in pngs and "best_worst.png" in pngs
    assert all((sweeps["activation"] / name).stat().st_size > 5000 for name in pngs)
    with (sweeps["activation"] / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["activation"] for row in rows] == ["relu", "tanh", "relu"]
    assert [row["n"] for row in rows] == ["2", "2", "0"]
    assert 0.0 <= float(rows[0]["test_acc_mean"]) <= 1.0 and rows[2]["test_acc_mean"] == ""


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing", "does not exist"),
        (lambda tmp: tmp, "No training runs found"),
        (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt", "is not a directory"),
    ],
)
def test_report_refuses_bad_directories_with_one_paragraph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
) -> None:
    assert main(["report", str(make(tmp_path))]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert captured.err.count("\n") == 1 and captured.out == ""
    assert not (tmp_path / "report.md").exists()


# ---- the analysis, on runs written by hand -------------------------------------------------


def fake_run(directory: Path, num: int, seed: int, test_acc: float, status: str = "completed", **groups: str) -> None:
    """A run directory as train.py and Hydra leave it, with chosen numbers."""
    chosen = {"activation": "relu", "pool": "max", "optimizer": "sgd", **groups}
    (directory / ".hydra").mkdir(parents=True)
    config = {
        "activation": {"name": chosen["activation"]},
        "pool": {"name": chosen["pool"]},
        "optimizer": {"name": chosen["optimizer"], "lr": 0.01 if chosen["optimizer"] == "sgd" else 0.001},
        "epochs": 3,
        "seed": seed,
        "threads": None,
    }
    (directory / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    hydra = {"hydra": {"job": {"num": num}, "runtime": {"choices": {**chosen, "experiment": "x"}}}}
    (directory / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    history = [
        {"epoch": epoch, "val_acc": test_acc * fraction, "train_acc": test_acc, "val_loss": 1.0 / epoch,
         "train_loss": 1.0 / epoch, "seconds": 2.0}
        for epoch, fraction in ((1, 0.5), (2, 0.995), (3, 1.0))
    ]  # fmt: skip
    metrics = {"status": status, "train_acc": test_acc, "val_acc": test_acc, "test_acc": test_acc,
               "test_loss": 0.3, "best_epoch": 3, "epochs_completed": 3, "history": history}  # fmt: skip
    (directory / "metrics.json").write_text(json.dumps(metrics))


def test_factorial_main_effects_are_paired_over_the_other_factors_and_seeds(tmp_path: Path) -> None:
    # test_acc = 0.80 + 0.05 [tanh] - 0.02 [avg] + 0.001 * seed: the main effects are exact.
    num = 0
    for seed in (0, 1, 2):
        for activation in ("relu", "tanh"):
            for pool in ("max", "avg"):
                value = 0.80 + 0.05 * (activation == "tanh") - 0.02 * (pool == "avg") + 0.001 * seed
                fake_run(tmp_path / f"{num}_run", num, seed, value, activation=activation, pool=pool)
                num += 1
    found = runs.load_all([tmp_path])
    configs = analysis.configurations(found)
    result = analysis.analyse("x", configs, analysis.group_keys(found))
    assert result.design == "factorial" and result.factors == ["activation", "pool"]
    effects = {(c.factor, level.label): level.effects["test_acc"] for c in result.comparisons for level in c.levels[1:]}
    assert effects.keys() == {("activation", "tanh"), ("pool", "avg")}
    assert effects["activation", "tanh"].estimate == pytest.approx(0.05)
    assert effects["pool", "avg"].estimate == pytest.approx(-0.02)
    assert effects["pool", "avg"].low == pytest.approx(-0.02)  # no noise once paired


def test_one_factor_at_a_time_and_unfinished_runs(tmp_path: Path) -> None:
    num = 0
    for seed in (0, 1, 2):
        for groups, value in (({}, 0.90), ({"activation": "tanh"}, 0.88), ({"optimizer": "adam"}, 0.91)):
            fake_run(tmp_path / f"{num}_run", num, seed, value + 0.002 * seed, **groups)
            num += 1
    fake_run(tmp_path / f"{num}_run", num, 3, math.nan, status="diverged", activation="tanh")
    found = runs.load_all([tmp_path])
    configs = analysis.configurations(found)
    result = analysis.analyse("x", configs, analysis.group_keys(found))
    assert result.design == "one factor at a time"
    by_factor = {comparison.factor: comparison for comparison in result.comparisons}
    assert [level.label for level in by_factor["activation"].levels] == ["relu", "tanh"]
    assert [level.label for level in by_factor["optimizer"].levels] == ["sgd", "adam"]
    tanh = by_factor["activation"].levels[1]
    assert len(tanh.runs) == 4 and len(tanh.completed) == 3  # the diverged run is counted, not averaged
    assert tanh.effects["test_acc"].estimate == pytest.approx(-0.02)
    assert configs[1].status_text() == "3 completed, 1 diverged"
    assert analysis.run_metrics(found[0])["epochs_to_99"] == 2.0


def test_t_quantiles_and_welch_interval_match_tables() -> None:
    for df, expected in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (120, 1.9799)):
        assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert stats.t_quantile(0.025, 3) == pytest.approx(-3.1824, abs=1e-4)
    interval = stats.welch_interval([1.0, 2.0, 3.0], [1.0, 1.0, 4.0])
    # Welch: diff 0, se^2 = 1/3 + 3/3, df = (4/3)^2 / ((1/3)^2/2 + 1^2/2) = 3.2.
    assert interval.estimate == pytest.approx(0.0)
    assert interval.df == pytest.approx(3.2)
    assert interval.high == pytest.approx(stats.t_quantile(0.975, 3.2) * math.sqrt(4 / 3))
    assert not stats.welch_interval([1.0], [1.0, 2.0]).defined
