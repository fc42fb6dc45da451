"""Surface 6: the sweeper's files: search.json, the journal, and hydra.sweeper.storage.

Each target works on a copy of the world's search and calls what the sweeper calls:

- `search_json` (the file's bytes): where a search resumes and where the summary starts
  (study._wanted, then storage.read_location and Location.load), then the summary's tables;
- `journal` (the file's bytes): the search resumed on it (study.open_study with resume=true, its
  lease released again), then the summary's tables. A refusal leaves the journal as it was; a
  resume keeps every whole line it had (it may drop a last line cut short, as documented);
- `storage` (the value's UTF-8 bytes): the sweeper's reading of hydra.sweeper.storage
  (urls.absolute, urls.masked, as OptunaPruningSweeper._settings does), then a new search opened
  there when the place lies inside the case's scratch directory (a database on 127.0.0.1's port 1
  is tried too: nothing listens there).

Every refusal is a SweeperError of one paragraph naming the file or the value.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from fuzz.harness import Failure, Outcome, call, unchanged
from fuzz.world import World, search_settings, search_space


def _summary_tables(sweep_dir: Path, study: Any = None) -> str:
    """The summary of the search (search.md and search.csv's text) without its figures."""
    from optuna_pruning_sweeper import summary
    from optuna_pruning_sweeper.storage import read_location

    if study is None:
        location = read_location(sweep_dir)
        if location is None:
            return "no search.json"
        study = location.load(sweep_dir)
    table = summary.rows(study, sweep_dir)
    return summary.markdown(study, table, [], []) + summary.csv_text(study, table)


def _copy(world: World, scratch: Path) -> Path:
    return Path(shutil.copytree(world.search, scratch / "search"))


def run_search_json(world: World, raw: bytes) -> Outcome:
    from optuna_pruning_sweeper.study import _wanted

    with world.scratch() as scratch:
        sweep_dir = _copy(world, scratch)
        (sweep_dir / "search.json").write_bytes(raw)
        names = [str(sweep_dir / "search.json"), str(sweep_dir)]
        with unchanged(sweep_dir, world.search):
            outcome = call(lambda: _wanted(search_settings(), sweep_dir), names)
            if outcome.accepted:
                outcome = call(lambda: _summary_tables(sweep_dir), names)
    return outcome


def _whole_lines(content: bytes) -> list[bytes]:
    return content.split(b"\n")[:-1]


def _resume(sweep_dir: Path) -> str:
    from optuna_pruning_sweeper.study import StudyRequest, open_study

    request = StudyRequest(sweep_dir, resume=True, command="app.py")
    study, lease = open_study(search_settings(), search_space(), request)
    try:
        return _summary_tables(sweep_dir, study)
    finally:
        lease.release()


def run_journal(world: World, raw: bytes) -> Outcome:
    with world.scratch() as scratch:
        sweep_dir = _copy(world, scratch)
        journal = sweep_dir / "optuna.journal"
        journal.write_bytes(raw)
        names = [str(journal), str(sweep_dir)]
        with unchanged(world.search):
            outcome = call(lambda: _resume(sweep_dir), names)
        after = journal.read_bytes() if journal.is_file() else b""
    if not outcome.accepted and after != raw:
        raise Failure(f"the refused search changed its journal:\n{outcome.message}")
    if outcome.accepted and after[: len(b"\n".join(_whole_lines(raw)))] != b"\n".join(_whole_lines(raw)):
        raise Failure("the resumed search lost lines of its journal")
    return outcome


# ---- hydra.sweeper.storage ----------------------------------------------------------------------


def _inside(place: str, scratch: Path) -> bool:
    """Whether opening `place` (absolute: a journal path or a URL) touches nothing outside `scratch`."""
    from sqlalchemy.engine import make_url

    def below(path: str) -> bool:  # by the name alone: a strange one makes no system call here
        return os.path.normpath(path).startswith(f"{scratch}{os.sep}")

    if "://" not in place:
        return below(place)
    url = make_url(place)
    if url.get_backend_name() != "sqlite":
        return url.host in ("127.0.0.1", "localhost") and url.port == 1
    database = url.database or ""
    return database in ("", ":memory:") or below(database)


def _open_new(storage: str, scratch: Path) -> str:
    """A new search stored at `storage` (hydra.sweeper.storage), from `scratch`."""
    from optuna_pruning_sweeper.study import StudyRequest, open_study
    from optuna_pruning_sweeper.urls import absolute, masked

    place = absolute(storage, scratch)
    shown = masked(storage)
    if place is None or not _inside(place, scratch):
        return f"not opened: {shown}"
    sweep_dir = scratch / "sweep"
    sweep_dir.mkdir(exist_ok=True)
    study, lease = open_study(search_settings(place), search_space(), StudyRequest(sweep_dir, False, "app.py"))
    lease.release()
    return f"opened {shown} ({len(study.trials)} trials)"


def run_storage(world: World, raw: bytes) -> Outcome:
    storage = raw.decode("utf-8", errors="replace")
    with world.scratch() as scratch, unchanged(world.search):
        return call(lambda: _open_new(storage, scratch), [storage, "hydra.sweeper.storage"])


# ---- structured inputs ----------------------------------------------------------------------

ODD = (None, 0, 5, -1.5, "", "x", [], {}, [1], {"a": 1}, True, "sqlite:///x.db", "://", "~nouser/x", "a" * 300)


@st.composite
def _search_json(draw: st.DrawFn) -> bytes:
    value: Any = {"storage": None, "study_name": "search"}
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(("storage", "study_name", "extra")))
        if draw(st.integers(0, 3)) == 0:
            value.pop(key, None)
        else:
            value[key] = draw(st.sampled_from(ODD))
    text = json.dumps(value)
    form = draw(st.sampled_from(("whole", "whole", "cut", "list", "garbage")))
    if form == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif form == "list":
        text = json.dumps([value])
    elif form == "garbage":
        return draw(st.binary(max_size=40))
    return text.encode()


def search_json_strategy(world: World) -> st.SearchStrategy[bytes]:
    return _search_json()


def search_json_seeds(world: World) -> list[bytes]:
    return [(world.search / "search.json").read_bytes()]


@st.composite
def _journal(draw: st.DrawFn, original: bytes) -> bytes:
    lines = original.split(b"\n")[:-1]
    how = draw(
        st.sampled_from(("cut", "garbage line", "garbage last", "not a record", "drop", "swap", "empty", "binary"))
    )
    at = draw(st.integers(0, max(len(lines) - 1, 0)))
    if how == "cut":
        content = b"\n".join(lines) + b"\n"
        return content[: draw(st.integers(0, len(content)))]
    if how in ("garbage line", "garbage last", "not a record"):
        junk = draw(
            st.sampled_from((b"{", b"garbage", b"[1, 2]", b"5", b'{"op_code": 99}', b'{"op_code": "x"}', b"{}"))
        )
        where = len(lines) if how == "garbage last" else at
        lines = [*lines[:where], junk, *lines[where:]]
    elif how == "drop" and lines:
        lines = lines[:at] + lines[at + 1 :]
    elif how == "swap" and len(lines) > 1:
        lines[0], lines[at] = lines[at], lines[0]
    elif how in ("empty", "binary"):
        return b"" if how == "empty" else draw(st.binary(max_size=200))
    return b"\n".join(lines) + b"\n"


def journal_strategy(world: World) -> st.SearchStrategy[bytes]:
    return _journal((world.search / "optuna.journal").read_bytes())


def journal_seeds(world: World) -> list[bytes]:
    return [(world.search / "optuna.journal").read_bytes()]


@st.composite
def _storage(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 3)) == 0:  # a journal file's path
        return draw(
            st.sampled_from(("x.journal", "", "~nouser/j", "dir/", "a" * 300, "a\x00b", ".", "j.journal"))
        ).encode()
    scheme = draw(
        st.sampled_from(("sqlite", "sqlite+pysqlite", "mysql+pymysql", "postgresql", "foo", "", "a b", "sqlite:"))
    )
    user = draw(st.sampled_from(("", "user@", "user:secret@", "user:p@ss@", ":@")))
    host = draw(st.sampled_from(("", "127.0.0.1:1", "localhost:1", "127.0.0.1:notaport", "[::1", "localhost:99999")))
    database = draw(
        st.sampled_from(("x.db", "/x.db", ":memory:", "", "dir/x.db", "file:x.db?mode=ro&uri=true", "é.db"))
    )
    query = draw(st.sampled_from(("", "?timeout=1", "?a", "?=", "?timeout=x")))
    return f"{scheme}://{user}{host}/{database}{query}".encode()


def storage_strategy(world: World) -> st.SearchStrategy[bytes]:
    return _storage()


def storage_seeds(world: World) -> list[bytes]:
    return [b"sqlite:///search.db", b"x.journal", b"mysql+pymysql://user:secret@127.0.0.1:1/db"]
