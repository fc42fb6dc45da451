"""The sweeper's atomic writes (search.json, the summary, optimization_results.yaml): a crash or a
power cut leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from optuna_pruning_sweeper.files import write_text


def test_an_atomic_write_syncs_the_file_and_then_the_directory_that_holds_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, synced = tmp_path / "search.json", []
    fsync = os.fsync

    def recorded(descriptor: int) -> None:
        synced.append(("directory" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "file", target.exists()))
        fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recorded)
    write_text(target, "{}\n")
    assert synced == [("file", False), ("directory", True)]  # the temporary file, then the renamed entry
    assert target.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["search.json"]
