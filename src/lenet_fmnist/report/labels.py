"""What the report calls each configuration: its option of every config group (activation=relu,
...) and, under "settings", the other values in which it stands out (epochs=40, optimizer.lr=0.1).

A name must tell configurations apart without repeating what they share, so a value is shown
only against the configurations that share its group's option (Adam's lr 0.001 is Adam's, not a
setting), and an option whose values a configuration changed says so.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lenet_fmnist.report.configurations import Configuration
from lenet_fmnist.run.config_keys import flatten


def _option_values(options: Path, group: str, choice: str) -> dict[str, Any]:
    """The flattened values of options/<group>/<choice>.yaml ({} where there is no such file)."""
    path = options / group / f"{choice}.yaml"
    if not path.is_file():
        return {}
    values = OmegaConf.to_container(OmegaConf.load(path))
    values.pop("defaults", None)  # the option's schema, not a value
    return flatten({group: values})


def _changed_from_option(config: Configuration, option: dict[str, Any]) -> set[str]:
    """The keys of an option (its `_option_values`) whose value in the configuration differs: an
    experiment file may choose `dropout: none` and then set dropout.p (experiment=best does)."""
    return {key for key, value in option.items() if key in config.settings and config.settings[key] != value}


def _label_options(configs: list[Configuration], groups: list[str], options: Path) -> list[set[str]]:
    """Set each configuration's `labels` to its option of every group, "<option> (changed)" where
    it changed the option's values; returns those changed keys, configuration by configuration."""
    chosen = [{group: config.choice(group) for group in groups} for config in configs]
    pairs = dict.fromkeys(pair for choices in chosen for pair in choices.items())
    option_files = {pair: _option_values(options, *pair) for pair in pairs}  # each read once
    changed = []
    for config, choices in zip(configs, chosen, strict=True):
        keys = set().union(*(_changed_from_option(config, option_files[pair]) for pair in choices.items()))
        edited = {key.split(".", 1)[0] for key in keys}
        config.labels = {group: choice + (" (changed)" if group in edited else "") for group, choice in choices.items()}
        changed.append(keys)
    return changed


def _stands_out(config: Configuration, key: str, configs: list[Configuration], groups: list[str]) -> bool:
    """Whether the configuration's value of `key` is not the one most of its peers (those with its
    option of the key's group) share, or no value holds a majority among them."""
    if key not in config.settings:
        return False
    group = key.split(".", 1)[0]
    peers = [other for other in configs if group not in groups or other.labels[group] == config.labels[group]]
    counts = Counter(repr(other.settings.get(key)) for other in peers)
    if len(counts) < 2:  # all peers agree: nothing to tell apart
        return False
    common, count = counts.most_common(1)[0]
    return repr(config.settings[key]) != common or 2 * count <= len(peers)


def label(configs: list[Configuration], groups: list[str], options: Path) -> None:
    """Fill each configuration's `labels`: its option of every group, and under "settings" the
    other values in which it stands out (epochs=40, optimizer.lr=0.1, ...).

    A value is compared with the configurations that share its group's option (Adam's lr 0.001 is
    Adam's, not a setting), and shown where it differs from most of them; where no value holds a
    majority (a sweep over optimizer.lr), every configuration shows its own. An option whose values
    the configuration changed (`options`/<group>/<option>.yaml says what they were) reads
    "<option> (changed)", and the changed values are among its settings.
    """
    changed = _label_options(configs, groups, options)  # before _stands_out, which reads the labels
    keys = sorted({key for config in configs for key in config.settings})
    for config, own in zip(configs, changed, strict=True):
        shown = [key for key in keys if key in own or _stands_out(config, key, configs, groups)]
        extra = [f"{key}={config.settings[key]}" for key in shown]
        if not config.settings:
            extra.append(f"config unknown: {config.runs[0].path}")
        config.labels["settings"] = ", ".join(extra)
