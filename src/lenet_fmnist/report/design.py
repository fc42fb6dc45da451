"""An experiment's design, read off its configurations rather than declared anywhere:

- one factor varies (`experiment=activation`);
- several vary, one at a time around a common centre (`experiment=study`);
- several vary in a full grid (`experiment=factorial`).

effects.py then compares the levels the design finds.
"""

from __future__ import annotations

import itertools
from typing import Any

from lenet_fmnist.report.configurations import Configuration


def _top_keys(configs: list[Configuration]) -> list[str]:
    keys: list[str] = []
    for config in configs:
        for key in config.settings:
            top = key.split(".", 1)[0]
            if top not in keys:
                keys.append(top)
    return keys


class Design:
    """What tells an experiment's configurations apart, key by top-level key.

    A config group counts by its option (activation=sigmoid), so a setting that comes with a
    level, like the larger learning rate the sigmoid level trains with, belongs to that level
    instead of making a second factor. Where the option cannot tell two configurations apart
    (`-m optimizer.lr=0.01,0.1`, both sgd), the group counts by its values instead.
    """

    def __init__(self, configs: list[Configuration], groups: list[str]) -> None:
        self.configs, self.keys = configs, _top_keys(configs)
        self.by_option = {key for key in self.keys if key in groups}
        while len({self.vector(config) for config in configs}) < len(configs):
            blurred = self._blurred()
            if not blurred:  # only keys the report ignores tell them apart: nothing more to split
                break
            self.by_option -= blurred
        self.factors = [key for key in self.keys if len({self.of(config, key) for config in configs}) > 1]

    def _blurred(self) -> set[str]:
        """The groups whose option hides a difference: two configurations alike by every key but
        with other values under that group."""
        return {
            key
            for key in self.by_option
            if any(
                self.vector(a) == self.vector(b) and a.value(key) != b.value(key)
                for a, b in itertools.combinations(self.configs, 2)
            )
        }

    def of(self, config: Configuration, key: str) -> Any:
        return config.choice(key) if key in self.by_option else config.value(key)

    def vector(self, config: Configuration) -> tuple[Any, ...]:
        return tuple(self.of(config, key) for key in self.keys)

    def differences(self, config: Configuration, other: Configuration) -> list[str]:
        return [key for key in self.factors if self.of(config, key) != self.of(other, key)]

    def full_grid(self) -> bool:
        """Whether the configurations are every combination of the factors' levels, once each."""
        levels = [{self.of(config, key) for config in self.configs} for key in self.factors]
        present = {tuple(self.of(config, key) for key in self.factors) for config in self.configs}
        return len(present) == len(self.configs) and all(combo in present for combo in itertools.product(*levels))

    def centre(self) -> Configuration | None:
        """The configuration every other one differs from in one factor (None if there is none),
        the first such in sweep order."""
        for centre in self.configs:
            others = (config for config in self.configs if config is not centre)
            if all(len(self.differences(config, centre)) == 1 for config in others):
                return centre
        return None

    def label(self, config: Configuration, factor: str, base: Configuration | None = None) -> str:
        """The level's name: the group's option or the key's value; with `base`, plus the settings
        that differ from the base although their group's option does not (sigmoid (optimizer.lr=0.1))."""
        if factor in self.by_option:
            text = config.choice(factor)
        elif factor in config.settings:
            text = str(config.settings[factor])
        else:
            inner = [key for key in config.settings if key.startswith(factor + ".")]
            varying = [key for key in inner if len({repr(other.settings.get(key)) for other in self.configs}) > 1]
            text = "(" + ", ".join(f"{key[len(factor) + 1 :]}={config.settings[key]}" for key in varying) + ")"
        if base is None:
            return text
        extra = [
            f"{key}={value}"
            for key, value in config.settings.items()
            if key.split(".", 1)[0] != factor and repr(value) != repr(base.settings.get(key))
        ]
        return f"{text} ({', '.join(extra)})" if extra else text
