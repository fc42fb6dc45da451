"""Surface 5: the run directories that `report` and `resume` read.

Target `metrics`: an input is a metrics.json's bytes, put into a copy of the world's run, which
`report` then summarises, or `train ... resume=true` continues (by the input's length: an input
is the file's bytes alone), through the command line (in-process). Either completes (the report
written; the run completed, its metrics.json whole again) or refuses in one paragraph; a refused
command changes none of the run's files.

Target `run_edit`: a JSON document of edits made by hand to a copy of the run: metrics.json
replaced (by a JSON value or any text), .hydra/config.yaml or hydra.yaml replaced, last.pt or
best.pt removed, last.pt rewritten to claim another epoch or replaced by best.pt, so that the
checkpoints and metrics.json disagree; then both `report` and the resume run on it.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from hypothesis import strategies as st

from fuzz.harness import Failure, NotACase, Outcome, judge_cli, snapshot, unchanged
from fuzz.world import World

REPORT_FILES = {"report.md", "report.csv"}


def _report_output(path: Path) -> bool:
    """What `report` writes into its directory, what a command logs there, and Hydra's record of
    the latest command (a resume writes its own .hydra/ before it decides)."""
    return path.name in REPORT_FILES or path.suffix in (".png", ".log") or ".hydra" in path.parts


def report(world: World, run: Path) -> Outcome:
    outcome, text = judge_cli(["report", str(run)], [str(run)])
    if outcome.accepted and not (run / "report.md").is_file():
        raise Failure(f"report exited 0 but wrote no report.md:\n{text[-1500:]}")
    return outcome


def resume(world: World, run: Path) -> Outcome:
    outcome, text = judge_cli(world.train_args(run, "resume=true"), [str(run)])
    if outcome.accepted:
        status = json.loads((run / "metrics.json").read_text()).get("status")
        if status != "completed":
            raise Failure(f"the resume exited 0, but metrics.json says {status!r}:\n{text[-1500:]}")
    return outcome


def _judged(world: World, run: Path, consumer: str) -> Outcome:
    """`consumer` on the run; a refusal must leave its files as they were."""
    before = snapshot(run, _report_output)
    with unchanged(world.run, world.data):
        outcome = report(world, run) if consumer == "report" else resume(world, run)
    if not outcome.accepted and snapshot(run, _report_output) != before:
        raise Failure(f"the refused {consumer} changed the run's files:\n{outcome.message}")
    return outcome


def run_metrics(world: World, raw: bytes) -> Outcome:
    with world.scratch() as scratch:
        run = Path(shutil.copytree(world.run, scratch / "run"))
        (run / "metrics.json").write_bytes(raw)
        return _judged(world, run, ("report", "resume")[len(raw) % 2])


# ---- structured inputs ----------------------------------------------------------------------

ODD = (None, 0, -1, 1e308, math.nan, math.inf, -math.inf, "", "x", "completed", [], {}, [1], {"a": 1}, True, 2**70)


@functools.cache
def _metrics(path: Path) -> dict[str, Any]:
    return json.loads((path / "metrics.json").read_text())


def _damage(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """`value` with one thing changed, somewhere inside it."""
    if isinstance(value, dict) and value and depth < 3 and (depth == 0 or draw(st.booleans())):
        key = draw(st.sampled_from(sorted(value)))
        changed = dict(value)
        if draw(st.integers(0, 3)) == 0:
            del changed[key]
        else:
            changed[key] = _damage(draw, value[key], depth + 1)
        return changed
    if isinstance(value, list) and value and depth < 3 and draw(st.booleans()):
        at = draw(st.integers(0, len(value) - 1))
        return [*value[:at], _damage(draw, value[at], depth + 1), *value[at + 1 :]]
    return draw(st.sampled_from(ODD))


@st.composite
def _metrics_text(draw: st.DrawFn, original: dict[str, Any]) -> bytes:
    value = original
    for _ in range(draw(st.integers(1, 4))):
        value = _damage(draw, value)
    text = json.dumps(value, allow_nan=True)
    form = draw(st.sampled_from(("whole", "whole", "whole", "cut", "not an object", "empty", "binary")))
    if form == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif form == "not an object":
        text = json.dumps(draw(st.sampled_from(([value], 5, "completed", None))))
    elif form in ("empty", "binary"):
        return b"" if form == "empty" else draw(st.binary(max_size=64))
    return text.encode()


def metrics_strategy(world: World) -> st.SearchStrategy[bytes]:
    return _metrics_text(_metrics(world.run))


def metrics_seeds(world: World) -> list[bytes]:
    text = (world.run / "metrics.json").read_bytes()
    return [text, text + b" "]  # one each for report and resume


# ---- edits by hand ------------------------------------------------------------------------------

YAML = ("", "{", "- a\n- b\n", "activation: {name: relu}\n", "seed: [1, 2]\n", "\x00\x01", "hydra: 5\n", "a: ${nope}\n")


@st.composite
def _edits(draw: st.DrawFn, original: dict[str, Any]) -> bytes:
    edits: dict[str, Any] = {}
    if draw(st.booleans()):
        edits["metrics.json"] = draw(_metrics_text(original)).decode(errors="replace")
    for name in (".hydra/config.yaml", ".hydra/hydra.yaml"):
        if draw(st.integers(0, 3)) == 0:
            edits[name] = draw(st.one_of(st.sampled_from(YAML), st.none()))
    if draw(st.booleans()):
        edits["checkpoints/last.pt"] = draw(st.sampled_from(("remove", "best", "epoch 0", "epoch 5", "epoch -1")))
    if draw(st.integers(0, 3)) == 0:
        edits["checkpoints/best.pt"] = "remove"
    return json.dumps(edits).encode()


def edit_strategy(world: World) -> st.SearchStrategy[bytes]:
    return _edits(_metrics(world.run))


def _apply(run: Path, edits: dict[str, Any]) -> None:
    for name, edit in edits.items():
        path = run / name
        if name.endswith(".pt"):
            if edit == "remove":
                path.unlink()
            elif edit == "best":
                shutil.copy(run / "checkpoints" / "best.pt", path)
            else:
                state = torch.load(path, weights_only=True)
                torch.save({**state, "epoch": int(str(edit).split()[1])}, path)
        elif edit is None:
            path.unlink()
        else:
            path.write_text(str(edit))


def run_edit(world: World, raw: bytes) -> Outcome:
    try:
        edits = json.loads(raw)
        if not isinstance(edits, dict):
            raise TypeError("not an object")
    except (ValueError, TypeError) as error:
        raise NotACase(f"not a run edit: {error}") from None
    with world.scratch() as scratch:
        run = Path(shutil.copytree(world.run, scratch / "run"))
        try:
            _apply(run, edits)
        except (OSError, ValueError, TypeError, IndexError, RuntimeError) as error:
            raise NotACase(f"the edits cannot be made: {error}") from None
        reported = _judged(world, run, "report")
        resumed = _judged(world, run, "resume")
    return resumed if not resumed.accepted else reported
