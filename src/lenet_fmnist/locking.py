"""One run per directory: an exclusive lock that a run, an evaluation or a sweep holds on its
output directory for as long as its process works in it.

The lock is `flock` on a small file in the directory, so the operating system drops it when the
process ends in any way (a SIGKILL leaves no stale lock; the file stays, saying who held it last).
Two commands started at the same moment on one directory cannot both get it, which the "already
holds a run" check alone could not promise. This module must not import torch.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from lenet_fmnist.errors import UserError
from lenet_fmnist.vocabulary import LOCK_FILE

# Directories this process holds, and the open lock file of each: a process may ask again for a
# directory it already holds (the Hydra callback locks a run's directory, then the run itself).
_held: dict[Path, int] = {}


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
        holder = os.read(fd, 256).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(
            f"{directory} is in use by {holder}: a run, evaluation or sweep is working in it, and one "
            "directory holds one run at a time. Wait for it to end (or stop it; resume=true continues a "
            f"stopped run afterwards), or choose another directory with {key}=DIR."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
    _held[where] = fd


def unlock(directory: Path) -> None:
    """Let go of `directory` (closing the file releases the lock); nothing if not held."""
    fd = _held.pop(directory.resolve(), None)
    if fd is not None:
        os.close(fd)
