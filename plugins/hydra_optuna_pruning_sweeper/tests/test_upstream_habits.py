"""What a user who swaps upstream's hydra-optuna-sweeper for this one meets (issue 31): upstream's
configs and habits, each in a small plain Hydra app run as `python app.py -m ...`, as a user runs
it. Upstream's documented examples, with their documented command lines, are test_examples.py's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_ok, output
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from plain_app import assert_one_paragraph_error, journal_study, make_app, states

pytestmark = pytest.mark.slow


def test_a_search_without_parameters_runs_the_config_as_it_is(tmp_path: Path) -> None:
    """No params and no sweep on the command line: upstream runs n_trials trials of the config as
    it is (users start so, to check a set-up before adding parameters); a plain value given on the
    command line reaches every trial."""
    app = make_app(tmp_path, "return cfg.x * 2", "  sweeper:\n    n_trials: 3\nx: 1.5\n")
    assert_ok(app.run("x=2.5"))
    study = journal_study(app.sweep_dir)
    assert states(study) == ["COMPLETE"] * 3
    assert [(t.params, t.value) for t in study.trials] == [({}, 5.0)] * 3
    results = OmegaConf.load(app.sweep_dir / "optimization_results.yaml")
    assert results == {"name": "optuna", "best_params": {}, "best_value": 5.0}
