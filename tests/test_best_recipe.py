"""experiment=best, the second search's recipe, and experiment=best_teachers, which trains the
teachers of its with_distillation ablation: each teacher is a searched configuration trained as the
search trained it (seed 0, the search's 50,000 images); the recipe is the winner refitted on all
60,000 with five fresh seeds, and the distilled level learns from exactly the checkpoints
best_teachers writes. The commands run end to end on synthetic data: teachers, then a student that
records them; nothing is overwritten by a second run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose
from omegaconf import DictConfig, OmegaConf

from conftest import CLI, assert_ok, output, read_metrics
from lenet_fmnist.config import TrainConfig, validate
from lenet_fmnist.run.config_keys import flatten
from lenet_fmnist.training import distill
from test_experiments import choices, job_config, sweep_jobs

# No search, study or earlier recipe used them (docs/results.md, the third attempt's protocol).
FRESH_SEEDS = ["30", "31", "32", "33", "34"]
USED_SEEDS = {0, 1, 2, 3, 4, 10, 11, 12, *range(20, 30)}
WIDE_TEACHER = "outputs/sweeps/best_wide_teachers/seed0/checkpoints/best.pt"
TEACHERS_DIR = "outputs/sweeps/best_teachers"


def _teacher_names() -> list[str]:
    return [job[0].removeprefix("+searched=") for job in sweep_jobs("best_teachers")]


def _values(cfg: DictConfig) -> dict[str, object]:
    return {**flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)), **choices(cfg)}


def _assert_in_search_space(cfg: DictConfig, search: DictConfig) -> None:
    """`cfg` takes a value of experiment=search's space for every searched key, and its fixed ones."""
    pytest.importorskip(
        "optuna_pruning_sweeper", reason="needs the sweeper: pip install -e ./plugins/hydra_optuna_pruning_sweeper"
    )
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna_pruning_sweeper.space import parse_space

    params = [f"{key}={value}" for key, value in search.hydra.sweeper.params.items()]
    space = parse_space(OverridesParser.create().parse_overrides(params), search)
    values = _values(cfg)
    for key, distribution in space.distributions.items():  # to_internal_repr refuses a foreign category
        assert distribution._contains(distribution.to_internal_repr(values[key])), (key, values[key])
    for fixed in space.fixed:
        key, value = fixed.split("=", 1)
        assert str(values[key]) == value, fixed


def test_each_teacher_is_a_searched_configuration_trained_as_the_search_trained_it(hydra_conf: None) -> None:
    search = compose("train", overrides=["experiment=search"], return_hydra_config=True)
    names = _teacher_names()
    assert len(names) == 3 and len(set(names)) == 3
    sweep = compose("train", overrides=["experiment=best_teachers"], return_hydra_config=True)
    assert sweep.hydra.sweep.dir == TEACHERS_DIR  # fixed: the with_distillation level reads the teachers there
    assert sweep.hydra.sweep._get_node("subdir")._value() == "${hydra:runtime.choices.searched}"
    for name in names:
        teacher = job_config("best_teachers", [f"+searched={name}"])
        validate(teacher, TrainConfig)
        _assert_in_search_space(teacher, search)
        for key in ("seed", "epochs", "data.val_size", "data.split_seed"):  # the search's trial, repeated
            assert OmegaConf.select(teacher, key) == OmegaConf.select(search, key), (name, key)
        assert teacher.distill.teachers == []


def test_a_wide_teacher_is_the_winner_4x_wider_on_the_students_split(hydra_conf: None) -> None:
    """experiment=best_wide_teachers: trial 37's settings on model=lenet5_wide, trained as the
    search trained its trials (50 epochs, the 50,000 images of split seed 0), one directory per seed."""
    sweep = compose("train", overrides=["experiment=best_wide_teachers"], return_hydra_config=True)
    assert sweep.hydra.sweep.dir == "outputs/sweeps/best_wide_teachers"
    assert sweep_jobs("best_wide_teachers") == [["seed=0"]]
    teacher = job_config("best_wide_teachers", ["seed=0"])
    validate(teacher, TrainConfig)
    assert (teacher.model.name, teacher.model.width) == ("lenet5_wide", 4)
    winner = _values(job_config("best_teachers", [f"+searched={_teacher_names()[0]}"]))
    wide = _values(teacher)
    differing = {key for key in winner.keys() | wide.keys() if winner.get(key) != wide.get(key)}
    assert differing == {"model.name", "model.width"}


def test_best_is_the_winner_refitted_with_five_fresh_seeds(hydra_conf: None) -> None:
    names = _teacher_names()
    jobs = sweep_jobs("best")
    assert jobs == [[f"seed={seed}"] for seed in FRESH_SEEDS]
    search = compose("train", overrides=["experiment=search"], return_hydra_config=True)
    assert str(search.seed) not in FRESH_SEEDS and not USED_SEEDS & {int(seed) for seed in FRESH_SEEDS}
    best = job_config("best", jobs[0])
    validate(best, TrainConfig)
    assert best.data.val_size == 0  # the refit: all 60,000, tested once
    assert (search.epochs, best.epochs) == (50, 200)  # the third attempt's step 1
    # The winner is the first teacher: the recipe is its configuration, refitted for longer and
    # distilled from the wide teacher (step 3), which experiment=best_wide_teachers writes there.
    winner, recipe = _values(job_config("best_teachers", [f"+searched={names[0]}"])), _values(best)
    differing = {key for key in winner.keys() | recipe.keys() if winner.get(key) != recipe.get(key)}
    assert differing == {"seed", "data.val_size", "epochs", "distill.teachers"}
    assert best.distill.teachers == [WIDE_TEACHER] and (best.model.name, best.ema.decay) == ("lenet5", 0.999)
    wide = compose("train", overrides=["experiment=best_wide_teachers"], return_hydra_config=True)
    assert best.distill.teachers[0].startswith(f"{wide.hydra.sweep.dir}/seed0/")
    ablated = job_config("ablation", ["+ablation=recipe"])
    assert ablated.epochs == search.epochs, "the ablation repeats what it measured: the 50-epoch recipe"
    assert ablated.distill.teachers == [], "and without the wide teacher, which it never had"
    distilled = job_config("ablation", ["+ablation=with_distillation"])
    assert distilled.distill.teachers == [f"{TEACHERS_DIR}/{name}/checkpoints/best.pt" for name in names]


# ---- the two commands, end to end ----------------------------------------------------------------


def _small(data: Path) -> list[str]:
    """What makes the recipe's commands quick on synthetic data; the recipe's settings stay."""
    return [f"data.root={data}", "epochs=1", "threads=1", "device=cpu", "eval_batch_size=256"]


@pytest.fixture(scope="module")
def trained(cli: CLI, tiny_data: Path) -> tuple[CLI, Path]:
    """experiment=best_teachers run in an empty directory, on a 64-image validation split."""
    teachers = cli.run("train", "-m", "experiment=best_teachers", *_small(tiny_data), "data.val_size=64", timeout=600)
    assert_ok(teachers)
    return cli, tiny_data


DISTILLED = ["experiment=ablation", "+ablation=with_distillation", "seed=20"]


def test_the_distilled_recipe_learns_from_the_checkpoints_best_teachers_wrote(trained: tuple[CLI, Path]) -> None:
    cli, data = trained
    run_dir = cli.cwd / "outputs" / "student"
    assert_ok(cli.run("train", *DISTILLED, *_small(data), f"hydra.run.dir={run_dir}"))
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)[distill.CHECKPOINT_KEY]
    files = [cli.cwd / teacher["path"] for teacher in saved["teachers"]]
    # Every teacher best_teachers trained, once each (their order: the compose test above).
    assert sorted(files) == sorted((cli.cwd / TEACHERS_DIR).glob("*/checkpoints/best.pt")) and len(files) == 3
    assert [t["sha256"] for t in saved["teachers"]] == [distill.sha256_of(path) for path in files]
    assert read_metrics(run_dir)["status"] == "completed"


def test_training_the_teachers_again_overwrites_nothing(trained: tuple[CLI, Path]) -> None:
    cli, data = trained
    before = {path: path.stat().st_mtime_ns for path in (cli.cwd / TEACHERS_DIR).rglob("*.pt")}
    again = cli.run("train", "-m", "experiment=best_teachers", *_small(data), "data.val_size=64")
    assert again.returncode == 1 and "resume=true" in output(again), output(again)
    assert {path: path.stat().st_mtime_ns for path in (cli.cwd / TEACHERS_DIR).rglob("*.pt")} == before


def test_distilling_without_the_teachers_says_how_to_train_them(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    empty = CLI(cli.env, tmp_path)
    result = empty.run("train", *DISTILLED, *_small(tiny_data), f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1 and "Traceback" not in output(result), output(result)
    assert "experiment=best_teachers" in output(result)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.fixture(scope="module")
def wide_teacher(cli: CLI, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> CLI:
    """experiment=best_wide_teachers run in an empty directory (one epoch, a 64-image validation split)."""
    here = CLI(cli.env, tmp_path_factory.mktemp("wide"))
    assert_ok(
        here.run("train", "-m", "experiment=best_wide_teachers", *_small(tiny_data), "data.val_size=64", timeout=600)
    )
    return here


def test_the_recipe_trains_one_run_with_any_seed_from_the_wide_teacher(wide_teacher: CLI, tiny_data: Path) -> None:
    """`train experiment=best seed=N`, without -m, once the teacher is trained: one run of the
    recipe, the seed asked for, a final fit on every training image, distilled from the checkpoint
    experiment=best_wide_teachers wrote (recorded with its SHA-256)."""
    run_dir = wide_teacher.cwd / "best"
    assert_ok(wide_teacher.run("train", "experiment=best", "seed=7", *_small(tiny_data), f"hydra.run.dir={run_dir}"))
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["val_acc"] is None
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    saved = state["config"]
    assert saved["seed"] == 7 and saved["data"]["val_size"] == 0 and saved["model"]["name"] == "lenet5"
    assert (saved["activation"]["name"], saved["optimizer"]["name"]) == ("relu", "rmsprop")
    (teacher,) = state[distill.CHECKPOINT_KEY]["teachers"]
    assert teacher["path"] == WIDE_TEACHER
    assert teacher["sha256"] == distill.sha256_of(wide_teacher.cwd / WIDE_TEACHER)
    assert torch.load(wide_teacher.cwd / WIDE_TEACHER, weights_only=True)["config"]["model"]["width"] == 4
    assert not list(run_dir.parent.glob("best/**/multirun.yaml"))  # one run, not the recipe's sweep of five seeds


def test_the_recipe_without_its_teacher_says_how_to_train_it(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    empty = CLI(cli.env, tmp_path)
    result = empty.run("train", "experiment=best", *_small(tiny_data), f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1 and "Traceback" not in output(result), output(result)
    assert "experiment=best_wide_teachers" in output(result)
    assert not (tmp_path / "run" / "checkpoints").exists()
