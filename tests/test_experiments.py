"""conf/experiment/: every experiment composes to the job list the study asks for.

The job list is what Hydra's BasicSweeper runs: the cartesian product of `hydra.sweeper.params`
(plus command-line overrides). These tests compose each experiment with Hydra's compose API, expand
its params with BasicSweeper's own code, compare the jobs with the expected ones, and compose the
jobs to check what each one trains. No training happens here.
"""

from __future__ import annotations

import functools
import itertools
import re

import pytest
from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from lenet_fmnist.config import TrainConfig, validate
from lenet_fmnist.run.config_keys import flatten

# The study's base: every experiment holds the factors it does not vary here.
BASE = {"activation": "relu", "pool": "max", "optimizer": "sgd", "dropout": "none", "augmentation": "standard"}
SEEDS = ["0", "1", "2"]
# Each variant (conf/variant/) changes the base in one group; these are the groups' options.
VARIANTS = {
    "base": {},
    "tanh": {"activation": "tanh"},
    "sigmoid": {"activation": "sigmoid"},
    "avg_pool": {"pool": "avg"},
    "adam": {"optimizer": "adam"},
    "rmsprop": {"optimizer": "rmsprop"},
    "dropout": {"dropout": "standard"},
    "no_augmentation": {"augmentation": "none"},
}
# experiment -> the variants it sweeps, the base first.
ONE_FACTOR = {
    "activation": ["base", "tanh", "sigmoid"],
    "pooling": ["base", "avg_pool"],
    "optimizer": ["base", "adam", "rmsprop"],
    "dropout": ["base", "dropout"],
    "augmentation": ["base", "no_augmentation"],
}
FACTORIAL = {
    "activation": ["relu", "tanh", "sigmoid"],
    "pool": ["max", "avg"],
    "optimizer": ["sgd", "adam", "rmsprop"],
    "dropout": ["none", "standard"],
    "augmentation": ["standard", "none"],
}


def sweep_jobs(experiment: str, *overrides: str) -> list[list[str]]:
    """The jobs `train -m experiment=NAME OVERRIDES` runs, in order, expanded by BasicSweeper."""
    parser = OverridesParser.create()
    # As in `train -m`, the sweep's own config is composed without the command line's sweeps.
    fixed = [item.input_line for item in parser.parse_overrides(list(overrides)) if not item.is_sweep_override()]
    cfg = compose("train", overrides=[f"experiment={experiment}", *fixed], return_hydra_config=True)
    params = [f"{key}={value}" for key, value in (cfg.hydra.sweeper.params or {}).items()]
    parsed = parser.parse_overrides([*params, *overrides])
    (batch,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return batch


def job_config(experiment: str, job: list[str]) -> DictConfig:
    return _composed(experiment, tuple(job))


@functools.cache  # composing takes ~0.2 s; several tests look at the same jobs
def _composed(experiment: str, job: tuple[str, ...]) -> DictConfig:
    return compose("train", overrides=[f"experiment={experiment}", *job])


def choices(cfg: DictConfig) -> dict[str, str]:
    """What each group chose, read back from the composed values."""
    dropout = "none" if cfg.dropout.p == 0 else "standard"
    augmentation = "standard" if cfg.augmentation.flip and cfg.augmentation.max_shift == 2 else "none"
    return {
        "activation": cfg.activation.name.value,
        "pool": cfg.pool.name.value,
        "optimizer": cfg.optimizer.name,
        "dropout": dropout,
        "augmentation": augmentation,
    }


@pytest.mark.parametrize("experiment", ONE_FACTOR)
def test_one_factor_experiment_sweeps_its_levels_over_three_seeds_at_the_base(
    hydra_conf: None, experiment: str
) -> None:
    variants = ONE_FACTOR[experiment]
    jobs = sweep_jobs(experiment)
    assert jobs == [[f"seed={seed}", f"+variant={variant}"] for seed, variant in itertools.product(SEEDS, variants)]
    assert jobs[0] == ["seed=0", "+variant=base"]  # the base level first: the report's reference
    groups = set()
    for variant in variants:  # one seed of every level: the seeds change nothing else
        cfg = job_config(experiment, [f"+variant={variant}"])
        assert choices(cfg) == {**BASE, **VARIANTS[variant]}
        assert cfg.epochs == 15
        validate(cfg, TrainConfig)
        groups |= VARIANTS[variant].keys()
    assert len(groups) == 1  # one factor varies


def test_only_sigmoid_changes_more_than_its_group(hydra_conf: None) -> None:
    base = job_config("activation", ["+variant=base"])
    sigmoid = job_config("activation", ["+variant=sigmoid"])
    assert base.optimizer.lr == 0.01
    assert sigmoid.optimizer.lr > base.optimizer.lr  # sigmoid's small gradients: see conf/variant/sigmoid.yaml
    for variant in sorted(set(VARIANTS) - {"sigmoid"}):
        cfg = job_config("study", [f"+variant={variant}"])
        for group in set(BASE) - set(VARIANTS[variant]):
            assert cfg[group] == base[group], (variant, group)


def test_study_runs_every_distinct_configuration_of_the_five_experiments_once_per_seed(hydra_conf: None) -> None:
    jobs = sweep_jobs("study")
    assert jobs == [[f"seed={seed}", f"+variant={variant}"] for seed, variant in itertools.product(SEEDS, VARIANTS)]
    composed = {variant: choices(job_config("study", [f"+variant={variant}"])) for variant in VARIANTS}
    assert composed == {variant: {**BASE, **change} for variant, change in VARIANTS.items()}
    # The union of the five experiments' levels, each exactly once.
    assert set(VARIANTS) == {variant for variants in ONE_FACTOR.values() for variant in variants}


def test_factorial_is_the_full_72_configuration_grid_over_three_seeds(hydra_conf: None) -> None:
    jobs = sweep_jobs("factorial")
    grid = list(itertools.product(*FACTORIAL.values()))
    assert len(grid) == 72
    expected = [
        [f"seed={seed}", *(f"{group}={level}" for group, level in zip(FACTORIAL, combo, strict=True))]
        for seed in SEEDS
        for combo in grid
    ]
    assert jobs == expected
    for job in (jobs[0], jobs[-1]):  # composing all 216 takes minutes; the ends show the overrides work
        cfg = job_config("factorial", job)
        assert choices(cfg) == dict(item.split("=", 1) for item in job[1:])
        validate(cfg, TrainConfig)


# Each ablation of the recipe, the one setting it changes and its value there (conf/ablation/):
# an ingredient off, or distillation on.
TEACHERS = [f"outputs/sweeps/best_teachers/{name}/checkpoints/best.pt" for name in ("trial37", "trial33", "trial14")]
ABLATIONS = {
    "with_distillation": ("distill.teachers", TEACHERS),
    "no_label_smoothing": ("label_smoothing", 0.0),
    "no_ema": ("ema.decay", None),
    "no_test_flip": ("augmentation.test_flip", False),
    "no_erasing": ("augmentation.erase_p", 0.0),
    "no_shift": ("augmentation.max_shift", 0),
}


def test_ablation_changes_one_ingredient_of_the_recipe_at_a_time(hydra_conf: None) -> None:
    jobs = sweep_jobs("ablation")
    levels = ["recipe", *ABLATIONS]
    assert jobs == [[f"seed={seed}", f"+ablation={level}"] for seed in ("20", "21", "22") for level in levels]
    recipe = flatten(OmegaConf.to_container(job_config("ablation", ["+ablation=recipe"]), resolve=True))
    best = flatten(OmegaConf.to_container(job_config("best", []), resolve=True))
    # The recipe as the ablation measured it: before its budget went to 100 and 200 epochs, without the wide teacher.
    assert recipe == {**best, "epochs": 50, "distill.teachers": []}
    for level, (key, off) in ABLATIONS.items():
        ablated = flatten(OmegaConf.to_container(job_config("ablation", [f"+ablation={level}"]), resolve=True))
        assert {k for k in recipe if recipe[k] != ablated[k]} == {key}, level  # that one setting alone
        assert ablated[key] == off and recipe[key] != off, level  # which the recipe has otherwise


def test_command_line_overrides_narrow_a_sweep(hydra_conf: None) -> None:
    # What the tests' real sweeps and a quick look at one level rely on: the command line wins.
    assert sweep_jobs("activation", "seed=0", "+variant=base,tanh") == [
        ["seed=0", "+variant=base"],
        ["seed=0", "+variant=tanh"],
    ]


@pytest.mark.parametrize("experiment", [*ONE_FACTOR, "study", "factorial", "best", "ablation"])
def test_sweep_directories_of_two_sweeps_started_in_the_same_second_differ(hydra_conf: None, experiment: str) -> None:
    first, second = (
        compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True) for _ in range(2)
    )
    dirs = [str(cfg.hydra.sweep.dir) for cfg in (first, second)]  # resolves ${now:...}
    assert dirs[0] != dirs[1]
    # Microseconds in the name: the two composed here are milliseconds apart, within one second.
    assert all(re.search(rf"{experiment}/\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{{6}}$", path) for path in dirs)


def test_sweep_job_directories_are_named_by_their_overrides_only(hydra_conf: None) -> None:
    cfg = compose("train", overrides=["experiment=activation"], return_hydra_config=True)
    assert cfg.hydra.sweep._get_node("subdir")._value() == "${hydra:job.num}_${hydra:job.override_dirname}"
    # A data path would nest directories and `experiment=` repeats the sweep directory's name.
    assert {"experiment", "data.root"} <= set(cfg.hydra.job.config.override_dirname.exclude_keys)
