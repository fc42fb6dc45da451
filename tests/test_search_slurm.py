"""A search whose trials run as SLURM jobs, with its study in a database server: the MariaDB of
scripts/slurm-local.sh (its `optuna` database), so that every node reaches the study without a
shared filesystem. Pruning is reported from inside the jobs; optuna-dashboard reads the live
study from the database.

Marked `slurm`, and skipped with the reason when no cluster answers `sinfo` (start one with
`scripts/slurm-local.sh start`) or its `optuna` database is missing. Waits on what the jobs
record, never for a fixed time; prints the search's figures (pytest -rP shows them).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import CLI, REPO, read_metrics
from test_slurm import RESOURCES, cluster, ended, job_ids, report, slurm_cli  # noqa: F401  (fixtures)

pytest.importorskip(
    "optuna_pruning_sweeper", reason="needs the sweeper: pip install -e ./plugins/hydra_optuna_pruning_sweeper"
)
optuna = pytest.importorskip("optuna")
# The dashboard's helpers are the sweeper's tests' (they watch a plain app's live search the same way).
sys.path.insert(0, str(REPO / "plugins" / "hydra_optuna_pruning_sweeper" / "tests"))
from live_dashboard import processes, start_dashboard, stop, wait_until  # noqa: E402, F401  (processes: a fixture)

pytestmark = pytest.mark.slurm

# The random sampler with this seed asks lr 0.1, 0.1, then 1e-8, 0.1: the first batch of two
# completes, and in the second the rate that learns nothing falls behind them at epoch 1.
SEED, RATES = 6, "optimizer.lr=0.1,0.00000001"


@pytest.fixture(scope="module")
def database(cluster: None) -> str:  # noqa: F811
    """The URL of scripts/slurm-local.sh's `optuna` database; skip when it has none."""
    pytest.importorskip("pymysql", reason="needs the `search` extra (PyMySQL)")
    answer = subprocess.run(
        [REPO / "scripts" / "slurm-local.sh", "optuna-url"], capture_output=True, text=True, timeout=30
    )
    if answer.returncode != 0:
        pytest.skip(f"no optuna database: {answer.stderr.strip()}")
    return answer.stdout.strip()


@pytest.fixture
def study_name(database: str) -> Iterator[str]:
    """A study of its own in the shared database, deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=database)


def test_a_search_runs_its_trials_as_slurm_jobs_with_the_study_in_mariadb(
    slurm_cli: CLI,  # noqa: F811
    plain_data: Path,
    database: str,
    study_name: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    sweep_dir = tmp_path / "search"
    args = [
        "train", "-m", "hydra/sweeper=optuna", "hydra/launcher=slurm", *RESOURCES, "hydra/sweeper/sampler=random",
        f"hydra.sweeper.sampler.seed={SEED}", "hydra.sweeper.direction=maximize", f"hydra.sweeper.storage={database}",
        f"hydra.sweeper.study_name={study_name}", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.pruner_startup_trials=1", "hydra.sweeper.pruner_warmup_epochs=0", RATES, "epochs=2",
        f"data.root={plain_data}", "data.val_size=256", "device=cpu", f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    log = tmp_path / "search.log"
    started = time.monotonic()
    search = slurm_cli.start(*args, log=log)
    processes.append(search)
    try:
        # While the jobs run, the dashboard reads the study from the database.
        wait_until(lambda: len(optuna.load_study(study_name=study_name, storage=database).trials) >= 1, "a trial")
        dashboard = start_dashboard(database, tmp_path / "dashboard.log", slurm_cli.env)
        processes.append(dashboard.process)
        assert len(dashboard.study(study_name)["trials"]) >= 1
        code = search.wait(timeout=600)
        wall = time.monotonic() - started
    finally:
        stop(search)
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()

    study = optuna.load_study(study_name=study_name, storage=database)
    states = [trial.state.name for trial in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"], states
    runs = {trial.number: sweep_dir / trial.user_attrs["run_dir"] for trial in study.trials}
    for trial in study.trials:
        metrics = read_metrics(runs[trial.number])
        if trial.state.name == "COMPLETE":  # the job's return value reached the study
            assert trial.value == metrics["val_acc"] and metrics["status"] == "completed"
        else:  # reported and pruned from inside its job, after epoch 1
            assert metrics["status"] == "pruned" and metrics["epochs_completed"] == 1
            assert list(trial.intermediate_values) == [1]
    ids = job_ids(sweep_dir)
    states_of_jobs = ended(ids)
    report("search", states_of_jobs)
    assert len(ids) == 4 and all(record == ["COMPLETED"] for record in states_of_jobs.values())
    wanted = [state.capitalize() for state in states]
    wait_until(lambda: [t["state"] for t in dashboard.study(study_name)["trials"]] == wanted, "the dashboard to update")
    assert "| 2 | pruned |" in (sweep_dir / "search.md").read_text()
    print(f"search on SLURM + MariaDB: {len(states)} trials, {states.count('PRUNED')} pruned, {wall:.0f} s wall time")
