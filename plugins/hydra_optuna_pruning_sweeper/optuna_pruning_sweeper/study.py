"""The study of a search: its settings (hydra.sweeper.*), where it is stored, its sampler and
pruner, and creating or continuing it.

One study per sweep directory, kept in an Optuna storage that every trial's process opens: by
default the journal file `<sweep dir>/optuna.journal` (processes on one machine, or on nodes
sharing a filesystem, append to it), or any journal path or database URL. `search.json` in the
sweep directory says where it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.errors import HydraException
from hydra.utils import instantiate
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileSymlinkLock

from optuna_pruning_sweeper.errors import SweeperError
from optuna_pruning_sweeper.files import write_json
from optuna_pruning_sweeper.journal import SecondSyncedJournal
from optuna_pruning_sweeper.lease import Lease, refuse_if_held
from optuna_pruning_sweeper.names import (
    COMMAND_ATTR,
    JOURNAL_FILE,
    PRUNER_ATTR,
    PRUNER_NAME,
    PRUNER_STARTUP,
    PRUNER_WARMUP,
    RESUME_OVERRIDE,
    SEARCH_FILE,
    SPACE_ATTR,
    SPACE_CUSTOM,
    SPACE_FIXED,
    SPACE_PARAMS,
    STORAGE_KEY,
    STUDY_NAME_KEY,
    PrunerName,
)
from optuna_pruning_sweeper.space import Space
from optuna_pruning_sweeper.urls import is_url, masked

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class Settings:
    """The sweeper's keys (hydra.sweeper.*), as the plugin received them."""

    n_trials: int
    n_jobs: int  # trials launched at once
    directions: tuple[str, ...]  # one per objective
    max_failure_rate: float
    pruner: PrunerName
    pruner_startup_trials: int
    pruner_warmup_epochs: int
    storage: str | None
    study_name: str | None
    sampler: dict[str, Any]  # the hydra/sweeper/sampler node: _target_ and its arguments

    def check(self) -> None:
        for key, value, least in (
            ("n_trials", self.n_trials, 1),
            ("n_jobs", self.n_jobs, 1),
            ("pruner_startup_trials", self.pruner_startup_trials, 0),
            ("pruner_warmup_epochs", self.pruner_warmup_epochs, 0),
        ):
            if value < least:
                raise SweeperError(f"hydra.sweeper.{key}={value} is not allowed: it must be an integer >= {least}.")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise SweeperError(
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate} is not allowed: it must be a number from 0 "
                "to 1, the share of a batch's trials that may fail before the search stops (0: none, 1: all)."
            )


def directions_of(direction: Any) -> tuple[str, ...]:
    """hydra.sweeper.direction: minimize or maximize, or a list of them (one per objective)."""
    given = [direction] if isinstance(direction, str) else list(direction) if direction is not None else []
    if not given or any(str(d) not in DIRECTIONS for d in given):
        raise SweeperError(
            f"hydra.sweeper.direction={direction} is not allowed: it must be minimize or maximize, or a list of "
            "them with one per objective, e.g. [minimize, maximize] for a task that returns two numbers."
        )
    return tuple(str(d) for d in given)


# ---- where the study is ----------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where a search's study is. search.json in the sweep directory keeps it, its password
    masked; the sweeper and its trials' processes know the whole URL from hydra.sweeper.storage."""

    storage: str | None  # None: the journal file in the sweep directory; else absolute (urls.absolute)
    study_name: str

    def describe(self, sweep_dir: Path) -> str:
        return masked(str(self.storage or sweep_dir / JOURNAL_FILE))

    def saved(self) -> dict[str, Any]:
        """search.json's content: what a reader is shown, no password."""
        return {STORAGE_KEY: None if self.storage is None else masked(self.storage), STUDY_NAME_KEY: self.study_name}

    def same_place(self, saved: Location) -> bool:
        """Whether search.json's location (`saved`, its password masked) is this one."""
        return saved.saved() == self.saved()

    @contextlib.contextmanager
    def problems(self, sweep_dir: Path) -> Iterator[None]:
        """Turn what a bad storage raises (OSError, a corrupt journal's JSON error, SQLAlchemy's
        errors: the user's to fix) into a SweeperError naming it."""
        try:
            yield
        except (SweeperError, KeyError):  # KeyError: no such study, which the caller explains
            raise
        except Exception as error:
            raise SweeperError(
                f"The search's storage {self.describe(sweep_dir)} cannot be used ({type(error).__name__}: {error}). "
                "Give a writable journal file or a database URL with hydra.sweeper.storage=..., or another "
                f"hydra.sweep.dir=DIR (the default storage is DIR/{JOURNAL_FILE}). Nothing was changed."
            ) from None

    def open(self, sweep_dir: Path) -> BaseStorage:
        with self.problems(sweep_dir):
            if self.storage is not None and is_url(self.storage):
                return optuna.storages.RDBStorage(self.storage, engine_kwargs={"pool_pre_ping": True})
            return JournalStorage(SecondSyncedJournal(str(self.journal(sweep_dir))))

    def journal(self, sweep_dir: Path) -> Path | None:
        """The journal file, where the study is kept in one."""
        if self.storage is not None and is_url(self.storage):
            return None
        return Path(self.storage) if self.storage is not None else sweep_dir / JOURNAL_FILE

    def load(self, sweep_dir: Path) -> optuna.Study:
        storage = self.open(sweep_dir)
        try:
            with self.problems(sweep_dir):
                return optuna.load_study(study_name=self.study_name, storage=storage)
        except KeyError:
            raise SweeperError(f"The storage of {sweep_dir} holds no study named {self.study_name!r}.") from None


def read_location(sweep_dir: Path) -> Location | None:
    path = sweep_dir / SEARCH_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        return Location(saved[STORAGE_KEY], saved[STUDY_NAME_KEY])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SweeperError(f"{path} cannot be read ({error}); it says where the search's study is stored.") from None


def check_journal(path: Path) -> None:
    """Refuse a journal with a damaged line before its last one (reading only: a last line cut short
    is a writer's record in the making, or a dead writer's, which repair_journal drops)."""
    if not path.is_file():
        return
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):
        try:
            if not isinstance(json.loads(line), dict):
                raise ValueError("not a JSON record")
        except ValueError as error:
            raise ValueError(f"line {number} of the journal is damaged ({error})") from None


def repair_journal(path: Path) -> None:
    """Before a search (re)starts, with no other search on its study (lease.refuse_if_held): drop
    a last line that a killed writer left cut short. Optuna ignores it when it reads, but would
    append the next record to it, making one damaged line of both. Done holding the lock every
    writer of the journal holds while it writes a line (a trial's process may outlive a killed
    search): a line seen cut under that lock is a dead writer's, never one being written."""
    if not path.is_file():
        return
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        content = path.read_bytes()
        cut = content.rsplit(b"\n", 1)[-1]  # no newline after it: no complete record
        if cut:
            with path.open("r+b") as journal:
                journal.truncate(len(content) - len(cut))
            log.warning("The journal %s ended in a line cut short (%d bytes): dropped, as Optuna ignores it.",
                        path, len(cut))  # fmt: skip
    finally:
        lock.release()


# ---- sampler and pruner ----------------------------------------------------------------------


def _grid_values(key: str, distribution: BaseDistribution) -> list[Any]:
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution) and not distribution.log:
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        count = round((distribution.high - distribution.low) / distribution.step) + 1
        return [distribution.low + i * distribution.step for i in range(count)]
    raise SweeperError(
        f"hydra/sweeper/sampler=grid needs a finite set of values, but {key} is a continuous range: give it as "
        "a comma list, choice(...), range(start, stop, step) or int(interval(a, b))."
    )


def grid_of(space: Space) -> dict[str, list[Any]]:
    return {key: _grid_values(key, d) for key, d in space.distributions.items()}


def trials_wanted(settings: Settings, study: optuna.Study, space: Space) -> int:
    """n_trials, or fewer where the grid sampler has fewer points."""
    if isinstance(study.sampler, optuna.samplers.GridSampler):
        return min(settings.n_trials, math.prod(len(values) for values in grid_of(space).values()))
    return settings.n_trials


def make_sampler(node: dict[str, Any], space: Space, asked_before: int) -> optuna.samplers.BaseSampler:
    """The sampler of hydra/sweeper/sampler. A resumed search offsets its seed by the trials
    already asked, so it does not draw the first run's values again; but not the grid sampler's,
    whose grid ids number a shuffle of the grid made from its seed, which must stay the first's."""
    target = node.get("_target_", "?")
    arguments = dict(node)
    if arguments.get("seed") is not None and not node.get("_partial_"):
        arguments["seed"] = arguments["seed"] + asked_before
    try:
        made = instantiate(arguments)
        if node.get("_partial_"):  # the grid sampler: given its grid, made of the space
            made = made(grid_of(space))
    except SweeperError:
        raise
    except (HydraException, ImportError, TypeError, ValueError) as error:
        cause = error.__cause__ or error
        raise SweeperError(
            f"The sampler {target} cannot be made ({type(cause).__name__}: {' '.join(str(cause).split())}). Check "
            "hydra.sweeper.sampler's keys (--cfg hydra -p hydra.sweeper.sampler shows them); a sampler whose package "
            "is missing needs it installed (pip install 'hydra-optuna-pruning-sweeper[samplers]' brings cmaes and scipy)."
        ) from None
    if not isinstance(made, optuna.samplers.BaseSampler):
        raise SweeperError(
            f"hydra.sweeper.sampler._target_={target} makes a {type(made).__name__}, not an Optuna sampler."
        )
    return made


def pruner_spec(settings: Settings) -> dict[str, Any]:
    # Optuna prunes single-objective studies only.
    name = settings.pruner if len(settings.directions) == 1 else PrunerName.none
    return {
        PRUNER_NAME: name.value,
        PRUNER_STARTUP: settings.pruner_startup_trials,
        PRUNER_WARMUP: settings.pruner_warmup_epochs,
    }


def make_pruner(spec: dict[str, Any], steps: int | None) -> optuna.pruners.BasePruner:
    """The pruner from its description in the study (the trials' processes build it from there).
    Hyperband is told the steps a trial reports where the task knows them: left to guess
    ("auto"), it prunes nothing before a trial completes."""
    name = PrunerName(spec[PRUNER_NAME])
    if name is PrunerName.median:
        return optuna.pruners.MedianPruner(n_startup_trials=spec[PRUNER_STARTUP], n_warmup_steps=spec[PRUNER_WARMUP])
    if name is PrunerName.hyperband:
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, spec[PRUNER_WARMUP]), max_resource="auto" if steps is None else steps
        )
    return optuna.pruners.NopPruner()


# ---- creating or continuing the study --------------------------------------------------------


def _space_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    changes = []
    for key in sorted(saved[SPACE_PARAMS].keys() | current[SPACE_PARAMS].keys()):
        old, new = saved[SPACE_PARAMS].get(key), current[SPACE_PARAMS].get(key)
        if old != new:
            changes.append(f"{key}: {json.dumps(old)} -> {json.dumps(new)}")
    for gone in sorted(set(saved[SPACE_FIXED]) - set(current[SPACE_FIXED])):
        changes.append(f"{gone} is no longer given")
    for added in sorted(set(current[SPACE_FIXED]) - set(saved[SPACE_FIXED])):
        changes.append(f"{added} is new")
    if saved.get(SPACE_CUSTOM) != current[SPACE_CUSTOM]:
        changes.append(f"{SPACE_CUSTOM}: {saved.get(SPACE_CUSTOM)} -> {current[SPACE_CUSTOM]}")
    return changes


def _find(location: Location, sweep_dir: Path) -> tuple[BaseStorage, optuna.Study | None]:
    """The storage, and the study in it if there is one (looked up, not created: a refused
    command writes nothing)."""
    storage = location.open(sweep_dir)
    with location.problems(sweep_dir):
        if any(known.study_name == location.study_name for known in storage.get_all_studies()):
            return storage, optuna.load_study(study_name=location.study_name, storage=storage)
    return storage, None


def _refuse(study: optuna.Study, where: str, settings: Settings, space: Space, resume: bool) -> None:
    """Stop, having written nothing, before continuing a study this sweeper did not create, one
    another search is running, one of other directions, one not asked to resume, or another space."""
    saved = study.user_attrs.get(SPACE_ATTR)
    if saved is None:
        raise SweeperError(
            f"The study {study.study_name!r} in {where} was not made by this sweeper (it lacks the search space the "
            "sweeper keeps in its studies); it is left untouched. Give this search another hydra.sweeper.study_name "
            "or hydra.sweeper.storage."
        )
    refuse_if_held(study, where)
    directions = [d.name.lower() for d in study.directions]
    if directions != list(settings.directions):
        raise SweeperError(
            f"The study {study.study_name!r} in {where} was created to {', '.join(directions)}; "
            f"hydra.sweeper.direction asks to {', '.join(settings.directions)}. Continue it with the same "
            "direction, or choose another hydra.sweeper.study_name."
        )
    if not resume:
        raise SweeperError(
            f"The study {study.study_name!r} in {where} already holds {len(study.trials)} trial(s); it is left "
            f"untouched. Run the same command with {RESUME_OVERRIDE} to continue it, or choose another "
            "hydra.sweeper.study_name."
        )
    if saved != space.describe():
        raise SweeperError(
            f"{RESUME_OVERRIDE}, but the search space differs from the one the study in {where} searched: "
            f"{'; '.join(_space_changes(saved, space.describe()))}. Resume with the same space, or start a new "
            "search in another hydra.sweep.dir."
        )


def open_study(
    settings: Settings,
    sweep_dir: Path,
    space: Space,
    resume: bool,
    command: str,
    enqueue: Sequence[dict[str, Any]] = (),
) -> tuple[optuna.Study, Lease]:
    """Create the sweep directory's study, with the trials `enqueue` asks first, or continue it when
    resumed, and take its lease (one search per study); refuse, writing nothing, what _refuse
    refuses. The caller releases the lease."""
    location = read_location(sweep_dir)
    wanted = Location(settings.storage, settings.study_name or sweep_dir.name)
    if location is not None and not wanted.same_place(location):
        raise SweeperError(
            f"{sweep_dir} holds a search stored in {location.describe(sweep_dir)} as study {location.study_name!r}; "
            f"this command asks for {wanted.describe(sweep_dir)} as {wanted.study_name!r}. Run it with the same "
            "hydra.sweeper.storage and study_name."
        )
    sampler = make_sampler(settings.sampler, space, 0)  # a sampler that cannot be made stops before any write
    journal = wanted.journal(sweep_dir)
    if journal is not None:
        with wanted.problems(sweep_dir):
            check_journal(journal)
    storage, study = _find(wanted, sweep_dir)
    where = wanted.describe(sweep_dir)
    if study is not None:
        _refuse(study, where, settings, space, resume)
    with wanted.problems(sweep_dir):
        if journal is not None:
            repair_journal(journal)
        if study is None:
            study = optuna.create_study(storage=storage, study_name=wanted.study_name, directions=settings.directions)
            study.set_user_attr(SPACE_ATTR, space.describe())  # first: what marks a study as this sweeper's
            for point in enqueue:
                study.enqueue_trial(point)
        lease = Lease(study, lambda: wanted.open(sweep_dir))
        lease.acquire(where)
        study.set_user_attr(PRUNER_ATTR, pruner_spec(settings))
        study.set_user_attr(COMMAND_ATTR, command)
    if location is None:
        write_json(sweep_dir / SEARCH_FILE, wanted.saved())
    study.sampler = make_sampler(settings.sampler, space, len(study.trials)) if study.trials else sampler
    return study, lease
