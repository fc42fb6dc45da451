"""What a plain Hydra app meets (issue 24): the five bugs and the smaller ones, each reproduced by a
small app of its own, written into a temporary directory and run as `python app.py -m ...` in a
subprocess, as a user runs it. No torch, no lenet_fmnist: these apps know only Hydra, Optuna and
the sweeper's public API (`current_trial()`).
"""

from __future__ import annotations

import csv
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import assert_ok, output
from omegaconf import OmegaConf
from optuna.storages.journal import JournalFileSymlinkLock
from plain_app import App, assert_one_paragraph_error, journal_study, make_app, states

pytestmark = pytest.mark.slow

# The sweeper's public API, as a task uses it.
CURRENT_TRIAL = """\
from optuna_pruning_sweeper import current_trial
trial = current_trial()
assert trial is not None
"""


# ---- the five bugs ---------------------------------------------------------------------------


def test_override_dirname_gives_each_trial_its_own_directory(tmp_path: Path) -> None:
    """Six trials of a float and a two-valued int: named by their overrides, six directories (the
    sweeper once left the float out of every name: two directories, each trial overwriting)."""
    app = make_app(
        tmp_path,
        'Path("result.json").write_text(OmegaConf.to_yaml(cfg))\nreturn cfg.x + cfg.y',
        """\
            subdir: ${hydra.job.override_dirname}
          job:
            chdir: true
          sweeper:
            n_trials: 6
            sampler:
              seed: 1
            params:
              x: interval(0, 1)
              y: choice(1, 2)
        x: 0.0
        y: 1
        """,
    )
    assert_ok(app.run())
    written = {path.parent.name: OmegaConf.load(path) for path in app.sweep_dir.glob("*/result.json")}
    assert len(written) == 6, sorted(written)
    for name, config in written.items():
        assert f"x={config.x!r}" in name and f"y={config.y}" in name


def test_a_killed_grid_search_resumed_once_runs_every_point(tmp_path: Path) -> None:
    """The search dies in its third trial, the process killed (with the basic launcher the task
    runs in the sweeper's process); one resume runs the killed point and the rest, with no
    traceback. (The third of four: its retry then ends with one point left, where Optuna's grid
    sampler looks for the retry's grid id.)"""
    app = make_app(
        tmp_path,
        """\
        ran = Path("ran.txt")
        if len(ran.read_text().split() if ran.exists() else []) == 2 and not Path("killed").exists():
            Path("killed").touch()
            os.kill(os.getpid(), 9)
        with ran.open("a") as handle:
            handle.write(f"{cfg.x} ")
        return cfg.x
        """,
        """\
          sweeper:
            n_trials: 10
            params:
              x: choice(0, 1, 2, 3)
        x: 0
        """,
        sampler="grid",
    )
    killed = app.run()
    assert killed.returncode == -9 and (tmp_path / "killed").exists(), output(killed)
    assert_ok(app.run("+resume=true"))
    study = journal_study(app.sweep_dir)
    assert sorted(t.params["x"] for t in study.trials if t.state.name == "COMPLETE") == [0, 1, 2, 3]


def test_custom_search_space_may_be_a_static_method(tmp_path: Path) -> None:
    """`app.Space.configure` is resolved as Hydra's get_method resolves it (upstream does)."""
    app = make_app(
        tmp_path,
        "return cfg.x + cfg.z",
        """\
          sweeper:
            n_trials: 3
            custom_search_space: app.Space.configure
            params:
              x: interval(0, 1)
        x: 0.0
        z: 0
        """,
        header="""
            class Space:
                @staticmethod
                def configure(cfg, trial):
                    return {"z": trial.suggest_int("z", 10, 12)}
            """,
    )
    assert_ok(app.run())
    study = journal_study(app.sweep_dir)
    assert states(study) == ["COMPLETE"] * 3
    assert all(t.value == t.params["x"] + t.params["z"] for t in study.trials)


def test_categories_may_be_lists_and_the_task_gets_the_list(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        "assert isinstance(cfg.layers, ListConfig), type(cfg.layers)\nreturn sum(cfg.layers)",
        """\
          sweeper:
            n_trials: 6
            sampler:
              seed: 0
            params:
              layers: choice([64],[128,128])
        layers: [32]
        """,
    )
    assert_ok(app.run())
    study = journal_study(app.sweep_dir)
    assert states(study) == ["COMPLETE"] * 6
    assert {t.value for t in study.trials} == {64.0, 256.0}
    results = OmegaConf.load(app.sweep_dir / "optimization_results.yaml")
    assert results.best_params.layers == [64] and results.best_value == 64
    table = list(csv.DictReader((app.sweep_dir / "search.csv").open()))
    assert sorted(row["run_dir"] for row in table) == [str(n) for n in range(6)]  # Hydra's default names


@pytest.mark.parametrize("kind", ["numpy", "tuple", "listconfig"])
def test_several_objectives_may_come_as_any_sequence(tmp_path: Path, kind: str) -> None:
    app = make_app(
        tmp_path,
        f"""\
        values = [cfg.x, (cfg.x - 2) ** 2]
        if "{kind}" == "numpy":
            import numpy
            return numpy.array(values)
        return tuple(values) if "{kind}" == "tuple" else OmegaConf.create(values)
        """,
        """\
          sweeper:
            n_trials: 3
            direction: [minimize, minimize]
            params:
              x: interval(0, 4)
        x: 0.0
        """,
    )
    assert_ok(app.run())
    study = journal_study(app.sweep_dir)
    assert [t.values for t in study.trials] == [[t.params["x"], (t.params["x"] - 2) ** 2] for t in study.trials]


# ---- the smaller ones ------------------------------------------------------------------------


def quadratic_app(directory: Path, task: str = "") -> App:
    """Two trials of (x - 1)^2; `task`: lines the task runs first."""
    return make_app(
        directory,
        task + "return (cfg.x - 1) ** 2",
        """\
          sweeper:
            n_trials: 2
            params:
              x: interval(-2, 2)
        x: 0.0
        """,
    )


def test_a_rerun_refused_names_a_resume_command_that_works(tmp_path: Path) -> None:
    app = quadratic_app(tmp_path)
    assert_ok(app.run())
    refused = assert_one_paragraph_error(app.run())
    suggested = re.findall(r"(\+{0,2}resume=true)", refused)
    assert suggested, refused
    assert_ok(app.run(suggested[0], "hydra.sweeper.n_trials=3"))
    assert states(journal_study(app.sweep_dir)) == ["COMPLETE"] * 3


def test_fixed_params_are_kept_in_the_trials_user_attrs(tmp_path: Path) -> None:
    """As upstream does: a custom search space reads them from trial.user_attrs."""
    app = make_app(
        tmp_path,
        "return cfg.x + cfg.z",
        """\
          sweeper:
            n_trials: 2
            custom_search_space: app.configure
            params:
              x: interval(0, 1)
        x: 0.0
        a: 1
        z: 0
        """,
        header="""
            def configure(cfg, trial):
                return {"z": int(trial.user_attrs["a"]) * 10}
            """,
    )
    assert_ok(app.run("a=3"))
    study = journal_study(app.sweep_dir)
    assert [str(t.user_attrs["a"]) for t in study.trials] == ["3", "3"]
    assert all(t.value == t.params["x"] + 30 for t in study.trials)


def test_a_study_this_sweeper_did_not_create_is_refused(tmp_path: Path) -> None:
    """A shared database's study of someone else's: not adopted, its running trial left alone."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    theirs = optuna.create_study(study_name="theirs", storage=url)
    theirs.ask()
    app = quadratic_app(tmp_path)
    for resume in ((), ("+resume=true",)):
        text = assert_one_paragraph_error(
            app.run(f"hydra.sweeper.storage='{url}'", "hydra.sweeper.study_name=theirs", *resume)
        )
        assert "theirs" in text and "study_name" in text, text
    assert states(optuna.load_study(study_name="theirs", storage=url)) == ["RUNNING"]


def wait_for(condition: Any, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.fixture(params=["journal", "sqlite"])
def held_search(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[App, list[str], subprocess.Popen[str]]]:
    """A search whose first trial waits (up to 30 s) for the file `go`; its study in the sweep
    directory's journal, or in a SQLite database; the arguments that run it."""
    app = quadratic_app(
        tmp_path,
        task='Path("../../started").touch()\n'
        'for _ in range(300):\n    if Path("../../go").exists(): break\n    time.sleep(0.1)\n',
    )
    args = ["hydra.job.chdir=true"]
    if request.param == "sqlite":
        args.append(f"hydra.sweeper.storage='sqlite:///{tmp_path / 'study.db'}'")
    first = app.start(*args)
    try:
        wait_for((tmp_path / "started").exists, first)
        yield app, args, first
    finally:
        (tmp_path / "go").touch()
        first.wait(timeout=60)


def test_a_second_sweeper_on_a_live_study_stops_naming_the_first(
    held_search: tuple[App, list[str], subprocess.Popen[str]], tmp_path: Path
) -> None:
    """A resume while the first search's trial still runs would fail that trial: it stops instead,
    naming the first search, and leaves the study as it was."""
    app, args, first = held_search
    journal = app.sweep_dir / "optuna.journal"
    before = journal.read_bytes() if journal.exists() else b""
    text = assert_one_paragraph_error(app.run("+resume=true", *args, timeout=25))
    assert str(first.pid) in text and socket.gethostname() in text, text
    if journal.exists():
        assert journal.read_bytes().startswith(before)  # nothing cut
    (tmp_path / "go").touch()
    assert first.wait(timeout=60) == 0, first.communicate()[0]
    storage = f"sqlite:///{tmp_path / 'study.db'}" if not journal.exists() else None
    study = optuna.load_study(study_name="sweep", storage=storage) if storage else journal_study(app.sweep_dir)
    assert states(study) == ["COMPLETE"] * 2


def test_the_journal_repair_never_cuts_a_line_a_live_writer_is_writing(tmp_path: Path) -> None:
    """A trial's process of a dead search (a SLURM job that outlived it) is writing a record when
    the search is resumed: the resume waits for the writer's lock instead of cutting its line."""
    app = quadratic_app(tmp_path)
    assert_ok(app.run())
    journal = app.sweep_dir / "optuna.journal"
    record = b'{"op_code":2,"worker_id":"w","study_id":0,"user_attr":{"written_by":"a live writer"}}\n'
    lock = JournalFileSymlinkLock(str(journal))  # what every writer of the journal holds while it writes
    lock.acquire()
    try:
        with journal.open("ab") as handle:
            handle.write(record[:30])
        resumed = app.start("+resume=true", "hydra.sweeper.n_trials=3")
        time.sleep(3)
        assert resumed.poll() is None, resumed.communicate()[0]  # waiting for the writer
        with journal.open("ab") as handle:
            handle.write(record[30:])
    finally:
        lock.release()
    text = resumed.communicate(timeout=60)[0]
    assert resumed.returncode == 0 and "Traceback" not in text, text
    study = journal_study(app.sweep_dir)
    assert study.user_attrs["written_by"] == "a live writer"
    assert states(study) == ["COMPLETE"] * 3


@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_trials_find_their_study_after_changing_directory(tmp_path: Path, storage: str) -> None:
    """hydra.job.chdir=true with a relative sweep directory and a relative sqlite file: the
    trial's process opens the sweeper's study through current_trial()."""
    args = ["hydra.job.chdir=true"] + (["hydra.sweeper.storage='sqlite:///study.db'"] if storage == "sqlite" else [])
    app = quadratic_app(tmp_path, task=CURRENT_TRIAL + "trial.report(cfg.x, 0)\n")
    assert_ok(app.run(*args))
    if storage == "sqlite":
        study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{tmp_path / 'study.db'}")
    else:
        study = journal_study(app.sweep_dir)
    assert [t.intermediate_values for t in study.trials] == [{0: t.params["x"]} for t in study.trials]
    assert not list(tmp_path.glob("sweep/*/study.db"))


def test_a_range_with_step_zero_is_refused_in_one_paragraph(tmp_path: Path) -> None:
    app = quadratic_app(tmp_path)
    text = assert_one_paragraph_error(app.run("hydra.sweeper.params.x='range(0, 5, 0)'", timeout=30))
    assert "x=range(0, 5" in text and "step" in text, text


def test_a_summary_that_cannot_be_written_leaves_the_search_error_shown(tmp_path: Path) -> None:
    app = quadratic_app(tmp_path, task='raise ValueError("the task broke")\n')
    (app.sweep_dir / "search.md").mkdir(parents=True)  # where the summary goes: it cannot be written
    text = assert_one_paragraph_error(app.run())
    assert "max_failure_rate" in text and "the task broke" in text, text
    assert "summary" in text, text  # the summary's own problem said too


# A database whose URL carries a password, as MariaDB's does: SQLite behind a dialect that
# accepts (and ignores) the user, the password and the host.
PASSWORD_SQLITE = """\
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite


class PasswordSQLite(SQLiteDialect_pysqlite):
    supports_statement_cache = True

    def create_connect_args(self, url):
        return super().create_connect_args(url.set(username="", password="", host=""))


registry.register("sqlite.withpassword", "__main__", "PasswordSQLite")
"""


def password_app(directory: Path) -> App:
    return make_app(
        directory,
        CURRENT_TRIAL + "trial.report(cfg.x, 0)\nreturn cfg.x",
        "  sweeper:\n    n_trials: 2\n    params:\n      x: interval(0, 1)\nx: 0.0\n",
        header=PASSWORD_SQLITE,
    )


def test_no_password_in_the_files_the_sweeper_writes(tmp_path: Path) -> None:
    """The password of the storage's URL stays out of search.json, multirun.yaml, the summary and
    the logs, while the trials still open the study (current_trial). Hydra itself writes each
    job's hydra.sweeper.storage into its .hydra/hydra.yaml: the sweeper warns so."""
    database = tmp_path / "study.db"
    app = password_app(tmp_path)
    url = f"sqlite+withpassword://scott:tiger-s3cret@localhost/{database}"
    result = app.run(f"hydra.sweeper.storage='{url}'", "hydra.sweeper.study_name=s")
    assert_ok(result)
    assert "${oc.env:DB_PASSWORD}" in output(result)  # the warning names the way out
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{database}")
    assert [list(t.intermediate_values) for t in study.trials] == [[0], [0]]
    ours = [p for p in app.sweep_dir.rglob("*") if p.is_file() and p.parent.name != ".hydra"]
    assert {p.name for p in ours} >= {"multirun.yaml", "search.json", "search.md"}
    assert [str(p) for p in ours if b"tiger-s3cret" in p.read_bytes()] == []
    assert "scott" in (app.sweep_dir / "search.json").read_text()  # where the study is stays readable


def test_a_password_from_the_environment_is_in_no_file(tmp_path: Path) -> None:
    """The documented form, the password interpolated from the environment: no file holds it,
    Hydra's own included, and the trials' processes resolve it."""
    database = tmp_path / "study.db"
    app = password_app(tmp_path)
    url = f"sqlite+withpassword://scott:${{oc.env:DB_PASSWORD}}@localhost/{database}"
    env = {**os.environ, "DB_PASSWORD": "tiger-s3cret"}
    result = app.run(f"hydra.sweeper.storage='{url}'", "hydra.sweeper.study_name=s", env=env)
    assert_ok(result)
    assert "holds a password" not in output(result)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{database}")
    assert [list(t.intermediate_values) for t in study.trials] == [[0], [0]]
    written = [p for p in app.sweep_dir.rglob("*") if p.is_file()]
    assert [str(p) for p in written if b"tiger-s3cret" in p.read_bytes()] == []


def test_the_summary_can_be_switched_off(tmp_path: Path) -> None:
    app = quadratic_app(tmp_path)
    assert_ok(app.run("hydra.sweeper.summary=false"))
    assert (app.sweep_dir / "optimization_results.yaml").is_file()  # upstream's file, always
    assert not (app.sweep_dir / "search.md").exists()
    assert not list(app.sweep_dir.glob("*.png"))


# ---- enqueue_trials --------------------------------------------------------------------------


def enqueue_app(directory: Path, entries: str, n_trials: int = 5) -> App:
    """A search over a category, a list category and a float range whose first trials are `entries`."""
    return make_app(
        directory,
        "return cfg.x + len(cfg.shape)",
        f"""\
          sweeper:
            n_trials: {n_trials}
            enqueue_trials: {entries}
            params:
              kind: a,b,c
              shape: choice([1],[2,2])
              x: interval(0, 1)
        kind: a
        shape: [1]
        x: 0.0
        """,
    )


def test_enqueued_trials_come_first_with_the_rest_sampled(tmp_path: Path) -> None:
    app = enqueue_app(tmp_path, "[{kind: c, shape: [2, 2]}, {kind: b}, {x: 0.25}]")
    assert_ok(app.run())
    trials = journal_study(app.sweep_dir).trials
    assert [t.params["kind"] for t in trials[:2]] == ["c", "b"]
    assert trials[0].params["shape"] == "[2,2]" and trials[0].value == trials[0].params["x"] + 2
    assert trials[2].params["x"] == 0.25
    assert len({t.params["x"] for t in trials}) == 5  # what an entry leaves out is sampled
    # Enqueued once, when the study is made: a resumed search asks no entry again.
    assert_ok(app.run("++resume=true", "hydra.sweeper.n_trials=7"))
    later = journal_study(app.sweep_dir).trials[5:]
    assert len(later) == 2 and all(t.params["x"] != 0.25 for t in later)


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ("[{kind: d}]", "kind='d' is outside the search space; kind takes one of a, b, c"),
        ("[{x: 2.0}]", "x=2.0 is outside the search space; x takes a number from 0.0 to 1.0"),
        ("[{depth: 3}]", "depth is not a searched key"),
        ("[{}]", "enqueue_trials[0] is {}"),
        ("[3]", "Cannot assign int to Dict[str, Any]"),  # the schema's own check
    ],
)
def test_an_enqueued_trial_outside_the_space_is_refused(tmp_path: Path, entries: str, named: str) -> None:
    app = enqueue_app(tmp_path, entries)
    assert named in assert_one_paragraph_error(app.run())
    assert not (app.sweep_dir / "optuna.journal").exists()  # refused before anything is written
