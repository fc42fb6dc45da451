"""Runs grouped into configurations: everything in a run's config but the seed and the keys that
change only speed, so that a configuration's runs are its seeds and their figures pool.

Runs are grouped by experiment first (Hydra's `experiment=` choice, else their sweep), in the
order their sweeps ran them; a configuration's `labels` are filled later (labels.label).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lenet_fmnist.report.runs import COMPLETED, Run
from lenet_fmnist.run import validation
from lenet_fmnist.run.config_keys import RESULT_NEUTRAL_KEYS, flatten, with_added_keys

# Keys that tell runs of one configuration apart (the seed), or change only where and how fast
# they run (dotted keys of the flattened config).
IGNORED = frozenset({"seed", *RESULT_NEUTRAL_KEYS})


def _settings(run: Run) -> dict[str, Any]:
    """The run's flattened configuration without the IGNORED keys; keys added since it ran at the
    defaults it ran with, so that it groups with a new run of the same configuration. A run that
    trained on a GPU also has `device: cuda`: a GPU computes other bits than a CPU, so its runs
    form configurations of their own (a run that recorded no device, which never trained, stays
    with the CPU's)."""
    config = with_added_keys(run.config) if run.config else {}
    settings = {key: value for key, value in flatten(config).items() if key not in IGNORED}
    if str(run.metrics.get("device", "")).startswith("cuda"):
        settings["device"] = "cuda"
    return settings


@dataclass
class Configuration:
    experiment: str
    settings: dict[str, Any]  # flattened config without IGNORED keys ({} when unknown)
    runs: list[Run]
    labels: dict[str, str] = field(default_factory=dict)  # column -> text, filled by labels.label

    @property
    def completed(self) -> list[Run]:
        return [run for run in self.runs if run.status == COMPLETED]

    @property
    def validated(self) -> bool:
        """False when its runs had no validation (data.val_size=0): its VALIDATION_METRICS are n/a."""
        return all(validation.validates(run.config) for run in self.runs)

    @property
    def first_job(self) -> float:
        nums = [run.job_num for run in self.runs if run.job_num is not None]
        return min(nums) if nums else math.inf

    def values(self, metric: str) -> list[float]:
        """The metric over completed runs, NaNs left out."""
        return [value for run in self.completed if math.isfinite(value := run.measures[metric])]

    def status_text(self) -> str:
        counts: dict[str, int] = {}
        for run in self.runs:
            counts[run.status] = counts.get(run.status, 0) + 1
        warned = sum(1 for run in self.runs if run.warnings)
        return ", ".join(f"{count} {status}" for status, count in counts.items()) + (
            f" ({warned} with warnings)" if warned else ""
        )

    def value(self, key: str) -> Any:
        """The configuration's value of a top-level key: a scalar, or its subtree's items."""
        if key in self.settings:
            return self.settings[key]
        return tuple(sorted((name, repr(value)) for name, value in self.settings.items() if name.startswith(key + ".")))

    def choice(self, group: str) -> str:
        """The option it chose of a config group (Hydra's record, else the group's `name`; "?")."""
        for run in self.runs:
            if group in run.choices:
                return run.choices[group]
        name = self.settings.get(f"{group}.name")
        return str(name) if name is not None else "?"


def configurations(runs: Iterable[Run]) -> list[Configuration]:
    """Runs grouped by experiment and configuration, in the order their sweeps ran them. A run
    without a readable config is a configuration of its own: it cannot be matched to others."""
    groups: dict[tuple[str, Any], Configuration] = {}
    for run in runs:
        settings = _settings(run)
        identity = tuple(sorted((key, repr(value)) for key, value in settings.items())) if settings else str(run.path)
        key = (run.experiment, identity)
        if key not in groups:
            groups[key] = Configuration(run.experiment, settings, [])
        groups[key].runs.append(run)
    return list(groups.values())


def group_keys(runs: Iterable[Run]) -> list[str]:
    """Top-level config keys chosen through a Hydra config group (activation, pool, ...), in the
    config's own order: the report's columns."""
    keys: list[str] = []
    for run in runs:
        for key in run.config or {}:
            if key in run.choices and key not in keys and key not in IGNORED:
                keys.append(key)
    return keys


def duplicates(configs: list[Configuration]) -> list[str]:
    """Configurations with the same seed run more than once (e.g. a sweep repeated): their
    results are counted twice, so the report says so."""
    notes = []
    for config in configs:
        seeds = [repr(run.seed) for run in config.completed]
        repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if repeated:
            paths = [str(run.path) for run in config.completed if repr(run.seed) in repeated]
            notes.append(f"seed(s) {', '.join(repeated)} ran more than once: {', '.join(paths)}")
    return notes
