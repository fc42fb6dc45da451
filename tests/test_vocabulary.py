"""The run directory's vocabulary: statuses, what makes a directory hold a run, and the keys that
never change results; and the report side, which must never need torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_imports_no_torch
from lenet_fmnist.run.config_keys import RESULT_NEUTRAL_KEYS, config_changes
from lenet_fmnist.run.endings import Status
from lenet_fmnist.run.files import holds_run, is_run_directory


def test_a_status_is_written_and_read_back_as_its_plain_name() -> None:
    text = json.dumps({"status": Status.interrupted})
    assert text == '{"status": "interrupted"}'
    assert json.loads(text)["status"] == Status.interrupted


# Written out, not read from RESULT_FILES: a file dropped from there must fail here (docs/configuration.md, Outputs).
@pytest.mark.parametrize("name", ["metrics.json", "checkpoints/last.pt", "eval.json", "predictions.csv"])
def test_any_result_file_makes_a_directory_hold_a_run(tmp_path: Path, name: str) -> None:
    assert not holds_run(tmp_path) and not is_run_directory(tmp_path)
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text("{}")
    assert holds_run(tmp_path)


def test_a_job_with_only_its_hydra_config_is_a_run_for_the_report_but_holds_nothing(tmp_path: Path) -> None:
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 0\n")
    assert is_run_directory(tmp_path) and not holds_run(tmp_path)


def test_resume_may_change_the_neutral_keys_and_nothing_else() -> None:
    saved = {"seed": 0, "threads": 1, "device": "auto", "data": {"root": "/a", "val_size": 10}}
    moved = {"seed": 0, "threads": 2, "device": "cpu", "data": {"root": "/b", "val_size": 10}}
    assert config_changes(saved, moved, RESULT_NEUTRAL_KEYS) == []
    other = {**moved, "seed": 1, "data": {"root": "/b", "val_size": 20}}
    assert config_changes(saved, other, RESULT_NEUTRAL_KEYS) == ["data.val_size: 10 -> 20", "seed: 0 -> 1"]


def test_a_run_saved_before_the_model_and_swa_keys_reads_as_the_study_s_network_without_swa() -> None:
    """Runs saved before conf/model/ and swa.epochs existed resume as what they were: LeNet-5, no SWA."""
    current = {"seed": 0, "model": {"name": "lenet5", "width": 1}, "swa": {"epochs": None}}
    assert config_changes({"seed": 0}, current, RESULT_NEUTRAL_KEYS) == []
    wide = {**current, "model": {"name": "lenet5_wide", "width": 4}, "swa": {"epochs": 5}}
    assert config_changes({"seed": 0}, wide, RESULT_NEUTRAL_KEYS) == [
        "model.name: 'lenet5' -> 'lenet5_wide'", "model.width: 1 -> 4", "swa.epochs: None -> 5",
    ]  # fmt: skip


def test_the_report_side_imports_no_torch() -> None:
    """Every module of lenet_fmnist.report, the vocabulary and the run directory's module load
    without torch."""
    assert_imports_no_torch(
        "import pkgutil, importlib, lenet_fmnist.report as report, lenet_fmnist.run\n"
        "for module in pkgutil.iter_modules(report.__path__):\n"
        "    importlib.import_module(f'lenet_fmnist.report.{module.name}')"
    )
