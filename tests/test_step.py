"""The sharded step and its team of threads, in this process: a step's bits do not depend on how
many threads compute its shards, one shard is the plain step, and the team hands back its pieces
in order (through the command line: test_shared_machine.py)."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from lenet_fmnist.model import CHANNELS_LAST, LeNet5
from lenet_fmnist.training.augment import normalise
from lenet_fmnist.training.step import Objective, Shard, ShardedStep, Updates, split
from lenet_fmnist.workers import Workers


def batch(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8, generator=generator)
    return images, torch.randint(0, 10, (count,), generator=generator)


def trained(threads: int, shards: int, dropout: float = 0.5, steps: int = 3) -> dict[str, torch.Tensor]:
    """The weights after `steps` sharded steps of SGD with momentum, from seed 0."""
    torch.manual_seed(0)
    model = LeNet5("relu", "max", dropout).to(memory_format=CHANNELS_LAST)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    with Workers(threads) as workers:
        step = ShardedStep(model, Updates(optimizer, scheduler), Objective(0.1, None), workers=workers, shards=shards)
        model.train()
        for seed in range(steps):
            step(*batch(64, seed), None)
    return {key: value.clone() for key, value in model.state_dict().items()}


def assert_same_bits(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize("shards", [2, 3, 4])
def test_the_thread_count_changes_no_bit(shards: int) -> None:
    """With dropout and label smoothing: one thread, two, three."""
    one = trained(1, shards)
    for threads in (2, 3):
        assert_same_bits(one, trained(threads, shards))
    assert not torch.equal(one["features.0.weight"], trained(1, 1)["features.0.weight"]), "control: shards count"


def test_one_shard_is_the_plain_step() -> None:
    """A batch in one shard computes what backward of the batch's mean loss computes."""
    torch.manual_seed(0)
    model = LeNet5("relu", "max").to(memory_format=CHANNELS_LAST)
    reference = LeNet5("relu", "max").to(memory_format=CHANNELS_LAST)
    reference.load_state_dict(model.state_dict())
    images, targets = batch(64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Workers(1) as workers:
        updates = Updates(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0))
        ShardedStep(model, updates, Objective(0.0, None), workers=workers, shards=1)(images, targets, None)
    plain = torch.optim.SGD(reference.parameters(), lr=0.1)
    F.cross_entropy(reference(normalise(images)), targets).backward()
    plain.step()
    assert_same_bits(model.state_dict(), reference.state_dict())


def test_a_batch_splits_into_aligned_parts_none_empty() -> None:
    images, targets = batch(5)
    masks = [torch.arange(5.0)[:, None].expand(5, 3)]
    parts = split(Shard(images, targets, None, masks), 3)
    assert [len(part.targets) for part in parts] == [2, 2, 1]
    assert torch.equal(torch.cat([part.images for part in parts]), images)
    assert [part.dropout_masks[0][:, 0].tolist() for part in parts] == [[0.0, 1.0], [2.0, 3.0], [4.0]]
    assert [len(part.targets) for part in split(Shard(images[:2], targets[:2], None, None), 4)] == [1, 1]


def test_the_team_hands_back_pieces_in_order_and_each_thread_computes_on_one_intra_op_thread() -> None:
    seen: list[int] = []

    def piece(item: int) -> tuple[int, int]:
        seen.append(threading.get_ident())
        return item * item, torch.get_num_threads()

    with Workers(3) as workers:
        results = workers.map(piece, range(10))
    assert [square for square, _ in results] == [item * item for item in range(10)]
    assert {threads for _, threads in results} == {1}
    assert len(set(seen)) == 3  # the caller and two helpers


def test_an_error_in_a_piece_is_raised_once_every_thread_is_done() -> None:
    finished: list[int] = []

    def piece(item: int) -> int:
        if item == 1:
            raise ValueError("piece 1")
        finished.append(item)
        return item

    with Workers(2) as workers, pytest.raises(ValueError, match="piece 1"):
        workers.map(piece, range(6))
    assert sorted(finished) == [0, 2, 4]  # the caller's share; the helper stopped at its first error
    threads = threading.active_count()
    Workers(3).close()
    assert threading.active_count() == threads  # a closed team leaves no thread behind
