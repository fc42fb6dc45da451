"""A hyperparameter search's own summary: search.md, search.csv and its figures, for a directory
the report reads that holds a search (run.files.SEARCH_FILE).

The sweeper's package writes them (optuna_pruning_sweeper.summary.write, its public API). It is
optional (plugins/hydra_optuna_pruning_sweeper with the `search` extra), so it is imported only
when a search is found; without it the report says how to install it, in one paragraph.
"""

from __future__ import annotations

from pathlib import Path

from lenet_fmnist.run.errors import UserError


def write(directory: Path) -> Path:
    """search.md, search.csv and the figures of the search in `directory`; returns search.md's path."""
    try:
        from optuna_pruning_sweeper import SweeperError, summary
    except ImportError:
        raise UserError(
            f"{directory} holds a hyperparameter search; its summary needs the sweeper: pip install "
            "'lenet-fmnist[search]' ./plugins/hydra_optuna_pruning_sweeper. report.md above covers its runs."
        ) from None
    try:
        return summary.write(directory)
    except SweeperError as error:  # e.g. an unreadable search.json: the sweeper's own one paragraph
        raise UserError(str(error)) from None
