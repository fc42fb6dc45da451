"""Training: fit LeNet-5, keep the best-validation weights, test them.

Reads top to bottom: one epoch of training, the training state (what a checkpoint holds), the
epoch loop (`fit`: train, validate, record, save), the test of the best weights, and `run`, which
sets a run up and tells the whole story. Elsewhere: the optimizer and its schedule
(lenet_fmnist.training.optim), the run directory's rules (lenet_fmnist.run: may the run start or resume,
what a resume keeps) and its bookkeeping while training (lenet_fmnist.training.recorder: checkpoints,
metrics.json, TensorBoard), and validation's rules (lenet_fmnist.run.validation).

The ingredients of stronger recipes come in here, each off by default and then neither drawing a
random number nor doing any work: label smoothing of the training loss (lenet_fmnist.training.step), a
moving average of the weights that validation and the test use (lenet_fmnist.training.averaging), random
erasing after the flip and shift (lenet_fmnist.training.augment), and a final fit without validation
(data.val_size=0, lenet_fmnist.run.validation: every epoch is then the best so far, so the last one
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

from lenet_fmnist import data
from lenet_fmnist.config import TrainConfig, to_plain
from lenet_fmnist.device import gpu_facts, select_device
from lenet_fmnist.host.cpu import cpu_kernels, this_cpu
from lenet_fmnist.host.registry import registered_while_running
from lenet_fmnist.host.threads import ONE_GPU_THREAD, Threads, training_threads
from lenet_fmnist.inference.evaluate import confusion_matrix, evaluate
from lenet_fmnist.model import CHANNELS_LAST, LeNet5
from lenet_fmnist.run import admission, validation
from lenet_fmnist.run.errors import Diverged, Interrupted
from lenet_fmnist.run.metrics_file import Circumstances
from lenet_fmnist.training import averaging, checkpoint, distill, optim
from lenet_fmnist.training.augment import Augmenter, Erasing, augment
from lenet_fmnist.training.recorder import Recorder
from lenet_fmnist.training.step import Objective, ShardedStep
from lenet_fmnist.workers import Workers, compute_on_one_thread

log = logging.getLogger(__name__)

# Called with each epoch's record once the epoch is saved. It may raise Pruned to end the run there
# with status "pruned": a hyperparameter search's pruner does so (lenet_fmnist.launch.search_trial.epoch_reporter).
EpochCallback = Callable[[dict[str, Any]], None]


def train_epoch(
    step: ShardedStep,
    augmenter: Augmenter,
    labels: torch.Tensor,
    *,
    generator: torch.Generator,
    batch_size: int,
    stop: threading.Event,
    description: str,
) -> dict[str, float] | None:
    """One pass over the training images (`augmenter`'s, with `labels`) in a fresh random order
    drawn from `generator`, one `step` per batch; returns the mean training loss and accuracy, or
    None when `stop` was set (the epoch is abandoned after the step in flight).

    The whole epoch's augmented images are drawn at its start, in one gather (uint8, 0.8 MB per
    1,000 images), and so are the teachers' logits for them when the run distils, so a step only
    slices its batch. Loss and accuracy are summed on the device and read once at the end: no
    host sync per step.
    """
    step.model.train()
    count = len(labels)
    order = torch.randperm(count, device=labels.device, generator=generator)
    epoch_images, epoch_labels = augmenter(order, generator), labels[order]
    soft_targets = step.soft_targets(epoch_images)
    loss_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    for start in tqdm(range(0, count, batch_size), desc=description, leave=False, disable=None):
        batch = slice(start, start + batch_size)
        soft = None if soft_targets is None else soft_targets[batch]
        batch_loss, batch_correct = step(epoch_images[batch], epoch_labels[batch], soft)
        loss_sum += batch_loss
        correct += batch_correct
        if stop.is_set():
            return None
    return {"train_loss": loss_sum.item() / count, "train_acc": correct.item() / count}


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
    written so far). metrics.json summarises the same run (metrics_json)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, train_images: int) -> None:
        torch.manual_seed(cfg.seed)  # initial weights and dropout masks
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)  # shuffling and augmentation
        self.device, self.config = device, to_plain(cfg)
        self.model = LeNet5(cfg.activation.name.value, cfg.pool.name.value, cfg.dropout.p)
        self.model.to(device, memory_format=CHANNELS_LAST)
        self.average = averaging.build(self.model, cfg.ema.decay)  # None without ema.decay
        self.distillation = distill.configured(cfg.distill, self.config["data"], device, cfg.eval_batch_size)
        self.optimizer = optim.build_optimizer(cfg.optimizer, self.model.parameters())
        self.steps_per_epoch = optim.steps_per_epoch(train_images, cfg.batch_size)
        self.scheduler = optim.build_scheduler(
            self.optimizer, cfg.optimizer, steps_per_epoch=self.steps_per_epoch, epochs=cfg.epochs
        )
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
        if self.distillation is not None:  # likewise
            state[distill.CHECKPOINT_KEY] = self.distillation.teachers.record()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint; its config (ema.decay included) was already checked against this
        run's, and its teachers' files must be the same as when it started."""
        distill.check_resume(state.get(distill.CHECKPOINT_KEY), self.distillation)
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


# ---- the epoch loop ----------------------------------------------------------------------------


def fit(
    cfg: TrainConfig,
    state: TrainingState,
    splits: data.FashionMNISTData,
    recorder: Recorder,
    workers: Workers,
    *,
    on_epoch: EpochCallback | None = None,
) -> None:
    """Train the epochs after `state.epoch`, computed by `workers`: train, validate, record, save,
    then call `on_epoch`. SIGINT and SIGTERM stop it after the step in flight (Interrupted); a NaN
    or infinite loss stops it too (Diverged), with the epoch that diverged in the history."""
    train = splits.train
    step = ShardedStep(
        state.model, state.optimizer, state.scheduler, Objective(cfg.label_smoothing, state.distillation),
        workers=workers, shards=cfg.shards, average=state.average,
    )  # fmt: skip
    augmenter = _augmenter(cfg, state, train.images, recorder)
    # scripts/bench.py times start-up up to this line.
    log.info("Training starts: %d steps of %d images per epoch", state.steps_per_epoch, cfg.batch_size)
    with stop_on_signals() as stop:
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            started = time.perf_counter()  # train:
            trained = train_epoch(
                step,
                augmenter,
                train.labels,
                generator=state.generator,
                batch_size=cfg.batch_size,
                stop=stop,
                description=f"epoch {epoch}/{cfg.epochs}",
            )
            if trained is None:
                raise _interrupted_in(epoch, recorder.last)
            train_seconds = time.perf_counter() - started  # validate:
            validated = _validate(
                state.evaluated_model, splits.val, workers, batch_size=cfg.eval_batch_size,
                test_flip=cfg.augmentation.test_flip,
            )  # fmt: skip
            record = {  # record:
                "epoch": epoch, **trained, **validated, **_timing(started, train_seconds, len(train.labels)),
                "lr": state.optimizer.param_groups[0]["lr"],
            }  # fmt: skip
            state.history.append(record)  # a diverged epoch too: metrics.json shows it
            _check_finite(record, lr=cfg.optimizer.lr, run_dir=recorder.run_dir)
            _log_epoch(record, cfg.epochs)
            is_best = state.complete_epoch(record)
            if epoch == 2 and (warning := validation.not_learning(state.history, cfg, classes=len(data.CLASSES))):
                log.warning("%s", warning)
                state.warnings.append(warning)
            recorder.epoch(record, state, is_best=is_best)  # save
            if stop.is_set():  # the signal came during validation or saving
                raise Interrupted(f"Interrupted after epoch {epoch}, which is saved in {recorder.last}.")
            if on_epoch is not None:
                on_epoch(record)


def _augmenter(cfg: TrainConfig, state: TrainingState, images: torch.Tensor, recorder: Recorder) -> Augmenter:
    """The run's augmentation of the training `images`, built once per run (erasing draws after the
    flip and shift, from the same generator). A new run first shows TensorBoard what the model
    sees, drawn with a generator of its own so that training is unaffected."""
    flip, max_shift, erasing = cfg.augmentation.flip, cfg.augmentation.max_shift, Erasing.configured(cfg.augmentation)
    if state.epoch == 0:
        preview = torch.Generator(device=state.device).manual_seed(cfg.seed)
        recorder.samples(augment(images[:64], flip, max_shift, preview, erasing))
    return Augmenter(images, flip, max_shift, erasing)


def _interrupted_in(epoch: int, last: Path) -> Interrupted:
    if epoch == 1:
        return Interrupted("Interrupted in epoch 1, before any epoch was saved; resuming starts the run again.")
    return Interrupted(f"Interrupted in epoch {epoch}; {last} holds epoch {epoch - 1}.")


def _validate(
    model: nn.Module, val: data.Split | None, workers: Workers, *, batch_size: int, test_flip: bool
) -> dict[str, float]:
    """Validation loss and accuracy of `model` (the weight average, when the run keeps one). A run
    without validation (`val` None) has neither key, never a stand-in value."""
    if val is None:
        return {}
    val_loss, val_acc, _ = evaluate(model, val.images, val.labels, batch_size, test_flip, workers)
    return {"val_loss": val_loss, "val_acc": val_acc}


def _timing(started: float, train_seconds: float, images: int) -> dict[str, float]:
    """An epoch's time since `started` (validation included), and its training part's time and speed."""
    return {
        "seconds": time.perf_counter() - started,
        "train_seconds": train_seconds,
        "train_images": images,
        "images_per_second": images / train_seconds,
    }


# The losses an epoch's record may hold, as the message of a divergence names them.
LOSSES = {"train_loss": "training loss", "val_loss": "validation loss"}


def _check_finite(record: dict[str, Any], *, lr: float, run_dir: Path) -> None:
    """Raise Diverged, naming the first loss of the epoch's `record` that is NaN or infinite."""
    for key, name in LOSSES.items():
        if key in record and not math.isfinite(record[key]):
            raise Diverged(
                f"Run {run_dir} diverged in epoch {record['epoch']}: the {name} became {record[key]} (NaN or "
                f"infinite). Lower optimizer.lr (now {lr}) or choose another optimizer."
            )


def _log_epoch(record: dict[str, Any], epochs: int) -> None:
    validated = (
        f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f}" if "val_acc" in record else "no validation"
    )
    log.info(
        "epoch %d/%d  train loss %.4f acc %.4f | %s | %.1f s, %.0f img/s",
        record["epoch"], epochs, record["train_loss"], record["train_acc"], validated, record["seconds"],
        record["images_per_second"],
    )  # fmt: skip


# ---- the test and the whole run ----------------------------------------------------------------


def final_test(
    cfg: TrainConfig, state: TrainingState, test: data.Split, recorder: Recorder, workers: Workers
) -> dict[str, float]:
    """Test accuracy and loss of best.pt's evaluated weights: the best-validation epoch's (without
    validation, the last epoch's), the weight average's when the run keeps one."""
    try:  # the signal handlers are restored by now: Ctrl-C and SIGTERM arrive as KeyboardInterrupt
        best = recorder.best_checkpoint(state.device)
        state.model.load_state_dict(checkpoint.evaluated_weights(best))  # training is over: the model is free
        test_loss, test_acc, predicted = evaluate(
            state.model, test.images, test.labels, cfg.eval_batch_size, cfg.augmentation.test_flip, workers
        )
        recorder.test(cfg.epochs, accuracy=test_acc, loss=test_loss, confusion=confusion_matrix(test.labels, predicted))
    except KeyboardInterrupt:
        raise Interrupted(f"Interrupted while testing; {recorder.last} holds every epoch.") from None
    if state.best_val_acc is None:
        tested = f"Epoch {state.best_epoch} (last epoch, no validation)"
    else:
        tested = f"Best epoch {state.best_epoch} (val acc {state.best_val_acc:.4f})"
    log.info("%s, %s: test acc %.4f, test loss %.4f", tested, checkpoint.weights_used(best), test_acc, test_loss)
    return {"test_acc": test_acc, "test_loss": test_loss}


@registered_while_running  # other runs see this one (cli.main registers a single run sooner)
def train(
    cfg: TrainConfig, run_dir: Path, *, on_epoch: EpochCallback | None = None, start_if_unsaved: bool = False
) -> dict[str, Any]:
    """Train (or resume) the run in `run_dir` and return what metrics.json holds; `on_epoch` is
    called after every saved epoch (see EpochCallback); `start_if_unsaved`: a sweep's job that
    never started starts on resume (run.admission.admit)."""
    compute_on_one_thread()  # every computation of the run: its numbers must not depend on a thread count
    config, device = to_plain(cfg), select_device(cfg.device)
    admitted = admission.admit(run_dir, config, str(device), load=checkpoint.load, start_if_unsaved=start_if_unsaved)
    if admitted.completed is not None:
        return admitted.completed
    splits = data.load(cfg.data.root, cfg.data.val_size, cfg.data.split_seed).to(device)
    # Decided as late as possible, so that runs started a few seconds apart see each other.
    threads = training_threads(cfg.threads) if device.type == "cpu" else ONE_GPU_THREAD
    state = TrainingState(cfg, device, len(splits.train.labels))
    ran = _circumstances(state, threads)
    if admitted.saved is not None:
        state.load_state_dict(admitted.saved)
        log.info("Resuming %s after epoch %d", run_dir, state.epoch)
        if moved := admitted.facts.moved(ran.processor, state.epoch):
            log.warning(moved)
            state.warnings.append(moved)
    recorder = Recorder(run_dir, state.config, start_epoch=state.epoch + 1, ran=ran)
    _log_recipe(cfg, ran)
    with recorder.ending_recorded(state), Workers(threads.count) as workers:
        fit(cfg, state, splits, recorder, workers, on_epoch=on_epoch)
        test = final_test(cfg, state, splits.test, recorder, workers)
    return recorder.finish(state, test)


def _circumstances(state: TrainingState, threads: Threads) -> Circumstances:
    return Circumstances(
        device=str(state.device),
        threads=threads.count,
        threads_reason=threads.reason,
        cpu=this_cpu(),
        cpu_kernels=cpu_kernels(),
        gpu=gpu_facts(state.device),
        parameters=sum(p.numel() for p in state.model.parameters()),
    )


def _log_recipe(cfg: TrainConfig, ran: Circumstances) -> None:
    log.info(
        "LeNet-5 (%s, %s pool, dropout %.2f), %s lr %g, %d parameters, on %s with %d threads",
        cfg.activation.name.value, cfg.pool.name.value, cfg.dropout.p, cfg.optimizer.name, cfg.optimizer.lr,
        ran.parameters, ran.device, ran.threads,
    )  # fmt: skip
