"""One search per study: when a study's lease is taken, and when a dead holder's lease stops
counting (in-process, on a real journal)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from optuna_pruning_sweeper.errors import SweeperError
from optuna_pruning_sweeper.lease import STALE_SECONDS, Holder, Lease, holder_of
from optuna_pruning_sweeper.names import LEASE_ATTR


def journal_study(path: Path) -> optuna.Study:
    return optuna.create_study(
        study_name="s", storage=JournalStorage(JournalFileBackend(str(path))), load_if_exists=True
    )


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_live_holder_counts_and_a_dead_one_does_not() -> None:
    now = time.time()
    me = Holder.me()
    assert me.alive(now)
    assert not replace(me, pid=dead_pid()).alive(now)  # this host: its process tells
    elsewhere = replace(me, host=f"not-{socket.gethostname()}", pid=1)
    assert elsewhere.alive(now)  # another host: only its renewals tell
    assert not replace(elsewhere, renewed=now - STALE_SECONDS - 1).alive(now)


def test_a_second_search_is_refused_until_the_first_releases(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    first = Lease(journal_study(journal), lambda: JournalStorage(JournalFileBackend(str(journal))))
    first.acquire("here")
    second = Lease(journal_study(journal), lambda: JournalStorage(JournalFileBackend(str(journal))))
    with pytest.raises(SweeperError, match=rf"host {socket.gethostname()}, pid {os.getpid()}, started "):
        second.acquire("here")
    first.release()
    assert holder_of(journal_study(journal)) is None
    second.acquire("here")
    assert holder_of(journal_study(journal)) == second.holder
    second.release()


def test_a_dead_searchs_lease_is_taken_over(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    study = journal_study(journal)
    study.set_user_attr(LEASE_ATTR, asdict(replace(Holder.me(), pid=dead_pid())))
    lease = Lease(journal_study(journal), lambda: JournalStorage(JournalFileBackend(str(journal))))
    lease.acquire("here")
    assert holder_of(journal_study(journal)) == lease.holder
    lease.release()


class FailingStorage(JournalStorage):
    """A storage that fails when the lease's thread first asks it for the study (a database gone)."""

    def get_study_id_from_name(self, study_name: str) -> int:
        raise optuna.exceptions.StorageInternalError("the database went away")


def test_a_storage_that_fails_under_the_lease_thread_leaves_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the fuzz campaign (tests/fuzz/: a sqlite storage that failed as the thread started):
    the thread's first call was outside its try, so the failure printed a traceback."""
    died = []
    monkeypatch.setattr("threading.excepthook", died.append)
    journal = tmp_path / "optuna.journal"
    lease = Lease(journal_study(journal), lambda: FailingStorage(JournalFileBackend(str(journal))))
    lease.acquire("here")
    lease.release()
    assert not died
    assert "cannot be renewed (the database went away); it expires by itself" in caplog.text
