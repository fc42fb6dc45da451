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
from lenet_fmnist.run.errors import UserError
from lenet_fmnist.run.storage import write_atomic

# v2: a step's arithmetic no longer depends on the thread count (training.step), so a v1 run would
# resume with other bits; v1 also recorded a thread count that nothing reads any more.
FORMAT = "lenet_fmnist.checkpoint.v2"
# The key of the weight average's state (a dict: "model", its state dict, and "updates"), present
# only in checkpoints of runs with ema.decay set.
EMA = "ema"


def save(path: Path, state: dict[str, Any]) -> None:
    write_atomic(path, lambda handle: torch.save({"format": FORMAT, **state}, handle))


MISSING_HINT = "give the path of a best.pt or last.pt written by a training run."


def load(
    path: str | Path, map_location: str | torch.device = "cpu", *, key: str = "checkpoint", hint: str = MISSING_HINT
) -> dict[str, Any]:
    """Read a checkpoint written by `save`, or raise UserError saying why the file is not one; a
    missing file is named as the config `key` that gave it, with `hint` saying what to do."""
    path = Path(path).expanduser()
    if not path.is_file():
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


def evaluated_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights that validation, the test, `eval`, `predict` and `export` use: the moving
    average's when the run kept one (ema.decay; the checkpoint's EMA entry, written by
    averaging.WeightAverage.state_dict), else the trained weights ("model")."""
    average = state.get(EMA)
    return average["model"] if average is not None else state["model"]


def weights_used(state: dict[str, Any]) -> str:
    """Which weights `evaluated_weights` gives, in words (logs, eval.json, export's sidecar)."""
    if state.get(EMA) is None:
        return "the trained weights"
    decay = state.get("config", {}).get("ema", {}).get("decay")
    return f"the exponential moving average of the weights (ema.decay={decay})"


def model_from(state: dict[str, Any], source: str | Path) -> LeNet5:
    """The LeNet-5 described by the checkpoint's config, with its evaluated weights (the moving
    average's when it has one) loaded strictly."""
    config = state.get("config", {})
    try:
        model = LeNet5(config["activation"]["name"], config["pool"]["name"], config["dropout"]["p"])
        model.load_state_dict(evaluated_weights(state))
    except (KeyError, TypeError, RuntimeError) as error:
        # load_state_dict lists each missing key and size mismatch on its own line: one paragraph.
        detail = " ".join(line.strip() for line in str(error).strip().splitlines())
        raise UserError(
            f"{source} does not hold weights of this LeNet-5 (another architecture or a damaged file): {detail}"
        ) from None
    return model
