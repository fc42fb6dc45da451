"""Config keys as text: the keys that never change a run's results, the differences between two
configs, and the one parser of a command-line override's key.

The run directory, the report's pooling of runs, the search and the resume check read them from
here (conf/train.yaml repeats the result-neutral keys, and a test keeps the two in step). An
override is `key=value`, `+key=value` (add), `++key=value` (add or set) or `~key` (delete); Hydra's
own parser needs a config loader, so code that only sorts overrides by key (the resume hint, the
launchers, the search and its summary) reads them here. No torch, no Hydra.
"""

from __future__ import annotations

from typing import Any

# ---- config keys that never change results ---------------------------------------------------

# Where and how fast a run goes, never what it computes. Sweep sub-directory names leave them out
# (conf/train.yaml's exclude_keys, checked by a test), so a sweep run again with resume=true finds
# its jobs; the report pools runs that differ only in them.
RESULT_NEUTRAL_KEYS = ("resume", "device", "threads", "eval_batch_size", "data.root")
# A resumed run may change any of them; the device only within its kind (run.admission: CPU and
# CUDA draw different random numbers), e.g. device=auto to device=cpu on the same CPU. `threads`
# decides how many of a batch's shards are computed at once, never a bit (lenet_fmnist.training.step).


# Config nodes added to train since checkpoint format v2, with the values that runs saved before
# them had: such a run resumes, is evaluated and is pooled as if it had recorded them.
ADDED_KEYS: dict[str, Any] = {"model": {"name": "lenet5", "width": 1}, "swa": {"epochs": None}}


def with_added_keys(config: dict[str, Any]) -> dict[str, Any]:
    """`config` (a run's, as saved) with ADDED_KEYS filled in where it lacks them."""
    return {**ADDED_KEYS, **config}


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
    old, new = flatten(with_added_keys(saved)), flatten(with_added_keys(current))
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(old.keys() | new.keys())
        if key not in allowed and old.get(key) != new.get(key)
    ]


# ---- overrides -------------------------------------------------------------------------------

RESUME = "resume=true"


def key_of(override: str) -> str:
    """The config key an override is about: `+data.root=/x` -> `data.root`, `~seed` -> `seed`."""
    return override.split("=", 1)[0].lstrip("+~")


def sets_key(override: str, key: str) -> bool:
    """Whether the override (`key=v`, `+key=v`, `++key=v`, `~key`) is about `key`."""
    return key_of(override) == key


def with_resume(overrides: list[str]) -> list[str]:
    """The overrides with `resume=true` in place of any `resume` override they had."""
    return [override for override in overrides if not sets_key(override, "resume")] + [RESUME]
