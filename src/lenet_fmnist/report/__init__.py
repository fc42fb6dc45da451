"""The report side: read finished (and unfinished) runs and turn them into the study's answers.

Reading and analysing, each step on the one before:

- runs.py: find run directories and read what each recorded;
- measures.py: each run's figures (accuracies, losses, speed, convergence), computed once per run;
- configurations.py: runs grouped into configurations, seeds pooled;
- labels.py: each configuration's name: its options, and the settings where it stands out;
- design.py: an experiment's design (one factor, one at a time, full grid) read off its configurations;
- effects.py: each factor's levels against the base, with intervals and Holm-adjusted p-values;
- stats.py: means, standard deviations, Student t intervals and p-values (no scipy);
- analysis.py: the whole `Report` of some directories, from runs to effects.

Putting it into words and files:

- tables.py: the configurations and effects tables (markdown) and report.csv;
- document.py: report.md;
- figures.py: the curves (matplotlib);
- search_summary.py: a search directory's search.md, from the sweeper's package when installed;
- writer.py: the `report` command, which writes all of it and prints the tables.

Nothing here imports torch (a test checks it): a report does not wait for it.
"""

from lenet_fmnist.report.writer import main

__all__ = ["main"]
