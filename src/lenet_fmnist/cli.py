"""Command line: `python -m lenet_fmnist COMMAND ...` (also installed as `lenet-fmnist`).

Hydra has no subcommands, so the command word is taken off argv here and the rest goes to the
Hydra app of that command. Nothing here imports torch: `--help` and config errors answer at once.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from lenet_fmnist import cores, locking, openmp
from lenet_fmnist.errors import Interrupted, Pruned, UserError
from lenet_fmnist.overrides import RESUME, sets_key
from lenet_fmnist.storage import StorageError
from lenet_fmnist.vocabulary import SEARCH_TRIAL, read_metrics

log = logging.getLogger(__name__)

USAGE = """\
usage: python -m lenet_fmnist COMMAND [ARGS]     (or: lenet-fmnist COMMAND [ARGS])

Commands:
  train [OVERRIDES]                  train LeNet-5 on Fashion-MNIST, e.g.
                                       train activation=relu pool=max epochs=20
                                       train -m activation=relu,tanh,sigmoid seed=0,1,2
  eval checkpoint=PATH [OVERRIDES]   test a checkpoint: accuracy, per-class accuracy, confusion matrix
  report DIR [DIR ...]               tables, effects with 95% CIs and figures of the runs under DIRs,
                                       written to the first DIR (report.md, report.csv, *.png)
  predict checkpoint=PATH images=DIR|FILE|'GLOB' [top_k=3] [invert=auto|true|false]
                                     classify your own images (predictions.csv, predictions.png)
  export checkpoint=PATH [format=onnx|torchscript] [input=float32|uint8] [out=DIR]
                                     write model.onnx or model.pt and a JSON sidecar, then check them

Experiments (conf/experiment/): train -m experiment=activation|pooling|optimizer|dropout|augmentation,
  experiment=study (all five in one sweep), experiment=factorial (72 configurations), experiment=best,
  experiment=search (Optuna hyperparameter search: pip install 'lenet-fmnist[search]')

Config groups: activation=relu|tanh|sigmoid  pool=max|avg  optimizer=sgd|adam|rmsprop
               dropout=none|standard  augmentation=none|standard
Hydra's flags work after the command: --help, --cfg job, --info, -m/--multirun.
Outputs go to outputs/ (see README.md); compare runs with `tensorboard --logdir outputs`.
"""

# The keys the resume hint sets itself: the user's own overrides of them are left out of it.
_HINT_SETS = ("resume", "hydra.run.dir", "hydra.sweep.dir")


def config_dir() -> Path:
    """conf/ ships inside the wheel as lenet_fmnist/conf; a source checkout has it at the top."""
    packaged = Path(__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def _resume_hint(run_dir: Path) -> str:
    """The command that continues this run, or this sweep when it is one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        where = ["-m", f"hydra.sweep.dir={hydra_cfg.sweep.dir}"]
    else:
        where = [f"hydra.run.dir={run_dir}"]
    kept = [
        arg
        for arg in sys.argv[1:]
        if arg not in ("-m", "--multirun") and not any(sets_key(arg, key) for key in _HINT_SETS)
    ]
    return " ".join(["python -m lenet_fmnist train", *where, *kept, RESUME])


def _search_trial() -> int | None:
    """The trial's number when this job is a trial of a hyperparameter search (hydra/sweeper=optuna,
    which names it in the job's Hydra config, not in its own), else None."""
    from hydra.core.hydra_config import HydraConfig

    trial = HydraConfig.get().job.env_set.get(SEARCH_TRIAL)
    return None if trial is None else int(trial)


def _run_hydra(command: str, config_name: str, task: Callable[..., object], args: list[str]) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from lenet_fmnist import config

    config.register()
    failures: list[str] = []

    @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")
    def app(cfg: DictConfig) -> None:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            locking.lock(run_dir)  # a sweep's job, in its own process; a single run holds it already
            task(cfg, run_dir)
        except StorageError as error:  # the machine's fault: what is kept, and how to go on
            log.error("%s Resume with: %s", error, _resume_hint(run_dir))
            failures.append(str(run_dir))
        except UserError as error:  # the user's mistake: one paragraph, no traceback
            log.error("%s", error)
            if _search_trial() is None:  # a search's sweeper judges its failed trials itself
                failures.append(str(run_dir))
        except Interrupted as error:
            log.warning("%s Resume with: %s", error, _resume_hint(run_dir))
            raise SystemExit(130) from None
        except Pruned as error:  # the search's decision, not a failure: the job ends normally
            log.info("%s", error)
        finally:
            locking.unlock(run_dir)  # the next job of a sequential sweep works elsewhere

    sys.argv = [f"lenet-fmnist {command}", *args]
    # SIGTERM (a scheduler's pre-emption, `kill`) behaves like Ctrl-C: while training, the run's
    # own handlers turn both into a saved, resumable stop; elsewhere they end up below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        app()
    except KeyboardInterrupt:
        log.warning("Interrupted before training started or after it ended; no training was lost.")
        return 130
    return 1 if failures else 0


def _train(cfg: object, run_dir: Path) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lenet_fmnist.config import TrainConfig, validate

    typed = validate(cfg, TrainConfig)  # before importing torch: a bad value fails at once
    if typed.resume:  # the wait setting the run recorded, while torch has not read one yet
        openmp.resume_wait((read_metrics(run_dir) or {}).get("openmp_wait"))
    from lenet_fmnist import train
    from lenet_fmnist.runtime import sweep_job_device

    hydra_cfg = HydraConfig.get()
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    # Parallel jobs on a multi-GPU machine: device=auto puts job N on GPU N mod count.
    typed.device = sweep_job_device(typed.device, hydra_cfg.job.num if sweep else None)
    # A trial of a hyperparameter search reports every epoch to its study, whose pruner may stop it.
    trial = _search_trial() if sweep else None
    on_epoch = None
    if trial is not None:
        from lenet_fmnist.search import trial_reporter

        on_epoch = trial_reporter(Path(hydra_cfg.sweep.dir), trial, typed.epochs)
    # A sweep run again with resume=true starts the jobs it never reached from scratch.
    train.run(typed, run_dir, start_if_unsaved=sweep, on_epoch=on_epoch)


def _eval(cfg: object, run_dir: Path) -> None:
    from lenet_fmnist.config import EvalConfig, validate

    typed = validate(cfg, EvalConfig)
    from lenet_fmnist import evaluate

    evaluate.run(typed, run_dir)


def _predict(cfg: object, run_dir: Path) -> None:
    from lenet_fmnist.config import PredictConfig, validate

    typed = validate(cfg, PredictConfig)
    from lenet_fmnist.images import find_images

    paths = find_images(typed.images)  # before importing torch: a wrong path fails at once
    from lenet_fmnist import predict

    predict.run(typed, run_dir, paths)


def _export(cfg: object, run_dir: Path) -> None:
    from lenet_fmnist.config import ExportConfig, validate

    typed = validate(cfg, ExportConfig)
    from lenet_fmnist import export

    export.run(typed, run_dir)


def _report(args: list[str]) -> int:
    """Plain argparse, no Hydra: it reads runs, it does not configure one."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from lenet_fmnist import report

    try:
        return report.main(args)
    except UserError as error:  # no runs, no such directory: one paragraph, no traceback
        sys.stderr.write(f"lenet-fmnist report: {error}\n")
        return 1


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": lambda args: _run_hydra("train", "train", _train, args),
    "eval": lambda args: _run_hydra("eval", "eval", _eval, args),
    "report": _report,
    "predict": lambda args: _run_hydra("predict", "predict", _predict, args),
    "export": lambda args: _run_hydra("export", "export", _export, args),
}


def main(argv: list[str] | None = None) -> int:
    openmp.configure_wait()  # before any command imports torch
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["train"]:  # at once, so that runs started a few seconds apart see each other
        cores.register()
    if not args or args[0] in {"-h", "--help", "help"}:
        sys.stdout.write(USAGE)
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        sys.stderr.write(
            f"lenet-fmnist: unknown command {args[0]!r}. The commands are: {', '.join(COMMANDS)}. See --help.\n"
        )
        return 2
    return command(args[1:])
