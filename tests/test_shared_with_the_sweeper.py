"""The facts lenet_fmnist shares with the Optuna sweeper's package: written in each (the app must
run without the sweeper installed, and the sweeper knows nothing of the app), tied here."""

from __future__ import annotations

import pytest

from lenet_fmnist.run import config_keys, files

names = pytest.importorskip(
    "optuna_pruning_sweeper.names", reason="needs the sweeper (plugins/hydra_optuna_pruning_sweeper)"
)


def test_the_files_of_a_search_directory_have_one_name() -> None:
    """The report recognises a search by the file the sweeper writes; both read a job's and a
    sweep's config by Hydra's names."""
    assert files.SEARCH_FILE == names.SEARCH_FILE
    assert files.HYDRA_CONFIG == names.HYDRA_CONFIG
    assert files.SWEEP_CONFIG == names.SWEEP_CONFIG


@pytest.mark.parametrize(
    "override", ["seed=1", "+data.root=/x", "++resume=true", "~seed", "optimizer.lr=0.1", "a.b=c=d", "x"]
)
def test_an_overrides_key_is_read_the_same_way(override: str) -> None:
    assert config_keys.key_of(override) == names.key_of(override)


def test_resuming_a_search_is_named_the_same_way() -> None:
    """The app's resume hint for a search and the sweeper's own messages both set resume=true."""
    assert config_keys.key_of(names.RESUME_OVERRIDE) == config_keys.key_of(config_keys.RESUME) == "resume"
