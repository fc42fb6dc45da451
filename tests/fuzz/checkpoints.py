"""Surface 4: checkpoints, as each command that reads one does.

An input is one byte that chooses the reader, then the file's bytes. The file is read as every
reader first reads it (training.checkpoint.load: a refusal there is every reader's), and a file
it accepts is then given to the chosen reader through the command line (in-process): `eval`,
`predict`, `export` (TorchScript), `resume` (as the last.pt of a copy of the world's run, its
metrics.json saying "interrupted") or a distillation teacher (`distill.teachers=[FILE]`). Each must
complete, with finite results, or refuse in one paragraph that names the file.

Hypothesis starts from the world's own checkpoint and breaks it: keys dropped, renamed or added;
another format version, or none; weights with other shapes or dtypes, NaN or infinite, or not
tensors; a config missing what the model is built from, or naming what does not exist; epochs,
random states and histories of the wrong type. And files that are no checkpoint: random bytes,
zip archives with hostile members, pickles that would run code, the legacy pickle format.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import math
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from hypothesis import strategies as st

from fuzz.harness import Failure, NotACase, Outcome, call, judge_cli, unchanged
from fuzz.world import World
from lenet_fmnist.training import checkpoint

READERS = ("eval", "predict", "export", "resume", "teacher")


def _command(world: World, scratch: Path, reader: str, path: Path) -> list[str]:
    out = f"hydra.run.dir={scratch / 'out'}"
    common = [f"checkpoint={path}", "threads=1"]
    if reader == "eval":
        return ["eval", *common, f"data.root={world.data}", "device=cpu", out]
    if reader == "predict":
        return ["predict", *common, f"images={world.images}", "device=cpu", "figure_images=2", out]
    if reader == "export":
        return ["export", *common, f"data.root={world.data}", "format=torchscript", "check_images=8", out]
    if reader == "resume":
        return world.train_args(scratch / "run", "resume=true")
    return world.train_args(scratch / "out", f"distill.teachers=[{path}]")


def _resumable(world: World, scratch: Path, content: bytes) -> Path:
    """A copy of the world's run, interrupted after its epoch, with `content` as its last.pt."""
    run = Path(shutil.copytree(world.run, scratch / "run"))
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(content)
    return last


def _check_result(reader: str, scratch: Path, text: str) -> None:
    """What an accepted reader wrote holds finite numbers."""
    result = {"eval": "out/eval.json", "resume": "run/metrics.json", "teacher": "out/metrics.json"}.get(reader)
    if result is None:
        return
    values = json.loads((scratch / result).read_text())
    loss = values.get("test_loss")
    if not isinstance(loss, float) or not math.isfinite(loss):
        raise Failure(f"{reader} accepted the checkpoint, but its test loss is {loss!r}:\n{text[-1500:]}")


def run(world: World, raw: bytes) -> Outcome:
    if not raw:
        raise NotACase("no reader byte")
    try:
        return _read(world, READERS[raw[0] % len(READERS)], raw[1:])
    finally:
        if PWNED.exists():
            PWNED.unlink()
            raise Failure("loading the checkpoint ran code from it")


def _read(world: World, reader: str, content: bytes) -> Outcome:
    with world.scratch() as scratch:
        if reader == "resume":
            path = _resumable(world, scratch, content)
        else:
            path = scratch / "input.pt"
            path.write_bytes(content)
        with unchanged(world.run, world.data, world.images, path.parent):
            outcome = call(lambda: checkpoint.load(path), [str(path)])
        if not outcome.accepted:
            return outcome
        watched = (world.run, world.data, world.images) + (() if reader == "resume" else (path.parent,))
        with unchanged(*watched):
            names = [str(path), path.name] + (["resume=true"] if reader == "resume" else [])
            outcome, text = judge_cli(_command(world, scratch, reader, path), names)
        if outcome.accepted:
            _check_result(reader, scratch, text)
    return outcome


# ---- structured inputs ----------------------------------------------------------------------


@functools.cache
def _original(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


ODD_VALUES = (None, 0, -1, 2**70, 1.5, math.nan, "x", "", [], {}, [1, 2], {"a": 1}, True, b"bytes")


def _odd(draw: st.DrawFn) -> Any:
    return draw(st.one_of(st.sampled_from(ODD_VALUES), st.just(torch.zeros(2)), st.just(torch.tensor(math.nan))))


def _tensor_damage(draw: st.DrawFn, tensor: torch.Tensor) -> Any:
    how = draw(st.sampled_from(("nan", "inf", "shape", "dtype", "empty", "scalar", "not a tensor", "huge")))
    if how in ("nan", "inf"):
        damaged = tensor.clone().float()
        damaged.view(-1)[draw(st.integers(0, max(damaged.numel() - 1, 0)))] = math.nan if how == "nan" else math.inf
        return damaged
    if how == "shape":
        return torch.zeros(*(s + 1 for s in tensor.shape)) if tensor.dim() else torch.zeros(3)
    if how == "dtype":
        return tensor.to(draw(st.sampled_from((torch.float64, torch.float16, torch.int64, torch.bool, torch.uint8))))
    if how == "empty":
        return torch.zeros(0)
    if how == "scalar":
        return torch.tensor(1.0)
    if how == "huge":
        return tensor.float() * 1e38
    return _odd(draw)


def _damage_dict(draw: st.DrawFn, mapping: dict[str, Any], depth: int) -> None:
    """One change to `mapping` (in place) or to a mapping below it."""
    if not mapping:
        mapping[draw(st.sampled_from(("x", "model", "config")))] = _odd(draw)
        return
    key = draw(st.sampled_from(sorted(mapping, key=str)))
    value = mapping[key]
    how = draw(st.sampled_from(("drop", "rename", "replace", "descend", "descend", "descend")))
    if how == "drop":
        del mapping[key]
    elif how == "rename":
        mapping[f"{key}_renamed"] = mapping.pop(key)
    elif how == "replace" or depth > 4:
        mapping[key] = _tensor_damage(draw, value) if isinstance(value, torch.Tensor) else _odd(draw)
    elif isinstance(value, dict):
        _damage_dict(draw, value, depth + 1)
    elif isinstance(value, list) and value:
        at = draw(st.integers(0, len(value) - 1))
        if isinstance(value[at], dict):
            _damage_dict(draw, value[at], depth + 1)
        else:
            value[at] = _odd(draw)
    elif isinstance(value, torch.Tensor):
        mapping[key] = _tensor_damage(draw, value)
    else:
        mapping[key] = _odd(draw)


def _saved(state: Any, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


# What a hostile pickle creates when it is loaded (a stand-in for any code an attacker likes).
PWNED = Path(tempfile.gettempdir()) / "lenet_fmnist-fuzz-PWNED"


class _Hostile:
    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(PWNED), "w"))


def _zip(draw: st.DrawFn, good: bytes) -> bytes:
    """A zip archive: the checkpoint's members kept, replaced or joined by hostile ones."""
    names = ["../../../tmp/evil", "/etc/passwd", "archive/data.pkl", "archive/data/0", "archive/version", "a" * 300]
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as source, zipfile.ZipFile(buffer, "w") as target:
        members = source.namelist()
        for name in members if draw(st.booleans()) else members[: draw(st.integers(0, len(members)))]:
            content = source.read(name)
            if name.endswith("data.pkl") and draw(st.booleans()):
                content = pickle.dumps({"format": checkpoint.FORMAT, "model": _Hostile()}, protocol=2)
            target.writestr(name, content)
        for _ in range(draw(st.integers(0, 2))):
            target.writestr(draw(st.sampled_from(names)), draw(st.binary(max_size=32)))
    return buffer.getvalue()


@st.composite
def _file(draw: st.DrawFn, original: dict[str, Any]) -> bytes:
    reader = draw(st.integers(0, len(READERS) - 1))
    kind = draw(st.sampled_from(("damaged", "damaged", "damaged", "version", "zip", "bytes", "pickle", "not a dict")))
    if kind == "version":
        versions = (
            "lenet_fmnist.checkpoint.v1",
            "lenet_fmnist.checkpoint.v3",
            "lenet_fmnist.checkpoint.",
            "v2",
            None,
            2,
        )
        content = _saved({**original, "format": draw(st.sampled_from(versions))})
    elif kind == "bytes":
        content = draw(st.binary(max_size=256))
    elif kind == "pickle":
        content = pickle.dumps(draw(st.sampled_from((_Hostile(), {"format": checkpoint.FORMAT}, [1, 2], None))))
    elif kind == "not a dict":
        content = _saved(draw(st.sampled_from(([original], torch.zeros(3), 5, "text", None))))
    elif kind == "zip":
        content = _zip(draw, _saved(original))
    else:
        state = copy.deepcopy(original)
        for _ in range(draw(st.integers(1, 3))):
            _damage_dict(draw, state, 0)
        content = _saved(state, legacy=draw(st.integers(0, 9)) == 0)
    return bytes([reader]) + content


def strategy(world: World) -> st.SearchStrategy[bytes]:
    return _file(_original(world.checkpoint))


def seeds(world: World) -> list[bytes]:
    good = world.checkpoint.read_bytes()
    return [bytes([reader]) + good for reader in range(len(READERS))]
