"""LeNet-5: size and shape for every activation, pooling and dropout setting."""

from __future__ import annotations

import itertools

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from lenet_fmnist.cli import config_dir
from lenet_fmnist.config import Activation, Pool
from lenet_fmnist.model import ACTIVATIONS, MONOTONIC, POOLS, LeNet5

SETTINGS = list(itertools.product(ACTIVATIONS, POOLS, [0.0, 0.5]))


def _names_in_conf(group: str) -> set[str]:
    """The `name` that each option file of a config group in conf/ sets."""
    return {OmegaConf.load(path)["name"] for path in (config_dir() / group).glob("*.yaml")}


def test_every_option_of_the_config_groups_has_a_model() -> None:
    assert set(ACTIVATIONS) == _names_in_conf("activation") == {option.value for option in Activation}
    assert set(POOLS) == _names_in_conf("pool") == {option.value for option in Pool}


@pytest.mark.parametrize(("activation", "pool", "dropout"), SETTINGS)
def test_size_and_output_shape(activation: str, pool: str, dropout: float) -> None:
    torch.manual_seed(0)
    model = LeNet5(activation, pool, dropout)
    assert sum(p.numel() for p in model.parameters()) == 61_706
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 61_706
    inputs = torch.randn(5, 1, 28, 28)
    for mode in (model.train, model.eval):
        mode()
        logits = model(inputs)
        assert logits.shape == (5, 10) and logits.dtype == torch.float32
        assert torch.isfinite(logits).all()
    assert model.features(inputs).shape == (5, 16, 5, 5)  # 400 features into the first FC layer


@pytest.mark.parametrize(("option", "parameters"), [("lenet5", 61_706), ("lenet5_wide", 972_554)])
def test_each_model_option_is_the_study_s_layout_at_its_width(option: str, parameters: int) -> None:
    """conf/model/'s options: the study's layers, every hidden one `width` times as wide, dropout
    masks drawn for the widened layers."""
    width = OmegaConf.load(config_dir() / "model" / f"{option}.yaml")["width"]
    model = LeNet5("relu", "max", 0.5, width)
    assert sum(p.numel() for p in model.parameters()) == parameters
    convs = [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert convs == [(1, 6 * width), (6 * width, 16 * width)]
    assert linears == [(400 * width, 120 * width), (120 * width, 84 * width), (84 * width, 10)]
    masks = model.draw_dropout_masks(5, torch.device("cpu"))
    assert masks is not None and [mask.shape[1] for mask in masks] == [400 * width, 120 * width, 84 * width]
    assert model(torch.randn(5, 1, 28, 28), masks).shape == (5, 10)


@pytest.mark.parametrize(("activation", "pool"), list(itertools.product(ACTIVATIONS, POOLS)))
def test_layers_are_the_studys(activation: str, pool: str) -> None:
    model = LeNet5(activation, pool)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 6, (5, 5), (2, 2)),
        (6, 16, (5, 5), (0, 0)),
    ]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(fc.in_features, fc.out_features) for fc in linears] == [(400, 120), (120, 84), (84, 10)]
    assert sum(isinstance(m, ACTIVATIONS[activation]) for m in model.modules()) == 4
    pools = [m for m in model.modules() if isinstance(m, POOLS[pool])]
    assert len(pools) == 2 and all(p.kernel_size in (2, (2, 2)) for p in pools)


def test_dropout_before_each_fully_connected_layer_only_when_asked() -> None:
    assert not any(isinstance(m, nn.Dropout) for m in LeNet5(dropout=0.0).modules())
    with_dropout = LeNet5(dropout=0.3)
    drops = [m for m in with_dropout.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 3 and all(d.p == 0.3 for d in drops)
    layers = list(with_dropout.classifier)
    for index, layer in enumerate(layers):
        if isinstance(layer, nn.Linear):
            assert isinstance(layers[index - 1], nn.Dropout)


def test_dropout_is_random_in_training_and_off_in_evaluation() -> None:
    torch.manual_seed(0)
    model = LeNet5("relu", "max", 0.5)
    inputs = torch.randn(8, 1, 28, 28)
    model.train()
    assert not torch.equal(model(inputs), model(inputs))
    model.eval()
    assert torch.equal(model(inputs), model(inputs))


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = LeNet5("relu", "max", 0.5)
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("activation", sorted(MONOTONIC))
def test_max_pooling_before_the_activation_computes_the_studys_order(activation: str) -> None:
    """The model applies the activation after max pooling (cheaper); the textbook order
    conv -> act -> pool must give the same outputs and the same gradients for every parameter."""
    torch.manual_seed(0)
    model = LeNet5(activation, "max")
    assert [type(m) for m in model.features] == [
        nn.Conv2d,
        nn.MaxPool2d,
        ACTIVATIONS[activation],
        nn.Conv2d,
        nn.MaxPool2d,
        ACTIVATIONS[activation],
    ]
    conv1, pool1, act1, conv2, pool2, act2 = model.features
    textbook = nn.Sequential(conv1, act1, pool1, conv2, act2, pool2, model.classifier)
    inputs = torch.randn(16, 1, 28, 28)
    ours_out, textbook_out = model(inputs), textbook(inputs)
    torch.testing.assert_close(ours_out, textbook_out, rtol=0, atol=1e-6)
    ours_grads = torch.autograd.grad(ours_out.square().sum(), list(model.parameters()))
    textbook_grads = torch.autograd.grad(textbook_out.square().sum(), list(model.parameters()))
    for ours, theirs in zip(ours_grads, textbook_grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_average_pooling_keeps_the_activation_first() -> None:
    model = LeNet5("tanh", "avg")
    assert [type(m) for m in model.features] == [nn.Conv2d, nn.Tanh, nn.AvgPool2d, nn.Conv2d, nn.Tanh, nn.AvgPool2d]


@pytest.mark.parametrize("activation", sorted(set(ACTIVATIONS) - MONOTONIC))
def test_an_activation_that_is_not_increasing_runs_before_max_pooling(activation: str) -> None:
    """GELU and SiLU dip below zero, so pooling first would compute another function: the model
    keeps conv -> act -> pool for them, and the two orders do differ on real inputs."""
    act = ACTIVATIONS[activation]
    model = LeNet5(activation, "max")
    assert [type(m) for m in model.features] == [nn.Conv2d, act, nn.MaxPool2d, nn.Conv2d, act, nn.MaxPool2d]
    values = torch.tensor([[[[-1.0, -3.0], [-4.0, -5.0]]]])  # the max (-1) is not where act peaks
    assert not torch.equal(nn.MaxPool2d(2)(act()(values)), act()(nn.MaxPool2d(2)(values)))


def test_every_increasing_activation_is_marked_so() -> None:
    """MONOTONIC decides the cheaper order: an activation in it must really be non-decreasing."""
    inputs = torch.linspace(-8, 8, 4001)
    for name, act in ACTIVATIONS.items():
        increasing = bool((torch.diff(act()(inputs)) >= 0).all())
        assert increasing == (name in MONOTONIC), name
