"""Atomic file writes: a crash or a kill leaves either the old file or the new one, never half.

A write that fails for a reason of the machine, not of the program (a full disk, an exceeded
quota, a directory that became read-only or unwritable), raises StorageError: one paragraph for
the user instead of the traceback of whatever library was writing (torch.save reports a full disk
as "RuntimeError: [enforce fail at inline_container.cc...]", with the OSError buried inside).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from lenet_fmnist.run.errors import MachineFault

# The errors that come from the machine, with what to tell the user.
ENVIRONMENT_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


class StorageError(MachineFault):
    """A file could not be written because of the machine (full disk, read-only, no permission)."""


def environment_cause(error: BaseException) -> OSError | None:
    """The OSError of a machine fault anywhere in `error`'s chain of causes, else None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in ENVIRONMENT_ERRORS:
            return current
        current = current.__cause__ or current.__context__
    return None


def _size(count: float) -> str:
    for unit in ("bytes", "KB", "MB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def _room(directory: Path) -> str:
    """What is left on `directory`'s file system: its free space, or that no file can be made there
    (every inode taken: a full disk to the user, however many bytes are free)."""
    if os.statvfs(directory).f_favail == 0:
        return "no file can be created on its file system: every inode is taken"
    return f"{_size(shutil.disk_usage(directory).free)} free on its file system"


def describe(path: Path, cause: OSError) -> str:
    """`Cannot write PATH: REASON`, with what is left on its file system when the disk is full."""
    text = f"Cannot write {path}: {ENVIRONMENT_ERRORS[cause.errno]}"
    if cause.errno in (errno.ENOSPC, errno.EDQUOT):
        with contextlib.suppress(OSError):  # the free space is a courtesy; the reason is what counts
            text += f" ({_room(path.parent)})"
    return text + "."


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through `write` into a temporary file beside `path`, fsync it, then rename it over
    `path` and fsync the directory so the rename itself survives a power cut."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; outputs are meant to be shared like any other file
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)  # frees the space a full disk needs for what follows
        cause = environment_cause(error)
        if cause is None:
            raise
        raise StorageError(describe(path, cause)) from None


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text.encode()))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n")
