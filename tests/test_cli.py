"""The command line in a subprocess, as a user runs it: the outputs contract of a training run
(metrics.json, checkpoints, TensorBoard events), `eval`, help, and one run on the real data."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import CLI, HISTORY_KEYS, METRICS_KEYS, assert_ok, output, read_metrics
from lenet_fmnist.cli import config_dir, main, usage
from lenet_fmnist.model import LeNet5

SCALAR_TAGS = {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "accuracy/test", "learning_rate"}
REAL_DATA = Path("/usr/share/datasets/fashion-mnist")


def python_c(code: str, cli: CLI) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cli.cwd, env=cli.env, capture_output=True, text=True, timeout=60
    )


# ---------------------------------------------------------------------------------------------
# Help and fast failures


def test_help_lists_the_commands_without_importing_torch(cli: CLI) -> None:
    result = python_c(
        "import sys\n"
        "from lenet_fmnist.cli import main\n"
        "assert main(['--help']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n",
        cli,
    )
    assert_ok(result)
    assert "train [OVERRIDES]" in result.stdout and "eval checkpoint=PATH" in result.stdout
    for group in ("activation=elu|gelu|relu|sigmoid|silu|tanh", "pool=avg|max", "optimizer=adam|rmsprop|sgd"):
        assert group in result.stdout


def test_help_lists_every_experiment_in_conf(cli: CLI, tmp_path: Path) -> None:
    """--help names the experiments conf/experiment/ holds, so a new one appears without editing it."""
    result = python_c("from lenet_fmnist.cli import main\nmain(['--help'])\n", cli)
    assert_ok(result)
    listed = result.stdout.split("Experiments", 1)[1].split("\n\n", 1)[0]
    names = sorted(path.stem for path in (config_dir() / "experiment").glob("*.yaml"))
    assert "ablation" in names and all(re.search(rf"\b{name}\b", listed) for name in names), listed
    conf = tmp_path / "conf"
    shutil.copytree(config_dir(), conf)
    (conf / "experiment" / "learning_rate.yaml").write_text("# @package _global_\n")
    assert "learning_rate" in usage(conf) and "learning_rate" not in result.stdout


def test_hydra_flags_work_after_the_command_without_torch(cli: CLI, tmp_path: Path) -> None:
    result = python_c(
        "import sys\n"
        "from lenet_fmnist.cli import main\n"
        "try:\n"
        "    main(['train', '--cfg', 'job', 'activation=relu', 'pool=max'])\n"
        "except SystemExit as stop:\n"
        "    assert not stop.code, stop.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n",
        cli,
    )
    assert_ok(result)
    job = result.stdout
    assert "name: relu" in job and "name: max" in job and "lr: 0.01" in job


def test_a_bad_value_fails_before_torch_is_imported(cli: CLI, tmp_path: Path) -> None:
    result = python_c(
        "import sys\n"
        "from lenet_fmnist.cli import main\n"
        f"code = main(['train', 'epochs=0', 'hydra.run.dir={tmp_path / 'run'}'])\n"
        "assert code == 1, code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n",
        cli,
    )
    assert_ok(result)
    assert "epochs=0 is not allowed" in output(result)


def test_unknown_command(cli: CLI) -> None:
    result = cli.run("fit")
    assert result.returncode == 2 and "unknown command 'fit'" in result.stderr and "Traceback" not in output(result)


def test_two_modes_at_once_are_refused_in_one_line(cli: CLI) -> None:
    result = cli.run("train", "-m", "--cfg", "job")
    assert result.returncode == 2 and "Traceback" not in output(result), output(result)
    assert "Only one of --run, --multirun, --cfg" in result.stderr and "drop -m" in result.stderr


def test_module_and_console_script_agree(tmp_path: Path) -> None:
    """`lenet-fmnist` (the installed console script) and `python -m lenet_fmnist` are one program:
    the same answers, word for word, to --help and to an unknown command (neither imports torch)."""
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "lenet-fmnist"]
    assert script.load() is main
    console = Path(sys.executable).with_name("lenet-fmnist")
    for args in (["--help"], ["fit"]):
        answers = [
            subprocess.run([*program, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
            for program in ([str(console)], [sys.executable, "-m", "lenet_fmnist"])
        ]
        assert [(a.returncode, a.stdout, a.stderr) for a in answers[:1]] == [
            (a.returncode, a.stdout, a.stderr) for a in answers[1:]
        ], args
        assert answers[0].stdout.startswith("usage:") or "unknown command 'fit'" in answers[0].stderr


# Each family of exceptions (lenet_fmnist.run.errors) raised by a command's task, through the real
# Hydra app, one after another in one process: its exit status and how its message ends.
FAMILIES = """
import sys
from pathlib import Path
from lenet_fmnist.cli import config_dir
from lenet_fmnist.launch.hydra_app import run_hydra
from lenet_fmnist.run import errors
where = sys.argv[1]  # before the app sets sys.argv for Hydra
for name in ("UserError", "MachineFault", "Diverged", "Interrupted", "Pruned", "KeyboardInterrupt"):
    kind = getattr(errors, name, None) or KeyboardInterrupt
    def task(cfg, run_dir, kind=kind):
        raise kind(f"<{kind.__name__} raised>")
    try:
        code = run_hydra("eval", "eval", config_dir(), task, ["checkpoint=x.pt", f"hydra.run.dir={where}/{name}"])
    except SystemExit as stop:
        code = stop.code
    print(f"EXIT {name} {code}", flush=True)
"""


def test_each_family_of_exceptions_ends_with_its_exit_status(tmp_path: Path) -> None:
    """The user's mistake and the machine's fault exit 1, the machine's with the command that goes
    on; a run's outcome: diverged 1, interrupted 130 with the command that goes on, pruned 0."""
    result = subprocess.run(
        [sys.executable, "-c", FAMILIES, str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    text = output(result)
    assert result.returncode == 0, text
    exits = dict(line.split()[1:] for line in result.stdout.splitlines() if line.startswith("EXIT "))
    assert exits == {
        "UserError": "1", "MachineFault": "1", "Diverged": "1", "Interrupted": "130", "Pruned": "0",
        "KeyboardInterrupt": "130",
    }  # fmt: skip
    again = f"Run it again with: python -m lenet_fmnist eval checkpoint=x.pt hydra.run.dir={tmp_path}/"
    messages = {line.split(" - ", 1)[1] for line in text.splitlines() if " - " in line}
    assert {"<UserError raised>", "<Diverged raised>", "<Pruned raised>"} <= messages
    assert f"<MachineFault raised> {again}MachineFault" in messages
    assert f"<Interrupted raised> {again}Interrupted" in messages
    assert "Interrupted before training started or after it ended; no training was lost." in messages
    assert "Traceback" not in text


# ---------------------------------------------------------------------------------------------
# One epoch through the command line: the outputs contract


def test_metrics_json_contract(tiny_run: Path) -> None:
    metrics = read_metrics(tiny_run)
    assert metrics.keys() >= METRICS_KEYS
    assert metrics["status"] == "completed" and metrics["epochs_completed"] == 1 and metrics["best_epoch"] == 1
    (record,) = metrics["history"]
    assert record.keys() >= HISTORY_KEYS and record["epoch"] == 1
    for key in ("train_acc", "val_acc", "test_acc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    for key in ("train_loss", "val_loss", "test_loss"):
        assert math.isfinite(metrics[key]) and metrics[key] > 0, key
    assert metrics["train_seconds"] > 0 and metrics["images_per_second"] > 0 and record["seconds"] > 0
    # The summary holds the best-validation epoch's figures.
    assert (metrics["train_acc"], metrics["val_acc"]) == (record["train_acc"], record["val_acc"])


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_checkpoints_load_safely_and_hold_the_model(tiny_run: Path, name: str) -> None:
    state = torch.load(tiny_run / "checkpoints" / name, weights_only=True)
    assert state["epoch"] == 1
    # The keys of every checkpoint so far: a run without a weight average (ema.decay) has no "ema".
    assert set(state) == {
        "format", "model", "optimizer", "scheduler", "epoch", "config", "rng", "history", "best_epoch",
        "best_val_acc", "warnings",
    }  # fmt: skip
    assert state["config"]["activation"]["name"] == "tanh" and state["config"]["epochs"] == 1
    json.dumps(state["config"])  # plain values only
    model = LeNet5("tanh", "avg", 0.0)
    model.load_state_dict(state["model"])  # strict: every key and shape fits
    assert "state" in state["optimizer"] and "param_groups" in state["optimizer"]
    assert not list(tiny_run.glob("checkpoints/.*.tmp")), "a temporary file was left behind"


def test_tensorboard_events(tiny_run: Path) -> None:
    events = EventAccumulator(str(tiny_run))
    events.Reload()
    tags = events.Tags()
    assert set(tags["scalars"]) >= SCALAR_TAGS
    for tag in SCALAR_TAGS - {"accuracy/test"}:
        assert [e.step for e in events.Scalars(tag)] == [1], tag
    metrics = read_metrics(tiny_run)
    assert events.Scalars("accuracy/val")[0].value == pytest.approx(metrics["val_acc"])
    assert events.Scalars("accuracy/test")[0].value == pytest.approx(metrics["test_acc"])
    assert events.Scalars("learning_rate")[0].value == pytest.approx(0.01)
    assert tags["images"], "the grid of augmented inputs and the confusion matrix are images"

    # One HParams session in the run's own directory, not a sub-run per call.
    content = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in content
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["activation"].string_value == "tanh"
    assert start.hparams["pool"].string_value == "avg"
    assert start.hparams["lr"].number_value == pytest.approx(0.01)
    assert not [p for p in tiny_run.rglob("events.out.tfevents.*") if p.parent != tiny_run]


def test_eval_reproduces_the_test_accuracy(cli: CLI, tiny_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    eval_dir = tmp_path / "eval"
    result = cli.run(
        "eval", f"checkpoint={tiny_run / 'checkpoints' / 'best.pt'}", f"data.root={tiny_data}", "device=cpu",
        "threads=1", f"hydra.run.dir={eval_dir}",
    )  # fmt: skip
    assert_ok(result)
    report = json.loads((eval_dir / "eval.json").read_text())
    metrics = read_metrics(tiny_run)
    assert report["test_acc"] == metrics["test_acc"]
    assert report["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)
    assert report["epoch"] == 1 and report["test_images"] == 64
    confusion = torch.tensor(report["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.sum() == 64
    assert confusion.diagonal().sum().item() / 64 == pytest.approx(report["test_acc"])
    assert list(report["per_class_acc"]) == report["classes"] and len(report["classes"]) == 10
    text = output(result)
    assert "test accuracy" in text and "Per-class accuracy" in text and "Confusion matrix" in text
    assert "Ankle boot" in text


# ---------------------------------------------------------------------------------------------
# The real data


def test_one_epoch_on_the_real_data(real_run: Path) -> None:
    printed = (real_run.parent / "output.txt").read_text()  # the command succeeded without a traceback
    assert f"Data from {REAL_DATA}: 50000 train, 10000 validation, 10000 test images" in printed
    metrics = read_metrics(real_run)
    assert metrics["status"] == "completed"
    assert metrics["test_acc"] > 0.7, metrics


def test_an_eval_sweep_of_good_checkpoints_exits_zero(
    cli: CLI, tiny_run: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """Only a training sweep's jobs write metrics.json; an eval sweep is judged by its jobs' results."""
    paths = ",".join(str(tiny_run / "checkpoints" / name) for name in ("best.pt", "last.pt"))
    sweep = tmp_path / "sweep"
    result = cli.run(
        "eval", "-m", f"checkpoint={paths}", f"data.root={tiny_data}", "device=cpu", f"hydra.sweep.dir={sweep}"
    )
    assert_ok(result)
    assert len(list(sweep.glob("*/eval.json"))) == 2


def test_help_lists_the_config_groups_as_conf_holds_them(tmp_path: Path) -> None:
    """A new option file appears in --help without touching the code; a group's options in full."""
    conf = tmp_path / "conf"
    shutil.copytree(config_dir(), conf)
    (conf / "activation" / "mish.yaml").write_text("name: mish\n")
    text = usage(conf)
    assert "activation=elu|gelu|mish|relu|sigmoid|silu|tanh" in text
    assert "pool=avg|max" in text and "optimizer=adam|rmsprop|sgd" in text
    assert "experiment=" not in text.split("Config groups:", 1)[1].split("Hydra's flags", 1)[0]
