"""Which device a run gets, and which runs may resume where: the logic behind device=auto|cpu|cuda|cuda:N,
as pure functions of the number of GPUs, so every branch is tested on any machine (the same checks
through the command line on a real GPU are in test_cuda.py)."""

from __future__ import annotations

import pytest
import torch

from lenet_fmnist import device as runtime
from lenet_fmnist.run.config_keys import RESULT_NEUTRAL_KEYS, config_changes
from lenet_fmnist.run.errors import UserError


@pytest.mark.parametrize(
    ("name", "gpus", "chosen"),
    [
        ("auto", 0, "cpu"),
        ("auto", 1, "cuda:0"),  # metrics.json names the GPU, not just "cuda"
        ("auto", 4, "cuda:0"),
        ("cpu", 0, "cpu"),
        ("cpu", 2, "cpu"),  # an explicit CPU wins over a GPU
        ("cuda", 1, "cuda:0"),
        ("cuda:0", 1, "cuda:0"),
        ("cuda:3", 4, "cuda:3"),
    ],
)
def test_resolve_device(name: str, gpus: int, chosen: str) -> None:
    assert runtime.resolve_device(name, gpus) == torch.device(chosen)


@pytest.mark.parametrize(
    ("name", "gpus", "message"),
    [
        ("cuda", 0, "device='cuda' asks for CUDA, but no CUDA GPU is available here. Use device=cpu or device=auto."),
        ("cuda:0", 0, "device='cuda:0' asks for CUDA, but no CUDA GPU is available here."),
        ("cuda:1", 1, "device='cuda:1' names a GPU that does not exist: 1 CUDA GPU is visible here (cuda:0). "),
        (
            "cuda:2",
            2,
            "device='cuda:2' names a GPU that does not exist: 2 CUDA GPUs are visible here (cuda:0 to cuda:1).",
        ),
    ],
)
def test_a_missing_gpu_is_one_clear_paragraph(name: str, gpus: int, message: str) -> None:
    with pytest.raises(UserError) as caught:
        runtime.resolve_device(name, gpus)
    text = str(caught.value)
    assert text.startswith(message), text
    assert "\n" not in text
    if gpus:
        assert "device=cuda or device=auto" in text and "CUDA_VISIBLE_DEVICES" in text


def test_select_device_on_the_cpu_touches_no_cuda_setting() -> None:
    """The CPU path is the one it always was: select_device changes no global cuDNN flag."""
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    assert runtime.select_device("cpu") == torch.device("cpu")
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == before


def test_the_device_setting_may_change_on_resume() -> None:
    """device=auto to device=cpu for a run that auto put on the CPU: the same computation. A change
    of kind is refused by the checkpoint's own record instead (test_rundir.py)."""
    auto, cpu = {"device": "auto", "epochs": 3}, {"device": "cpu", "epochs": 3}
    assert config_changes(auto, cpu, RESULT_NEUTRAL_KEYS) == []
    assert config_changes(auto, {**cpu, "epochs": 4}, RESULT_NEUTRAL_KEYS) == ["epochs: 3 -> 4"]
