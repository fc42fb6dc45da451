"""A path the user gave (a config value, a command-line argument), read once: `~` expanded, and asked
what it is without the exceptions a strange name raises. `Path.is_file()` raises OSError for a
name longer than the file system allows and ValueError for one holding a NUL byte, and
`expanduser` RuntimeError for the home of an unknown user: here such a name is simply not a file
or directory, or a UserError that names it. No torch, no Hydra.
"""

from __future__ import annotations

from pathlib import Path

from lenet_fmnist.run.errors import UserError


def user_path(value: str, key: str) -> Path:
    """`value`, given as `key`, as a Path with `~` and `~user` expanded; UserError for an empty
    value or the home of a user this machine does not know."""
    if not value:
        raise UserError(f"{key}='' is an empty path: give a file or directory (relative paths start where you run).")
    try:
        return Path(value).expanduser()
    except (RuntimeError, ValueError):  # "Could not determine home directory."; a NUL byte in ~user
        user = value[1:].split("/", 1)[0]
        raise UserError(
            f"{key}={value!r} starts with the home directory of {user or 'this user'}, which this machine does not "
            "know: give the path in full."
        ) from None


def is_file(path: Path) -> bool:
    """Whether `path` is a regular file (or a link to one); False for a name no file can have."""
    try:
        return path.is_file()
    except (OSError, ValueError):  # e.g. ENAMETOOLONG, an embedded NUL byte
        return False


def is_dir(path: Path) -> bool:
    """Whether `path` is a directory (or a link to one); False for a name no directory can have."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False
