"""Typed schema of the commands that use a trained checkpoint: eval, predict and export
(lenet_fmnist.config says how schemas and conf/ share the work). No torch."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from omegaconf import MISSING

from lenet_fmnist.config import DataRootConfig, check_device, check_threads, require


@dataclass
class EvalConfig:
    checkpoint: str = MISSING
    data: DataRootConfig = MISSING
    eval_batch_size: int = MISSING
    device: str = MISSING
    threads: int | None = MISSING

    def __post_init__(self) -> None:
        require(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, ">= 1")
        check_device(self.device)
        check_threads(self.threads)


class ExportFormat(Enum):
    onnx = "onnx"
    torchscript = "torchscript"


class ExportInput(Enum):
    float32 = "float32"  # N x 1 x 28 x 28, normalised as in training
    uint8 = "uint8"  # N x 28 x 28 grey pixels 0-255; the graph normalises


_INVERT = ("auto", "true", "false")


@dataclass
class PredictConfig:
    checkpoint: str = MISSING
    images: str = MISSING
    top_k: int = MISSING
    # A string, not an enum: Hydra reads `invert=true` as a boolean, which arrives here as "True".
    invert: str = MISSING
    batch_size: int = MISSING
    figure_images: int = MISSING
    device: str = MISSING
    threads: int | None = MISSING

    def __post_init__(self) -> None:
        require(1 <= self.top_k <= 10, "top_k", self.top_k, "an integer from 1 to 10 (there are 10 classes)")
        self.invert = str(self.invert).lower()
        require(self.invert in _INVERT, "invert", self.invert, "auto, true or false")
        require(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        require(self.figure_images >= 0, "figure_images", self.figure_images, ">= 0 (0: no predictions.png)")
        check_device(self.device)
        check_threads(self.threads)


@dataclass
class ExportConfig:
    checkpoint: str = MISSING
    format: ExportFormat = MISSING
    input: ExportInput = MISSING
    out: str | None = MISSING
    overwrite: bool = MISSING
    check_images: int = MISSING
    data: DataRootConfig = MISSING
    threads: int | None = MISSING

    def __post_init__(self) -> None:
        require(self.check_images >= 1, "check_images", self.check_images, ">= 1")
        check_threads(self.threads)
