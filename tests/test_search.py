"""Hyperparameter search: `train -m hydra/sweeper=optuna` (the `search` extra) through the basic and
joblib launchers on tiny synthetic data, pruning, resuming a killed search, the summary, the
LeNet rules (validation accuracy to maximise, no search without validation), and bad inputs.
Skipped without the sweeper (pip install -e ./plugins/hydra_optuna_pruning_sweeper -e '.[search]').
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from conftest import (
    CLI,
    REPO,
    assert_clear_failure,
    assert_imports_no_torch,
    assert_ok,
    output,
    read_metrics,
    run_each,
    wait_for,
)

SWEEPER_MISSING = "needs the sweeper: pip install -e ./plugins/hydra_optuna_pruning_sweeper -e '.[search]'"
pytest.importorskip("optuna_pruning_sweeper", reason=SWEEPER_MISSING)
optuna = pytest.importorskip("optuna", reason=SWEEPER_MISSING)

from optuna_pruning_sweeper.study import read_location  # noqa: E402  (after the skip)

LR_SPACE = "optimizer.lr=tag(log, interval(0.001, 0.3))"


NO_ENQUEUED = "hydra.sweeper.enqueue_trials=[]"  # experiment=search's enqueued start-up points: none


def search_args(data: Path, sweep_dir: Path, *extra: str, val_size: int = 64, epochs: int = 2) -> list[str]:
    """A small search on synthetic data: 4 trials over activation and a log-scale learning rate."""
    return [
        "train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize", "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler.seed=0",
        "activation=relu,tanh", LR_SPACE, f"epochs={epochs}", f"data.root={data}", f"data.val_size={val_size}",
        "device=cpu", "threads=1", f"hydra.sweep.dir={sweep_dir}", *extra,
    ]  # fmt: skip


def study_of(sweep_dir: Path) -> Any:
    location = read_location(sweep_dir)
    assert location is not None, f"no search.json in {sweep_dir}"
    return location.load(sweep_dir)


def trial_dirs(sweep_dir: Path) -> dict[int, Path]:
    """The trials' run directories by trial number (their names start with it)."""
    return {int(path.name.split("_", 1)[0]): path for path in sweep_dir.iterdir() if (path / ".hydra").is_dir()}


def states(study: Any) -> list[str]:
    return [trial.state.name for trial in study.trials]


def check_objective(sweep_dir: Path) -> None:
    """Every complete trial's value is its run's best validation accuracy; the best trial is the best run."""
    study, runs = study_of(sweep_dir), trial_dirs(sweep_dir)
    complete = [trial for trial in study.trials if trial.state.name == "COMPLETE"]
    for trial in complete:
        metrics = read_metrics(runs[trial.number])
        assert metrics["status"] == "completed"
        assert trial.value == metrics["val_acc"]  # the validation accuracy, never the test accuracy
    best_val = max(read_metrics(runs[trial.number])["val_acc"] for trial in complete)
    assert study.best_value == best_val


# ---------------------------------------------------------------------------------------------
# The ready search


def test_the_ready_search_space_has_the_issue_ranges_and_every_corner_composes() -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.optuna_pruning_sweeper import optuna_pruning_sweeper as plugin
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna_pruning_sweeper.space import parse_space, trial_overrides

    from lenet_fmnist import config
    from lenet_fmnist.cli import config_dir
    from lenet_fmnist.config import TrainConfig, validate

    config.register()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=search"], return_hydra_config=True)
        assert cfg.hydra.sweeper._target_ == "hydra_plugins.optuna_pruning_sweeper.optuna_pruning_sweeper.OptunaSweeper"
        assert cfg.hydra.sweeper.check_config == "lenet_fmnist.launch.search_trial.check_search_config"
        params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
        space = parse_space(OverridesParser.create().parse_overrides(params), cfg)
        found = space.distributions
        assert found["optimizer.lr"] == FloatDistribution(0.0003, 0.3, log=True)
        assert found["optimizer.weight_decay"] == FloatDistribution(1e-6, 0.01, log=True)
        assert found["dropout.p"] == FloatDistribution(0.0, 0.5)
        assert found["augmentation.max_shift"] == IntDistribution(0, 2)
        assert found["batch_size"] == CategoricalDistribution([64, 128, 256])
        assert found["augmentation.flip"] == CategoricalDistribution([True, False])
        assert found["augmentation.erase_p"] == FloatDistribution(0.0, 0.8)
        assert found["augmentation.erase_max_area"] == FloatDistribution(0.05, 0.4)
        assert found["augmentation.test_flip"] == CategoricalDistribution([True, False])
        assert found["label_smoothing"] == FloatDistribution(0.0, 0.2)
        assert found["ema.decay"] == CategoricalDistribution([None, 0.99, 0.999, 0.9995])
        assert {key for key, d in found.items() if isinstance(d, CategoricalDistribution)} >= {
            "activation", "pool", "optimizer"
        }  # fmt: skip
        # The issue's budget: at least 30 epochs for a completed trial; cosine to 0 at its end.
        assert space.fixed == ["optimizer.schedule=cosine", "optimizer.warmup_epochs=1"] and cfg.epochs >= 30
        for point in plugin._corners(space):  # what the sweeper checks before training anything
            job = compose("train", overrides=["experiment=search", *trial_overrides(space, point)])
            validate(job, TrainConfig)


def test_the_ready_search_restates_no_sweeper_default() -> None:
    """conf/experiment/search.yaml sets only what differs from the sweeper's and the sampler's
    defaults, so the two cannot drift apart."""
    from hydra_plugins.optuna_pruning_sweeper.config import OptunaSweeperConf, TPESamplerConf

    ready = OmegaConf.load(REPO / "conf" / "experiment" / "search.yaml").hydra.sweeper
    sweeper = OmegaConf.structured(OptunaSweeperConf)
    defaults = {key: sweeper[key] for key in sweeper if key not in ("_target_", "_recursive_", "defaults", "sampler")}
    tpe = OmegaConf.structured(TPESamplerConf)
    for key, value in ready.items():
        if key == "sampler":
            restated = [k for k, v in value.items() if tpe.get(k) == v]
            assert not restated, f"search.yaml restates the TPE sampler's defaults: {restated}"
        elif key != "params":
            default = defaults[key]
            assert value != (default.value if hasattr(default, "value") else default), f"search.yaml restates {key}"


# ---------------------------------------------------------------------------------------------
# Searches through the launchers


def test_a_search_through_the_basic_launcher(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "search"
    result = cli.run(*search_args(tiny_data, sweep_dir))
    assert_ok(result)

    study = study_of(sweep_dir)
    assert states(study) == ["COMPLETE"] * 4
    assert study.direction.name == "MAXIMIZE"
    assert sorted(trial_dirs(sweep_dir)) == [0, 1, 2, 3]
    check_objective(sweep_dir)
    for trial in study.trials:  # the run directory carries the sampled values, not the fixed ones
        name = trial_dirs(sweep_dir)[trial.number].name
        assert f"activation={trial.params['activation']}" in name and "epochs=" not in name
    for trial in study.trials:  # what ran is what the study recorded: the sampled rate, not rounded
        config = OmegaConf.load(trial_dirs(sweep_dir)[trial.number] / ".hydra" / "config.yaml")
        assert (
            config.optimizer.lr == trial.params["optimizer.lr"] and config.activation.name == trial.params["activation"]
        )
        assert "optimizer.lr" not in trial_dirs(sweep_dir)[trial.number].name  # floats in full stay out of names
    summary = (sweep_dir / "search.md").read_text()
    best = study.best_trial
    assert f"Best: trial {best.number}, val_acc {best.value:.6g}" in summary
    (command,) = [line for line in summary.splitlines() if line.startswith("lenet-fmnist train ")]
    assert f" optimizer.lr={best.params['optimizer.lr']!r}" in command and "hydra." not in command
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results.best_value == best.value and results.best_params == best.params
    assert len((sweep_dir / "search.csv").read_text().splitlines()) == 5
    assert (sweep_dir / "search_history.png").stat().st_size > 0
    assert (sweep_dir / "search_importance.png").stat().st_size > 0


def test_a_search_through_joblib_runs_a_trial_per_core_at_once(
    sweep_env: dict[str, str], tiny_data: Path, tmp_path: Path
) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="needs the `cluster` extra")
    joblib = pytest.importorskip("joblib")
    if joblib.cpu_count() < 2:
        pytest.skip("needs two cores to run two trials at once")
    sweep_dir = tmp_path / "search"
    cli = CLI(sweep_env, tmp_path)
    result = cli.run(*search_args(tiny_data, sweep_dir, "hydra/launcher=joblib"))
    assert_ok(result)
    # joblib's own n_jobs (-1, every core) sets how many trials run at once, as joblib counts cores.
    assert f"{joblib.cpu_count()} at once" in output(result)

    study = study_of(sweep_dir)
    assert states(study) == ["COMPLETE"] * 4
    check_objective(sweep_dir)
    # One batch of two processes: each run started (Hydra wrote its config) before the other ended
    # (its final metrics.json); one after the other, the second would start after the first ended.
    runs = trial_dirs(sweep_dir)
    started = {n: (runs[n] / ".hydra" / "config.yaml").stat().st_mtime for n in (0, 1)}
    ended = {n: (runs[n] / "metrics.json").stat().st_mtime for n in (0, 1)}
    assert started[1] < ended[0] and started[0] < ended[1]


def test_a_pruned_trial_stops_keeps_its_checkpoints_and_is_not_a_failure(
    cli: CLI, plain_data: Path, tmp_path: Path
) -> None:
    """The median pruner after one complete trial, from epoch 1: a learning rate that learns
    nothing in an epoch is pruned there, once a trial that learns has completed."""
    sweep_dir = tmp_path / "search"
    args = search_args(
        plain_data, sweep_dir, "hydra.sweeper.pruner_startup_trials=1", "hydra.sweeper.pruner_warmup_epochs=0",
        "hydra/sweeper/sampler=random", "optimizer.lr=0.1,0.00000001", val_size=256, epochs=2,
    )  # fmt: skip
    args.remove(LR_SPACE)
    result = cli.run(*args)
    assert_ok(result)

    study, runs = study_of(sweep_dir), trial_dirs(sweep_dir)
    pruned = [trial for trial in study.trials if trial.state.name == "PRUNED"]
    assert pruned, f"nothing was pruned: {[(t.params, t.intermediate_values) for t in study.trials]}"
    for trial in pruned:
        metrics = read_metrics(runs[trial.number])
        assert metrics["status"] == "pruned"
        assert metrics["epochs_completed"] == 1 and metrics["test_acc"] is None
        assert (runs[trial.number] / "checkpoints" / "last.pt").is_file()
        assert (runs[trial.number] / "checkpoints" / "best.pt").is_file()
        # The median pruner's rule: worse at epoch 1 than the complete trials were there.
        complete = [t.intermediate_values[1] for t in study.trials if t.state.name == "COMPLETE"]
        assert trial.intermediate_values[1] < max(complete)
    assert "pruned after epoch 1" in output(result)
    assert "did not complete" not in output(result)

    report = cli.run("report", str(sweep_dir))
    assert_ok(report)
    summary = (sweep_dir / "report.md").read_text()
    pruned_run = runs[pruned[0].number].name
    assert f"| {pruned_run} | pruned |" in summary
    assert "| failed |" not in summary
    assert f"| {pruned[0].number} | pruned |" in (sweep_dir / "search.md").read_text()


def test_a_killed_search_resumes_without_rerunning_finished_trials(cli: CLI, plain_data: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "search"
    args = search_args(plain_data, sweep_dir, "hydra.sweeper.pruner=none", val_size=256, epochs=2)
    log = tmp_path / "first.log"
    process = cli.start(*args, log=log)

    def two_done_and_a_third_started() -> bool:
        runs = trial_dirs(sweep_dir) if sweep_dir.is_dir() else {}
        done = [
            n
            for n, path in runs.items()
            if (path / "metrics.json").is_file() and read_metrics(path)["status"] == "completed"
        ]
        return len(done) >= 2 and len(runs) >= 3

    wait_for(two_done_and_a_third_started, process, log)
    process.send_signal(signal.SIGKILL)  # a dead search: no handler runs
    process.wait()
    before = {n: (path / "metrics.json").read_bytes() for n, path in trial_dirs(sweep_dir).items() if n < 2}
    left_running = [trial.number for trial in study_of(sweep_dir).trials if trial.state.name == "RUNNING"]

    again = cli.run(*args, "resume=true")
    assert_ok(again)

    study = study_of(sweep_dir)
    finished = [trial for trial in study.trials if trial.state.name == "COMPLETE"]
    assert len(finished) == 4
    assert [trial.number for trial in finished][:2] == [0, 1]
    for number, content in before.items():  # the first two trials were not run again
        assert (trial_dirs(sweep_dir)[number] / "metrics.json").read_bytes() == content
    for number in left_running:  # marked failed, and their values asked again
        assert study.trials[number].state.name == "FAIL"
        assert any(trial.user_attrs.get("retry_of") == number for trial in finished)
        assert f"- trial {number}: left running by a search that stopped" in (sweep_dir / "search.md").read_text()
    assert "Launching 1 jobs" in output(again) and "#0 :" not in output(again) and "#1 :" not in output(again)
    check_objective(sweep_dir)

    # The same directory with another space: refused, and nothing of the search is touched.
    journal = (sweep_dir / "optuna.journal").read_bytes()
    changed = [arg for arg in args if arg != "activation=relu,tanh"] + ["activation=relu,sigmoid", "resume=true"]
    refused = cli.run(*changed)
    assert refused.returncode == 1 and "Traceback" not in output(refused)
    assert "search space differs" in output(refused) and "activation" in output(refused)
    assert (sweep_dir / "optuna.journal").read_bytes() == journal


def test_a_failed_trial_stops_the_search_and_says_why(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    """A value only the trainer refuses (momentum 1.5): the trial's task raises, so the trial fails
    with the task's message (in the log and search.md, no traceback); with max_failure_rate 0 (the
    default) the search stops after that batch with one paragraph."""
    sweep_dir = tmp_path / "search"
    result = cli.run(*search_args(tiny_data, sweep_dir, "hydra.sweeper.n_trials=2", "optimizer.momentum=1.5"))
    text = output(result)
    assert result.returncode == 1 and "Traceback" not in text, text
    assert "Trial 0 failed: UserError: Invalid configuration: optimizer.momentum=1.5 is not allowed" in text
    assert "max_failure_rate=0.0" in text and "resume=true" in text
    assert states(study_of(sweep_dir)) == ["FAIL"]
    summary = (sweep_dir / "search.md").read_text()
    assert (
        "| 0 | failed |" in summary
        and "- trial 0: UserError: Invalid configuration: optimizer.momentum=1.5 is not allowed" in summary
    )
    assert not (sweep_dir / "optimization_results.yaml").exists()  # nothing completed


def test_lenet_train_refuses_to_minimise_its_accuracy(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    """Its objective is an accuracy: a search that minimises it fails at the first trial, saying so."""
    sweep_dir = tmp_path / "search"
    args = [a for a in search_args(tiny_data, sweep_dir, "hydra.sweeper.n_trials=1") if "direction" not in a]
    result = cli.run(*args)
    assert result.returncode == 1 and "Traceback" not in output(result), output(result)
    assert "set hydra.sweeper.direction=maximize" in output(result)
    assert not list(sweep_dir.glob("0_*/metrics.json")), "no epoch was trained"


# ---------------------------------------------------------------------------------------------
# The plugin without Optuna, and from a built wheel


def test_the_search_side_imports_no_torch() -> None:
    """Hydra imports the plugin at every start, and `report` reads searches: neither waits for torch."""
    assert_imports_no_torch(
        "import hydra_plugins.optuna_pruning_sweeper.optuna_pruning_sweeper, optuna_pruning_sweeper.sweep\n"
        "import optuna_pruning_sweeper.summary, lenet_fmnist.launch.search_trial, lenet_fmnist.report.writer"
    )


def test_without_the_sweeper_lenet_defines_no_search_and_warns_nothing(cli: CLI) -> None:
    """lenet_fmnist without the sweeper's package (its `search` extra not installed): it starts
    without warnings, and hydra/sweeper=optuna is an option Hydra does not know."""
    hide = (
        "import sys; sys.modules['optuna_pruning_sweeper'] = sys.modules['hydra_plugins.optuna_pruning_sweeper'] = None; "
        "from lenet_fmnist.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    common = [sys.executable, "-W", "error", "-c", hide, "train"]
    plain = subprocess.run(
        [*common, "--cfg", "job"], env=cli.env, cwd=cli.cwd, capture_output=True, text=True, timeout=60
    )
    assert plain.returncode == 0 and plain.stderr == "", plain.stderr
    asked = subprocess.run(
        [*common, "hydra/sweeper=optuna", "--cfg", "hydra"], env=cli.env, cwd=cli.cwd, capture_output=True, text=True, timeout=60
    )  # fmt: skip
    assert asked.returncode == 1 and "Could not find 'hydra/sweeper/optuna'" in asked.stderr


def test_a_search_runs_from_a_built_wheel_with_the_sweeper_beside_it(
    cli: CLI, tiny_data: Path, built_wheel: Path, tmp_path: Path
) -> None:
    """lenet_fmnist's wheel ships experiment=search but not the sweeper, which is its own
    distribution (plugins/hydra_optuna_pruning_sweeper, installed in this venv)."""
    with zipfile.ZipFile(built_wheel) as archive:
        names = archive.namelist()
        assert "lenet_fmnist/conf/experiment/search.yaml" in names
        assert not [name for name in names if "optuna" in name], "the sweeper is its own distribution"
        archive.extractall(tmp_path / "site")
    env = {**cli.env, "PYTHONPATH": str(tmp_path / "site")}
    sweep_dir = tmp_path / "search"
    args = search_args(tiny_data, sweep_dir, "hydra.sweeper.n_trials=1", epochs=1)
    result = subprocess.run(
        [sys.executable, "-m", "lenet_fmnist", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )  # fmt: skip
    assert_ok(result)
    assert str(tmp_path / "site" / "lenet_fmnist") in json.dumps(
        subprocess.run(
            [sys.executable, "-c", "import lenet_fmnist.launch.search_trial as m; print(m.__file__)"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        ).stdout
    )  # fmt: skip
    assert [trial.state.name for trial in study_of(sweep_dir).trials] == ["COMPLETE"]


# ---------------------------------------------------------------------------------------------
# Bad input: one paragraph naming the value, exit 1, no traceback, nothing lost


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (["hydra.sweeper.n_trial=3"], "n_trial"),
        (["hydra.sweeper.n_trials=0"], "n_trials=0 is not allowed"),
        (["hydra.sweeper.n_jobs=0"], "n_jobs=0 is not allowed"),
        (["hydra.sweeper.sampler=grid"], "the sampler is the config group hydra/sweeper/sampler"),
        (["augmentation.max_shift=interval(0, 2)"], "write int(interval(0, 2))"),
        (["optimizer.lr=interval(0.3, 0.1)"], "needs low < high"),
        (["optimizer.lr=tag(log, interval(0, 0.1))"], "touches or crosses 0"),
        (["optimizer.lrate=0.1,0.2"], "optimizer.lrate"),
        (["activation=relu,swish"], "swish"),
    ],
)
def test_bad_search_input_is_refused(
    cli: CLI, tiny_data: Path, tmp_path: Path, change: list[str], expected: str
) -> None:
    sweep_dir = tmp_path / "search"
    args = [arg for arg in search_args(tiny_data, sweep_dir) if arg != LR_SPACE] + change
    result = cli.run(*args)
    assert result.returncode == 1, output(result)
    assert "Traceback" not in output(result)
    assert expected in output(result)
    assert not (sweep_dir / "optuna.journal").exists() or not trial_dirs(sweep_dir)


def test_a_search_without_validation_is_refused_before_any_trial(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    """data.val_size=0 on the command line, in the config (a user's experiment) or as a value of
    the space: the objective and the pruner read validation accuracy, so experiment=search's
    check_config (or the same key given by hand) stops the search before any trial with one
    paragraph and exit 1 (all three in one process: run_each)."""
    experiments = tmp_path / "conf" / "experiment"
    experiments.mkdir(parents=True)
    (experiments / "final_fit.yaml").write_text("# @package _global_\ndata:\n  val_size: 0\n")

    def args(name: str, *extra: str) -> list[str]:
        kept = [arg for arg in search_args(tiny_data, tmp_path / name) if not arg.startswith("data.val_size=")]
        return [*kept, *extra]

    check = "hydra.sweeper.check_config=lenet_fmnist.launch.search_trial.check_search_config"
    cases = {
        # experiment=search's start-up points name activations this narrowed space lacks: dropped.
        "command line": args("line", "experiment=search", "data.val_size=0", NO_ENQUEUED),
        "config": ["train", "--config-dir", str(tmp_path / "conf"), *args("config", "experiment=final_fit", check)[1:]],
        "space": args("space", "experiment=search", "data.val_size=choice(64, 0)", NO_ENQUEUED),
    }
    for name, (code, text) in zip(cases, run_each(cli, list(cases.values())), strict=True):
        assert_clear_failure(
            subprocess.CompletedProcess(cases[name], code, text, ""),
            r"data.val_size=0 holds out no validation images, but a hyperparameter search .* chooses and prunes",
        )
        assert code == 1, f"{name}: {text}"
        sweep_dir = tmp_path / {"command line": "line"}.get(name, name)
        assert not (sweep_dir / "optuna.journal").exists() and not trial_dirs(sweep_dir), name


def test_a_trial_a_custom_space_sets_without_validation_fails_before_training(
    cli: CLI, tiny_data: Path, tmp_path: Path
) -> None:
    """A custom search space may set data.val_size=0 per trial, which the sweeper cannot see
    beforehand: the trial fails with the same paragraph before it trains, and the search says why."""
    (tmp_path / "final_fit_space.py").write_text("def configure(cfg, trial):\n    return {'data.val_size': 0}\n")
    sweep_dir = tmp_path / "search"
    custom = ("hydra.sweeper.n_trials=1", "hydra.sweeper.custom_search_space=final_fit_space.configure")
    args = [arg for arg in search_args(tiny_data, sweep_dir, *custom) if not arg.startswith("data.val_size=")]
    env = {**cli.env, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "lenet_fmnist", *args], cwd=cli.cwd, env=env, capture_output=True, text=True, timeout=180
    )  # fmt: skip
    text = output(result)
    assert result.returncode == 1 and "Traceback" not in text, text
    assert "trial 0: UserError: data.val_size=0 holds out no validation images, but a hyperparameter search" in text, (
        text
    )
    assert states(study_of(sweep_dir)) == ["FAIL"]
    assert not list(sweep_dir.rglob("metrics.json")), "no epoch was trained"


@pytest.mark.parametrize("problem", ["corrupt", "unwritable"])
def test_a_bad_storage_is_refused_and_left_as_it_was(cli: CLI, tiny_data: Path, tmp_path: Path, problem: str) -> None:
    if problem == "corrupt":
        storage = tmp_path / "old.journal"
        storage.write_text("not a journal {\n")
    else:
        blocker = tmp_path / "a-file"
        blocker.write_text("a file, not a directory\n")
        storage = blocker / "optuna.journal"
    before = storage.read_bytes() if storage.exists() else None
    result = cli.run(*search_args(tiny_data, tmp_path / "search", f"hydra.sweeper.storage={storage}"))
    assert result.returncode == 1, output(result)
    assert "Traceback" not in output(result)
    assert f"storage {storage} cannot be used" in output(result)
    assert (storage.read_bytes() if storage.exists() else None) == before
