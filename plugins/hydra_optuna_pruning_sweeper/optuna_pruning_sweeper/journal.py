"""The journal file as the sweeper and its trials write it: Optuna's JournalFileBackend, each
record appended whole under Optuna's own lock, but synced to disk at most once a second instead
of after every record.

A search writes four or five records a trial (its creation, its values, its attributes, its end);
Optuna's fsync after each costs milliseconds, more than a trivial trial's whole task. Unsynced
records are in the kernel's cache: a killed search or trial loses none of them; a machine that
crashes may lose the last second's, and may leave the last line cut short, which the next search
drops (study.repair_journal) before it resumes.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

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
