"""Training: fit LeNet-5, keep the best-validation weights, test them, record everything.

Reads top to bottom: building blocks (optimizer, schedule, one epoch), then `run`, which owns a
run directory: metrics.json, checkpoints/{best,last}.pt and the TensorBoard events.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lenet_fmnist import checkpoint, data
from lenet_fmnist.augment import Augmenter, augment, normalise
from lenet_fmnist.config import (
    AdamConfig,
    OptimizerConfig,
    RMSpropConfig,
    Schedule,
    SGDConfig,
    TrainConfig,
    to_plain,
)
from lenet_fmnist.errors import Interrupted, UserError
from lenet_fmnist.evaluate import confusion_matrix, evaluate
from lenet_fmnist.model import CHANNELS_LAST, LeNet5
from lenet_fmnist.runtime import configure_threads, select_device
from lenet_fmnist.storage import write_json
from lenet_fmnist.tensorboard_log import TensorBoardLog

log = logging.getLogger(__name__)

# Config keys that may change when a run is resumed: they change speed, not what is computed.
# The device may change only within its kind (`_check_device_kind`: CPU and CUDA draw different
# random numbers), e.g. device=auto to device=cpu for a run that auto had put on the CPU.
# (Bit-identical resumes on CPU also need the same thread count, as float sums may be split
# differently across threads.)
RESUMABLE_CHANGES = {"resume", "threads", "eval_batch_size", "device"}


class Diverged(UserError):
    """The loss became NaN or infinite; the run stopped with status "diverged"."""


def build_optimizer(cfg: OptimizerConfig, parameters: Any) -> torch.optim.Optimizer:
    """The configured optimizer in its fastest exact form: fused kernels where torch has them
    (SGD, Adam; one kernel for all parameters instead of several per tensor), else foreach."""
    if isinstance(cfg, SGDConfig):
        return torch.optim.SGD(
            parameters,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
            fused=True,
        )
    if isinstance(cfg, AdamConfig):
        return torch.optim.Adam(
            parameters, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay, fused=True
        )
    if isinstance(cfg, RMSpropConfig):
        return torch.optim.RMSprop(
            parameters,
            lr=cfg.lr,
            alpha=cfg.alpha,
            momentum=cfg.momentum,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            foreach=True,
        )
    raise TypeError(f"no optimizer for {type(cfg).__name__}")


def build_schedule(
    optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor: linear warm-up from 1/10 over `warmup_epochs`, then constant
    or a cosine decay to 0 at the last step."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        if cfg.schedule is Schedule.cosine:
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LambdaLR,
    augmenter: Augmenter,
    labels: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    stop: threading.Event,
    description: str,
) -> tuple[float, float] | None:
    """One pass over the training images in a fresh random order; returns mean loss and accuracy,
    or None when `stop` was set (the epoch is abandoned after the step in flight).

    The whole epoch's augmented images are drawn at its start, in one gather (uint8, 0.8 MB per
    1,000 images), so a step only slices its batch. Loss and accuracy are summed on the device and
    read once at the end: no host sync per step.
    """
    model.train()
    count = len(labels)
    order = torch.randperm(count, device=labels.device, generator=generator)
    epoch_images, epoch_labels = augmenter(order, generator), labels[order]
    loss_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    for start in tqdm(range(0, count, batch_size), desc=description, leave=False, disable=None):
        inputs = normalise(epoch_images[start : start + batch_size])
        targets = epoch_labels[start : start + batch_size]
        logits = model(inputs)
        loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_sum += loss.detach() * len(targets)
        correct += (logits.argmax(dim=1) == targets).sum()
        if stop.is_set():
            return None
    return loss_sum.item() / count, correct.item() / count


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set an event that the loop checks after every step, instead of raising
    wherever they land; the previous handlers come back afterwards."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be installed from the main thread
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "generator": generator.get_state(),
    }


def _restore_rng(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    generator.set_state(state["generator"])


def _check_device_kind(state: dict[str, Any], device: torch.device, last: Path) -> None:
    """A run continues on the kind of device it began on: a CUDA generator's state cannot be
    restored into a CPU one or the other way round, and the two draw different numbers."""
    saved_on_gpu = state["rng"]["cuda"] is not None  # _rng_state saves the CUDA state only on a GPU
    if saved_on_gpu == (device.type == "cuda"):
        return
    if saved_on_gpu:
        raise UserError(
            f"resume=true, but {last} was saved by a run on a CUDA GPU and this run would continue on "
            f"{device}. A run continues on the kind of device it began on (CPU and CUDA draw different "
            "random numbers): resume it with device=cuda on a machine with a GPU."
        )
    raise UserError(
        f"resume=true, but {last} was saved by a run on the CPU and this run would continue on {device}. "
        "A run continues on the kind of device it began on (CPU and CUDA draw different random numbers): "
        "resume it with device=cpu."
    )


def _check_resumable(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Differences between the saved and the current config that would change results."""
    changed = []
    for key in sorted(set(saved) | set(current)):
        if key in RESUMABLE_CHANGES and not prefix:
            continue
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += _check_resumable(old, new, f"{prefix}{key}.")
        elif old != new:
            changed.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changed


def _prepare_run_dir(cfg: TrainConfig, run_dir: Path, start_if_unsaved: bool) -> dict[str, Any] | None:
    """Return last.pt's state when resuming, None for a fresh run; refuse to overwrite a run.

    Resuming a run stopped before its first epoch was saved (it left metrics.json but no
    last.pt) starts it again; so does resuming, with `start_if_unsaved`, a sweep's job that
    never started. Otherwise resume=true without last.pt is a mistake."""
    last = run_dir / "checkpoints" / "last.pt"
    if not cfg.resume:
        if last.exists() or (run_dir / "metrics.json").exists():
            raise UserError(
                f"{run_dir} already holds a run; it is left untouched. Pass resume=true to continue "
                "it, or choose another directory with hydra.run.dir=DIR."
            )
        return None
    if not last.exists():
        if start_if_unsaved or (run_dir / "metrics.json").exists():
            log.info("%s holds no saved epoch; the run starts from the beginning.", run_dir)
            return None
        raise UserError(
            f"resume=true, but there is nothing to resume: {last} does not exist. Point "
            "hydra.run.dir at the directory of the run to continue, or drop resume=true."
        )
    state = checkpoint.load(last)
    changed = _check_resumable(state["config"], to_plain(cfg))
    if changed:
        raise UserError(
            f"resume=true, but the configuration differs from the saved run's: {'; '.join(changed)}. Resume with the same overrides."
        )
    return state


def _summary(
    status: str, history: list[dict[str, Any]], best_epoch: int, test: dict[str, float], extra: dict[str, Any]
) -> dict[str, Any]:
    """metrics.json: the best-validation epoch's train/val figures, its test figures, the history."""
    best = next((record for record in history if record["epoch"] == best_epoch), {})
    train_seconds = sum(record["train_seconds"] for record in history)
    images = sum(record["train_images"] for record in history)
    return {
        "status": status,
        "train_acc": best.get("train_acc"),
        "val_acc": best.get("val_acc"),
        "test_acc": test.get("test_acc"),
        "train_loss": best.get("train_loss"),
        "val_loss": best.get("val_loss"),
        "test_loss": test.get("test_loss"),
        "best_epoch": best_epoch or None,
        "epochs_completed": len(history),
        "train_seconds": train_seconds,
        "images_per_second": images / train_seconds if train_seconds else None,
        **extra,
        "history": history,
    }


def run(cfg: TrainConfig, run_dir: Path, *, start_if_unsaved: bool = False) -> dict[str, Any]:
    """Train (or resume) the run in `run_dir` and return what metrics.json holds."""
    resumed = _prepare_run_dir(cfg, run_dir, start_if_unsaved)
    if resumed is not None and (run_dir / "metrics.json").exists():
        done = json.loads((run_dir / "metrics.json").read_text())
        if done.get("status") == "completed":
            log.info("%s is already completed; nothing to resume.", run_dir)
            return done
    device = select_device(cfg.device)
    if resumed is not None:
        _check_device_kind(resumed, device, run_dir / "checkpoints" / "last.pt")
    threads = configure_threads(cfg.threads)
    fashion = data.load(cfg.data.root, cfg.data.val_size, cfg.data.split_seed)
    train = data.Split(fashion.train.images.to(device), fashion.train.labels.to(device))
    val = data.Split(fashion.val.images.to(device), fashion.val.labels.to(device))
    test = data.Split(fashion.test.images.to(device), fashion.test.labels.to(device))

    torch.manual_seed(cfg.seed)  # initial weights and dropout masks
    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # shuffling and augmentation
    model = LeNet5(cfg.activation.name.value, cfg.pool.name.value, cfg.dropout.p)
    model.to(device, memory_format=CHANNELS_LAST)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    steps_per_epoch = math.ceil(len(train.labels) / cfg.batch_size)
    schedule = build_schedule(optimizer, cfg.optimizer, steps_per_epoch, cfg.epochs)
    config = to_plain(cfg)

    history: list[dict[str, Any]] = []
    best_epoch, best_val_acc, start_epoch = 0, -1.0, 1
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        schedule.load_state_dict(resumed["scheduler"])
        _restore_rng(resumed["rng"], generator, device)
        history, best_epoch, best_val_acc = resumed["history"], resumed["best_epoch"], resumed["best_val_acc"]
        start_epoch = resumed["epoch"] + 1
        log.info("Resuming %s after epoch %d", run_dir, resumed["epoch"])

    extra = {"device": str(device), "threads": threads, "parameters": sum(p.numel() for p in model.parameters())}
    log.info(
        "LeNet-5 (%s, %s pool, dropout %.2f), %s lr %g, %d parameters, on %s with %d threads",
        cfg.activation.name.value, cfg.pool.name.value, cfg.dropout.p, cfg.optimizer.name, cfg.optimizer.lr,
        extra["parameters"], device, threads,
    )  # fmt: skip
    board = TensorBoardLog(run_dir, config, start_epoch)
    if start_epoch == 1:  # what the model sees, drawn with its own generator so training is unaffected
        preview = torch.Generator(device=device).manual_seed(cfg.seed)
        board.samples(augment(train.images[:64], cfg.augmentation.flip, cfg.augmentation.max_shift, preview))
    augmenter = Augmenter(train.images, cfg.augmentation.flip, cfg.augmentation.max_shift)  # once per run
    status, test_figures = "running", {}
    # scripts/bench.py times start-up up to this line.
    log.info("Training starts: %d steps of %d images per epoch", steps_per_epoch, cfg.batch_size)
    try:
        with stop_on_signals() as stop:
            for epoch in range(start_epoch, cfg.epochs + 1):
                started = time.perf_counter()
                result = train_epoch(
                    model,
                    optimizer,
                    schedule,
                    augmenter,
                    train.labels,
                    cfg.batch_size,
                    generator,
                    stop,
                    f"epoch {epoch}/{cfg.epochs}",
                )
                if result is None:
                    raise Interrupted(
                        f"Interrupted in epoch {epoch}; {run_dir / 'checkpoints' / 'last.pt'} holds epoch {epoch - 1}."
                        if epoch > 1
                        else "Interrupted in epoch 1, before any epoch was saved; resuming starts the run again."
                    )
                train_seconds = time.perf_counter() - started
                val_loss, val_acc, _ = evaluate(
                    model, val.images, val.labels, cfg.eval_batch_size, cfg.augmentation.test_flip
                )
                record = {
                    "epoch": epoch,
                    "train_loss": result[0],
                    "train_acc": result[1],
                    "val_loss": val_loss,
                    "val_acc": val_acc,
                    "seconds": time.perf_counter() - started,
                    "train_seconds": train_seconds,
                    "train_images": len(train.labels),
                    "images_per_second": len(train.labels) / train_seconds,
                    "lr": optimizer.param_groups[0]["lr"],
                }
                history.append(record)
                if not (math.isfinite(record["train_loss"]) and math.isfinite(val_loss)):
                    raise Diverged(
                        f"Run {run_dir} diverged in epoch {epoch}: the loss became {record['train_loss']} (NaN or "
                        f"infinite). Lower optimizer.lr (now {cfg.optimizer.lr}) or choose another optimizer."
                    )
                board.epoch(epoch, record, record["lr"])
                log.info(
                    "epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1f s, %.0f img/s",
                    epoch, cfg.epochs, record["train_loss"], record["train_acc"], val_loss, val_acc, record["seconds"],
                    record["images_per_second"],
                )  # fmt: skip
                if val_acc > best_val_acc:
                    best_epoch, best_val_acc = epoch, val_acc
                state = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": schedule.state_dict(),
                    "epoch": epoch,
                    "config": config,
                    "rng": _rng_state(generator, device),
                    "history": history,
                    "best_epoch": best_epoch,
                    "best_val_acc": best_val_acc,
                }
                if best_epoch == epoch:
                    checkpoint.save(run_dir / "checkpoints" / "best.pt", state)
                checkpoint.save(run_dir / "checkpoints" / "last.pt", state)
                write_json(run_dir / "metrics.json", _summary(status, history, best_epoch, {}, extra))
                if stop.is_set():  # the signal came during validation or saving
                    raise Interrupted(
                        f"Interrupted after epoch {epoch}, which is saved in {run_dir / 'checkpoints' / 'last.pt'}."
                    )

        model.load_state_dict(checkpoint.load(run_dir / "checkpoints" / "best.pt", map_location=device)["model"])
        test_loss, test_acc, predicted = evaluate(
            model, test.images, test.labels, cfg.eval_batch_size, cfg.augmentation.test_flip
        )
        board.test(cfg.epochs, test_acc, test_loss, confusion_matrix(test.labels, predicted), data.CLASSES)
        status, test_figures = "completed", {"test_acc": test_acc, "test_loss": test_loss}
        log.info(
            "Best epoch %d: val acc %.4f, test acc %.4f, test loss %.4f", best_epoch, best_val_acc, test_acc, test_loss
        )
    except Interrupted:
        status = "interrupted"
        raise
    except KeyboardInterrupt:  # SIGINT or SIGTERM while testing, after the signal handlers were restored
        status = "interrupted"
        raise Interrupted(
            f"Interrupted while testing; {run_dir / 'checkpoints' / 'last.pt'} holds every epoch."
        ) from None
    except SystemExit:  # submitit stops a pre-empted job this way after saving; it is resumed later
        status = "interrupted"
        raise
    except Diverged:
        status = "diverged"
        raise
    except BaseException:
        status = "failed"
        raise
    finally:
        metrics = _summary(status, history, best_epoch, test_figures, extra)
        write_json(run_dir / "metrics.json", metrics)
        board.close()
    return metrics
