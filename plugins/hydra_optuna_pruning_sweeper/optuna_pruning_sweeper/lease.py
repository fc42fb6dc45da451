"""One search per study at a time, whatever the storage: the sweeper that runs a study holds a
lease, a user attribute of the study naming it (host, pid, start) with the time it last renewed
it. A thread renews it while the search runs; the search releases it when it ends.

A second sweeper on the same study (a resume while the first one's jobs still run) finds the
lease live and stops before it writes anything. A lease is dead once its holder stopped renewing
it (STALE_SECONDS), or at once when the holder ran on this host and its process is gone: a killed
search never blocks its own resume.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime

import optuna
from optuna.storages import BaseStorage

from optuna_pruning_sweeper.errors import SweeperError
from optuna_pruning_sweeper.names import LEASE_ATTR

log = logging.getLogger(__name__)

RENEW_SECONDS = 20.0  # how often the running search renews its lease
STALE_SECONDS = 120.0  # a lease not renewed for this long is a dead search's


@dataclass(frozen=True)
class Holder:
    """The search that holds a study's lease."""

    host: str
    pid: int
    started: str  # when that search started, local time, to the second
    token: str  # tells two searches of one host and pid apart (a reused pid)
    renewed: float  # time.time() of its last renewal

    @classmethod
    def me(cls) -> Holder:
        started = datetime.now().astimezone().isoformat(timespec="seconds")
        return cls(socket.gethostname(), os.getpid(), started, uuid.uuid4().hex, time.time())

    def alive(self, now: float) -> bool:
        if now - self.renewed > STALE_SECONDS:
            return False
        return self.host != socket.gethostname() or _process_exists(self.pid)

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, started {self.started}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def holder_of(study: optuna.Study) -> Holder | None:
    saved = study.user_attrs.get(LEASE_ATTR)
    try:
        return Holder(**saved) if saved else None
    except TypeError:  # a lease of another version of the sweeper: its holder cannot be told
        return None


def refuse_if_held(study: optuna.Study, where: str) -> None:
    """Stop, writing nothing, when another search holds the study's lease."""
    holder = holder_of(study)
    if holder is not None and holder.alive(time.time()):
        raise SweeperError(
            f"The study {study.study_name!r} in {where} is being searched by another sweeper ({holder.describe()}); "
            "one search per study at a time, or the two would fail each other's running trials. Wait until it ends "
            "(or stop it), then run this command again; a search killed on another host counts as ended "
            f"{STALE_SECONDS:.0f} s after it last renewed its lease."
        )


class Lease:
    """This search's lease on a study, renewed by a daemon thread through a storage of its own."""

    def __init__(self, study: optuna.Study, open_storage: Callable[[], BaseStorage]) -> None:
        self.study, self.open_storage = study, open_storage
        self.holder = Holder.me()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, where: str) -> None:
        """Take the lease, unless another live search holds it. Two searches that found it free at
        once both write it; the later write wins, and the other one stops here."""
        refuse_if_held(self.study, where)
        self.study.set_user_attr(LEASE_ATTR, asdict(self.holder))
        winner = holder_of(self.study)
        if winner is None or winner.token != self.holder.token:
            refuse_if_held(self.study, where)
        self._thread = threading.Thread(target=self._renew, args=(self.open_storage(),), daemon=True)
        self._thread.start()

    def _renew(self, storage: BaseStorage) -> None:
        try:
            study_id = storage.get_study_id_from_name(self.study.study_name)
        except Exception as error:  # in this thread it would print a traceback and end it all the same
            log.warning("The search's lease on its study cannot be renewed (%s); it expires by itself.", error)
            return
        while not self._stop.wait(RENEW_SECONDS):
            renewed = asdict(self.holder) | {"renewed": time.time()}
            try:
                storage.set_study_user_attr(study_id, LEASE_ATTR, renewed)
            except Exception as error:  # the search goes on; a lease left to expire is only a risk
                log.warning("The search's lease on its study could not be renewed (%s).", error)

    def release(self) -> None:
        """Give the lease up; a storage that fails now (a full disk) only leaves it to expire, and
        never hides the error the search may be ending with."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            holder = holder_of(self.study)
            if holder is not None and holder.token == self.holder.token:
                self.study.set_user_attr(LEASE_ATTR, None)
        except Exception as error:
            log.warning("The search's lease on its study could not be released (%s); it expires by itself.", error)
