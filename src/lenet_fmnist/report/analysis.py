"""Turn runs into the study's answers: configurations (seeds pooled) and each factor's effect.

A configuration is everything in a run's config except the seed and the keys that change only
speed. Runs are grouped by experiment first (Hydra's `experiment=` choice, else their sweep), and
inside an experiment the design is read off the configurations themselves:

- one factor varies (`experiment=activation`): every level against the base level;
- several vary, one at a time around a common centre (`experiment=study`): the same, per factor;
- several vary in a full grid (`experiment=factorial`): each factor's main effect.

The base level is the one in the sweep's first job: every conf/experiment/ file lists it first.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lenet_fmnist.report import stats
from lenet_fmnist.report.runs import COMPLETED, Run
from lenet_fmnist.run import validation
from lenet_fmnist.run.config_keys import RESULT_NEUTRAL_KEYS, flatten

# Keys that tell runs of one configuration apart (the seed), or change only where and how fast
# they run (dotted keys of the flattened config).
IGNORED = frozenset({"seed", *RESULT_NEUTRAL_KEYS})

# Per-run figures the report summarises: (key, heading). Accuracies and losses are metrics.json's
# (train and val at the best-validation epoch, test of that epoch's weights; without validation,
# the last epoch).
METRICS = (
    ("train_acc", "train acc"),
    ("val_acc", "val acc"),
    ("test_acc", "test acc"),
    ("test_loss", "test loss"),
    ("seconds_per_epoch", "s / epoch"),
    ("best_epoch", "best epoch"),
    ("epochs_to_99", "epochs to 99% val"),
)
# The figures whose differences between levels the report tests.
EFFECT_METRICS = (("test_acc", "test acc"), ("val_acc", "val acc"))
# The figures only a run with validation has: n/a for one without (data.val_size=0), never averaged.
VALIDATION_METRICS = frozenset({"val_acc", "epochs_to_99"})


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def epochs_to_fraction(history: list[dict[str, Any]], fraction: float = 0.99) -> float:
    """First epoch whose validation accuracy reaches `fraction` of the last epoch's: how fast a
    run got close to where it ended (NaN without a finite final accuracy)."""
    final = _number(history[-1].get("val_acc")) if history else math.nan
    if not math.isfinite(final):
        return math.nan
    for record in history:
        if _number(record.get("val_acc")) >= fraction * final:
            return float(record.get("epoch", history.index(record) + 1))
    return math.nan


def run_metrics(run: Run) -> dict[str, float]:
    """The METRICS of one run, NaN where it has none."""
    metrics, history = run.metrics, run.history
    seconds = [_number(record.get("seconds")) for record in history]
    per_epoch = stats.mean(seconds) if seconds else math.nan
    return {
        "train_acc": _number(metrics.get("train_acc")),
        "val_acc": _number(metrics.get("val_acc")),
        "test_acc": _number(metrics.get("test_acc")),
        "test_loss": _number(metrics.get("test_loss")),
        "seconds_per_epoch": per_epoch,
        "best_epoch": _number(metrics.get("best_epoch")),
        "epochs_to_99": epochs_to_fraction(history),
    }


def _settings(run: Run) -> dict[str, Any]:
    """The run's flattened configuration without the IGNORED keys; keys added since it ran at the
    defaults it ran with, so that it groups with a new run of the same configuration. A run that
    trained on a GPU also has `device: cuda`: a GPU computes other bits than a CPU, so its runs
    form configurations of their own (a run that recorded no device, which never trained, stays
    with the CPU's)."""
    config = run.config or {}
    settings = {key: value for key, value in flatten(config).items() if key not in IGNORED}
    if str(run.metrics.get("device", "")).startswith("cuda"):
        settings["device"] = "cuda"
    return settings


@dataclass
class Configuration:
    experiment: str
    settings: dict[str, Any]  # flattened config without IGNORED keys ({} when unknown)
    runs: list[Run]
    labels: dict[str, str] = field(default_factory=dict)  # column -> text, filled by `label`

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
        return [value for run in self.completed if math.isfinite(value := run_metrics(run)[metric])]

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


def _choice(configuration: Configuration, key: str) -> str:
    for run in configuration.runs:
        if key in run.choices:
            return run.choices[key]
    name = configuration.settings.get(f"{key}.name")
    return str(name) if name is not None else "?"


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


def label(configs: list[Configuration], groups: list[str], options: Path) -> None:
    """Fill each configuration's `labels`: its option of every group, and under "settings" the
    other values in which it stands out (epochs=40, optimizer.lr=0.1, ...).

    A value is compared with the configurations that share its group's option (Adam's lr 0.001 is
    Adam's, not a setting), and shown where it differs from most of them; where no value holds a
    majority (a sweep over optimizer.lr), every configuration shows its own. An option whose values
    the configuration changed (`options`/<group>/<option>.yaml says what they were) reads
    "<option> (changed)", and the changed values are among its settings.
    """
    keys = sorted({key for config in configs for key in config.settings})
    option_files: dict[tuple[str, str], dict[str, Any]] = {}  # each read once, however many configurations
    changed: dict[int, set[str]] = {}
    for config in configs:
        choices = {group: _choice(config, group) for group in groups}
        for chosen in choices.items():
            if chosen not in option_files:
                option_files[chosen] = _option_values(options, *chosen)
        changed[id(config)] = set().union(*(_changed_from_option(config, option_files[c]) for c in choices.items()))
        edited = {key.split(".", 1)[0] for key in changed[id(config)]}
        config.labels = {group: choice + (" (changed)" if group in edited else "") for group, choice in choices.items()}
    for config in configs:
        extra = []
        for key in keys:
            if key in changed[id(config)]:
                extra.append(f"{key}={config.settings[key]}")
                continue
            group = key.split(".", 1)[0]
            peers = [other for other in configs if group not in groups or other.labels[group] == config.labels[group]]
            counts = Counter(repr(other.settings.get(key)) for other in peers)
            if len(counts) < 2 or key not in config.settings:
                continue
            common, count = counts.most_common(1)[0]
            if repr(config.settings[key]) != common or 2 * count <= len(peers):
                extra.append(f"{key}={config.settings[key]}")
        if not config.settings:
            extra.append(f"config unknown: {config.runs[0].path}")
        config.labels["settings"] = ", ".join(extra)


@dataclass
class Level:
    label: str
    configurations: list[Configuration]
    effects: dict[str, stats.Interval] = field(default_factory=dict)  # metric -> vs base; {} for base
    holm: dict[str, float] = field(default_factory=dict)  # metric -> Holm-adjusted p over the experiment

    @property
    def runs(self) -> list[Run]:
        return [run for config in self.configurations for run in config.runs]

    @property
    def completed(self) -> list[Run]:
        return [run for config in self.configurations for run in config.completed]

    @property
    def validated(self) -> bool:
        """Whether any of its configurations validated (only those count in its validation figures)."""
        return any(config.validated for config in self.configurations)

    def values(self, metric: str) -> list[float]:
        return [value for config in self.configurations for value in config.values(metric)]


@dataclass
class Comparison:
    """One factor of one experiment: its levels, the base first, with effects against it."""

    factor: str
    design: str  # "one factor", "one factor at a time" or "factorial"
    levels: list[Level]


@dataclass
class ExperimentAnalysis:
    name: str
    design: str
    factors: list[str]
    comparisons: list[Comparison]
    note: str = ""


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
            blurred = [
                key
                for key in self.by_option
                if any(
                    self.vector(a) == self.vector(b) and a.value(key) != b.value(key)
                    for a, b in itertools.combinations(configs, 2)
                )
            ]
            if not blurred:  # only keys the report ignores tell them apart: nothing more to split
                break
            self.by_option -= set(blurred)
        self.factors = [key for key in self.keys if len({self.of(config, key) for config in configs}) > 1]

    def of(self, config: Configuration, key: str) -> Any:
        return _choice(config, key) if key in self.by_option else config.value(key)

    def vector(self, config: Configuration) -> tuple[Any, ...]:
        return tuple(self.of(config, key) for key in self.keys)

    def differences(self, config: Configuration, other: Configuration) -> list[str]:
        return [key for key in self.factors if self.of(config, key) != self.of(other, key)]

    def label(self, config: Configuration, factor: str, base: Configuration | None = None) -> str:
        """The level's name: the group's option or the key's value; with `base`, plus the settings
        that differ from the base although their group's option does not (sigmoid (optimizer.lr=0.1))."""
        if factor in self.by_option:
            text = _choice(config, factor)
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


def _welch_effects(level: Level, base: Level) -> dict[str, stats.Interval]:
    return {metric: stats.welch_interval(level.values(metric), base.values(metric)) for metric, _ in EFFECT_METRICS}


def _one_at_a_time(centre: Configuration, design: Design, kind: str) -> list[Comparison]:
    comparisons = []
    for factor in design.factors:
        members = [centre] + [
            config
            for config in design.configs
            if config is not centre and design.differences(config, centre) == [factor]
        ]
        levels = [Level(design.label(config, factor, centre), [config]) for config in members]
        levels[0].label = design.label(centre, factor)
        for level in levels[1:]:
            level.effects = _welch_effects(level, levels[0])
        comparisons.append(Comparison(factor, kind, levels))
    return comparisons


def _outcomes(design: Design, level: Level, others: list[str], metric: str) -> dict[tuple[Any, ...], float]:
    """A level's completed runs keyed by the other factors' levels and the seed, for pairing."""
    table = {}
    for config in level.configurations:
        for run in config.completed:
            value = run_metrics(run)[metric]
            if math.isfinite(value):
                table[(*(design.of(config, key) for key in others), repr(run.seed))] = value
    return table


def _factorial(design: Design, base: Configuration) -> list[Comparison]:
    """Main effects: for each factor and level, the mean difference from the base level over
    every combination of the other factors and seed, with a paired t interval. Pairing removes
    the other factors' (large) effects from the noise, which a plain two-group test would not."""
    comparisons = []
    for factor in design.factors:
        by_value: dict[Any, list[Configuration]] = {}
        for config in design.configs:
            by_value.setdefault(design.of(config, factor), []).append(config)
        reference = design.of(base, factor)
        order = [reference] + [value for value in by_value if value != reference]
        levels = [Level(design.label(by_value[value][0], factor), by_value[value]) for value in order]
        others = [key for key in design.factors if key != factor]
        for level in levels[1:]:
            for metric, _ in EFFECT_METRICS:
                mine, theirs = _outcomes(design, level, others, metric), _outcomes(design, levels[0], others, metric)
                level.effects[metric] = stats.paired_interval(
                    [mine[key] - theirs[key] for key in mine.keys() & theirs.keys()]
                )
        comparisons.append(Comparison(factor, "factorial", levels))
    return comparisons


def _full_grid(design: Design) -> bool:
    levels = [{design.of(config, key) for config in design.configs} for key in design.factors]
    present = {tuple(design.of(config, key) for key in design.factors) for config in design.configs}
    return len(present) == len(design.configs) and all(combo in present for combo in itertools.product(*levels))


def adjust_for_multiplicity(analysis: ExperimentAnalysis) -> ExperimentAnalysis:
    """Holm-adjust, per metric, the p-values of every level-vs-base effect of the experiment (the
    study's seven comparisons are one family): an effect that survives is unlikely to be one of
    the chance findings that seven tests at 5% would make now and then."""
    levels = [level for comparison in analysis.comparisons for level in comparison.levels if level.effects]
    for metric, _ in EFFECT_METRICS:
        adjusted = stats.holm([level.effects[metric].p if metric in level.effects else math.nan for level in levels])
        for level, p in zip(levels, adjusted, strict=True):
            level.holm[metric] = p
    return analysis


def analyse(name: str, configs: list[Configuration], groups: list[str]) -> ExperimentAnalysis:
    """Read the design of one experiment off its configurations and compare its levels."""
    known = sorted((config for config in configs if config.settings), key=lambda config: config.first_job)
    if len(known) < 2:
        return ExperimentAnalysis(name, "single configuration", [], [])
    design = Design(known, groups)
    base = known[0]  # the sweep's first job: every experiment lists its base levels first
    if len(design.factors) == 1:
        return ExperimentAnalysis(name, "one factor", design.factors, _one_at_a_time(base, design, "one factor"))
    if len(design.factors) > 1 and _full_grid(design):
        return ExperimentAnalysis(name, "factorial", design.factors, _factorial(design, base))
    # One factor at a time: a centre from which every other configuration differs in one factor.
    for centre in known:
        if all(len(design.differences(config, centre)) == 1 for config in known if config is not centre):
            kind = "one factor at a time"
            return ExperimentAnalysis(name, kind, design.factors, _one_at_a_time(centre, design, kind))
    varying = ", ".join(design.factors) or "nothing the report compares"
    return ExperimentAnalysis(
        name,
        "other",
        design.factors,
        [],
        note=f"its configurations vary {varying} neither one at a time nor in a full grid, so no effects "
        "are estimated; compare the rows of the table.",
    )


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
