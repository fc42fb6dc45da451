"""The report side: read finished (and unfinished) runs and turn them into the study's answers.

- runs.py: find run directories and read what each recorded;
- analysis.py: group runs into configurations and compare the levels of each factor;
- stats.py: means, standard deviations and Student t intervals;
- figures.py: the curves (matplotlib);
- writer.py: report.md, report.csv and the `report` command;
- search_summary.py: a search directory's search.md, from the sweeper's package when installed.

Nothing here imports torch (a test checks it): a report does not wait for it.
"""

from lenet_fmnist.report.writer import main

__all__ = ["main"]
