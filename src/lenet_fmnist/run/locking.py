"""One process per directory: a run, an evaluation or a sweep holds its directory while it works.

`flock` on a small file in the directory, so the operating system drops the lock when the process
ends in any way (a SIGKILL leaves no stale lock; the file stays, saying who held it last). Two
commands started at the same moment on one directory cannot both get it, which the "already holds
a run" check alone could not promise. No torch, no Hydra.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from lenet_fmnist.run.errors import UserError
from lenet_fmnist.run.files import LOCK_FILE

# Directories this process holds, and the open lock file of each: a process may ask again for a
# directory it already holds (the Hydra callback locks a run's directory, then the run itself).
_held: dict[Path, int] = {}
HOLDER_WAIT = 1.0  # seconds a refused process waits for the holder's name (see _holder)


def lock(directory: Path, key: str = "hydra.run.dir") -> None:
    """Hold `directory` (made if missing) until `unlock` or the end of this process, or raise
    UserError naming the process that holds it. `key` is the setting that chose the directory."""
    where = directory.resolve()
    if where in _held:
        return
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise UserError(
            f"{directory} is in use by {holder}: a run, evaluation or sweep is working in it, and one "
            "directory holds one run at a time. Wait for it to end (or stop it; resume=true continues a "
            f"stopped run afterwards), or choose another directory with {key}=DIR."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
    _held[where] = fd


def _holder(fd: int) -> str:
    """Who holds the lock file `fd`, as its holder wrote it. The holder writes just after it takes
    the lock, so a process that lost a race by microseconds may find the file still empty: it
    reads again for up to HOLDER_WAIT seconds before calling the holder "another process"."""
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        holder = os.pread(fd, 256, 0).decode(errors="replace").strip()
        if holder or time.monotonic() > deadline:
            return holder or "another process"
        time.sleep(0.01)


def unlock(directory: Path) -> None:
    """Let go of `directory` (closing the file releases the lock); nothing if not held."""
    fd = _held.pop(directory.resolve(), None)
    if fd is not None:
        os.close(fd)
