"""Typed schema of every configuration, registered in Hydra's ConfigStore.

The YAML files in conf/ hold the values and the comments that explain them, once; these
dataclasses hold the types and the ranges, and no value (every field is MISSING until conf/ gives
it). A config made in Python comes from conf/ too (`compose`). Hydra rejects a wrong option, a
wrong type or an unknown key while it composes; `validate` then rejects values that are well typed
but out of range, before any work. This module must not import torch: `--help` and config errors
stay fast.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lenet_fmnist.run.errors import UserError
from lenet_fmnist.schema_keys import absent_keys, unknown_keys

_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
# torch's seeds: a 64-bit integer, signed or not (torch.manual_seed raises outside this range).
SEED_RANGE = (-(2**63), 2**64 - 1)
# More threads than any machine's cores: a team that large only waits on itself (each thread is
# started at once, so a mistyped count could otherwise exhaust the system's threads).
MAX_THREADS = 1024
# A LeNet-5 this many times wider has about 2.5e9 parameters (they grow with the width squared).
MAX_WIDTH = 64


class Activation(Enum):
    relu = "relu"
    tanh = "tanh"
    sigmoid = "sigmoid"
    elu = "elu"
    gelu = "gelu"
    silu = "silu"


class Pool(Enum):
    max = "max"
    avg = "avg"


class Schedule(Enum):
    constant = "constant"
    cosine = "cosine"


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{key}={value!r} is not allowed: {key} must be {allowed}.")


def check_seed(key: str, seed: int) -> None:
    low, high = SEED_RANGE
    require(low <= seed <= high, key, seed, "an integer from -2**63 to 2**64 - 1 (a 64-bit seed)")


def _check_name(name: str, expected: str) -> None:
    # The optimizer's knobs come with its group option, so its name is chosen there, not here.
    require(
        name == expected, "optimizer.name", name, f"{expected!r}; choose optimizers with optimizer=sgd|adam|rmsprop"
    )


@dataclass
class ActivationConfig:
    name: Activation = MISSING


@dataclass
class PoolConfig:
    name: Pool = MISSING


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    schedule: Schedule = MISSING
    warmup_epochs: int = MISSING

    def __post_init__(self) -> None:
        require(self.lr > 0 and self.lr < float("inf"), "optimizer.lr", self.lr, "a finite number > 0")
        require(self.weight_decay >= 0, "optimizer.weight_decay", self.weight_decay, ">= 0")
        require(self.warmup_epochs >= 0, "optimizer.warmup_epochs", self.warmup_epochs, ">= 0")


@dataclass
class SGDConfig(OptimizerConfig):
    name: str = MISSING
    momentum: float = MISSING
    nesterov: bool = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 <= self.momentum < 1, "optimizer.momentum", self.momentum, "in [0, 1)")
        _check_name(self.name, "sgd")


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = MISSING
    beta1: float = MISSING
    beta2: float = MISSING
    eps: float = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_name(self.name, "adam")
        require(0 <= self.beta1 < 1, "optimizer.beta1", self.beta1, "in [0, 1)")
        require(0 <= self.beta2 < 1, "optimizer.beta2", self.beta2, "in [0, 1)")
        require(self.eps > 0, "optimizer.eps", self.eps, "> 0")


@dataclass
class RMSpropConfig(OptimizerConfig):
    name: str = MISSING
    alpha: float = MISSING
    momentum: float = MISSING
    eps: float = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_name(self.name, "rmsprop")
        require(0 <= self.alpha < 1, "optimizer.alpha", self.alpha, "in [0, 1)")
        require(0 <= self.momentum < 1, "optimizer.momentum", self.momentum, "in [0, 1)")
        require(self.eps > 0, "optimizer.eps", self.eps, "> 0")


@dataclass
class DropoutConfig:
    p: float = MISSING

    def __post_init__(self) -> None:
        require(0 <= self.p < 1, "dropout.p", self.p, "in [0, 1)")


@dataclass
class AugmentationConfig:
    flip: bool = MISSING
    max_shift: int = MISSING
    test_flip: bool = MISSING
    erase_p: float = MISSING
    erase_min_area: float = MISSING
    erase_max_area: float = MISSING

    def __post_init__(self) -> None:
        require(0 <= self.max_shift <= 8, "augmentation.max_shift", self.max_shift, "in [0, 8] pixels")
        require(0 <= self.erase_p <= 1, "augmentation.erase_p", self.erase_p, "in [0, 1] (0: no erasing)")
        for key in ("erase_min_area", "erase_max_area"):
            value = getattr(self, key)
            require(0 < value < 1, f"augmentation.{key}", value, "in (0, 1), a fraction of the image's area")
        require(
            self.erase_min_area <= self.erase_max_area,
            "augmentation.erase_max_area",
            self.erase_max_area,
            f">= augmentation.erase_min_area ({self.erase_min_area}): "
            f"[{self.erase_min_area}, {self.erase_max_area}] is an empty size range",
        )


@dataclass
class EMAConfig:
    decay: float | None = MISSING

    def __post_init__(self) -> None:
        require(self.decay is None or 0 < self.decay < 1, "ema.decay", self.decay, "null (no average) or in (0, 1)")


@dataclass
class SWAConfig:
    epochs: int | None = MISSING


@dataclass
class ModelConfig:
    name: str = MISSING  # the model group's option, for logs and reports
    width: int = MISSING

    def __post_init__(self) -> None:
        require(
            1 <= self.width <= MAX_WIDTH, "model.width", self.width, f"from 1 to {MAX_WIDTH} (1: the study's LeNet-5)"
        )


@dataclass
class DistillConfig:
    teachers: list[str] = MISSING
    alpha: float = MISSING
    temperature: float = MISSING

    def __post_init__(self) -> None:
        require(0 <= self.alpha <= 1, "distill.alpha", self.alpha, "in [0, 1] (the soft targets' share of the loss)")
        require(self.temperature > 0, "distill.temperature", self.temperature, "> 0")


@dataclass
class DataRootConfig:
    """Where the data is: all that `eval` and `export` need (the test set is fixed)."""

    root: str | None = MISSING


@dataclass
class DataConfig(DataRootConfig):
    val_size: int = MISSING
    split_seed: int = MISSING

    def __post_init__(self) -> None:
        require(self.val_size >= 0, "data.val_size", self.val_size, ">= 0 (0: no validation)")
        check_seed("data.split_seed", self.split_seed)


def check_device(device: str) -> None:
    require(bool(_DEVICE_PATTERN.fullmatch(device)), "device", device, "auto, cpu, cuda or cuda:N")


def check_threads(threads: int | None) -> None:
    require(
        threads is None or 1 <= threads <= MAX_THREADS,
        "threads",
        threads,
        f"null (automatic) or from 1 to {MAX_THREADS}",
    )


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    activation: ActivationConfig = MISSING
    pool: PoolConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    dropout: DropoutConfig = MISSING
    augmentation: AugmentationConfig = MISSING
    data: DataConfig = MISSING
    ema: EMAConfig = MISSING
    swa: SWAConfig = MISSING
    distill: DistillConfig = MISSING
    label_smoothing: float = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    seed: int = MISSING
    device: str = MISSING
    shards: int = MISSING
    threads: int | None = MISSING
    resume: bool = MISSING

    def __post_init__(self) -> None:
        require(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "in [0, 1) (0: none)")
        require(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        swa = self.swa.epochs
        require(
            swa is None or 1 <= swa <= self.epochs,
            "swa.epochs",
            swa,
            f"null (none) or from 1 to epochs ({self.epochs})",
        )
        require(
            swa is None or self.ema.decay is None,
            "swa.epochs",
            swa,
            "null while ema.decay is set (one average per run)",
        )
        require(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        require(1 <= self.shards <= self.batch_size, "shards", self.shards, f"from 1 to batch_size ({self.batch_size})")
        require(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, ">= 1")
        check_seed("seed", self.seed)
        check_device(self.device)
        check_threads(self.threads)


def register() -> None:
    """Make the schemas known to Hydra; conf/*.yaml name them in their defaults lists."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    from lenet_fmnist.inference.config import EvalConfig, ExportConfig, PredictConfig  # they use this module

    store.store(name="eval_schema", node=EvalConfig)
    store.store(name="predict_schema", node=PredictConfig)
    store.store(name="export_schema", node=ExportConfig)
    for name, node in (("sgd", SGDConfig), ("adam", AdamConfig), ("rmsprop", RMSpropConfig)):
        store.store(group="schema/optimizer", name=name, node=node)


Schema = TypeVar("Schema")


def validate(cfg: DictConfig, schema: type[Schema]) -> Schema:
    """Return the composed `cfg` as a `schema` instance, or raise UserError naming the bad value.

    Hydra's typed composition has already caught wrong options, types and misspelt keys; building
    the dataclasses runs each `__post_init__` range check, and the key comparisons catch keys
    added with `+key=value` and deleted with `~key`, which Hydra accepts even on a typed config.
    """
    if absent := absent_keys(cfg):
        raise UserError(
            f"Invalid configuration: no value for {', '.join(absent)}. Give each as KEY=VALUE (a `~KEY` override "
            "deletes a key's value; see `--cfg job` for the full tree)."
        )
    try:
        typed = OmegaConf.to_object(cfg)
    except ValueError as error:
        raise UserError(f"Invalid configuration: {error}") from None
    except OmegaConfBaseException as error:
        # OmegaConf wraps what __post_init__ raised; its own message is the one to show.
        cause = error.__cause__ or error.__context__
        message = str(cause) if isinstance(cause, ValueError) else str(error).splitlines()[0]
        raise UserError(f"Invalid configuration: {message}") from None
    if not isinstance(typed, schema):
        raise UserError(f"Invalid configuration: expected a {schema.__name__} configuration.")
    unknown = unknown_keys(cfg, typed)
    if unknown:
        allowed = ", ".join(f.name for f in dataclasses.fields(typed))
        raise UserError(
            f"Invalid configuration: unknown key(s) {', '.join(unknown)}. "
            f"The top-level keys are: {allowed} (see `--cfg job` for the full tree)."
        )
    return typed


def compose(command: str, *overrides: str, schema: type[Schema]) -> Schema:
    """The validated config of `command OVERRIDES` as the command line composes it from conf/ (for
    code that builds a config in Python: scripts, tests). Outside any Hydra app or compose context."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lenet_fmnist.cli import config_dir  # conf/, wherever the package is installed

    register()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return validate(hydra_compose(command, overrides=list(overrides)), schema)


def to_plain(cfg: Any) -> dict:
    """The resolved configuration as plain Python values (enums as strings), fit for
    checkpoints, JSON and TensorBoard."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)  # type: ignore[return-value]
