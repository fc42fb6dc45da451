"""Surface 1: the command line's overrides, for every key of every command.

A case is a JSON document {"command": ..., "overrides": [...], "flags": [...]}: the command, the
fuzzed overrides (which replace the harness's own for the same key) and Hydra's mode flags. It runs
in-process through lenet_fmnist.cli.main from a directory of its own, after the harness's overrides
that make the command otherwise valid on the world (tiny data, its checkpoint, its images, one
thread, one epoch). Paths are placeholders (@FILE@, @LOOP@, ...), made afresh in each case's scratch
directory, so that a saved case replays in any world.

Keys: every leaf of each command's composed config (`keys`), the config groups, each optimizer's
keys (those of another group), the other commands' keys, unknown ones, and some of Hydra's; each
with `+`, `++` or `~` now and then. Values: wrong types, zero, negative, NaN, ±inf, huge, empty,
unicode and very long strings, interpolations, and paths that do not exist, are files where a
directory is wanted, cannot be read, or loop through symlinks.

An accepted training run may ask for more epochs than a test can wait for: it is trained for
MAX_EPOCHS here (`budgeted`), the rest of its configuration as given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from fuzz.harness import Failure, NotACase, Outcome, judge_cli, snapshot, unchanged
from fuzz.world import World
from lenet_fmnist.run.config_keys import key_of

MAX_EPOCHS = 2
COMMANDS = ("train", "eval", "predict", "export", "report")
GROUPS = ("activation", "pool", "optimizer", "dropout", "augmentation", "experiment")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
HYDRA_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "hydra.job.chdir", "hydra.verbose", "hydra.job.name")
UNKNOWN_KEYS = ("foo", "epoch", "optimizer.learning_rate", "data", "data.root.x", "", "a.b.c.d", "é", "lr")
# Keys whose value is a directory a command writes into: never a path outside the case's scratch.
OUTPUT_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "out")
FLAGS = ((), ("-m",), ("--cfg", "job"), ("--info",), ("--help",), ("-m", "--cfg", "job"), ("-c", "hydra"), ("-r",))

# The harness's overrides of each command (a fuzzed override of the same key replaces its own).
BASE = {
    "train": ["data.root=@DATA@", "data.val_size=64", "threads=1", "device=cpu", "epochs=1", "hydra.run.dir=@OUT@"],
    "eval": ["checkpoint=@CHECKPOINT@", "data.root=@DATA@", "device=cpu", "threads=1", "hydra.run.dir=@OUT@"],
    "predict": [
        "checkpoint=@CHECKPOINT@", "images=@IMAGES@", "device=cpu", "threads=1", "figure_images=4",
        "hydra.run.dir=@OUT@",
    ],
    "export": [
        "checkpoint=@CHECKPOINT@", "data.root=@DATA@", "format=torchscript", "check_images=8", "threads=1",
        "hydra.run.dir=@OUT@",
    ],
}  # fmt: skip
# What each command writes when it succeeds, in its run directory.
RESULT = {"train": "metrics.json", "eval": "eval.json", "predict": "predictions.csv", "export": "model.pt.json"}

SPECIAL = (
    "", "null", "nan", "NaN", "-nan", "inf", "-inf", "+inf", "1e308", "1e309", "-1e309", "0", "-0", "0.0", "-1",
    "1", "2", "3", "0.5", "1.0", "0.9999999", "1e-320", "true", "false", "True", "[]", "[1,2]", "[a]", "{}",
    "{a:1}", "''", "' '", "'\t'", str(2**31), str(2**63 - 1), str(2**63), str(2**64), str(-(2**63) - 1), "9" * 40,
    "0x10", "1_000", "${oc.env:HOME}", "${nope}", "${epochs}", "???", "\\", "'", '"', ",", "a,b", "=", "~nouser/x",
    "~", "é", "🙂", "\u200b", "a b", "relu", "sgd", "cpu", "cuda", "cuda:99", "auto", "onnx", "uint8",
)  # fmt: skip
PATHS = (
    "@MISSING@", "@FILE@", "@DIR@", "@LOOP@", "@UNREADABLE@", "@BELOW_FILE@", "@FIFO@", "@DATA@", "@CHECKPOINT@",
    "@IMAGES@", "@RUN@", "@GLOB@", "@OUT@", "/dev/null", "/proc/self/mem", "'@DIR@/**'", "@MISSING@/*.png",
)  # fmt: skip
SCRATCH_PATHS = tuple(p for p in PATHS if p not in {"@DATA@", "@CHECKPOINT@", "@IMAGES@", "@GLOB@"})


@functools.cache
def keys() -> dict[str, tuple[str, ...]]:
    """Every leaf key of each Hydra command's composed config (every optimizer's for train)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from lenet_fmnist import config
    from lenet_fmnist.cli import config_dir

    def leaves(node: Any, prefix: str = "") -> list[str]:
        found = []
        for key in node:
            child = node._get_node(key)
            found += leaves(child, f"{prefix}{key}.") if OmegaConf.is_dict(child) else [f"{prefix}{key}"]
        return found

    config.register()
    found: dict[str, tuple[str, ...]] = {}
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for command in BASE:
            names = leaves(compose(command))
            if command == "train":
                names += [n for o in OPTIMIZERS for n in leaves(compose(command, [f"optimizer={o}"]))]
            found[command] = tuple(dict.fromkeys(names))
    return found


def _value(key: str) -> st.SearchStrategy[str]:
    if key in OUTPUT_KEYS:  # a directory a command writes into: in the case's scratch, never the world's
        return st.one_of(st.sampled_from(SCRATCH_PATHS), st.sampled_from(("", "null", "out", "a b", "é", "x" * 300)))
    return st.one_of(
        st.sampled_from(SPECIAL),
        st.sampled_from(PATHS),
        st.integers(-(2**70), 2**70).map(str),
        st.floats().map(repr),
        st.text(max_size=12),
        st.text(min_size=1, max_size=12).map(lambda text: f"'{text}'"),
        st.sampled_from(("a" * 5000, "é" * 2000, "9" * 400, "[" + "1," * 2000 + "1]")),
    )


@st.composite
def _override(draw: st.DrawFn, command: str) -> str:
    own = keys().get(command, ())
    others = tuple(k for c, ks in keys().items() if c != command for k in ks)
    key = draw(
        st.one_of(
            st.sampled_from(own or ("x",)), st.sampled_from(GROUPS), st.sampled_from(HYDRA_KEYS),
            st.sampled_from(UNKNOWN_KEYS), st.sampled_from(others),
        )
    )  # fmt: skip
    prefix = draw(st.sampled_from(("", "", "", "", "+", "++", "~")))
    value = draw(_value(key))
    return f"{prefix}{key}" if prefix == "~" and draw(st.booleans()) else f"{prefix}{key}={value}"


@st.composite
def _case(draw: st.DrawFn) -> bytes:
    command = draw(st.sampled_from(COMMANDS))
    if command == "report":
        args = draw(st.lists(st.one_of(st.sampled_from(PATHS), _value("x")), min_size=0, max_size=3))
        return json.dumps({"command": command, "overrides": args, "flags": []}).encode()
    overrides = draw(st.lists(_override(command), min_size=1, max_size=3))
    flags = draw(st.sampled_from(FLAGS)) if draw(st.integers(0, 9)) == 0 else ()
    return json.dumps({"command": command, "overrides": overrides, "flags": list(flags)}).encode()


def strategy(world: World) -> st.SearchStrategy[bytes]:
    return _case()


# ---- running one case -------------------------------------------------------------------------


def _paths(world: World, scratch: Path) -> dict[str, str]:
    """The placeholders of a case, made in its scratch directory."""
    paths = scratch / "paths"
    paths.mkdir()
    (paths / "file.txt").write_text("not what was asked for\n")
    (paths / "empty").mkdir()
    (paths / "loop").symlink_to(paths / "loop")
    unreadable = paths / "unreadable.pt"
    shutil.copy(world.checkpoint, unreadable)
    unreadable.chmod(0)
    os.mkfifo(paths / "fifo")
    return {
        "@MISSING@": str(paths / "missing"), "@FILE@": str(paths / "file.txt"), "@DIR@": str(paths / "empty"),
        "@LOOP@": str(paths / "loop"), "@UNREADABLE@": str(unreadable), "@BELOW_FILE@": str(paths / "file.txt" / "x"),
        "@FIFO@": str(paths / "fifo"), "@DATA@": str(world.data), "@CHECKPOINT@": str(world.checkpoint),
        "@IMAGES@": str(world.images), "@RUN@": str(scratch / "run"), "@GLOB@": f"{world.images}/*.png",
        "@OUT@": str(scratch / "out"),
    }  # fmt: skip


def _resolve(text: str, paths: dict[str, str]) -> str:
    for placeholder, path in paths.items():
        text = text.replace(placeholder, path)
    return text


def _names(overrides: list[str], flags: list[str], paths: dict[str, str]) -> list[str]:
    """What a refusal of a case may name: an override, its key (or the key's group), its value."""
    names = list(flags)
    for override in overrides:
        key, value = key_of(override), _resolve(override.split("=", 1)[-1], paths)
        names += [_resolve(override, paths), value, value.strip("'\""), repr(value)[1:-1], key, key.split(".")[0]]
        names.append(value.rstrip("/"))  # a path is named as Path prints it: `runs/` as `runs`
    return names


def _read(data: bytes) -> tuple[str, list[str], list[str]]:
    try:
        case = json.loads(data)
        command, overrides, flags = case["command"], case["overrides"], case.get("flags", [])
        if not (isinstance(command, str) and all(isinstance(s, str) for s in [*overrides, *flags])):
            raise TypeError("strings expected")
    except (ValueError, KeyError, TypeError) as error:
        raise NotACase(f"not an overrides case: {error}") from None
    return command, overrides, flags


def args_of(command: str, overrides: list[str], flags: list[str], paths: dict[str, str]) -> list[str]:
    """The command line of a case: the harness's overrides (those the case gives a key of left
    out), then the case's, then its flags; placeholders resolved."""
    given = {key_of(o) for o in overrides}
    base = [o for o in BASE.get(command, []) if key_of(o) not in given]
    return [_resolve(arg, paths) for arg in [command, *base, *overrides, *flags]]


@contextlib.contextmanager
def _in(directory: Path) -> Iterator[None]:
    directory.mkdir(exist_ok=True)
    before = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def budgeted() -> Iterator[None]:
    """Training runs accepted with more than MAX_EPOCHS epochs train MAX_EPOCHS here."""
    from lenet_fmnist.training import trainer

    real = trainer.train

    def train(cfg: Any, run_dir: Path, **options: Any) -> dict[str, Any]:
        return real(dataclasses.replace(cfg, epochs=min(cfg.epochs, MAX_EPOCHS)), run_dir, **options)

    trainer.train = train
    try:
        yield
    finally:
        trainer.train = real


def _report_skip(path: Path) -> bool:
    """What `report` writes into its first directory, and what a command logs there."""
    return path.name in {"report.md", "report.csv", "train.log"} or path.suffix == ".png" or ".hydra" in path.parts


def _check_accepted(command: str, args: list[str], scratch: Path, text: str) -> None:
    """A command that exited 0 wrote its result where the harness sent it (when the case left
    hydra.run.dir and the mode alone), and none into the directory it started in, among the user's
    own files."""
    if strays := [name for name in RESULT.values() if (scratch / "cwd" / name).exists()]:
        raise Failure(f"exit 0, and {strays} written into the directory the command started in:\n{text[-1500:]}")
    plain = not any(a.startswith(("-", "hydra.run.dir", "+hydra.run.dir", "++hydra.run.dir")) for a in args[1:])
    if command in RESULT and plain:
        result = scratch / "out" / RESULT[command]
        if command == "export":
            result = next((scratch / "out").glob("model.*.json"), result)
        if not result.is_file():
            raise Failure(f"exit 0 but no {result}:\n{text[-2000:]}")
        if command == "train" and json.loads(result.read_text())["status"] != "completed":
            raise Failure(f"exit 0 but {result} says {result.read_text()[:300]}")


def run(world: World, data: bytes) -> Outcome:
    command, overrides, flags = _read(data)
    with world.scratch() as scratch:
        paths = _paths(world, scratch)
        if "@RUN@" in data.decode(errors="replace"):
            shutil.copytree(world.run, scratch / "run")
        args = args_of(command, overrides, flags, paths)
        names = _names(overrides, flags, paths)
        watched = (world.data, world.images, world.run, scratch / "paths")
        run_before = snapshot(scratch / "run", _report_skip)
        with unchanged(*watched), _in(scratch / "cwd"), budgeted():
            outcome, text = judge_cli(args, names)
        if outcome.accepted:
            _check_accepted(command, args, scratch, text)
        elif snapshot(scratch / "run", _report_skip) != run_before:
            raise Failure(f"a refused command changed the run it was given:\n{outcome.message}")
    return outcome
