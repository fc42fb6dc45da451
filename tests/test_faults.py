"""Fault injection in subprocesses: SIGTERM, SIGINT and SIGKILL in the middle of a run, then resume,
must end bit-identical to an uninterrupted run; a sweep run again with resume=true finishes
what is left; a diverging job does not stop its sweep; files are replaced atomically."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import (
    CLI,
    assert_ok,
    assert_same_run,
    epochs_done,
    interrupt_after_first_epoch,
    interrupt_when,
    output,
    plain_args,
    read_metrics,
    resume_hints,
    scalars,
    sigterm_in_epoch_2,
    tiny_args,
)
from lenet_fmnist.run.files import LOCK_FILE

EPOCHS = 3  # plain_args


def test_sigterm_mid_epoch_then_resume_is_bit_identical(
    cli: CLI, plain_data: Path, reference_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    hint = sigterm_in_epoch_2(cli, plain_args(plain_data, run_dir), run_dir)
    assert f"hydra.run.dir={run_dir}" in hint and hint.endswith("resume=true")
    # Everything on disk describes the last finished epoch.
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert [step for step, _ in scalars(run_dir)["loss/train"]] == [1], "TensorBoard was not flushed"

    resumed = cli.run_hint(hint)
    assert_ok(resumed)
    assert "Resuming" in output(resumed) and "after epoch 1" in output(resumed)
    assert read_metrics(run_dir)["status"] == "completed"
    assert_same_run(run_dir, reference_run)


def test_sigkill_then_resume_is_bit_identical(cli: CLI, plain_data: Path, reference_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code, text = interrupt_after_first_epoch(cli, plain_args(plain_data, run_dir), run_dir, signal.SIGKILL)

    assert code == -signal.SIGKILL, text
    # Killed without warning: every file is whole, and at most the epoch in flight is lost.
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "running" and metrics["epochs_completed"] >= 1
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["epoch"] == metrics["epochs_completed"]

    resumed = cli.run(*plain_args(plain_data, run_dir, "resume=true"))
    assert_ok(resumed)
    assert_same_run(run_dir, reference_run)


def test_sigterm_before_training_starts(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    """A signal while the run is still starting up (importing torch, reading data): a warning,
    exit 130, no traceback, and no run left behind that could be mistaken for a started one."""
    run_dir = tmp_path / "run"

    def started() -> bool:
        return (run_dir / ".hydra" / "config.yaml").exists()

    code, text = interrupt_when(cli, tiny_args(tiny_data, run_dir), tmp_path / "run.log", started, signal.SIGTERM)
    assert code == 130, text
    assert "Traceback" not in text and "Interrupted before training started" in text, text
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "checkpoints").exists()


def test_sweep_resume_skips_completed_jobs_and_finishes_the_others(cli: CLI, plain_data: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    args = [
        "train", "-m", f"data.root={plain_data}", "data.val_size=768", "threads=1", "device=cpu", "epochs=2",
        "seed=0,1,2", f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip

    def job(number: int) -> Path | None:
        found = list(sweep_dir.glob(f"{number}_*"))
        return found[0] if found else None

    def second_job_saved() -> bool:
        return job(1) is not None and epochs_done(job(1)) >= 1

    # Ctrl-C this time: the same saved, resumable stop.
    code, text = interrupt_when(cli, args, tmp_path / "sweep.log", second_job_saved, signal.SIGINT)
    assert code == 130 and "Traceback" not in text, text
    first, second = job(0), job(1)
    assert first is not None and second is not None and job(2) is None, "the sweep stopped in job 1"
    assert read_metrics(first)["status"] == "completed"
    assert read_metrics(second)["status"] == "interrupted"
    # Its results (not Hydra's .hydra/ record or the log, which the next invocation appends to,
    # nor the lock file, which names the last process that worked there).
    finished = {
        p: p.stat().st_mtime_ns
        for p in first.rglob("*")
        if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log" and p.name != LOCK_FILE
    }
    assert {"metrics.json", "best.pt", "last.pt"} <= {p.name for p in finished}
    contents = {p: p.read_bytes() for p in finished}

    (hint,) = resume_hints(text)
    assert "-m" in hint.split() and f"hydra.sweep.dir={sweep_dir}" in hint and "seed=0,1,2" in hint
    result = cli.run_hint(hint)
    assert_ok(result)

    # Still three job directories: resume=true is not part of their names.
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert jobs == [first.name, second.name, job(2).name] and len(jobs) == 3, jobs
    assert "seed=0" in first.name and "resume" not in " ".join(jobs)
    for number in range(3):
        metrics = read_metrics(job(number))
        assert metrics["status"] == "completed" and metrics["epochs_completed"] == 2, number
    # The finished job was left alone: not one of its files was rewritten.
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert {p: p.read_bytes() for p in finished} == contents
    assert "already completed" in output(result)
    assert "Resuming" in output(result) and "after epoch 1" in output(result)


def test_a_diverging_job_does_not_stop_its_sweep(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    overrides = [a for a in tiny_args(tiny_data, tmp_path / "unused")[1:] if not a.startswith("hydra.run.dir=")]
    result = cli.run(
        "train", "-m", *overrides, "activation=relu", "optimizer.lr=1e10,0.01", f"hydra.sweep.dir={sweep_dir}"
    )
    assert result.returncode == 1, output(result)
    assert "Traceback" not in output(result)
    assert "diverged in epoch 1" in output(result)
    statuses = {p.name: read_metrics(p)["status"] for p in sweep_dir.iterdir() if p.is_dir()}
    assert sorted(statuses.values()) == ["completed", "diverged"], statuses


WRITER = """
import sys
from pathlib import Path
from lenet_fmnist.run.files import LOCK_FILE
from lenet_fmnist.run.storage import write_json
path = Path(sys.argv[1])
version = 0
while True:
    version += 1
    write_json(path, {"version": version, "padding": "x" * 200_000})
    print(version, flush=True)  # the sync point: this version is on disk
"""


def test_a_killed_writer_leaves_the_old_or_the_new_file(tmp_path: Path) -> None:
    """SIGKILL in the middle of a stream of atomic writes: the file always parses, and holds at
    least the last version the writer reported written (each attempt waits for a later one)."""
    target = tmp_path / "metrics.json"
    for attempt in range(6):
        awaited = 2 + attempt  # past the first write, so the kill lands while replacing a file
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        written = 0
        while written < awaited:
            line = process.stdout.readline()
            assert line, "the writer stopped before reaching the awaited version"
            written = int(line)
        process.kill()
        process.wait()
        process.stdout.close()
        content = json.loads(target.read_text())  # never half a file
        assert content["padding"] == "x" * 200_000
        assert content["version"] >= written


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    from lenet_fmnist.run.storage import write_atomic, write_json

    target = tmp_path / "state.json"
    write_json(target, {"version": 1})

    def broken(handle: Any) -> None:
        handle.write(b'{"version": 2, "trunc')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, broken)
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"], "the temporary file was not removed"
