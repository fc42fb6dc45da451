"""Turn the runs under some directories into the study's answers, the `Report` that tables.py,
document.py and writer.py put into words and files:

runs (runs.py) -> configurations, seeds pooled (configurations.py) -> their names (labels.py)
-> per experiment, its design (design.py) and each factor's effects (effects.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lenet_fmnist.report import configurations, effects, labels, runs
from lenet_fmnist.report.configurations import Configuration
from lenet_fmnist.report.effects import ExperimentAnalysis
from lenet_fmnist.report.runs import COMPLETED, Run


@dataclass
class Report:
    directories: list[Path]
    runs: list[Run]
    groups: list[str]  # config-group columns (activation, pool, ...)
    configurations: list[Configuration]
    experiments: list[ExperimentAnalysis]

    # The runs to look at, which report.md lists and the command counts.

    @property
    def unfinished(self) -> list[Run]:
        return [run for run in self.runs if run.status != COMPLETED]

    @property
    def warned(self) -> list[Run]:
        return [run for run in self.runs if run.warnings]

    @property
    def not_validated(self) -> list[Run]:
        """The runs without validation (data.val_size=0), whose validation figures read n/a."""
        return [run for config in self.configurations if not config.validated for run in config.runs]


def build(directories: list[Path], options: Path) -> Report:
    """The report of the runs under `directories`; `options` is the config directory whose group
    files (options/<group>/<option>.yaml) name what each run chose (labels.label)."""
    found = runs.load_all(directories)
    groups = configurations.group_keys(found)
    configs = configurations.configurations(found)
    labels.label(configs, groups, options)
    names = list(dict.fromkeys(config.experiment for config in configs))
    experiments = [
        effects.adjust_for_multiplicity(
            effects.analyse(name, [config for config in configs if config.experiment == name], groups)
        )
        for name in names
    ]
    return Report(directories, found, groups, configs, experiments)
