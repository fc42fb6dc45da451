"""Configuration: every group option composes with the typed schema, and `validate` rejects
values that are well typed but out of range (in-process, through Hydra's compose API)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from lenet_fmnist import config
from lenet_fmnist.cli import config_dir
from lenet_fmnist.config import AdamConfig, RMSpropConfig, SGDConfig, TrainConfig, validate
from lenet_fmnist.inference.config import EvalConfig, ExportConfig, ExportFormat, ExportInput, PredictConfig
from lenet_fmnist.run.config_keys import RESULT_NEUTRAL_KEYS, flatten
from lenet_fmnist.run.errors import UserError

REPO = Path(__file__).resolve().parents[1]

# The config groups and their options, exactly (the study's, and the activations a search may try).
GROUPS = {
    "activation": {"relu", "tanh", "sigmoid", "elu", "gelu", "silu"},  # the study uses the first three
    "pool": {"max", "avg"},
    "optimizer": {"sgd", "adam", "rmsprop"},
    "dropout": {"none", "standard"},
    "augmentation": {"none", "standard"},
}
Compose = Callable[..., DictConfig]


@pytest.fixture(scope="module")
def compose_with() -> Iterator[Compose]:
    config.register()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):

        def run(name: str, *overrides: str, hydra: bool = False) -> DictConfig:
            return compose(name, overrides=list(overrides), return_hydra_config=hydra)

        yield run


def options(group: str) -> set[str]:
    return {path.stem for path in (config_dir() / group).glob("*.yaml")}


def test_the_groups_offer_exactly_the_study_options() -> None:
    for group, expected in GROUPS.items():
        assert options(group) == expected, group


def test_defaults_are_the_classic_lenet5(compose_with: Compose) -> None:
    cfg = validate(compose_with("train"), TrainConfig)
    assert (cfg.activation.name.value, cfg.pool.name.value) == ("tanh", "avg")
    assert isinstance(cfg.optimizer, SGDConfig) and cfg.optimizer.momentum > 0
    assert cfg.dropout.p == 0.0
    assert not cfg.augmentation.flip and cfg.augmentation.max_shift == 0
    assert cfg.data.root is None and cfg.resume is False
    assert cfg.epochs >= 1 and cfg.batch_size >= 1 and cfg.device == "auto"


# Six compositions that use every option of every group at least once.
COMBINATIONS = [
    {"activation": "relu", "pool": "max", "optimizer": "sgd", "dropout": "none", "augmentation": "none"},
    {"activation": "tanh", "pool": "avg", "optimizer": "adam", "dropout": "standard", "augmentation": "standard"},
    {"activation": "sigmoid", "pool": "max", "optimizer": "rmsprop", "dropout": "standard", "augmentation": "none"},
    {"activation": "elu", "pool": "avg", "optimizer": "sgd", "dropout": "standard", "augmentation": "none"},
    {"activation": "gelu", "pool": "max", "optimizer": "adam", "dropout": "none", "augmentation": "standard"},
    {"activation": "silu", "pool": "avg", "optimizer": "rmsprop", "dropout": "none", "augmentation": "standard"},
]


def test_the_combinations_cover_every_option() -> None:
    for group, expected in GROUPS.items():
        assert {combination[group] for combination in COMBINATIONS} == expected, group


@pytest.mark.parametrize("choice", COMBINATIONS, ids=lambda c: "-".join(c.values()))
def test_every_group_option_composes(compose_with: Compose, choice: dict[str, str]) -> None:
    cfg = validate(compose_with("train", *(f"{group}={option}" for group, option in choice.items())), TrainConfig)
    assert cfg.activation.name.value == choice["activation"]
    assert cfg.pool.name.value == choice["pool"]
    expected = {"sgd": SGDConfig, "adam": AdamConfig, "rmsprop": RMSpropConfig}[choice["optimizer"]]
    assert type(cfg.optimizer) is expected and cfg.optimizer.name == choice["optimizer"] and cfg.optimizer.lr > 0
    assert cfg.dropout.p == (0.5 if choice["dropout"] == "standard" else 0.0)
    standard = choice["augmentation"] == "standard"
    assert (cfg.augmentation.flip, cfg.augmentation.max_shift) == ((True, 2) if standard else (False, 0))


def test_all_groups_at_once_and_group_knobs(compose_with: Compose) -> None:
    cfg = validate(
        compose_with(
            "train", "activation=relu", "pool=max", "optimizer=adam", "optimizer.lr=0.003", "dropout=standard",
            "dropout.p=0.25", "augmentation=standard", "epochs=3", "batch_size=32", "seed=4", "device=cpu",
            "threads=2", "resume=true", "data.root=/tmp/x", "data.val_size=5",
        ),
        TrainConfig,
    )  # fmt: skip
    assert isinstance(cfg.optimizer, AdamConfig) and cfg.optimizer.lr == 0.003
    assert cfg.dropout.p == 0.25 and cfg.augmentation.flip
    assert (cfg.epochs, cfg.batch_size, cfg.seed, cfg.device, cfg.threads) == (3, 32, 4, "cpu", 2)
    assert cfg.resume and cfg.data.root == "/tmp/x" and cfg.data.val_size == 5


def _default_groups() -> set[str]:
    defaults = OmegaConf.to_container(OmegaConf.load(config_dir() / "train.yaml"))["defaults"]
    return {next(iter(entry)) for entry in defaults if isinstance(entry, dict)}


def _other_group_options() -> list[tuple[str, str]]:
    """Options of the other config groups (experiments, variants...), found on disk."""
    groups = sorted(
        path.name
        for path in config_dir().iterdir()
        if path.is_dir() and path.name not in GROUPS and path.name != "hydra" and any(path.glob("*.yaml"))
    )
    return [(group, option) for group in groups for option in sorted(options(group))]


@pytest.mark.parametrize(("group", "option"), _other_group_options() or [pytest.param("", "", marks=pytest.mark.skip)])
def test_every_other_config_composes(compose_with: Compose, group: str, option: str) -> None:
    prefix = "" if group in _default_groups() else "+"
    validate(compose_with("train", f"{prefix}{group}={option}"), TrainConfig)


def test_eval_config_composes(compose_with: Compose) -> None:
    cfg = validate(compose_with("eval", "checkpoint=some/best.pt", "device=cpu"), EvalConfig)
    assert cfg.checkpoint == "some/best.pt"
    with pytest.raises(UserError, match="checkpoint"):
        validate(compose_with("eval"), EvalConfig)


OUT_OF_RANGE = {
    "optimizer.lr=0": "optimizer.lr",
    "optimizer.lr=-1": "optimizer.lr",
    "optimizer.lr=nan": "optimizer.lr",
    "optimizer.lr=inf": "optimizer.lr",
    "optimizer.momentum=1.0": "optimizer.momentum",
    "optimizer.weight_decay=-0.1": "optimizer.weight_decay",
    "epochs=0": "epochs",
    "batch_size=0": "batch_size",
    "eval_batch_size=-5": "eval_batch_size",
    "dropout.p=1.0": "dropout.p",
    "dropout.p=-0.1": "dropout.p",
    "augmentation.max_shift=-1": "augmentation.max_shift",
    "data.val_size=-1": "data.val_size",
    "label_smoothing=1.0": "label_smoothing",
    "label_smoothing=-0.1": "label_smoothing",
    "label_smoothing=nan": "label_smoothing",
    "ema.decay=0": "ema.decay",
    "ema.decay=1.0": "ema.decay",
    "ema.decay=nan": "ema.decay",
    "augmentation.erase_p=1.5": "augmentation.erase_p",
    "augmentation.erase_p=-0.5": "augmentation.erase_p",
    "augmentation.erase_min_area=0": "augmentation.erase_min_area",
    "augmentation.erase_max_area=1.0": "augmentation.erase_max_area",
    "augmentation.erase_max_area=0.01": "augmentation.erase_max_area=0.01 is not allowed: .*\\[0.02, 0.01\\] is an empty",
    "device=gpu": "device",
    "device=cuda:x": "device",
    "threads=0": "threads",
    "+foo=1": "unknown key\\(s\\) foo",
    "+data.extra=1": "unknown key\\(s\\) data.extra",
    "optimizer.name=adam": "optimizer.name",
}


@pytest.fixture(scope="module")
def default_train(compose_with: Compose) -> DictConfig:
    return compose_with("train")


@pytest.mark.parametrize("override", sorted(OUT_OF_RANGE))
def test_out_of_range_values_are_user_errors(default_train: DictConfig, override: str) -> None:
    """Each value set on a copy of the composed default, as Hydra's override would set it."""
    key, value = override.lstrip("+").split("=")
    cfg = default_train.copy()
    parent = OmegaConf.select(cfg, key.rpartition(".")[0]) if "." in key else cfg
    with open_dict(parent):  # `+key=value` adds keys to the typed config the same way
        OmegaConf.update(cfg, key, yaml.safe_load(value) if value not in ("nan", "inf") else float(value))
    with pytest.raises(UserError, match=f"Invalid configuration: .*{OUT_OF_RANGE[override]}"):
        validate(cfg, TrainConfig)


def test_the_ingredients_compose_from_the_command_line(compose_with: Compose) -> None:
    cfg = validate(
        compose_with(
            "train", "label_smoothing=0.1", "ema.decay=0.999", "augmentation=standard", "augmentation.erase_p=1",
            "augmentation.erase_min_area=0.1", "augmentation.erase_max_area=0.1", "data.val_size=0",
        ),
        TrainConfig,
    )  # fmt: skip
    assert (cfg.label_smoothing, cfg.ema.decay, cfg.data.val_size) == (0.1, 0.999, 0)
    assert (cfg.augmentation.erase_p, cfg.augmentation.erase_min_area, cfg.augmentation.erase_max_area) == (1, 0.1, 0.1)


def test_the_ingredients_are_off_by_default_in_every_augmentation_option(compose_with: Compose) -> None:
    for option in sorted(GROUPS["augmentation"]):
        cfg = validate(compose_with("train", f"augmentation={option}"), TrainConfig)
        assert (cfg.label_smoothing, cfg.ema.decay, cfg.augmentation.erase_p) == (0.0, None, 0.0), option
        assert (cfg.augmentation.erase_min_area, cfg.augmentation.erase_max_area) == (0.02, 0.25), option
        assert cfg.data.val_size == 10_000


def test_a_value_from_the_command_line_is_checked_the_same_way(compose_with: Compose) -> None:
    with pytest.raises(UserError, match=r"optimizer.lr=-1.0 is not allowed"):
        validate(compose_with("train", "optimizer.lr=-1"), TrainConfig)


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("activation=foo", MissingConfigException, r"Could not find 'activation/foo'(.|\n)*Available options"),
        ("optimizer=lbfgs", MissingConfigException, r"Could not find 'optimizer/lbfgs'"),
        ("epochs=abc", ConfigCompositionException, r"Error merging override epochs=abc"),
        ("foo=1", ConfigCompositionException, r"Could not override 'foo'"),
    ],
)
def test_hydra_rejects_wrong_options_types_and_keys(
    compose_with: Compose, override: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        compose_with("train", override)


def test_sweep_directory_names_leave_out_exactly_the_result_neutral_keys(compose_with: Compose) -> None:
    """A sweep run again with resume=true must map each job to the same sub-directory, so the
    keys that never change results stay out of the names; `experiment` too (the sweep's own
    directory names it). conf/train.yaml repeats vocabulary's list: this keeps them in step."""
    cfg = compose_with("train", hydra=True)
    assert list(cfg.hydra.job.config.override_dirname.exclude_keys) == [*RESULT_NEUTRAL_KEYS, "experiment"]
    assert "${hydra:job.override_dirname}" in OmegaConf.to_container(cfg.hydra.sweep)["subdir"]


def field_paths(schema: type, prefix: str = "") -> dict[str, object]:
    """Every leaf field of a dataclass and its nested dataclasses, by dotted path, with its default."""
    paths: dict[str, object] = {}
    hints = typing.get_type_hints(schema)
    for item in dataclasses.fields(schema):
        kind = hints[item.name]
        if dataclasses.is_dataclass(kind):
            paths.update(field_paths(kind, f"{prefix}{item.name}."))
        else:
            paths[f"{prefix}{item.name}"] = item.default
    return paths


# Every command's composed YAML against its dataclass (the values a command needs given: ???).
COMMANDS = [
    ("train", (), TrainConfig, None),  # the top-level values and data.*, activation, pool, dropout, augmentation
    ("train", ("optimizer=sgd",), SGDConfig, "optimizer"),
    ("train", ("optimizer=adam",), AdamConfig, "optimizer"),
    ("train", ("optimizer=rmsprop",), RMSpropConfig, "optimizer"),
    ("eval", ("checkpoint=x.pt",), EvalConfig, None),
    ("predict", ("checkpoint=x.pt", "images=photos"), PredictConfig, None),
    ("export", ("checkpoint=x.pt",), ExportConfig, None),
]


@pytest.mark.parametrize(
    ("command", "overrides", "schema", "node"), COMMANDS, ids=lambda v: getattr(v, "__name__", None)
)
def test_every_value_comes_from_the_yaml_alone(
    compose_with: Compose, command: str, overrides: tuple[str, ...], schema: type, node: str | None
) -> None:
    """One source per default: the dataclasses give types and ranges and no value (each field is
    MISSING), and the command's YAML gives a value to every field."""
    defaults = field_paths(schema)
    assert defaults and all(value == MISSING for value in defaults.values()), schema
    composed = OmegaConf.to_container(compose_with(command, *overrides), enum_to_str=True)
    given = flatten(composed[node] if node else composed)
    optional = {"checkpoint", "images"}  # what the command line must say (??? in the YAML)
    assert {key for key in defaults if given.get(key) == MISSING} <= optional
    if schema is TrainConfig:  # the recipe's ingredients too
        assert {"label_smoothing", "ema.decay", "augmentation.erase_p", "distill.alpha"} <= defaults.keys()


def test_the_ingredients_are_written_in_the_yaml() -> None:
    """Each new key has its value, with a comment, in conf/ itself (not only the schema's default)."""
    train = OmegaConf.load(config_dir() / "train.yaml")
    assert train.label_smoothing == 0.0 and train.ema.decay is None
    for option in sorted(GROUPS["augmentation"]):
        written = OmegaConf.load(config_dir() / "augmentation" / f"{option}.yaml")
        assert {"erase_p", "erase_min_area", "erase_max_area"} <= set(written), option


@pytest.mark.parametrize(("command", "overrides", "schema"), [c[:3] for c in COMMANDS if c[0] != "train"])
def test_a_commands_yaml_holds_only_what_it_uses(
    compose_with: Compose, command: str, overrides: tuple[str, ...], schema: type
) -> None:
    composed = flatten(OmegaConf.to_container(compose_with(command, *overrides)))
    assert composed.keys() == field_paths(schema).keys()


def test_the_built_wheel_ships_the_configs_and_runs_from_it(built_wheel: Path, tmp_path: Path) -> None:
    """A non-editable install: the wheel pip builds holds conf/ as lenet_fmnist/conf and the
    launcher plugin, and the command line unpacked from it composes a config from there."""
    with zipfile.ZipFile(built_wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    shipped = {path.relative_to(REPO).as_posix() for path in (REPO / "conf").rglob("*.yaml")}
    assert {f"lenet_fmnist/{name}" for name in shipped} <= names
    assert "hydra_plugins/lenet_fmnist_launchers/__init__.py" in names
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    run = subprocess.run(
        [sys.executable, "-m", "lenet_fmnist", "train", "epochs=7", "--cfg", "job"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "epochs: 7" in run.stdout
    where = subprocess.run(
        [sys.executable, "-c", "from lenet_fmnist.cli import config_dir; print(config_dir())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert Path(where.stdout.strip()) == tmp_path / "site" / "lenet_fmnist" / "conf"


def test_a_checkout_reads_its_own_configs() -> None:
    """The tests run from an editable install of this checkout, which reads conf/ at its top (the
    wheel's lenet_fmnist/conf is test_the_built_wheel_ships_the_configs_and_runs_from_it's)."""
    assert config_dir() == REPO / "conf"


@pytest.mark.parametrize(("given", "read"), [("true", "true"), ("False", "false"), ("AUTO", "auto")])
def test_predict_config_reads_invert_whatever_hydra_makes_of_it(compose_with: Compose, given: str, read: str) -> None:
    """Hydra turns invert=true into a boolean; the schema's string takes it back as "true"."""
    cfg = validate(compose_with("predict", "checkpoint=x.pt", "images=photos", f"invert={given}"), PredictConfig)
    assert (cfg.invert, cfg.top_k, cfg.figure_images) == (read, 3, 64)


def test_export_config_composes(compose_with: Compose) -> None:
    cfg = validate(compose_with("export", "checkpoint=x.pt", "input=uint8"), ExportConfig)
    assert (cfg.format, cfg.input, cfg.out, cfg.overwrite, cfg.check_images) == (
        ExportFormat.onnx, ExportInput.uint8, None, False, 1000,
    )  # fmt: skip
