"""The fuzz campaign of issue 33 at CI's size (tests/fuzz/ says what it checks).

Every target of every surface runs a fixed number of Hypothesis examples, derandomized: the same
inputs at every run, so a failure reproduces (Hypothesis shrinks it and prints it). A raw-byte
target also gets its seeds, changed byte by byte as Atheris changes its corpus. And every input
that once found a bug, kept in tests/fuzz/regressions/<target>/, is replayed. All of it runs the
real entry points in-process; tests/test_fuzz_cli.py runs a few inputs per surface through the
command line in subprocesses. `python scripts/fuzz.py --minutes N` runs the same targets for
longer, with Atheris.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.harness import NotACase, mutated
from fuzz.surfaces import BY_NAME, TARGETS, Target
from fuzz.world import World, guarded

pytestmark = pytest.mark.fuzz

REGRESSIONS = Path(__file__).parent / "fuzz" / "regressions"
MUTATIONS = 12  # byte-level changes of a raw-byte target's seeds, on top of its structured examples


@pytest.fixture
def world(fuzz_world: World) -> Iterator[World]:
    with guarded(fuzz_world):
        yield fuzz_world


def _replay(target: Target, world: World, data: bytes) -> None:
    with contextlib.suppress(NotACase):  # a mutation that is no case of a structured target: nothing to try
        target.run(world, data)


@pytest.mark.parametrize("name", [target.name for target in TARGETS])
def test_surface(name: str, world: World) -> None:
    target = BY_NAME[name]
    inputs = target.strategy(world)
    examples = target.examples
    if target.seeds is not None:
        inputs = st.one_of(inputs, mutated(target.seeds(world)))
        examples += MUTATIONS

    @settings(
        max_examples=examples, derandomize=True, deadline=None, database=None,
        suppress_health_check=list(HealthCheck), print_blob=False,
    )  # fmt: skip
    @given(inputs)
    def case(data: bytes) -> None:
        _replay(target, world, data)

    case()


def _regressions() -> list[Path]:
    return sorted(REGRESSIONS.glob("*/*.bin"))


@pytest.mark.parametrize("path", _regressions(), ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_regression(path: Path, world: World) -> None:
    """An input that once found a bug (its .txt beside it says which, and the fix)."""
    _replay(BY_NAME[path.parent.name], world, path.read_bytes())


def test_every_target_keeps_its_regressions_where_the_replay_finds_them() -> None:
    assert {path.parent.name for path in _regressions()} <= set(BY_NAME)
    assert all(path.with_suffix(".txt").is_file() for path in _regressions())
