"""hydra.sweeper.storage made absolute for the trials and shown without its password."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from optuna_pruning_sweeper.urls import absolute, has_clear_password, masked, masked_config


def test_relative_journals_and_sqlite_files_are_taken_from_where_the_search_started(tmp_path: Path) -> None:
    assert absolute(None, tmp_path) is None
    assert absolute("runs/study.journal", tmp_path) == str(tmp_path / "runs/study.journal")
    assert absolute("sqlite:///study.db", tmp_path) == f"sqlite:///{tmp_path / 'study.db'}"
    for kept in ("/abs/study.journal", "sqlite:////abs/study.db", "sqlite://", "mysql+pymysql://u:p@h/db"):
        assert absolute(kept, tmp_path) == kept


def test_a_password_is_masked_and_nothing_else_changes() -> None:
    assert (
        masked("mysql+pymysql://scott:tiger@db.example:3306/optuna")
        == "mysql+pymysql://scott:***@db.example:3306/optuna"
    )
    assert masked("sqlite:////abs/study.db") == "sqlite:////abs/study.db"
    assert masked("runs/study.journal") == "runs/study.journal"
    assert masked(masked("mysql://scott:tiger@h/db")) == "mysql://scott:***@h/db"


def test_multirun_yaml_keeps_interpolations_and_masks_written_passwords() -> None:
    config = OmegaConf.create(
        {
            "hydra": {
                "sweeper": {"storage": "mysql://scott:tiger@h/db"},
                "overrides": {"hydra": ["hydra.sweeper.storage='mysql://scott:tiger@h/db'", "hydra.sweep.dir=x"]},
            }
        }
    )
    assert has_clear_password(config)
    shown = masked_config(config)
    assert shown.hydra.sweeper.storage == "mysql://scott:***@h/db"
    assert list(shown.hydra.overrides.hydra) == ["hydra.sweeper.storage='mysql://scott:***@h/db'", "hydra.sweep.dir=x"]
    interpolated = "mysql://scott:${oc.env:DB_PASSWORD}@h/db"
    config.hydra.sweeper.storage = interpolated
    assert not has_clear_password(config)
    assert OmegaConf.to_container(masked_config(config).hydra.sweeper)["storage"] == interpolated
