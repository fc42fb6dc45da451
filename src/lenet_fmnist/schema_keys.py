"""The keys a composed config has that its schema lacks, and those of the schema it holds no value
for: Hydra accepts `+key=value` and `~key` even on a typed config, so `config.validate` asks here.
No torch."""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf


def unknown_keys(node: DictConfig, obj: Any, prefix: str = "") -> list[str]:
    """Keys in `node` that the dataclass `obj` has no field for (Hydra lets `+key=value` add them)."""
    names = {f.name: f for f in dataclasses.fields(obj)}
    unknown = []
    for key in node:
        if key not in names:
            unknown.append(f"{prefix}{key}")
        elif dataclasses.is_dataclass(getattr(obj, key)):
            unknown += unknown_keys(node[key], getattr(obj, key), f"{prefix}{key}.")
    return unknown


def absent_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys of the schema that `node` holds no value for: left ??? (a required value not given) or
    deleted with `~KEY` (OmegaConf would build the dataclass with ??? in their place), and keys
    added with `+KEY=???`."""
    schema = OmegaConf.get_type(node)
    names = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else []
    names += [name for name in node if name not in names]
    absent = []
    for name in names:
        if name not in node or OmegaConf.is_missing(node, name):
            absent.append(f"{prefix}{name}")
        elif OmegaConf.is_dict(node._get_node(name)):
            absent += absent_keys(node[name], f"{prefix}{name}.")
    return absent
