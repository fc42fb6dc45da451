"""The config keys that never change a run's results, and the names by which a search finds its
trials, written once.

The run directory, the report's pooling of runs, the search and the resume check read them from
here (conf/train.yaml repeats the keys, and a test keeps the two in step). This module must not
import torch (the report and `--help` do not wait for it) nor Hydra.
"""

from __future__ import annotations

from typing import Any

# A sweep directory holding this file holds a hyperparameter search (hydra/sweeper=optuna): the
# sweeper (optuna_pruning_sweeper.names.SEARCH_FILE, an optional package) writes it there.
SEARCH_FILE = "search.json"


# ---- config keys that never change results ---------------------------------------------------

# Where and how fast a run goes, never what it computes. Sweep sub-directory names leave them out
# (conf/train.yaml's exclude_keys, checked by a test), so a sweep run again with resume=true finds
# its jobs; the report pools runs that differ only in them.
RESULT_NEUTRAL_KEYS = ("resume", "device", "threads", "eval_batch_size", "data.root")
# A resumed run may change any of them; the device only within its kind (rundir.check_device_kind:
# CPU and CUDA draw different random numbers), e.g. device=auto to device=cpu on the same CPU.
# `threads` decides how many of a batch's shards are computed at once, never a bit (lenet_fmnist.step).
RESUMABLE_CHANGES = RESULT_NEUTRAL_KEYS


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys ({"data": {"root": x}} -> {"data.root": x})."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return flat


def config_changes(saved: dict[str, Any], current: dict[str, Any], allowed: tuple[str, ...]) -> list[str]:
    """The differences between two configs, as `key: old -> new`, leaving out the `allowed` keys."""
    old, new = flatten(saved), flatten(current)
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(old.keys() | new.keys())
        if key not in allowed and old.get(key) != new.get(key)
    ]
