"""The training loops that scripts/bench.py times in processes of their own (this module imports
torch; bench.py starts `python scripts/bench.py --child VARIANT`, which makes its start-up
decisions first and imports this module after):

  conventional-wN  torchvision FashionMNIST + RandomHorizontalFlip + RandomCrop(28, padding=2)
                   + ToTensor + Normalize, DataLoader with N workers (what most users write)
  floor            the project's model: forward, backward and optimizer step on one ready-made
                   batch, no data work at all, as torch computes it with every thread on the whole
                   batch (its bits depend on the thread count)
  sharded-floor    the same with the project's step (lenet_fmnist.training.step): the batch in shards, each
                   on one thread of the team (its bits do not depend on the thread count)
  accuracy         test accuracy after a few epochs at batch 64: the conventional loop against
                   the project's own epoch function (lenet_fmnist.training.trainer.train_epoch)

Each returns a JSON-able dict, which the child prints as its last line.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from bench import TRAIN
from lenet_fmnist import data
from lenet_fmnist.config import TrainConfig, compose
from lenet_fmnist.inference.evaluate import Classifier, Evaluation
from lenet_fmnist.model import CHANNELS_LAST, LeNet5
from lenet_fmnist.training.augment import Augmenter, normalise
from lenet_fmnist.training.optim import build_optimizer, build_scheduler
from lenet_fmnist.training.step import Objective, ShardedStep, Updates
from lenet_fmnist.training.trainer import Epochs, train_epoch
from lenet_fmnist.workers import Workers

# The benchmark's recipe as the command composes it (bench.TRAIN): relu, max pool, SGD, flip + shift.
RUN = compose("train", *TRAIN, schema=TrainConfig)
AUGMENTATION, SGD, SHARDS = RUN.augmentation, RUN.optimizer, RUN.shards
# After a DataLoader measurement stops, its workers go on preparing the batches they prefetch
# (2 per worker); a pause lets them finish, so their work is not timed as the next measurement's.
SETTLE_SECONDS = 1.0

Runner = Callable[[int], None]  # trains on the given number of images


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torchvision_root(source: Path, into: Path) -> Path:
    """torchvision's FashionMNIST reads plain files from ROOT/FashionMNIST/raw: decompress there."""
    raw = into / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for names in data.FILES.values():
        for name in names:
            plain, packed = source / name, source / f"{name}.gz"
            if plain.exists():
                shutil.copy(plain, raw / name)
            else:
                with gzip.open(packed) as src, open(raw / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    return into


def conventional_loader(root: Path, batch_size: int, workers: int, train_idx: torch.Tensor) -> DataLoader:
    transform = transforms.Compose(
        [
            transforms.RandomHorizontalFlip(),
            transforms.RandomCrop(28, padding=2),
            transforms.ToTensor(),
            transforms.Normalize((data.MEAN,), (data.STD,)),
        ]
    )
    train = Subset(datasets.FashionMNIST(str(root), train=True, transform=transform), train_idx.tolist())
    # persistent workers: their start-up is paid once, not per measurement (favours this variant)
    return DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0)


def conventional_runner(loader: DataLoader, device: torch.device) -> tuple[Runner, torch.nn.Module]:
    """A plain NCHW model and the default SGD, fed by the DataLoader: the textbook loop."""
    model = LeNet5("relu", "max").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=SGD.lr, momentum=SGD.momentum)
    batches = iter(loader)

    def run(images: int) -> None:
        nonlocal batches
        model.train()
        done = 0
        while done < images:
            try:
                inputs, targets = next(batches)
            except StopIteration:
                batches = iter(loader)
                continue
            inputs, targets = inputs.to(device), targets.to(device)
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += len(targets)
        synchronize(device)

    return run, model


def project_model(device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = LeNet5("relu", "max")
    model.to(device, memory_format=CHANNELS_LAST)
    return model, build_optimizer(SGD, model.parameters())


def project_runner(
    train: data.Split, batch_size: int, device: torch.device, workers: Workers, seed: int = 0
) -> tuple[Runner, torch.nn.Module]:
    """The project's own epoch function, computed by `workers`, on the first `images` training
    images; `seed` draws its data order and augmentation (the conventional loop draws them from
    the global seed)."""
    model, optimizer = project_model(device)
    schedule = build_scheduler(optimizer, SGD, steps_per_epoch=1, epochs=1)
    step = ShardedStep(model, Updates(optimizer, schedule), Objective(0.0, None), workers=workers, shards=SHARDS)
    generator = torch.Generator(device=device).manual_seed(seed)
    epochs: dict[int, Epochs] = {}  # per size, each with its augmenter built once as a run does

    def run(images: int) -> None:
        if images not in epochs:
            augmenter = Augmenter(train.images[:images], AUGMENTATION.flip, AUGMENTATION.max_shift)
            epochs[images] = Epochs(step, augmenter, train.labels[:images], generator, batch_size)
        train_epoch(epochs[images], threading.Event(), "bench")

    return run, model


def floor_runner(train: data.Split, batch_size: int, device: torch.device) -> Runner:
    """Forward, backward and optimizer step of the project's model on one ready-made batch."""
    model, optimizer = project_model(device)
    inputs, targets = normalise(train.images[:batch_size]), train.labels[:batch_size]

    def run(images: int) -> None:
        model.train()
        for _ in range(images // batch_size):
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)

    return run


def seconds_per_image(run: Runner, images: int) -> float:
    """Seconds per image of one measurement of `images` images, after a warm-up."""
    run(min(images, 2048))
    time.sleep(SETTLE_SECONDS)
    started = time.perf_counter()
    run(images)
    return (time.perf_counter() - started) / images


# Makes a loop to compare, for a seed: its runner and the model it trains.
LoopMaker = Callable[[int], tuple[Runner, torch.nn.Module]]


def accuracy_check(
    loops: dict[str, LoopMaker], images: int, test: data.Split, epochs: int, seeds: int
) -> dict[str, list[float]]:
    """Test accuracy after `epochs` epochs of `images` images, of each of `loops` per seed."""
    results: dict[str, list[float]] = {name: [] for name in loops}
    for seed in range(seeds):
        for name, make in loops.items():
            torch.manual_seed(seed)
            run, model = make(seed)
            for _ in range(epochs):
                run(images)
            classifier = Classifier(model, False, uint8_input=True)
            results[name].append(Evaluation(1000)(classifier, test.images, test.labels)[1])
    return results


def sharded_floor_runner(train: data.Split, batch_size: int, device: torch.device, workers: Workers) -> Runner:
    """The project's sharded step on one ready-made batch (uint8: each shard normalises its own)."""
    model, optimizer = project_model(device)
    schedule = build_scheduler(optimizer, SGD, steps_per_epoch=1, epochs=1)
    step = ShardedStep(model, Updates(optimizer, schedule), Objective(0.0, None), workers=workers, shards=SHARDS)
    images, targets = train.images[:batch_size], train.labels[:batch_size]

    def run(count: int) -> None:
        model.train()
        for _ in range(count // batch_size):
            step(images, targets, None)
        synchronize(device)

    return run


def measure(variant: str, settings: dict[str, Any], device: torch.device, workers: Workers) -> dict[str, Any]:
    """Run one variant in this process under `settings` (bench.py's options); what it measured.
    `workers` compute the project's pieces (sharded-floor, accuracy)."""
    val_size = RUN.data.val_size if settings["val_size"] is None else settings["val_size"]
    fashion = data.load(settings["data_root"], val_size, 0)
    train_idx, _ = data.split_indices(len(fashion.train.labels) + len(fashion.val.labels), val_size, 0)
    batch_size, images = settings["batch_size"], settings["images"]
    if variant in ("floor", "sharded-floor"):
        train = data.Split(fashion.train.images.to(device), fashion.train.labels.to(device))
        if variant == "floor":
            runner = floor_runner(train, batch_size, device)
        else:
            runner = sharded_floor_runner(train, batch_size, device, workers)
        return {"seconds_per_image": seconds_per_image(runner, images)}
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(fashion.source, Path(tmp))
        if variant == "accuracy":
            train = data.Split(fashion.train.images.to(device), fashion.train.labels.to(device))
            test = data.Split(fashion.test.images.to(device), fashion.test.labels.to(device))
            loops: dict[str, LoopMaker] = {  # at batch 64, each as it draws its own order and augmentation
                "conventional": lambda _: conventional_runner(conventional_loader(root, 64, 0, train_idx), device),
                "project": lambda seed: project_runner(train, 64, device, workers, seed),
            }
            epochs, seeds = settings["accuracy_epochs"], settings["accuracy_seeds"]
            return {"epochs": epochs, **accuracy_check(loops, len(train_idx), test, epochs, seeds)}
        workers = int(variant.removeprefix("conventional-w"))
        run, _ = conventional_runner(conventional_loader(root, batch_size, workers, train_idx), device)
        return {"seconds_per_image": seconds_per_image(run, images)}
