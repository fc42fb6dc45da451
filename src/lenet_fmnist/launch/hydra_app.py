"""A command's Hydra app, and what the command line does around each job Hydra runs of it.

`Jobs` holds the rules around a job (its directory held while it works, how each ending is told,
which exit status the command ends with) and is tested without Hydra; `run_hydra` is the thin
part that hands Hydra the command line and the configs. No torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lenet_fmnist.launch import search_trial
from lenet_fmnist.run.config_keys import key_of
from lenet_fmnist.run.endings import Ending, ending_of
from lenet_fmnist.run.errors import Reported, paragraph
from lenet_fmnist.run.locking import lock, unlock
from lenet_fmnist.run.next_step import next_step

log = logging.getLogger(__name__)

# A task: what a command does with its validated config in its run directory (a search's objective
# when it returns one).
Task = Callable[[Any, Path], object]
# Hydra's flags that each choose what a call does; it refuses two of them at once (`-m --cfg job`).
MODE_FLAGS = {"-r": "--run", "--run": "--run", "-m": "--multirun", "--multirun": "--multirun", "-c": "--cfg",
              "--cfg": "--cfg", "-i": "--info", "--info": "--info", "-sc": "--shell-completion",
              "--shell-completion": "--shell-completion"}  # fmt: skip


def announce(error: Reported | KeyboardInterrupt, then: Callable[[], str]) -> tuple[Ending, str]:
    """The ending of `error` (run.endings.ENDINGS) and its message: one paragraph, followed by the
    command that goes on (`then()`) where the ending has one."""
    ending = ending_of(error)
    message = paragraph(ending.message or str(error))
    return ending, f"{message} {then()}" if ending.next_step else message


@dataclass
class Jobs:
    """The jobs of one call of `command ARGS`, each running `task`: what happens around each."""

    command: str
    args: list[str]
    task: Task
    exit_codes: list[int] = field(default_factory=list)  # of the jobs whose own ending decides

    @property
    def exit_code(self) -> int:
        """The command's exit status: the worst of its jobs' (0 when none said otherwise)."""
        return max(self.exit_codes, default=0)

    def run(self, cfg: object, run_dir: Path, sweep_dir: Path | None, trial: Any = None) -> object:
        """Run the task in `run_dir` (a job of the sweep in `sweep_dir`, if any; of a search when
        `trial` is its Optuna trial), holding the directory while it works; a single run's is held
        already, since the output-directory callback. A user's mistake or a run's ending is told
        in one paragraph, with no traceback."""
        try:
            lock(run_dir)
            return self.task(cfg, run_dir)
        except Reported as error:
            return self._reported(error, run_dir, sweep_dir, trial)
        except Exception as error:
            if trial is not None:  # the sweeper fails the trial with it; said here in one line
                log.error("Trial %d failed: %s: %s", trial.number, type(error).__name__, error)
            raise
        finally:
            unlock(run_dir)  # the next job of a sequential sweep works elsewhere

    def _reported(self, error: Reported, run_dir: Path, sweep_dir: Path | None, trial: Any) -> None:
        ending, message = announce(error, lambda: next_step(self.command, self.args, run_dir, sweep_dir))
        log.log(ending.level, "%s", message)
        if ending.stops_sweep:
            raise SystemExit(ending.exit_code) from None
        if trial is not None:  # the sweeper's own exceptions prune the trial or stop the search
            raise search_trial.as_search_error(error) from None
        # A training sweep's jobs are judged by their metrics.json (run.metrics_file.sweep_failures),
        # in whichever process they ran.
        if sweep_dir is None or self.command != "train":
            self.exit_codes.append(ending.exit_code)


def modes(args: list[str]) -> list[str]:
    """The Hydra modes that `args` ask for (`--multirun`, `--cfg`, ...), each once."""
    return sorted({MODE_FLAGS[arg] for arg in args if arg in MODE_FLAGS})


# Hydra's own line after an error it reports: it prints a stack trace when this variable is 1.
HYDRA_FULL_ERROR = "HYDRA_FULL_ERROR"
HYDRA_HINT = f"Set the environment variable {HYDRA_FULL_ERROR}=1 for a complete stack trace."
# Modules of this toolkit and its sweeper: an exception that came through them is not Hydra's trouble.
_OURS = ("lenet_fmnist.", "optuna_pruning_sweeper", "hydra_plugins.")


def _raised_by_us(error: BaseException) -> bool:
    """Whether `error` came through code of ours called from Hydra (a task, a callback, a plugin):
    a bug or a refusal of ours, never Hydra's trouble with the command line."""
    frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
    called = [i for i, frame in enumerate(frames) if frame.f_code is run_hydra.__code__]
    below = frames[called[0] + 1 :] if called else frames
    return any(str(frame.f_globals.get("__name__", "")).startswith(_OURS) for frame in below)


def _names_an_argument(message: str, args: list[str]) -> bool:
    """Whether `message` names one of the command line's arguments, or the key one sets."""
    return any(word and word in message for arg in args for word in (arg, key_of(arg)))


def _hydra_message(error: Exception, args: list[str]) -> str:
    """Hydra's refusal of a command line, as Hydra words a compact one (its message and the
    OmegaConf error under it); any other exception it raised is named with the overrides."""
    from hydra.errors import CompactHydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(error, CompactHydraException):
        cause = error.__cause__
        message = f"{error}\n{cause}" if isinstance(cause, OmegaConfBaseException) else str(error)
        if _names_an_argument(message, args):
            return message
        return f"{message}\nThe command line's arguments: {' '.join(args)}"  # e.g. `~` alone: "Could not delete ''"
    detail = " ".join(str(error).split())
    return f"Hydra cannot use this command line ({type(error).__name__}: {detail}); its arguments: {' '.join(args)}"


@contextlib.contextmanager
def hydra_errors_told(args: list[str]) -> Iterator[None]:
    """Hydra prints a stack trace for some command lines it cannot use (a config group given a
    number, a hydra.verbose or hydra.job.name it cannot log with) and lets others escape its
    --help and --cfg: each is said here instead, its message then HYDRA_HINT, exit status 1. Hydra
    is asked to raise them (HYDRA_FULL_ERROR), unless the user set that: then the traces are
    wanted. What code of ours raised goes on (_raised_by_us)."""
    if os.environ.get(HYDRA_FULL_ERROR) == "1":
        yield
        return
    os.environ[HYDRA_FULL_ERROR] = "1"
    try:
        yield
    except Exception as error:
        if _raised_by_us(error):
            raise
        sys.stderr.write(f"{_hydra_message(error, args)}\n\n{HYDRA_HINT}\n")
        raise SystemExit(1) from None
    finally:
        os.environ.pop(HYDRA_FULL_ERROR, None)


@contextlib.contextmanager
def hydra_argv(command: str, args: list[str]) -> Iterator[None]:
    """Hydra reads its command line from sys.argv: `lenet-fmnist COMMAND` and the command's
    arguments while it runs (its help, and the sweeper's command that resumes a search, name the
    program so), the real argv back afterwards."""
    kept, sys.argv = sys.argv, [f"lenet-fmnist {command}", *args]
    try:
        yield
    finally:
        sys.argv = kept


def run_hydra(command: str, config_name: str, config_dir: Path, task: Task, args: list[str]) -> int:
    """`command ARGS` as the Hydra app of conf/`config_name`.yaml: its exit status."""
    if len(asked := modes(args)) > 1:
        every = ", ".join(dict.fromkeys(MODE_FLAGS.values()))
        log.error(
            "Only one of %s can be given, not several (here: %s): e.g. drop -m to print a sweep's job config "
            "with --cfg job.", every, " and ".join(asked),
        )  # fmt: skip
        return 2
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lenet_fmnist import config

    config.register()
    jobs = Jobs(command, args, task)

    @hydra.main(config_path=str(config_dir), config_name=config_name, version_base="1.3")
    def app(cfg: object) -> object:
        hydra_cfg = HydraConfig.get()
        sweep_dir = Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
        trial = search_trial.current() if sweep_dir is not None else None
        return jobs.run(cfg, Path(hydra_cfg.runtime.output_dir), sweep_dir, trial)

    # SIGTERM (a scheduler's pre-emption, `kill`) behaves like Ctrl-C: while training, the run's
    # own handlers turn both into a saved, resumable stop; elsewhere they end up below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with hydra_argv(command, args), hydra_errors_told(args):
        try:
            app()
        except KeyboardInterrupt as error:
            ending, message = announce(error, lambda: "")
            log.log(ending.level, "%s", message)
            return ending.exit_code
    return jobs.exit_code
