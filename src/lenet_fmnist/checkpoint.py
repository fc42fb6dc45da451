"""Checkpoints: plain containers of tensors and Python values, written atomically and read back
with `weights_only=True`, so loading a file never runs code from it."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from lenet_fmnist.errors import UserError
from lenet_fmnist.model import LeNet5
from lenet_fmnist.storage import write_atomic

FORMAT = "lenet_fmnist.checkpoint.v1"


def save(path: Path, state: dict[str, Any]) -> None:
    write_atomic(path, lambda handle: torch.save({"format": FORMAT, **state}, handle))


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save`, or raise UserError saying why the file is not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(
            f"checkpoint={str(path)!r} does not exist or is not a file: give the path of a best.pt or last.pt written by a training run."
        )
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
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is a PyTorch file but not a lenet_fmnist checkpoint (format {FORMAT} expected).")
    return state


def model_from(state: dict[str, Any], source: str | Path) -> LeNet5:
    """The LeNet-5 described by the checkpoint's config, with its weights loaded strictly."""
    config = state.get("config", {})
    try:
        model = LeNet5(config["activation"]["name"], config["pool"]["name"], config["dropout"]["p"])
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as error:
        # load_state_dict lists each missing key and size mismatch on its own line: one paragraph.
        detail = " ".join(line.strip() for line in str(error).strip().splitlines())
        raise UserError(
            f"{source} does not hold weights of this LeNet-5 (another architecture or a damaged file): {detail}"
        ) from None
    return model
