"""The README's example apps (example/), run as a user runs them: `python example/APP.py -m ...` in
a subprocess from an empty directory, judged by what they leave (optimization_results.yaml, the
trials' run directories, search.md), their exit status and their messages."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_ok, output
from omegaconf import OmegaConf

from optuna_pruning_sweeper.study import read_location

EXAMPLE = Path(__file__).resolve().parents[1] / "example"
Example = Callable[..., subprocess.CompletedProcess[str]]  # (app, *overrides) -> the finished run


@pytest.fixture
def example(cli_env: dict[str, str], tmp_path: Path) -> Example:
    def run(app: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(EXAMPLE / app), "-m", *args]
        return subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=300)

    return run


def trials(sweep_dir: Path) -> list[Any]:
    location = read_location(sweep_dir)
    assert location is not None, f"no search in {sweep_dir}"
    return location.load(sweep_dir).trials


@pytest.mark.slow
def test_the_sphere_with_upstreams_documented_config_finds_its_minimum(example: Example, tmp_path: Path) -> None:
    """conf/sphere.yaml is upstream's documented form: 20 TPE trials over a stepped float range
    and a choice; each trial's directory holds the values it ran; the results file is upstream's."""
    sweep_dir = tmp_path / "sweep"
    assert_ok(example("sphere.py", f"hydra.sweep.dir={sweep_dir}"))
    done = trials(sweep_dir)
    assert [t.state.name for t in done] == ["COMPLETE"] * 20
    for trial in done:
        ran = OmegaConf.load(sweep_dir / str(trial.number) / ".hydra" / "config.yaml")
        assert (ran.x, ran.y) == (trial.params["x"], trial.params["y"])
        assert trial.value == ran.x**2 + ran.y**2
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    best = min(done, key=lambda t: t.value)
    assert results == {"name": "optuna", "best_params": best.params, "best_value": best.value}
    assert results.best_params.y == 0, "y=0 is the best of choice(-5, 0, 5), and 20 trials find it"


@pytest.mark.slow
def test_a_grid_runs_each_point_once_and_stops(example: Example, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = example("sphere.py", "hydra/sweeper/sampler=grid", "x=range(-1, 2)", f"hydra.sweep.dir={sweep_dir}")
    assert_ok(result)
    points = sorted((t.params["x"], t.params["y"]) for t in trials(sweep_dir))
    assert points == sorted((x, y) for x in (-1, 0, 1, 2) for y in (-5, 0, 5)), "each of the 12 points, once"
    assert "12 trials" in output(result)


@pytest.mark.slow
def test_a_failing_task_fails_its_trial_and_stops_the_search_with_one_paragraph(
    example: Example, tmp_path: Path
) -> None:
    """max_failure_rate 0 (upstream's default): the first failed batch stops the search, exit 1,
    the task's message in the log and in search.md, no traceback."""
    sweep_dir = tmp_path / "sweep"
    result = example("sphere.py", "fail=true", f"hydra.sweep.dir={sweep_dir}")
    text = output(result)
    assert result.returncode == 1 and "Traceback" not in text, text
    (trial,) = trials(sweep_dir)
    message = f"RuntimeError: asked to fail at x={trial.params['x']}, y={trial.params['y']}"
    assert trial.state.name == "FAIL" and f"Trial 0 failed: {message}" in text
    assert "max_failure_rate=0.0" in text
    assert f"- trial 0: {message}" in (sweep_dir / "search.md").read_text()
    assert not (sweep_dir / "optimization_results.yaml").exists(), "nothing completed"


@pytest.mark.slow
def test_a_task_prunes_itself_through_current_trial(example: Example, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    assert_ok(example("pruning.py", f"hydra.sweep.dir={sweep_dir}"))
    done = trials(sweep_dir)
    pruned = [t for t in done if t.state.name == "PRUNED"]
    complete = [t for t in done if t.state.name == "COMPLETE"]
    assert pruned and complete and len(done) == 12
    assert all(sorted(t.intermediate_values) == [1, 2, 3, 4, 5] for t in complete)
    assert all(max(t.intermediate_values) < 5 for t in pruned), "stopped before the last epoch"
    assert (sweep_dir / "optimization_results.yaml").exists()


def test_the_pruning_example_runs_alone_without_a_search(cli_env: dict[str, str], tmp_path: Path) -> None:
    """Without -m, current_trial() is None and the task runs as a plain Hydra app."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "pruning.py"), f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert_ok(result)
    assert not (tmp_path / "run" / "search.json").exists()
