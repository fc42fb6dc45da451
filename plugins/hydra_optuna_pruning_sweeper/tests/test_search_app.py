"""The sweeper as any Hydra user meets it: tests/search_app/app.py, a small app of our own, run in
a subprocess with `-m` through the installed plugin (hydra/sweeper=optuna), with upstream's
documented keys: the sampler group, one and two objectives, a conditional space, a task that
raises, lightning-hydra-template's hparams_search form, pruning from the task, resuming, bad
input, and optuna-dashboard watching a live search. Skipped without Optuna.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_ok, output
from live_dashboard import processes, start_dashboard, wait_until  # noqa: F401  (processes: a fixture)
from omegaconf import OmegaConf

from optuna_pruning_sweeper.storage import read_location

APP = Path(__file__).resolve().parent / "search_app" / "app.py"


@dataclass
class App:
    env: dict[str, str]
    cwd: Path

    def command(self, args: tuple[str, ...]) -> list[str]:
        return [sys.executable, str(APP), "-m", *args]

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(args), cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as handle:
            return subprocess.Popen(self.command(args), cwd=self.cwd, env=self.env, stdout=handle, stderr=handle)


@pytest.fixture(scope="session")
def search_app(cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> App:
    """The app, started from an empty directory."""
    return App(cli_env, tmp_path_factory.mktemp("app_cwd"))


def study_of(sweep_dir: Path) -> Any:
    location = read_location(sweep_dir)
    assert location is not None, f"no search.json in {sweep_dir}"
    return location.load(sweep_dir)


def trial_states(sweep_dir: Path) -> list[str]:
    """The states of the search's trials so far; none before it has a study."""
    location = read_location(sweep_dir)
    return [] if location is None else [trial.state.name for trial in location.load(sweep_dir).trials]


def job_config(sweep_dir: Path, number: int) -> Any:
    """What the trial's job ran with (a plain app's run directories are named by job number)."""
    return OmegaConf.load(sweep_dir / str(number) / ".hydra" / "config.yaml")


def test_a_quadratic_is_minimised_through_the_sampler_group(search_app: App, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = search_app.run(f"hydra.sweep.dir={sweep_dir}")
    assert_ok(result)
    assert "TPESampler" in output(result)

    study = study_of(sweep_dir)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 30
    for trial in study.trials:  # the task ran the recorded values exactly: its value says so
        x, y = trial.params["x"], trial.params["y"]
        assert isinstance(y, int) and trial.value == (x - 2) ** 2 + (y + 1) ** 2
    assert study.best_value < 0.05 and study.best_params["y"] == -1  # the minimum is 0 at (2, -1)
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results == {"name": "optuna", "best_params": study.best_params, "best_value": study.best_value}
    summary = (sweep_dir / "search.md").read_text()
    assert f"Best: trial {study.best_trial.number}, value {study.best_value:.6g}" in summary
    assert f"python {APP} x={study.best_params['x']!r} y=-1" in summary


def test_two_objectives_with_nsgaii_give_a_pareto_set(search_app: App, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = search_app.run("--config-name", "two_objectives", f"hydra.sweep.dir={sweep_dir}")
    assert_ok(result)
    assert "NSGAIISampler" in output(result)

    study = study_of(sweep_dir)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 24
    solutions = OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))["solutions"]
    assert solutions, "an empty Pareto set"

    def dominated(values: list[float]) -> bool:
        return any(all(o <= v for o, v in zip(t.values, values, strict=True)) and t.values != values for t in complete)

    for solution in solutions:
        x = solution["params"]["x"]
        assert solution["values"] == [x**2, (x - 2) ** 2]
        assert not dominated(solution["values"]), solution
    pareto = [t for t in complete if not dominated(t.values)]
    assert sorted(s["params"]["x"] for s in solutions) == sorted(t.params["x"] for t in pareto)
    assert (sweep_dir / "search_pareto.png").stat().st_size > 0


def test_a_conditional_space_through_custom_search_space(search_app: App, tmp_path: Path) -> None:
    """configure() suggests a degree for the poly model only, and derives scale from x."""
    sweep_dir = tmp_path / "sweep"
    assert_ok(search_app.run("--config-name", "conditional", f"hydra.sweep.dir={sweep_dir}"))

    study = study_of(sweep_dir)
    models = {t.params["model"] for t in study.trials}
    assert models == {"linear", "poly"}, "both branches were tried"
    for trial in study.trials:
        poly = trial.params["model"] == "poly"
        assert ("degree" in trial.params) == poly
        config = job_config(sweep_dir, trial.number)
        assert config.degree == (trial.params["degree"] if poly else 1)
        assert config.scale == 2 * trial.params["x"]
        assert trial.value == config.x * config.scale + config.degree


def test_a_task_that_raises_fails_its_trial_with_its_message(search_app: App, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = search_app.run(
        "task=failing", "hydra.sweeper.n_trials=6", "hydra.sweeper.max_failure_rate=1.0", f"hydra.sweep.dir={sweep_dir}"
    )
    assert_ok(result)  # failures allowed: the search ran to its end

    study = study_of(sweep_dir)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed and len(failed) < 6
    assert all(t.params["x"] > 0 for t in failed)
    summary = (sweep_dir / "search.md").read_text()
    for trial in failed:
        message = f"ValueError: x={trial.params['x']!r} is beyond what this app accepts (x <= 0)"
        assert f"Trial {trial.number} failed: {message}" in output(result)
        assert f"- trial {trial.number}: {message}" in summary
    assert f"{len(failed)} trial(s) failed; search.md lists them" in output(result)


def test_a_lightning_hydra_template_hparams_search_config_loads_and_runs(search_app: App, tmp_path: Path) -> None:
    """Its form: `# @package _global_`, the sweeper and sampler chosen in its defaults, upstream's
    class named as _target_, hydra.mode MULTIRUN (no -m needed), params, optimized_metric."""
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, str(APP), "--config-name", "lightning", "hparams_search=optuna", f"hydra.sweep.dir={sweep_dir}"],
        cwd=search_app.cwd, env=search_app.env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert_ok(result)

    study = study_of(sweep_dir)
    assert study.direction.name == "MAXIMIZE" and len(study.trials) == 6
    assert {t.params["data.batch_size"] for t in study.trials} <= {32, 64, 128, 256}
    assert OmegaConf.load(sweep_dir / "optimization_results.yaml").best_value == study.best_value


def test_a_task_reports_through_current_trial_and_is_pruned(search_app: App, tmp_path: Path) -> None:
    """The median pruner after one complete trial: a trial whose reported value falls behind the
    complete ones' at a step raises optuna.TrialPruned and ends pruned, not failed."""
    sweep_dir = tmp_path / "sweep"
    result = search_app.run(
        "task=reporting", "hydra/sweeper/sampler=random", "hydra.sweeper.n_trials=8", "hydra.sweeper.pruner_startup_trials=1",
        "hydra.sweeper.pruner_warmup_epochs=0", f"hydra.sweep.dir={sweep_dir}",
    )  # fmt: skip
    assert_ok(result)

    study = study_of(sweep_dir)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert pruned and complete and len(pruned) + len(complete) == 8
    for trial in pruned:  # stopped early, at a step where it was worse than the complete trials' median
        step = max(trial.intermediate_values)
        assert step < 5
        assert trial.intermediate_values[step] > min(t.intermediate_values[step] for t in complete)
    assert all(sorted(t.intermediate_values) == [1, 2, 3, 4, 5] for t in complete)


def test_a_search_with_shuffle_resumes_and_a_second_start_is_refused(search_app: App, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    args = ("x=shuffle(range(-3, 4))", f"hydra.sweep.dir={sweep_dir}")
    assert_ok(search_app.run(*args, "hydra.sweeper.n_trials=2"))

    again = search_app.run(*args, "hydra.sweeper.n_trials=4", "+resume=true")
    assert_ok(again)
    assert len(study_of(sweep_dir).trials) == 4

    refused = search_app.run(*args, "hydra.sweeper.n_trials=5")
    assert refused.returncode == 1 and "Traceback" not in output(refused)
    assert f"in {sweep_dir / 'optuna.journal'} already holds 4 trial(s)" in output(refused)
    assert len(study_of(sweep_dir).trials) == 4


def test_a_task_that_raises_stop_search_stops_it_and_resume_asks_its_trial_again(
    search_app: App, tmp_path: Path
) -> None:
    sweep_dir, release = tmp_path / "sweep", tmp_path / "release"
    args = ("task=stopping", "hydra.sweeper.n_trials=2", f"release={release}", f"hydra.sweep.dir={sweep_dir}")
    stopped = search_app.run(*args)
    text = output(stopped)
    assert stopped.returncode == 1 and "Traceback" not in text, text
    assert "A trial stopped the search: trial 0: no space left on the device" in text, text
    assert trial_states(sweep_dir) == ["FAIL"]

    release.touch()
    assert_ok(search_app.run(*args, "+resume=true"))
    trials = study_of(sweep_dir).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].params == trials[0].params, "the stopped trial's values, asked again"


def test_check_config_refuses_before_any_trial_with_the_apps_message(search_app: App, tmp_path: Path) -> None:
    """The space's corners include x=-5 (interval(-5, 5)'s low end): refused before anything is written."""
    sweep_dir = tmp_path / "sweep"
    result = search_app.run("hydra.sweeper.check_config=app.refuse_far_x", f"hydra.sweep.dir={sweep_dir}")
    text = output(result)
    assert result.returncode == 1 and "Traceback" not in text, text
    assert "x=-5.0 is beyond what this app can run (|x| <= 4)" in text, text
    assert not sweep_dir.exists() or not any(sweep_dir.iterdir())

    assert_ok(
        search_app.run(
            "hydra.sweeper.check_config=app.refuse_far_x",
            "x=interval(-4, 4)",
            "hydra.sweeper.n_trials=2",
            f"hydra.sweep.dir={sweep_dir}",
        )
    )
    assert trial_states(sweep_dir) == ["COMPLETE", "COMPLETE"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("task=none", "The task returned None (NoneType); for hydra.sweeper.direction=minimize"),
        ("task=string", "The task returned '0.5' (str)"),
        ("hydra.sweeper.direction=upwards", "hydra.sweeper.direction=upwards is not allowed: it must be minimize or"),
        ("hydra.sweeper.max_failure_rate=1.5", "hydra.sweeper.max_failure_rate=1.5 is not allowed"),
        ("hydra.sweeper.custom_search_space=nowhere.configure", "custom_search_space=nowhere.configure cannot be used"),
        ("hydra.sweeper.custom_search_space=app.NOT_A_FUNCTION", "NOT_A_FUNCTION is a int, not a function"),
        ("hydra.sweeper.check_config=nowhere.check", "check_config=nowhere.check cannot be used"),
        ("hydra/sweeper/sampler=annealing", "Could not find 'hydra/sweeper/sampler/annealing'"),
        ("hydra.sweeper.sampler=random", "the sampler is the config group hydra/sweeper/sampler"),
        ("hydra/sweeper/sampler=grid", "grid needs a finite set of values, but x is a continuous range"),
    ],
)
def test_bad_input_is_one_paragraph_and_exit_1(search_app: App, tmp_path: Path, change: str, expected: str) -> None:
    result = search_app.run(change, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    text = output(result)
    assert result.returncode == 1, text
    assert "Traceback" not in text and 'File "' not in text, text
    assert expected in text, text
    errors = [line for line in text.splitlines() if expected in line]
    assert len(errors) == 1, text  # said once, on one line


# ---------------------------------------------------------------------------------------------
# optuna-dashboard on a live search


def test_the_dashboard_shows_a_live_searchs_journal(
    search_app: App,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    """Trial 0 completes; trial 1 waits for a file: while it waits, the dashboard reading the
    journal shows the one complete, with its reported values, and the other running."""
    pytest.importorskip("optuna_dashboard", reason="needs the `dashboard` extra")
    sweep_dir, release = tmp_path / "sweep", tmp_path / "release"
    search = search_app.start(
        "task=reporting", "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=none", f"release={release}",
        f"hydra.sweep.dir={sweep_dir}", log=tmp_path / "search.log",
    )  # fmt: skip
    processes.append(search)
    wait_until(lambda: trial_states(sweep_dir) == ["COMPLETE", "RUNNING"], "trial 1 to wait")

    dashboard = start_dashboard(str(sweep_dir / "optuna.journal"), tmp_path / "dashboard.log", search_app.env)
    processes.append(dashboard.process)
    detail = dashboard.study("quadratic")
    assert [trial["state"] for trial in detail["trials"]] == ["Complete", "Running"]
    assert len(detail["trials"][0]["intermediate_values"]) == 5
    assert detail["trials"][0]["values"] == [study_of(sweep_dir).trials[0].value]

    release.touch()
    assert search.wait(timeout=120) == 0, (tmp_path / "search.log").read_text()
    wait_until(lambda: dashboard.trial_states("quadratic") == ["Complete", "Complete"], "the dashboard to update")
