"""Where a search's study is stored: by default the journal file `<sweep dir>/optuna.journal`
(processes on one machine, or on nodes sharing a filesystem, append to it), or any journal path or
database URL; `search.json` in the sweep directory says which. The sweeper and every trial's
process open it from here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage

from optuna_pruning_sweeper.errors import SweeperError
from optuna_pruning_sweeper.journal import SecondSyncedJournal
from optuna_pruning_sweeper.names import JOURNAL_FILE, SEARCH_FILE, STORAGE_KEY, STUDY_NAME_KEY
from optuna_pruning_sweeper.urls import is_url, masked


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
        """Turn what a bad storage raises (OSError, a corrupt journal's JSON error or missing key,
        SQLAlchemy's errors: the user's to fix) into a SweeperError naming it."""
        try:
            yield
        except SweeperError:
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

    def holds_study(self, storage: BaseStorage) -> bool:
        """Whether `storage` holds this location's study (asked by name: loading a missing one raises
        KeyError, as a damaged journal record does)."""
        return any(known.study_name == self.study_name for known in storage.get_all_studies())

    def load(self, sweep_dir: Path) -> optuna.Study:
        storage = self.open(sweep_dir)
        with self.problems(sweep_dir):  # a journal's record that lacks a key raises KeyError too: asked first
            if not self.holds_study(storage):
                raise SweeperError(f"The storage of {sweep_dir} holds no study named {self.study_name!r}.")
            return optuna.load_study(study_name=self.study_name, storage=storage)


def read_location(sweep_dir: Path) -> Location | None:
    path = sweep_dir / SEARCH_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        storage, study_name = saved[STORAGE_KEY], saved[STUDY_NAME_KEY]
        if not (storage is None or isinstance(storage, str)) or not isinstance(study_name, str):
            raise TypeError(
                f"{STORAGE_KEY} must be null or text and {STUDY_NAME_KEY} text, not {storage!r} and {study_name!r}"
            )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SweeperError(f"{path} cannot be read ({error}); it says where the search's study is stored.") from None
    return Location(storage, study_name)
