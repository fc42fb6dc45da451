"""The journal file as the sweeper and its trials write it: Optuna's JournalFileBackend, each
record appended whole under Optuna's own lock, but synced to disk at most once a second instead
of after every record.

A search writes four or five records a trial (its creation, its values, its attributes, its end);
Optuna's fsync after each costs milliseconds, more than a trivial trial's whole task. Unsynced
records are in the kernel's cache: a killed search or trial loses none of them; a machine that
crashes may lose the last second's, and may leave the last line cut short, which the next search
drops (repair_journal) before it resumes; a line damaged before the last one is refused
(check_journal).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

log = logging.getLogger(__name__)

SYNC_SECONDS = 1.0  # the most time a record may wait in the kernel's cache before its fsync


class SecondSyncedJournal(JournalFileBackend):
    def __init__(self, path: str) -> None:
        self.path, self.lock = path, JournalFileSymlinkLock(path)  # the lock Optuna's writers take
        super().__init__(path, lock_obj=self.lock)
        self.synced = time.monotonic()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        records = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)  # Optuna's format
        self.lock.acquire()
        try:
            with open(self.path, "ab") as journal:
                journal.write(records.encode("utf-8"))
                journal.flush()
                if time.monotonic() - self.synced >= SYNC_SECONDS:
                    os.fsync(journal.fileno())
                    self.synced = time.monotonic()
        finally:
            self.lock.release()


def check_journal(path: Path) -> None:
    """Refuse a journal with a damaged line before its last one (reading only: a last line cut short
    is a writer's record in the making, or a dead writer's, which repair_journal drops)."""
    if not path.is_file():
        return
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("op_code"), int):
                raise ValueError("not a journal record: a JSON object with an integer op_code")
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
