"""The surfaces of issue 33 and their targets, the one list that the CI tests and scripts/fuzz.py
both read.

A target replays one input given as bytes (`run`, which returns an Outcome or raises Failure): a
file's contents for the raw-byte targets, which Atheris mutates from `seeds`; a JSON document
for the structured ones. `strategy` is Hypothesis's way to its inputs (structured cases, files
with the right structure and wrong contents), `examples` how many of them CI tries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from fuzz import checkpoints, datafiles, images, overrides, rundirs, sweeper
from fuzz.harness import Failure, NotACase, Outcome, Tally
from fuzz.world import World


@dataclass(frozen=True)
class Target:
    name: str
    surface: str
    run: Callable[[World, bytes], Outcome]
    strategy: Callable[[World], st.SearchStrategy[bytes]]
    examples: int  # Hypothesis examples in CI
    seeds: Callable[[World], list[bytes]] | None = None  # a raw-byte target's corpus for Atheris


TARGETS = (
    Target("overrides", "overrides", overrides.run, overrides.strategy, 60),
    Target("idx", "data", datafiles.run, datafiles.strategy, 40, datafiles.seeds),
    Target("image", "images", images.run, images.strategy, 200, images.seeds),
    Target("image_folder", "images", images.run_folder, images.folder_strategy, 8),
    Target("checkpoint", "checkpoints", checkpoints.run, checkpoints.strategy, 40, checkpoints.seeds),
    Target("metrics", "rundirs", rundirs.run_metrics, rundirs.metrics_strategy, 25, rundirs.metrics_seeds),
    Target("run_edit", "rundirs", rundirs.run_edit, rundirs.edit_strategy, 15),
    Target("search_json", "sweeper", sweeper.run_search_json, sweeper.search_json_strategy, 100, sweeper.search_json_seeds),
    Target("journal", "sweeper", sweeper.run_journal, sweeper.journal_strategy, 60, sweeper.journal_seeds),
    Target("storage", "sweeper", sweeper.run_storage, sweeper.storage_strategy, 100, sweeper.storage_seeds),
)  # fmt: skip
BY_NAME = {target.name: target for target in TARGETS}
SURFACES = tuple(dict.fromkeys(target.surface for target in TARGETS))


def attempt(target: Target, world: World, data: bytes, tally: Tally, failures: Path | None) -> Outcome | None:
    """One input for the campaign: counted in `tally`; a failure saved under `failures`."""
    try:
        outcome = target.run(world, data)
    except NotACase:
        return None
    except Failure as failure:
        tally.fail(target.name, data, failure, failures)
        return None
    tally.add(outcome)
    return outcome
