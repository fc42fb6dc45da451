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


def paragraphs(text: str) -> list[str]:
    return [" ".join(block.split()) for block in text.split("\n\n") if block.strip()]


def test_a_search_without_parameters_runs_the_config_as_it_is(tmp_path: Path) -> None:
    """No params and no sweep on the command line: upstream runs n_trials trials of the config as
    it is (users start so, to check a set-up before adding parameters); a plain value given on the
    command line reaches every trial."""
    app = make_app(tmp_path, "return cfg.x * 2", "  sweeper:\n    n_trials: 3\n    summary: false\nx: 1.5\n")
    assert_ok(app.run("x=2.5"))
    study = journal_study(app.sweep_dir)
    assert states(study) == ["COMPLETE"] * 3
    assert [(t.params, t.value) for t in study.trials] == [({}, 5.0)] * 3
    results = OmegaConf.load(app.sweep_dir / "optimization_results.yaml")
    assert results == {"name": "optuna", "best_params": {}, "best_value": 5.0}


def test_tpes_documented_keys_reach_optuna(tmp_path: Path) -> None:
    """Upstream documents consider_prior, prior_weight and consider_magic_clip; Optuna 5 still takes
    them (and says itself that they are deprecated): a tuned config that sets them runs."""
    app = make_app(tmp_path, "return cfg.x", "  sweeper:\n    n_trials: 2\n    summary: false\n    params:\n      x: interval(0, 1)\nx: 0.0\n",
                   sampler="tpe")  # fmt: skip
    keys = ["consider_prior=true", "prior_weight=2.0", "consider_magic_clip=true"]
    result = app.run(*(f"hydra.sweeper.sampler.{key}" for key in keys))
    assert_ok(result)
    assert "TPESampler" in output(result)
    for key in ("consider_prior", "prior_weight", "consider_magic_clip"):
        assert f"`{key}`" in result.stderr, f"Optuna did not get {key}: {result.stderr}"  # Optuna's own warning
    assert states(journal_study(app.sweep_dir)) == ["COMPLETE"] * 2


def test_motpe_is_tpe_with_a_warning(tmp_path: Path) -> None:
    """Optuna 4 removed MOTPESampler; TPE, which handles several objectives, took its place (its
    n_ehvi_candidates is TPE's n_ei_candidates, as Optuna's last MOTPESampler passed it on)."""
    app = make_app(
        tmp_path,
        "return cfg.x, 1 - cfg.x",
        "  sweeper:\n    n_trials: 3\n    summary: false\n    direction: [minimize, minimize]\n    params:\n      x: interval(0, 1)\nx: 0.0\n",
        sampler="motpe",
    )
    result = app.run("hydra.sweeper.sampler.n_ehvi_candidates=12", "hydra.sweeper.sampler.seed=1")
    assert_ok(result)
    text = output(result)
    assert "TPESampler" in text and "MOTPESampler" in text, text
    (warning,) = [line for line in text.splitlines() if "MOTPESampler" in line]
    assert "TPESampler" in warning and "n_ei_candidates" in warning, warning
    assert states(journal_study(app.sweep_dir)) == ["COMPLETE"] * 3


def test_range_reaches_its_end_as_upstream_reads_it(tmp_path: Path) -> None:
    """range(1, 3) is 1, 2 and 3, and range(0.5, 1.5, step=0.5) reaches 1.5 (upstream's integer and
    discrete float distributions, end included); shuffle(range(1, 3)) is upstream's categorical
    of Hydra's range, 1 and 2. The grid runs every value of that space once."""
    app = make_app(
        tmp_path,
        "return cfg.x + cfg.y + cfg.z",
        "  sweeper:\n    summary: false\n    params:\n      x: range(1, 3)\n      y: range(0.5, 1.5, step=0.5)\n"
        "      z: shuffle(range(1, 3))\nx: 0\ny: 0.0\nz: 0\n",
        sampler="grid",
    )
    assert_ok(app.run())
    trials = journal_study(app.sweep_dir).trials
    assert trials[0].distributions == {
        "x": IntDistribution(1, 3),
        "y": FloatDistribution(0.5, 1.5, step=0.5),
        "z": CategoricalDistribution([1, 2]),
    }
    points = sorted((t.params["x"], t.params["y"], t.params["z"]) for t in trials)
    assert points == [(x, y, z) for x in (1, 2, 3) for y in (0.5, 1.0, 1.5) for z in (1, 2)]


SEARCH_SPACE = """\
  sweeper:
    n_trials: 2
    summary: false
    search_space:
      x: {type: float, low: -1.0, high: 1.0}
"""


@pytest.mark.parametrize("params", [False, True])
def test_the_deprecated_search_space_warns_as_python_warns(tmp_path: Path, params: bool) -> None:
    """A UserWarning, whenever search_space is set; with params set as well, it says that params
    alone are searched, and they are."""
    config = SEARCH_SPACE + ("    params:\n      y: choice(1, 2)\n" if params else "") + "x: 0.0\ny: 1\n"
    app = make_app(tmp_path, "return cfg.x + cfg.y", config)
    result = app.run()
    assert_ok(result)
    (warning,) = [line for line in result.stderr.splitlines() if "UserWarning" in line]
    assert "hydra.sweeper.search_space" in warning and "hydra.sweeper.params" in warning, warning
    searched = {key for trial in journal_study(app.sweep_dir).trials for key in trial.params}
    assert searched == ({"y"} if params else {"x"})
    assert ("searches hydra.sweeper.params only" in warning) == params, warning


FAILING = """\
if cfg.x < 0:
    raise RuntimeError("cfg.error is True")
raise ValueError(f"x={cfg.x} is too large")
"""


def test_a_search_stopped_by_failures_says_why_on_stderr(tmp_path: Path) -> None:
    """Two trials of one batch fail for two causes: stderr holds one paragraph per cause, each
    naming its trial and the task's error, as upstream's stderr holds the error; no traceback."""
    app = make_app(tmp_path, FAILING, "  sweeper:\n    n_jobs: 2\n    params:\n      x: choice(-1, 1)\nx: 0\n",
                   sampler="grid")  # fmt: skip
    result = app.run()
    assert_one_paragraph_error(result)
    said = paragraphs(result.stderr)
    trials = {t.params["x"]: t.number for t in journal_study(app.sweep_dir).trials}
    assert f"trial {trials[-1]}: RuntimeError: cfg.error is True" in said, said
    assert f"trial {trials[1]}: ValueError: x=1 is too large" in said, said
    assert any("max_failure_rate=0.0" in paragraph for paragraph in said), said
    assert "max_failure_rate" not in result.stdout, result.stdout  # stdout keeps the trials' own lines
    assert "Error executing job" not in result.stderr, result.stderr  # Hydra's line per failed job says less


def test_a_search_in_which_no_trial_completed_exits_1(tmp_path: Path) -> None:
    """max_failure_rate=1.0 lets every trial fail; a search without one complete trial has no
    result: exit 1, with one message that says so and where the trials' errors are."""
    app = make_app(tmp_path, 'raise RuntimeError("cfg.error is True")',
                   "  sweeper:\n    n_trials: 3\n    max_failure_rate: 1.0\n    params:\n      x: interval(0, 1)\nx: 0.0\n")  # fmt: skip
    result = app.run()
    text = assert_one_paragraph_error(result)
    assert states(journal_study(app.sweep_dir)) == ["FAIL"] * 3
    (message,) = [paragraph for paragraph in paragraphs(result.stderr) if "No trial completed" in paragraph]
    assert "all 3 trials failed" in message and str(app.sweep_dir / "search.md") in message, message
    assert text.count("No trial completed") == 1, text
    assert not (app.sweep_dir / "optimization_results.yaml").exists()
    assert "- trial 2: RuntimeError: cfg.error is True" in (app.sweep_dir / "search.md").read_text()
