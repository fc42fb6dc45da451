"""Command line: `python -m lenet_fmnist COMMAND ...` (also installed as `lenet-fmnist`).

Hydra has no subcommands, so the command word is taken off argv here and the rest goes to the
Hydra app of that command. Nothing here imports torch: `--help` and config errors answer at once.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from lenet_fmnist.host.registry import register
from lenet_fmnist.launch import search_trial
from lenet_fmnist.launch.hydra_app import Task, announce, modes, run_hydra
from lenet_fmnist.run.errors import Reported
from lenet_fmnist.run.next_step import next_step

log = logging.getLogger(__name__)

_USAGE = """\
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
                                     check, then write model.onnx or model.pt and a JSON sidecar
                                       into outputs/export/<date>_<time>-<µs>/ (or out=DIR)

{experiments}

{groups}
Hydra's flags work after the command: --help, --cfg job, --info, -m/--multirun.
Outputs go to outputs/ (see docs/configuration.md); compare runs with `tensorboard --logdir outputs`.
"""


def config_dir() -> Path:
    """conf/ ships inside the wheel as lenet_fmnist/conf; a source checkout has it at the top."""
    packaged = Path(__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def experiments(conf: Path) -> list[str]:
    """The experiments: the files of conf/experiment/, by name."""
    return sorted(path.stem for path in (conf / "experiment").glob("*.yaml"))


def config_groups(conf: Path) -> dict[str, list[str]]:
    """The config groups a training run chooses from (conf/train.yaml's defaults list, the
    experiment aside), each with its options as conf/GROUP/ holds them."""
    import yaml  # Hydra's own dependency; only --help reads a YAML file here

    defaults = yaml.safe_load((conf / "train.yaml").read_text())["defaults"]
    groups = [name for entry in defaults if isinstance(entry, dict) for name in entry if name != "experiment"]
    return {group: sorted(path.stem for path in (conf / group).glob("*.yaml")) for group in groups}


def usage(conf: Path) -> str:
    """`--help`: the commands, the config groups and the experiments, as conf/ holds them."""
    choices = "  ".join(f"{group}={'|'.join(options)}" for group, options in config_groups(conf).items())
    groups = textwrap.fill(choices, width=100, initial_indent="Config groups: ", subsequent_indent=" " * 15)
    names = textwrap.fill(", ".join(experiments(conf)), width=100, initial_indent="  ", subsequent_indent="  ")
    listed = (
        "Experiments (train -m experiment=NAME; conf/experiment/NAME.yaml says what it runs):\n"
        f"{names}\n  (search is an Optuna hyperparameter search: pip install ./plugins/hydra_optuna_pruning_sweeper '.[search]')"
    )
    return _USAGE.format(experiments=listed, groups=groups)


def _train(cfg: object, run_dir: Path) -> float | None:
    """Train; return the best-epoch validation accuracy, a search's objective (None for a run
    without validation, data.val_size=0, which a search refuses)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lenet_fmnist.config import TrainConfig, validate

    typed = validate(cfg, TrainConfig)  # before importing torch: a bad value fails at once
    hydra_cfg = HydraConfig.get()
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    from lenet_fmnist.device import spread_over_gpus, visible_gpus
    from lenet_fmnist.training.trainer import train

    # Parallel jobs on a multi-GPU machine: device=auto puts job N on GPU N mod count.
    typed.device = spread_over_gpus(typed.device, hydra_cfg.job.num if sweep else None, visible_gpus())
    # A trial of a hyperparameter search reports every epoch to its study, whose pruner may stop it.
    on_epoch = search_trial.epoch_reporter(typed) if sweep else None
    # A sweep run again with resume=true starts the jobs it never reached from scratch.
    # .get: the metrics.json of a run completed before may have been edited by hand.
    return train(typed, run_dir, on_epoch=on_epoch, start_if_unsaved=sweep).get("val_acc")


def _eval(cfg: object, run_dir: Path) -> None:
    from lenet_fmnist.config import validate
    from lenet_fmnist.inference.config import EvalConfig

    typed = validate(cfg, EvalConfig)
    from lenet_fmnist.inference import evaluate

    evaluate.evaluate_checkpoint(typed, run_dir)


def _predict(cfg: object, run_dir: Path) -> None:
    from lenet_fmnist.config import validate
    from lenet_fmnist.inference.config import PredictConfig

    typed = validate(cfg, PredictConfig)
    from lenet_fmnist.inference.images import find_images

    paths = find_images(typed.images)  # before importing torch: a wrong path fails at once
    from lenet_fmnist.inference import predict

    predict.predict_images(typed, run_dir, paths)


def _export(cfg: object, run_dir: Path) -> None:
    from lenet_fmnist.config import validate
    from lenet_fmnist.inference.config import ExportConfig

    typed = validate(cfg, ExportConfig)
    from lenet_fmnist.inference import export

    export.export_checkpoint(typed, run_dir)


def _report(args: list[str]) -> int:
    """Plain argparse, no Hydra: it reads runs, it does not configure one."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from lenet_fmnist import report

    try:
        return report.main(args, config_dir())
    except Reported as error:  # no runs, no such directory, a full disk: one paragraph, no traceback
        ending, message = announce(error, lambda: next_step("report", args))
        sys.stderr.write(f"lenet-fmnist report: {message}\n")
        return ending.exit_code


def _hydra_command(name: str, task: Task) -> Callable[[list[str]], int]:
    """The command `name`: the Hydra app of conf/`name`.yaml, running `task` in each job."""
    return lambda args: run_hydra(name, name, config_dir(), task, args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": _hydra_command("train", _train),
    "eval": _hydra_command("eval", _eval),
    "report": _report,
    "predict": _hydra_command("predict", _predict),
    "export": _hydra_command("export", _export),
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["train"] and "--multirun" not in modes(args):
        register()  # at once, so that runs started a few seconds apart see each other; a sweep's
        # jobs register for as long as each trains (training.trainer.train), never its idle parent
    if not args or args[0] in {"-h", "--help", "help"}:
        sys.stdout.write(usage(config_dir()))
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        sys.stderr.write(
            f"lenet-fmnist: unknown command {args[0]!r}. The commands are: {', '.join(COMMANDS)}. See --help.\n"
        )
        return 2
    return command(args[1:])
