"""The registry of the user's live training runs, so that a run sees the others (host.threads).

A directory of the user's (`$XDG_RUNTIME_DIR/lenet_fmnist/runs`, else `/tmp/lenet_fmnist-<uid>/runs`)
with one file per training process, named after its pid and locked (`flock`) by it for as long as
it trains. The operating system drops the lock when the process ends however it ends; a file
whose lock can be taken is stale and is removed by whoever finds it. A single run registers as
early as it can (cli.main, before Hydra and torch load); a sweep's job registers for as long as
it trains (`registered_while_running`), so an idle sweep process or worker never counts. No torch.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import logging
import os
import secrets
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple, ParamSpec, TypeVar

log = logging.getLogger(__name__)


def registry(environ: Mapping[str, str] = os.environ) -> Path:
    """The directory of the user's live training runs."""
    runtime = environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "lenet_fmnist" if runtime else Path(f"/tmp/lenet_fmnist-{os.getuid()}")
    return base / "runs"


class _Entry(NamedTuple):
    pid: int  # the process that holds it (a forked child inherits the file, not the registration)
    path: Path
    fd: int


class _Registration:
    """This process's file in the registry, while it is registered (one per process)."""

    entry: _Entry | None = None


_this_process = _Registration()


def _same_file(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd` (a finder may have removed it as stale)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _new_entry(directory: Path) -> _Entry | None:
    """A fresh file in the registry, locked by this process; None when a finder of stale entries
    took it between its creation and the lock (it removes it: try another)."""
    path = directory / f"{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not _same_file(path, fd):
        os.close(fd)
        return None
    os.write(fd, f"{' '.join(sys.argv)}\n".encode())  # for a person looking: which command
    return _Entry(os.getpid(), path, fd)


def register() -> None:
    """Enter this process in the registry until `unregister` or its end; nothing if it is already
    in. A registry that cannot be used (a read-only /tmp) only leaves the process out of it."""
    if is_registered():
        return
    directory = registry()
    try:
        for part in (directory.parent, directory):  # the user's own, closed to others
            part.mkdir(mode=0o700, parents=True, exist_ok=True)
            if part.stat().st_uid != os.getuid():
                raise PermissionError(f"{part} belongs to another user")
        for _ in range(100):  # a finder of stale entries took the file before its lock: a new one
            if entry := _new_entry(directory):
                break
        else:
            raise BlockingIOError("its entries kept being taken by other processes")
    except OSError as error:
        log.warning("This run is not in the registry of runs (%s): runs started beside it will not count it.", error)
        return
    _this_process.entry = entry


def is_registered() -> bool:
    entry = _this_process.entry
    return entry is not None and entry.pid == os.getpid()


@atexit.register
def unregister() -> None:
    """Leave the registry (nothing if not in it); also when the process exits normally."""
    entry = _this_process.entry
    if entry is None or not is_registered():
        return
    entry.path.unlink(missing_ok=True)
    os.close(entry.fd)
    _this_process.entry = None


def other_runs() -> list[int]:
    """The pids of the user's other live training runs; stale entries found on the way are removed."""
    mine = _this_process.entry.path.name if _this_process.entry is not None and is_registered() else None
    pids = []
    with contextlib.suppress(OSError):  # no registry (yet), or one this process cannot read: no runs
        for path in sorted(registry().iterdir()):
            pid = path.name.partition("-")[0]
            if path.name == mine or not pid.isdigit():
                continue
            if _is_live(path):
                pids.append(int(pid))
    return pids


def _is_live(path: Path) -> bool:
    """Whether a process holds this registry file's lock; a file nobody holds is removed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # removed meanwhile: that run has ended
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        if _same_file(path, fd):
            path.unlink(missing_ok=True)
        return False
    finally:
        os.close(fd)


Params = ParamSpec("Params")
Result = TypeVar("Result")


def registered_while_running(function: Callable[Params, Result]) -> Callable[Params, Result]:
    """Run `function` registered: a process that did not register already (a joblib worker, a
    submitit job) registers for the call and leaves the registry after it, so that an idle worker
    between jobs does not count as a run."""

    @functools.wraps(function)
    def registered(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        if is_registered():
            return function(*args, **kwargs)
        register()
        try:
            return function(*args, **kwargs)
        finally:
            unregister()

    return registered
