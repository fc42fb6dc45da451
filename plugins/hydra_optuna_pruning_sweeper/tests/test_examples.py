"""The example apps (example/), run as a user runs them: `python example/APP.py -m ...` in a
subprocess from an empty directory, judged by what they leave (optimization_results.yaml, the
trials' run directories, search.md), their exit status and their messages. sphere.py,
multi-objective.py and custom-search-space-objective.py mirror upstream hydra-optuna-sweeper's
documented examples, and run with the command lines its docs give them (issue 31): the same
files, lines and exit status as upstream's."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_ok, output
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution

from optuna_pruning_sweeper.storage import read_location

EXAMPLE = Path(__file__).resolve().parents[1] / "example"
Example = Callable[..., subprocess.CompletedProcess[str]]  # (app, *overrides) -> the finished run


@pytest.fixture
def example(cli_env: dict[str, str], tmp_path: Path) -> Example:
    def run(app: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(EXAMPLE / app), "-m", *args]
        return subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=300)

    return run


def best_lines(text: str) -> dict[str, Any]:
    """What upstream's sweeper logs at a search's end, read back: `Best parameters: {...}` and
    `Best value: ...` (one objective), or the Pareto set's size and each solution's values and
    parameters (several)."""
    if found := re.findall(r"\] Best parameters: (.*)\n.*\] Best value: (.*)\n", text):
        ((params, value),) = found
        return {"name": "optuna", "best_params": ast.literal_eval(params), "best_value": float(value)}
    (count,) = re.findall(r"\] Number of Pareto solutions: (\d+)\n", text)
    solutions = re.findall(r"\]     Values: (\[.*\]), Params: (\{.*\})\n", text)
    assert len(solutions) == int(count), text
    return {
        "name": "optuna",
        "solutions": [{"params": ast.literal_eval(p), "values": ast.literal_eval(v)} for v, p in solutions],
    }


def assert_upstreams_shape(result: subprocess.CompletedProcess[str], sweep_dir: Path, n_trials: int = 20) -> Any:
    """Exit 0, a run directory per trial, optimization_results.yaml, and the lines upstream's
    sweeper ends with, saying what the file says; the file's content."""
    assert_ok(result)
    assert sorted(int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit()) == list(range(n_trials))
    results = OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))
    assert best_lines(result.stdout) == results, result.stdout
    return results


def trials(sweep_dir: Path) -> list[Any]:
    location = read_location(sweep_dir)
    assert location is not None, f"no search in {sweep_dir}"
    return location.load(sweep_dir).trials


@pytest.mark.slow
def test_the_sphere_with_upstreams_documented_config_finds_its_minimum(example: Example, tmp_path: Path) -> None:
    """conf/sphere.yaml is upstream's documented form: 20 TPE trials over a stepped float range
    and a choice; each trial's directory holds the values it ran; the results file is upstream's."""
    sweep_dir = tmp_path / "sweep"
    assert_upstreams_shape(example("sphere.py", f"hydra.sweep.dir={sweep_dir}"), sweep_dir)
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


# The command lines of upstream's docs page for example/sphere.py, besides the plain one above.
DOCUMENTED_SPHERE_SPACES = [
    ("x=interval(-5.0, 5.0)", "y=interval(0, 10)"),
    ("x=int(interval(-5.0, 5.0))", "y=tag(log, interval(1, 10))"),
    ("x=range(-5.0, 5.0)", "y=shuffle(range(-5, 5))"),
    ("x=choice(-5.0, 0.0, 5.0)", "y=choice(0, 1, 2, 3, 4, 5)"),
]


@pytest.mark.slow
@pytest.mark.parametrize("space", DOCUMENTED_SPHERE_SPACES, ids=lambda space: space[0].split("=")[1].split("(")[0])
def test_the_sphere_with_each_documented_space_gives_upstreams_results(
    example: Example, tmp_path: Path, space: tuple[str, str]
) -> None:
    sweep_dir = tmp_path / "sweep"
    summary = "hydra.sweeper.summary=false"  # upstream's files and lines come either way; the figures take time
    results = assert_upstreams_shape(
        example("sphere.py", "--multirun", *space, f"hydra.sweep.dir={sweep_dir}", summary), sweep_dir
    )
    x, y = results["best_params"]["x"], results["best_params"]["y"]
    assert results["best_value"] == x**2 + y**2


@pytest.mark.slow
def test_the_multi_objective_example_ends_with_its_pareto_set(example: Example, tmp_path: Path) -> None:
    """Upstream's documented command line: NSGA-II, two objectives; the ranges reach their ends."""
    sweep_dir = tmp_path / "sweep"
    results = assert_upstreams_shape(
        example("multi-objective.py", "--multirun", f"hydra.sweep.dir={sweep_dir}"), sweep_dir
    )
    assert results["solutions"], "an empty Pareto set"
    for solution in results["solutions"]:
        x, y = solution["params"]["x"], solution["params"]["y"]
        assert solution["values"] == [4 * (x**2 + y**2), (x - 5) ** 2 + (y - 5) ** 2]
    assert trials(sweep_dir)[0].distributions == {
        "x": FloatDistribution(0.0, 5.0, step=0.5),
        "y": FloatDistribution(0.0, 3.0, step=0.5),
    }


@pytest.mark.slow
def test_the_custom_search_space_example_adds_z_and_w(example: Example, tmp_path: Path) -> None:
    """Upstream's documented config: a module named with hyphens beside the app, a key with `+`."""
    sweep_dir = tmp_path / "sweep"
    result = example("custom-search-space-objective.py", "--multirun", f"hydra.sweep.dir={sweep_dir}")
    best = assert_upstreams_shape(result, sweep_dir)["best_params"]
    assert set(best) == {"x", "y", "z", "+w"} and abs(best["x"] - best["z"]) <= 0.5 and 0 <= best["+w"] <= 1


@pytest.mark.parametrize(
    ("app", "keys"),
    [
        ("sphere.py", "consider_prior prior_weight consider_magic_clip consider_endpoints n_startup_trials n_ei_candidates multivariate warn_independent_sampling"),
        ("multi-objective.py", "population_size mutation_prob crossover_prob swapping_prob constraints_func"),
    ],
)  # fmt: skip
def test_the_documented_sweeper_config_lists_upstreams_keys(cli_env: dict[str, str], app: str, keys: str) -> None:
    """`python example/APP.py hydra/sweeper=optuna --cfg hydra -p hydra.sweeper`, as upstream's docs
    show it: the sampler's keys as upstream names them, the documented values."""
    command = [sys.executable, str(EXAMPLE / app), "hydra/sweeper=optuna", "--cfg", "hydra", "-p", "hydra.sweeper"]
    result = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=120)
    assert_ok(result)
    shown = OmegaConf.create(result.stdout)
    assert set(keys.split()) <= set(shown.sampler) and shown.sampler.seed == 123 and shown.n_trials == 20


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
    result = example("sphere.py", "error=true", f"hydra.sweep.dir={sweep_dir}")
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
