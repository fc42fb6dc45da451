"""Checkpoints: plain containers of tensors and Python values, written atomically and read back
with `weights_only=True`, so loading a file never runs code from it."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from lenet_fmnist.model import LeNet5
from lenet_fmnist.run import config_keys
from lenet_fmnist.run.errors import UserError
from lenet_fmnist.run.paths import is_file, user_path
from lenet_fmnist.run.storage import write_atomic

# v2: a step's arithmetic no longer depends on the thread count (training.step), so a v1 run would
# resume with other bits; v1 also recorded a thread count that nothing reads any more.
FORMAT = "lenet_fmnist.checkpoint.v2"
# The keys of the weight averages' states (each a dict: "model", its state dict, and "updates"):
# EMA only in checkpoints of runs with ema.decay set, SWA only in those with swa.epochs set
# (training.averaging's MovingAverage and EpochAverage write them under these keys).
EMA, SWA = "ema", "swa"
AVERAGES = (EMA, SWA)


def save(path: Path, state: dict[str, Any]) -> None:
    write_atomic(path, lambda handle: torch.save({"format": FORMAT, **state}, handle))


MISSING_HINT = "give the path of a best.pt or last.pt written by a training run."


def load(
    path: str | Path, map_location: str | torch.device = "cpu", *, key: str = "checkpoint", hint: str = MISSING_HINT
) -> dict[str, Any]:
    """Read a checkpoint written by `save`, or raise UserError saying why the file is not one; a
    missing file is named as the config `key` that gave it, with `hint` saying what to do."""
    path = user_path(str(path), key)
    if not is_file(path):
        raise UserError(f"{key}={str(path)!r} does not exist or is not a file: {hint}")
    try:
        with warnings.catch_warnings():  # e.g. torch's note on a foreign pickle protocol: the error says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message advises weights_only=False, the wrong advice for a file that may be hostile:
        # keep only its reason (e.g. "Unsupported global: GLOBAL os.system ...").
        reason = re.search(r"WeightsUnpickler error:\s*([^\n]+?)(?:\.\s*Please use|\n|$)", str(error))
        raise UserError(
            f"{path} was refused: it holds objects other than tensors and plain values"
            f"{f' ({reason.group(1).strip()})' if reason else ''}, so it is not a lenet_fmnist checkpoint "
            "and was not unpickled (its code did not run)."
        ) from None
    except Exception as error:  # zip, EOF and format errors all mean "not a checkpoint"
        detail = " ".join(str(error).split())
        raise UserError(f"{path} is not a PyTorch checkpoint ({type(error).__name__}: {detail}).") from None
    found = state.get("format") if isinstance(state, dict) else None
    if isinstance(found, str) and found.startswith("lenet_fmnist.checkpoint.") and found != FORMAT:
        raise UserError(
            f"{path} was written by another version of lenet_fmnist (format {found}); this one reads {FORMAT}. "
            "Train the run again with this version (its numbers would differ from the old ones anyway)."
        )
    if found != FORMAT:
        raise UserError(f"{path} is a PyTorch file but not a lenet_fmnist checkpoint (format {FORMAT} expected).")
    return state


def _weights(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _plain(value: Any) -> bool:
    """Whether `value` holds only what JSON does (what a run's config, history and sidecar hold)."""
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    return value is None or isinstance(value, str | int | float | bool)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _rng(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and all(isinstance(value.get(key), torch.Tensor) for key in ("torch", "generator"))
        and "cuda" in value
        and (value["cuda"] is None or isinstance(value["cuda"], torch.Tensor))
    )


# What `save` writes (training.state.TrainingState.state_dict), each entry with its check and what
# it holds in words; EMA only in runs with a weight average.
ENTRIES = {
    "model": (_weights, "weights (names and tensors)"),
    "config": (lambda v: isinstance(v, dict) and _plain(v), "the run's configuration (plain values)"),
    "epoch": (_count, "a number of epochs"),
    "optimizer": (lambda v: isinstance(v, dict), "the optimizer's state"),
    "scheduler": (lambda v: isinstance(v, dict), "the schedule's state"),
    "rng": (_rng, "the random generators' states"),
    "history": (lambda v: isinstance(v, list) and all(isinstance(r, dict) and _plain(r) for r in v), "epoch records"),
    "best_epoch": (_count, "a number of epochs"),
    "best_val_acc": (lambda v: v is None or (isinstance(v, int | float) and not isinstance(v, bool)), "an accuracy"),
    "warnings": (lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v), "a list of warnings"),
    **{
        key: (
            lambda v: isinstance(v, dict) and _weights(v.get("model")) and _count(v.get("updates")),
            "a weight average",
        )
        for key in AVERAGES
    },
}
CLASSIFIED = ("model", "config", "epoch", *AVERAGES)  # what eval, predict and export read


def require(state: dict[str, Any], path: str | Path, keys: tuple[str, ...]) -> None:
    """Refuse a checkpoint whose entries `keys` (of ENTRIES) are missing or not what `save` writes:
    one damaged or edited by hand. AVERAGES may be missing (a run without that weight average)."""
    for key in keys:
        if key not in state:
            if key in AVERAGES:
                continue
            raise UserError(
                f"{path} has no {key!r} entry: it is not a whole lenet_fmnist checkpoint (damaged, or edited)."
            )
        check, holds = ENTRIES[key]
        if not check(state[key]):
            shown = repr(state[key]) if len(repr(state[key])) <= 40 else f"a {type(state[key]).__name__}"
            raise UserError(
                f"{path} holds {shown} as its {key!r} entry, not {holds}: the checkpoint is damaged or was edited."
            )


def resumable(path: Path) -> dict[str, Any]:
    """last.pt as a resume reads it: `load`, then every entry `save` writes checked."""
    state = load(path)
    require(state, path, tuple(ENTRIES))
    return state


def _average(state: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The checkpoint's weight average (its key and entry) if it holds any weights yet (a SWA
    starts in one of the last epochs)."""
    for key in AVERAGES:
        if (average := state.get(key)) is not None and average["updates"] > 0:
            return key, average
    return None


def evaluated_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights that validation, the test, `eval`, `predict` and `export` use: the weight
    average's when the run keeps one that holds any weights yet (ema.decay or swa.epochs; written
    by training.averaging), else the trained weights ("model")."""
    average = _average(state)
    return average[1]["model"] if average is not None else state["model"]


def weights_used(state: dict[str, Any]) -> str:
    """Which weights `evaluated_weights` gives, in words (logs, eval.json, export's sidecar)."""
    if (average := _average(state)) is None:
        return "the trained weights"
    key, entry = average
    settings = state.get("config", {}).get(key)  # the config's ema or swa node
    setting = settings.get("epochs" if key == SWA else "decay") if isinstance(settings, dict) else None
    if key == SWA:
        return f"the average of the weights at the end of {entry['updates']} epochs (swa.epochs={setting})"
    return f"the exponential moving average of the weights (ema.decay={setting})"


def model_from(state: dict[str, Any], source: str | Path) -> LeNet5:
    """The LeNet-5 described by the checkpoint's config, with its evaluated weights (the weight
    average's when it has one) loaded strictly."""
    config = state.get("config", {})
    try:
        width = config_keys.with_added_keys(config)["model"]["width"]
        model = LeNet5(config["activation"]["name"], config["pool"]["name"], config["dropout"]["p"], width)
        model.load_state_dict(evaluated_weights(state))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        # load_state_dict lists each missing key and size mismatch on its own line: one paragraph.
        detail = " ".join(line.strip() for line in str(error).strip().splitlines())
        raise UserError(
            f"{source} does not hold weights of this LeNet-5 (another architecture or a damaged file): {detail}"
        ) from None
    if broken := [name for name, value in model.state_dict().items() if not torch.isfinite(value).all()]:
        raise UserError(
            f"{source} holds weights that are not finite numbers (NaN or infinite, in {', '.join(broken[:3])}): "
            "such a model classifies nothing. Use a checkpoint saved before its run diverged."
        )
    return model
