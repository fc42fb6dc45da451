"""The study of a search: created in its storage with the space it searches and the trials asked
first, or continued when resumed, and held (one search per study at a time); refused, before
anything is written, where it is not this search's to continue.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from optuna_pruning_sweeper.errors import SweeperError
from optuna_pruning_sweeper.files import write_json
from optuna_pruning_sweeper.journal import check_journal, repair_journal
from optuna_pruning_sweeper.lease import Lease, refuse_if_held
from optuna_pruning_sweeper.names import (
    COMMAND_ATTR,
    PRUNER_ATTR,
    RESUME_OVERRIDE,
    SEARCH_FILE,
    SPACE_ATTR,
    SPACE_CUSTOM,
    SPACE_FIXED,
    SPACE_PARAMS,
)
from optuna_pruning_sweeper.pruners import pruner_spec
from optuna_pruning_sweeper.samplers import make_sampler
from optuna_pruning_sweeper.settings import Settings
from optuna_pruning_sweeper.space import Space
from optuna_pruning_sweeper.storage import Location, read_location


def _is_space(saved: Any) -> bool:
    """Whether `saved` has the form Space.describe gives (a study's attribute can be edited by hand)."""
    return (
        isinstance(saved, dict)
        and isinstance(saved.get(SPACE_PARAMS), dict)
        and isinstance(saved.get(SPACE_FIXED), list)
        and all(isinstance(override, str) for override in saved[SPACE_FIXED])
    )


def _space_changes(saved: Any, current: dict[str, Any]) -> list[str]:
    if not _is_space(saved):
        return [f"the study's own record of its space is not one this sweeper writes: {json.dumps(saved)[:200]}"]
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
        if location.holds_study(storage):
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


def _wanted(settings: Settings, sweep_dir: Path) -> tuple[Location, Location | None]:
    """Where this command asks for the study, and where search.json says it is (None before the
    first search); a sweep directory holds one study, so the two must agree."""
    saved = read_location(sweep_dir)
    wanted = Location(settings.storage, settings.study_name or sweep_dir.name)
    if saved is not None and not wanted.same_place(saved):
        raise SweeperError(
            f"{sweep_dir} holds a search stored in {saved.describe(sweep_dir)} as study {saved.study_name!r}; "
            f"this command asks for {wanted.describe(sweep_dir)} as {wanted.study_name!r}. Run it with the same "
            "hydra.sweeper.storage and study_name."
        )
    return wanted, saved


def _created(
    storage: BaseStorage, name: str, settings: Settings, space: Space, enqueue: Sequence[dict[str, Any]]
) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=name, directions=settings.directions)
    study.set_user_attr(SPACE_ATTR, space.describe())  # first: what marks a study as this sweeper's
    for point in enqueue:
        study.enqueue_trial(point)
    return study


@dataclass(frozen=True)
class StudyRequest:
    """What a search asks of its study: the sweep directory's, made afresh or continued (`resume`),
    recording `command` (what runs one trial alone), with the trials `enqueue` asks first."""

    sweep_dir: Path
    resume: bool
    command: str
    enqueue: Sequence[dict[str, Any]] = ()


def open_study(settings: Settings, space: Space, request: StudyRequest) -> tuple[optuna.Study, Lease]:
    """Create the sweep directory's study, with the trials the request enqueues asked first, or
    continue it when resumed, and take its lease (one search per study); refuse, writing nothing,
    what _refuse refuses. The caller releases the lease."""
    sweep_dir, resume, command, enqueue = request.sweep_dir, request.resume, request.command, request.enqueue
    wanted, saved = _wanted(settings, sweep_dir)
    sampler = make_sampler(settings.sampler, space, 0)  # a sampler that cannot be made stops before any write
    journal, where = wanted.journal(sweep_dir), wanted.describe(sweep_dir)
    if journal is not None:
        with wanted.problems(sweep_dir):
            check_journal(journal)
    storage, study = _find(wanted, sweep_dir)
    if study is not None:
        _refuse(study, where, settings, space, resume)
    with wanted.problems(sweep_dir):
        if journal is not None:
            repair_journal(journal)
        if study is None:
            study = _created(storage, wanted.study_name, settings, space, enqueue)
        lease = Lease(study, lambda: wanted.open(sweep_dir))
        lease.acquire(where)
        study.set_user_attr(PRUNER_ATTR, pruner_spec(settings))
        study.set_user_attr(COMMAND_ATTR, command)
    if saved is None:
        write_json(sweep_dir / SEARCH_FILE, wanted.saved())
    study.sampler = make_sampler(settings.sampler, space, len(study.trials)) if study.trials else sampler
    return study, lease
