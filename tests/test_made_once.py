"""conftest.made_once, which the shared runs rely on: a directory is made once per session and
handed to every test that asks, and a make that failed leaves nothing that passes for made."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from conftest import made_once


def test_a_directory_is_made_once_and_then_handed_out(tmp_path_factory: pytest.TempPathFactory) -> None:
    name, makes = f"once-{uuid.uuid4().hex}", []

    def make(out: Path) -> None:
        makes.append(out)
        (out / "content").write_text("made")

    first, second = made_once(tmp_path_factory, name, make), made_once(tmp_path_factory, name, make)
    assert first == second == makes[0] and len(makes) == 1
    assert (first / "content").read_text() == "made"


def test_a_make_that_failed_is_started_afresh(tmp_path_factory: pytest.TempPathFactory) -> None:
    name = f"failing-{uuid.uuid4().hex}"

    def fail_half_way(out: Path) -> None:
        (out / "half").write_text("left by a make that failed")
        raise RuntimeError("the run failed")

    with pytest.raises(RuntimeError, match="the run failed"):
        made_once(tmp_path_factory, name, fail_half_way)
    made = made_once(tmp_path_factory, name, lambda out: (out / "whole").write_text("made"))
    assert sorted(path.name for path in made.iterdir()) == ["whole"]
