"""Training: fit LeNet-5, keep the best-validation weights, test them.

Reads top to bottom: the building blocks (optimizer, scheduler, one epoch, the training state,
which is what a checkpoint holds), the two phases of a run (fit, test the best weights), then
`run`, which tells the whole story. The run directory's bookkeeping (may the run start or resume,
its status, metrics.json) is lenet_fmnist.rundir's.

The ingredients of stronger recipes come in here, each off by default and then neither drawing a
random number nor doing any work: label smoothing of the training loss (lenet_fmnist.loss), a
moving average of the weights that validation and the test use (lenet_fmnist.averaging), random
erasing after the flip and shift (lenet_fmnist.augment), and a final fit without validation
(data.val_size=0, lenet_fmnist.validation: every epoch is then the best so far, so the last one
is tested).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from lenet_fmnist import averaging, checkpoint, cores, data, rundir, validation
from lenet_fmnist.augment import Augmenter, Erasing, augment, normalise
from lenet_fmnist.averaging import WeightAverage
from lenet_fmnist.config import (
    AdamConfig,
    OptimizerConfig,
    RMSpropConfig,
    Schedule,
    SGDConfig,
    TrainConfig,
    to_plain,
    with_later_keys,
)
from lenet_fmnist.errors import Diverged, Interrupted
from lenet_fmnist.evaluate import confusion_matrix, evaluate
from lenet_fmnist.loss import training_loss
from lenet_fmnist.model import CHANNELS_LAST, LeNet5
from lenet_fmnist.openmp import this_cpu, wait_setting
from lenet_fmnist.rundir import BEST_CHECKPOINT, LAST_CHECKPOINT, Status
from lenet_fmnist.runtime import select_device
from lenet_fmnist.tensorboard_log import TensorBoardLog

log = logging.getLogger(__name__)

# Called with each epoch's record once the epoch is saved. It may raise Pruned to end the run there
# with status "pruned": a hyperparameter search's pruner does so (lenet_fmnist.search_trial.epoch_reporter).
EpochCallback = Callable[[dict[str, Any]], None]


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


def build_scheduler(
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
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    augmenter: Augmenter,
    labels: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    stop: threading.Event,
    description: str,
    *,
    label_smoothing: float,
    average: WeightAverage | None,
) -> tuple[float, float] | None:
    """One pass over the training images in a fresh random order; returns mean loss and accuracy,
    or None when `stop` was set (the epoch is abandoned after the step in flight). The loss is
    smoothed by `label_smoothing`; `average`, if any, takes in the weights after every step.

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
        loss = training_loss(logits, targets, label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if average is not None:
            average.update(model)
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


class TrainingState:
    """Everything a run carries from one epoch to the next: model, weight average, optimizer,
    scheduler, random number generators, history and best epoch. `state_dict` is the checkpoint's
    schema, written here once, and `load_state_dict` resumes from one (the keys of every checkpoint
    written so far). metrics.json summarises the same run (rundir.metrics)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, train_images: int, threads: int) -> None:
        torch.manual_seed(cfg.seed)  # initial weights and dropout masks
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)  # shuffling and augmentation
        self.device, self.config = device, to_plain(cfg)
        self.threads = threads  # a resumed run keeps it (cores.fixed_threads): threads change the bits
        self.model = LeNet5(cfg.activation.name.value, cfg.pool.name.value, cfg.dropout.p)
        self.model.to(device, memory_format=CHANNELS_LAST)
        self.average = averaging.build(self.model, cfg.ema.decay)  # None without ema.decay
        self.optimizer = build_optimizer(cfg.optimizer, self.model.parameters())
        steps_per_epoch = math.ceil(train_images / cfg.batch_size)
        self.scheduler = build_scheduler(self.optimizer, cfg.optimizer, steps_per_epoch, cfg.epochs)
        self.epoch = 0  # epochs completed and saved
        self.history: list[dict[str, Any]] = []  # one record per epoch, as in metrics.json
        self.best_epoch = 0
        self.best_val_acc: float | None = -1.0  # None in a run without validation, once it has an epoch
        self.warnings: list[str] = []  # what the user should know about this run (metrics.json)
        self.validated_on = validation.describe(cfg.data.val_size, train_images)  # metrics.json's `validation`

    @property
    def evaluated_model(self) -> nn.Module:
        """The model that validation runs: the weight average when the run keeps one."""
        return self.model if self.average is None else self.average.model

    def complete_epoch(self, record: dict[str, Any]) -> bool:
        """Count the epoch whose record is last in the history; whether it is the best so far.
        Without validation (no val_acc) every epoch is, so the last one is tested."""
        self.epoch = record["epoch"]
        val_acc = record.get("val_acc")
        if val_acc is None or val_acc > self.best_val_acc:
            self.best_epoch, self.best_val_acc = self.epoch, val_acc
        return self.best_epoch == self.epoch

    def state_dict(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "config": self.config,
            "threads": self.threads,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if cuda else None,
                "generator": self.generator.get_state(),
            },
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best_val_acc,
            "warnings": self.warnings,
        }
        if self.average is not None:  # only then: the checkpoints of runs without one keep their keys
            state[checkpoint.EMA] = self.average.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint; its config (ema.decay included) was already checked against this run's."""
        self.model.load_state_dict(state["model"])
        if self.average is not None:
            self.average.load_state_dict(state[checkpoint.EMA])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.generator.set_state(state["rng"]["generator"])
        self.epoch, self.history = state["epoch"], state["history"]
        self.best_epoch, self.best_val_acc = state["best_epoch"], state["best_val_acc"]
        self.warnings = state.get("warnings", [])  # checkpoints written before warnings existed have none

    @staticmethod
    def saved_on_gpu(state: dict[str, Any]) -> bool:
        """Whether the checkpoint `state` was saved by a run on a CUDA GPU (its CUDA RNG state is kept only there)."""
        return state["rng"]["cuda"] is not None


# ---- the phases of a run -----------------------------------------------------------------------


def _epoch_record(
    cfg: TrainConfig,
    state: TrainingState,
    val: data.Split | None,
    epoch: int,
    trained: tuple[float, float, int],
    started: float,
) -> dict[str, Any]:
    """An epoch's line of the history. `trained`: mean training loss, accuracy and image count.
    Validation (of the weight average, when the run keeps one) adds val_loss and val_acc; a run
    without validation (`val` None) has neither key, never a stand-in value."""
    train_loss, train_acc, train_images = trained
    train_seconds = time.perf_counter() - started
    validated = {}
    if val is not None:
        val_loss, val_acc, _ = evaluate(
            state.evaluated_model, val.images, val.labels, cfg.eval_batch_size, cfg.augmentation.test_flip
        )
        validated = {"val_loss": val_loss, "val_acc": val_acc}
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_acc": train_acc,
        **validated,
        "seconds": time.perf_counter() - started,
        "train_seconds": train_seconds,
        "train_images": train_images,
        "images_per_second": train_images / train_seconds,
        "lr": state.optimizer.param_groups[0]["lr"],
    }


def _check_finite(record: dict[str, Any], cfg: TrainConfig, run_dir: Path) -> None:
    losses = [record[key] for key in ("train_loss", "val_loss") if key in record]
    if not all(math.isfinite(loss) for loss in losses):
        raise Diverged(
            f"Run {run_dir} diverged in epoch {record['epoch']}: the loss became {record['train_loss']} (NaN or "
            f"infinite). Lower optimizer.lr (now {cfg.optimizer.lr}) or choose another optimizer."
        )


def _log_epoch(cfg: TrainConfig, record: dict[str, Any]) -> None:
    validated = (
        f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f}" if "val_acc" in record else "no validation"
    )
    log.info(
        "epoch %d/%d  train loss %.4f acc %.4f | %s | %.1f s, %.0f img/s",
        record["epoch"], cfg.epochs, record["train_loss"], record["train_acc"], validated, record["seconds"],
        record["images_per_second"],
    )  # fmt: skip


CHANCE = 1 / len(data.CLASSES)  # the accuracy of guessing
CHANCE_MARGIN = 0.02  # accuracy this close to chance means nothing was learnt


def not_learning(history: list[dict[str, Any]], cfg: TrainConfig) -> str | None:
    """The warning for a run whose validation accuracy is still at chance after two epochs. A run
    without validation is judged by its training accuracy, and the warning says so."""
    if len(history) < 2:
        return None
    key = "val_acc" if "val_acc" in history[0] else "train_acc"
    first = [record[key] for record in history[:2]]
    if any(abs(acc - CHANCE) > CHANCE_MARGIN for acc in first):
        return None
    measured = "validation accuracy" if key == "val_acc" else "training accuracy (no validation: data.val_size=0)"
    return (
        f"Not learning: {measured} is {first[0]:.4f} and {first[1]:.4f} after epochs 1 and 2, at chance "
        f"({CHANCE:.2f}). A {cfg.activation.name.value} network at {cfg.optimizer.name} lr {cfg.optimizer.lr:g} may "
        "sit there for many epochs (sigmoid and tanh pass back small gradients at a low SGD rate): raise "
        "optimizer.lr (conf/variant/sigmoid.yaml trains sigmoid at 0.1). The run goes on."
    )


def _save_epoch(state: TrainingState, is_best: bool, run_dir: Path, extra: dict[str, Any]) -> None:
    """Checkpoints, then metrics.json: a kill at any moment leaves the last completed epoch resumable."""
    saved = state.state_dict()
    if is_best:
        checkpoint.save(run_dir / BEST_CHECKPOINT, saved)
    checkpoint.save(run_dir / LAST_CHECKPOINT, saved)
    rundir.write_metrics(run_dir, rundir.metrics(Status.running, state, {}, extra))


def _complete_epoch(
    cfg: TrainConfig, state: TrainingState, record: dict[str, Any], run_dir: Path, board: TensorBoardLog,
    extra: dict[str, Any],
) -> None:  # fmt: skip
    """Record a trained and validated epoch: history (a diverged epoch too), TensorBoard, log, best
    epoch, the not-learning warning after epoch 2, then the checkpoints and metrics.json."""
    state.history.append(record)
    _check_finite(record, cfg, run_dir)
    board.epoch(record["epoch"], record, record["lr"])
    _log_epoch(cfg, record)
    is_best = state.complete_epoch(record)
    if record["epoch"] == 2 and (warning := not_learning(state.history, cfg)):
        log.warning("%s", warning)
        state.warnings.append(warning)
    _save_epoch(state, is_best, run_dir, extra)


def _interrupted_in(epoch: int, run_dir: Path) -> Interrupted:
    if epoch == 1:
        return Interrupted("Interrupted in epoch 1, before any epoch was saved; resuming starts the run again.")
    return Interrupted(f"Interrupted in epoch {epoch}; {run_dir / LAST_CHECKPOINT} holds epoch {epoch - 1}.")


def _augmenter(cfg: TrainConfig, state: TrainingState, images: torch.Tensor, board: TensorBoardLog) -> Augmenter:
    """The run's augmentation of the training `images`, built once per run (erasing draws after the
    flip and shift, from the same generator). A new run first shows TensorBoard what the model
    sees, drawn with a generator of its own so that training is unaffected."""
    flip, max_shift, erasing = cfg.augmentation.flip, cfg.augmentation.max_shift, Erasing.configured(cfg.augmentation)
    if state.epoch == 0:
        preview = torch.Generator(device=state.device).manual_seed(cfg.seed)
        board.samples(augment(images[:64], flip, max_shift, preview, erasing))
    return Augmenter(images, flip, max_shift, erasing)


def fit(
    cfg: TrainConfig,
    state: TrainingState,
    splits: data.FashionMNISTData,
    run_dir: Path,
    board: TensorBoardLog,
    extra: dict[str, Any],
    on_epoch: EpochCallback | None = None,
) -> None:
    """Train the epochs after `state.epoch`, validating, logging and saving each one, then calling
    `on_epoch`. SIGINT and SIGTERM stop it after the step in flight (Interrupted); a NaN or infinite
    loss stops it too (Diverged), with the epoch that diverged in the history."""
    train = splits.train
    augmenter = _augmenter(cfg, state, train.images, board)
    # scripts/bench.py times start-up up to this line.
    log.info(
        "Training starts: %d steps of %d images per epoch",
        math.ceil(len(train.labels) / cfg.batch_size),
        cfg.batch_size,
    )
    with stop_on_signals() as stop:
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            started = time.perf_counter()
            result = train_epoch(
                state.model, state.optimizer, state.scheduler, augmenter, train.labels, cfg.batch_size,
                state.generator, stop, f"epoch {epoch}/{cfg.epochs}", label_smoothing=cfg.label_smoothing,
                average=state.average,
            )  # fmt: skip
            if result is None:
                raise _interrupted_in(epoch, run_dir)
            record = _epoch_record(cfg, state, splits.val, epoch, (*result, len(train.labels)), started)
            _complete_epoch(cfg, state, record, run_dir, board, extra)
            if stop.is_set():  # the signal came during validation or saving
                raise Interrupted(f"Interrupted after epoch {epoch}, which is saved in {run_dir / LAST_CHECKPOINT}.")
            if on_epoch is not None:
                on_epoch(record)


def final_test(
    cfg: TrainConfig, state: TrainingState, test: data.Split, run_dir: Path, board: TensorBoardLog
) -> dict[str, float]:
    """Test accuracy and loss of best.pt's evaluated weights: the best-validation epoch's (without
    validation, the last epoch's), the weight average's when the run keeps one."""
    try:  # the signal handlers are restored by now: Ctrl-C and SIGTERM arrive as KeyboardInterrupt
        best = checkpoint.load(run_dir / BEST_CHECKPOINT, map_location=state.device)
        state.model.load_state_dict(checkpoint.evaluated_weights(best))  # training is over: the model is free
        test_loss, test_acc, predicted = evaluate(
            state.model, test.images, test.labels, cfg.eval_batch_size, cfg.augmentation.test_flip
        )
        board.test(cfg.epochs, test_acc, test_loss, confusion_matrix(test.labels, predicted), data.CLASSES)
    except KeyboardInterrupt:
        raise Interrupted(f"Interrupted while testing; {run_dir / LAST_CHECKPOINT} holds every epoch.") from None
    if state.best_val_acc is None:
        tested = f"Epoch {state.best_epoch} (last epoch, no validation)"
    else:
        tested = f"Best epoch {state.best_epoch} (val acc {state.best_val_acc:.4f})"
    log.info("%s, %s: test acc %.4f, test loss %.4f", tested, checkpoint.weights_used(best), test_acc, test_loss)
    return {"test_acc": test_acc, "test_loss": test_loss}


@cores.registered_while_running  # other runs see this one (cli.main registers a command sooner)
def run(
    cfg: TrainConfig, run_dir: Path, *, start_if_unsaved: bool = False, on_epoch: EpochCallback | None = None
) -> dict[str, Any]:
    """Train (or resume) the run in `run_dir` and return what metrics.json holds; `on_epoch` is
    called after every saved epoch (see EpochCallback)."""
    begin = rundir.start(
        run_dir, to_plain(cfg), cfg.resume, start_if_unsaved, load=checkpoint.load, with_later_keys=with_later_keys
    )
    if begin.done is not None:
        return begin.done
    saved = begin.saved
    device = select_device(cfg.device)
    if saved is not None:
        rundir.check_device_kind(TrainingState.saved_on_gpu(saved), str(device), run_dir / LAST_CHECKPOINT)
    splits = data.load(cfg.data.root, cfg.data.val_size, cfg.data.split_seed).to(device)
    # Decided as late as possible, so that runs started a few seconds apart see each other.
    threads = cores.training_threads(cfg.threads, saved.get("threads") if saved is not None else None)
    torch.set_num_threads(threads.count)
    state = TrainingState(cfg, device, len(splits.train.labels), threads.count)
    if saved is not None:
        state.load_state_dict(saved)
        log.info("Resuming %s after epoch %d", run_dir, state.epoch)
    parameters = sum(p.numel() for p in state.model.parameters())
    extra = {
        "device": str(device), "threads": threads.count, "threads_reason": threads.reason,
        "openmp_wait": wait_setting(), "cpu": this_cpu().model, "parameters": parameters,
    }  # fmt: skip
    log.info(
        "LeNet-5 (%s, %s pool, dropout %.2f), %s lr %g, %d parameters, on %s with %d threads",
        cfg.activation.name.value, cfg.pool.name.value, cfg.dropout.p, cfg.optimizer.name, cfg.optimizer.lr,
        extra["parameters"], device, threads.count,
    )  # fmt: skip
    board = TensorBoardLog(run_dir, state.config, start_epoch=state.epoch + 1)
    try:
        fit(cfg, state, splits, run_dir, board, extra, on_epoch)
        test = final_test(cfg, state, splits.test, run_dir, board)
    except BaseException as error:  # however the run ended, metrics.json says so
        ended = rundir.metrics(rundir.status_after(error), state, {}, extra)
        rundir.finish(run_dir, ended, board.close, failing=True)
        fault = rundir.machine_fault(error, run_dir, load=checkpoint.load)
        if fault is None:
            raise
        raise fault from None
    return rundir.finish(run_dir, rundir.metrics(Status.completed, state, test, extra), board.close)
