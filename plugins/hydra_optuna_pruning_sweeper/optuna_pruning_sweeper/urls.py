"""hydra.sweeper.storage as a place: made absolute, so that a trial's process that changed
directory (hydra.job.chdir=true) opens the same study, and shown without its password, so that no
file the sweeper writes (search.json, multirun.yaml, the summary, the log) holds it.

SQLAlchemy is imported only for a database URL, which needs it anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from optuna_pruning_sweeper.errors import SweeperError

STORAGE_KEY = "hydra.sweeper.storage"


def is_url(storage: str) -> bool:
    return "://" in storage


def absolute(storage: str | None, cwd: Path) -> str | None:
    """A journal path, or a SQLite URL's relative file, taken from `cwd` (where the search started)."""
    if storage is None:
        return None
    if not is_url(storage):
        try:
            return str(cwd / Path(storage).expanduser())
        except (RuntimeError, ValueError):  # ~user of a user this machine does not know, or a NUL byte in it
            raise SweeperError(
                f"{STORAGE_KEY}={storage!r} starts with the home directory of a user this machine does not know: "
                "give the journal's path in full."
            ) from None
    url = _url(storage)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return storage
    if url.database.startswith("file:") or Path(url.database).is_absolute():
        return storage
    return url.set(database=str(cwd / url.database)).render_as_string(hide_password=False)


def _url(storage: str) -> Any:
    """The database URL `storage` as SQLAlchemy reads it; SweeperError for one it cannot read."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(storage)
    except (ArgumentError, ValueError) as error:  # ValueError: a port that is no number
        raise SweeperError(
            f"{STORAGE_KEY}={masked(storage)} is not a database URL SQLAlchemy can read ({error}): write it as "
            "dialect+driver://user:password@host:port/database, e.g. sqlite:///study.db, or give a journal file's path."
        ) from None


def _printable(text: str) -> str:
    """`text` with each character that prints nothing (a newline, a NUL) escaped, as repr() shows it."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def masked(storage: str) -> str:
    """The storage as shown to a reader: with its password, if it has one, as ***, and what does not
    print escaped."""
    return _printable(_masked(storage))


def _masked(storage: str) -> str:
    if not is_url(storage):
        return storage
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(storage)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads: opening it will say so; show nothing after "://"
        return storage.split("://", 1)[0] + "://***"
    return url.render_as_string(hide_password=True) if url.password else storage


def has_clear_password(config: DictConfig) -> bool:
    """Whether hydra.sweeper.storage holds a password written out, rather than interpolated
    (e.g. ${oc.env:DB_PASSWORD}): Hydra writes every job's config, password included, to its
    .hydra/hydra.yaml."""
    raw = OmegaConf.to_container(config.hydra.sweeper, resolve=False).get("storage")
    return isinstance(raw, str) and is_url(raw) and "${" not in raw and _masked(raw) != raw


def masked_config(config: DictConfig) -> DictConfig:
    """The sweep's config as multirun.yaml keeps it: the storage's password masked, in its value and
    in the command line's overrides (interpolations are kept as written: they hold no password)."""
    copy = OmegaConf.to_container(config, resolve=False)
    sweeper, overrides = copy["hydra"]["sweeper"], copy["hydra"]["overrides"]
    if isinstance(sweeper.get("storage"), str) and "${" not in sweeper["storage"]:
        sweeper["storage"] = masked(sweeper["storage"])
    overrides["hydra"] = [_masked_override(line) for line in overrides.get("hydra", [])]
    return OmegaConf.create(copy)


def _masked_override(line: str) -> str:
    key, _, value = line.partition("=")
    if key.lstrip("+~") != STORAGE_KEY:
        return line
    quote = value[:1] if value[:1] in "'\"" and value.endswith(value[:1]) else ""
    inner = value[1:-1] if quote else value
    return f"{key}={quote}{masked(inner)}{quote}"
