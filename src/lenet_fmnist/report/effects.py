"""Each factor's effect in one experiment: its levels against the base level, with 95% intervals
and p-values, Holm-adjusted over the experiment.

The design (design.py) decides the comparison: one factor, or several one at a time, compare each
level with the base by Welch's interval over seeds; a full grid compares main effects, paired over
the other factors and the seed. The base level is the one in the sweep's first job: every
conf/experiment/ file lists it first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lenet_fmnist.report import stats
from lenet_fmnist.report.configurations import Configuration
from lenet_fmnist.report.design import Design
from lenet_fmnist.report.measures import EFFECT_METRICS
from lenet_fmnist.report.runs import Run


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
            value = run.measures[metric]
            if math.isfinite(value):
                table[(*(design.of(config, key) for key in others), repr(run.seed))] = value
    return table


def _paired_effects(design: Design, level: Level, base: Level, factor: str) -> dict[str, stats.Interval]:
    """A level's main effects: the mean of its differences from the base level over every
    combination of the other factors and seed, with a paired t interval. Pairing removes the other
    factors' (large) effects from the noise, which a plain two-group test would not."""
    others = [key for key in design.factors if key != factor]
    effects = {}
    for metric, _ in EFFECT_METRICS:
        mine, theirs = _outcomes(design, level, others, metric), _outcomes(design, base, others, metric)
        effects[metric] = stats.paired_interval([mine[key] - theirs[key] for key in mine.keys() & theirs.keys()])
    return effects


def _factorial(design: Design, base: Configuration) -> list[Comparison]:
    """Main effects of a full grid: per factor, each level against the base configuration's."""
    comparisons = []
    for factor in design.factors:
        by_value: dict[Any, list[Configuration]] = {}
        for config in design.configs:
            by_value.setdefault(design.of(config, factor), []).append(config)
        reference = design.of(base, factor)
        order = [reference] + [value for value in by_value if value != reference]
        levels = [Level(design.label(by_value[value][0], factor), by_value[value]) for value in order]
        for level in levels[1:]:
            level.effects = _paired_effects(design, level, levels[0], factor)
        comparisons.append(Comparison(factor, "factorial", levels))
    return comparisons


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
    if len(design.factors) > 1 and design.full_grid():
        return ExperimentAnalysis(name, "factorial", design.factors, _factorial(design, base))
    if (centre := design.centre()) is not None:
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
