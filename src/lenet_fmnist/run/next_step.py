"""The command that goes on after a stop, for each command, ready to paste into a shell. No torch."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from lenet_fmnist.run.config_keys import RESUME, sets_key

RESUME_WITH = "Resume with: "  # a training run, a sweep or a search continues where it stopped
RUN_AGAIN_WITH = "Run it again with: "  # the other commands start again: they keep nothing half-done
_MULTIRUN_FLAGS = ("-m", "--multirun")


def next_step(command: str, args: Sequence[str], run_dir: Path | None = None, sweep_dir: Path | None = None) -> str:
    """The command line that goes on after `command ARGS` stopped in `run_dir` (a job of the sweep
    or search in `sweep_dir`, if any), ready to paste into a shell.

    A training run resumes in its directory, and a sweep or a search in the sweep's (completed jobs
    are skipped, finished trials kept). eval, predict, export and report write their results only
    at the end and atomically, so the same command again is what goes on; a sweep of them starts in
    a new sweep directory, since these commands have no resume=true."""
    if command == "train":
        where = ["-m", f"hydra.sweep.dir={sweep_dir}"] if sweep_dir else [f"hydra.run.dir={run_dir}"]
        placed = ("resume", "hydra.run.dir", "hydra.sweep.dir")
        kept = [arg for arg in args if arg not in _MULTIRUN_FLAGS and not any(sets_key(arg, k) for k in placed)]
        return RESUME_WITH + shlex.join(["python", "-m", "lenet_fmnist", "train", *where, *kept, RESUME])
    if sweep_dir is not None:
        args = [arg for arg in args if not sets_key(arg, "hydra.sweep.dir")]
    return RUN_AGAIN_WITH + shlex.join(["python", "-m", "lenet_fmnist", command, *args])
