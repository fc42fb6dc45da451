"""Training: fit LeNet-5, keep the best-validation weights, test them.

Reads top to bottom: one epoch of training, the epoch loop (`Training`: train, validate, record,
save, then the test of the best weights), and `train`, which sets a run up and tells the whole
story. Elsewhere: the step (training.step), what a checkpoint holds (training.state), the run
directory's rules (lenet_fmnist.run: may the run start or resume, what a resume keeps) and the
bookkeeping while training (training.recorder: checkpoints, metrics.json, TensorBoard).

The ingredients of stronger recipes come in here, each off by default and then neither drawing a
random number nor doing any work: label smoothing and distillation (training.step.Objective), a
moving average of the weights that validation and the test use (training.averaging), random
erasing after the flip and shift (training.augment), and a final fit without validation
(data.val_size=0, run.validation: every epoch is then the best so far, so the last one is tested).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lenet_fmnist import data
from lenet_fmnist.config import TrainConfig, to_plain
from lenet_fmnist.device import gpu_facts, select_device
from lenet_fmnist.host.cpu import cpu_kernels, this_cpu
from lenet_fmnist.host.load import LoadWatch
from lenet_fmnist.host.registry import registered_while_running
from lenet_fmnist.host.threads import ONE_GPU_THREAD, Threads, training_threads
from lenet_fmnist.inference.evaluate import Classifier, Evaluation, confusion_matrix
from lenet_fmnist.run import admission, validation
from lenet_fmnist.run.errors import Diverged, Interrupted, UserError
from lenet_fmnist.run.files import LAST_CHECKPOINT
from lenet_fmnist.run.metrics_file import Circumstances, EpochRecord
from lenet_fmnist.training import checkpoint, distill
from lenet_fmnist.training.augment import Augmenter, Erasing, augment
from lenet_fmnist.training.recorder import Recorder
from lenet_fmnist.training.state import TrainingState
from lenet_fmnist.training.step import Objective, ShardedStep, Updates
from lenet_fmnist.workers import Workers, compute_on_one_thread

log = logging.getLogger(__name__)

# Called with each epoch's record once the epoch is saved. It may raise Pruned to end the run there
# with status "pruned": a hyperparameter search's pruner does so (launch.search_trial.epoch_reporter).
EpochCallback = Callable[[EpochRecord], None]


@dataclass(frozen=True)
class Epochs:
    """What every epoch of a run draws from: the `step`, the training images (`augmenter`'s) and
    their `labels`, the `generator` of their order and augmentation, the batch size, and the
    teachers' labels of the drawn images when the run distils."""

    step: ShardedStep
    augmenter: Augmenter
    labels: torch.Tensor
    generator: torch.Generator
    batch_size: int
    soft_targets: distill.SoftTargets | None = None


def train_epoch(epochs: Epochs, stop: threading.Event, description: str) -> tuple[float, float] | None:
    """One pass over the training images in a fresh random order, one step per batch; returns the
    mean training loss and accuracy, or None when `stop` was set (the epoch is abandoned after the
    step in flight).

    The whole epoch's augmented images are drawn at its start, in one gather (uint8, 0.8 MB per
    1,000 images), and so are the teachers' logits for them when the run distils, so a step only
    slices its batch. Loss and accuracy are summed on the device and read once at the end: no
    host sync per step.
    """
    step, labels, count = epochs.step, epochs.labels, len(epochs.labels)
    step.model.train()
    order = torch.randperm(count, device=labels.device, generator=epochs.generator)
    drawn, labels = epochs.augmenter.draw(order, epochs.generator), labels[order]
    images, soft_targets = drawn.images, epochs.soft_targets(drawn) if epochs.soft_targets else None
    loss_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    for start in tqdm(range(0, count, epochs.batch_size), desc=description, leave=False, disable=None):
        batch = slice(start, start + epochs.batch_size)
        batch_loss, batch_correct = step(
            images[batch], labels[batch], None if soft_targets is None else soft_targets[batch]
        )
        loss_sum += batch_loss
        correct += batch_correct
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


# ---- the epoch loop and the test ---------------------------------------------------------------


class Training:
    """One run's epochs after `state.epoch` and its test, computed by `workers` and recorded by
    `recorder`. SIGINT and SIGTERM stop it after the step in flight (Interrupted); a NaN or
    infinite loss stops it too (Diverged), with the epoch that diverged in the history."""

    def __init__(
        self,
        cfg: TrainConfig,
        state: TrainingState,
        splits: data.FashionMNISTData,
        recorder: Recorder,
        workers: Workers,
    ) -> None:
        self.cfg, self.state, self.splits, self.recorder = cfg, state, splits, recorder
        updates = Updates(state.optimizer, state.scheduler, state.average)
        objective = Objective(cfg.label_smoothing, state.distillation)
        step = ShardedStep(state.model, updates, objective, workers=workers, shards=cfg.shards)
        augmenter = self._augmenter(splits.train.images)
        soft_targets = self._soft_targets(augmenter, workers)
        self.epochs = Epochs(step, augmenter, splits.train.labels, state.generator, cfg.batch_size, soft_targets)
        self.evaluation = Evaluation(cfg.eval_batch_size, workers)

    def fit(self, on_epoch: EpochCallback | None = None) -> None:
        """Train, validate, record and save each epoch, then call `on_epoch` with its record."""
        # scripts/bench.py times start-up up to this line.
        log.info("Training starts: %d steps of %d images per epoch", self.state.steps_per_epoch, self.cfg.batch_size)
        with stop_on_signals() as stop:
            for epoch in range(self.state.epoch + 1, self.cfg.epochs + 1):
                record = self._epoch(epoch, stop)
                self._keep(record)
                if stop.is_set():  # the signal came during validation or saving
                    raise Interrupted(f"Interrupted after epoch {epoch}, which is saved in {self.recorder.last}.")
                if on_epoch is not None:
                    on_epoch(record)

    def _augmenter(self, images: torch.Tensor) -> Augmenter:
        """The run's augmentation of the training `images`, built once per run (erasing draws after
        the flip and shift, from the same generator). A new run first shows TensorBoard what the
        model sees, drawn with a generator of its own so that training is unaffected."""
        cfg, state = self.cfg, self.state
        flip, max_shift, erasing = (
            cfg.augmentation.flip,
            cfg.augmentation.max_shift,
            Erasing.configured(cfg.augmentation),
        )
        if state.epoch == 0:
            preview = torch.Generator(device=state.device).manual_seed(cfg.seed)
            self.recorder.samples(augment(images[:64], flip, max_shift, preview, erasing))
        return Augmenter(images, flip, max_shift, erasing)

    def _soft_targets(self, augmenter: Augmenter, workers: Workers) -> distill.SoftTargets | None:
        """How the teachers label the drawn images, when the run distils."""
        if self.state.distillation is None:
            return None
        once = distill.labels_once(augmenter.variants_per_image, self.cfg.epochs, self.cfg.augmentation.erase_p)
        return distill.SoftTargets(self.state.distillation, augmenter, workers, once=once)

    def _epoch(self, epoch: int, stop: threading.Event) -> EpochRecord:
        """Train epoch `epoch`, then validate the evaluated weights (the average's, if kept)."""
        started = time.perf_counter()
        trained = train_epoch(self.epochs, stop, f"epoch {epoch}/{self.cfg.epochs}")
        if trained is None:
            raise _interrupted_in(epoch, self.recorder.last)
        if self.state.average is not None:
            self.state.average.after_epoch(self.state.model, epoch)
        train_seconds = time.perf_counter() - started
        val_loss, val_acc = None, None
        if (val := self.splits.val) is not None:  # a run without validation has neither, never a stand-in
            val_loss, val_acc, _ = self.evaluation(self._classifier(self.state.evaluated_model), val.images, val.labels)
        return EpochRecord(
            epoch, *trained, val_loss, val_acc, seconds=time.perf_counter() - started, train_seconds=train_seconds,
            train_images=len(self.splits.train.labels), lr=self.state.optimizer.param_groups[0]["lr"],
        )  # fmt: skip

    def _classifier(self, model: torch.nn.Module) -> Classifier:
        """`model` as validation and the test run it: on uint8 images, with the run's test-time flip."""
        return Classifier(model, self.cfg.augmentation.test_flip, uint8_input=True)

    def _keep(self, record: EpochRecord) -> None:
        """Add the epoch to the history (a diverged one too: metrics.json shows it), warn if the run
        does not learn, and save it."""
        state = self.state
        state.history.append(record)
        _check_finite(record, lr=self.cfg.optimizer.lr, run_dir=self.recorder.run_dir)
        _log_epoch(record, self.cfg.epochs)
        is_best = state.complete_epoch(record)
        if record.epoch == 2 and (warning := validation.not_learning(state.history, self.cfg, len(data.CLASSES))):
            log.warning("%s", warning)
            state.warnings.append(warning)
        self.recorder.epoch(record, state, is_best=is_best)

    def test(self) -> dict[str, float]:
        """Test accuracy and loss of best.pt's evaluated weights: the best-validation epoch's
        (without validation, the last epoch's), the weight average's when the run keeps one."""
        state, test = self.state, self.splits.test
        try:  # the signal handlers are restored by now: Ctrl-C and SIGTERM arrive as KeyboardInterrupt
            best = self.recorder.best_checkpoint(state.device)
            state.model.load_state_dict(checkpoint.evaluated_weights(best))  # training is over: the model is free
            test_loss, test_acc, predicted = self.evaluation(self._classifier(state.model), test.images, test.labels)
            confusion = confusion_matrix(test.labels, predicted)
            self.recorder.test(self.cfg.epochs, accuracy=test_acc, loss=test_loss, confusion=confusion)
        except KeyboardInterrupt:
            raise Interrupted(f"Interrupted while testing; {self.recorder.last} holds every epoch.") from None
        if state.best_val_acc is None:
            tested = f"Epoch {state.best_epoch} (last epoch, no validation)"
        else:
            tested = f"Best epoch {state.best_epoch} (val acc {state.best_val_acc:.4f})"
        log.info("%s, %s: test acc %.4f, test loss %.4f", tested, checkpoint.weights_used(best), test_acc, test_loss)
        return {"test_acc": test_acc, "test_loss": test_loss}


def _interrupted_in(epoch: int, last: Path) -> Interrupted:
    if epoch == 1:
        return Interrupted("Interrupted in epoch 1, before any epoch was saved; resuming starts the run again.")
    return Interrupted(f"Interrupted in epoch {epoch}; {last} holds epoch {epoch - 1}.")


def _check_finite(record: EpochRecord, *, lr: float, run_dir: Path) -> None:
    """Raise Diverged, naming the first loss of the epoch's `record` that is NaN or infinite."""
    for name, value in (("training loss", record.train_loss), ("validation loss", record.val_loss)):
        if value is not None and not math.isfinite(value):
            raise Diverged(
                f"Run {run_dir} diverged in epoch {record.epoch}: the {name} became {value} (NaN or "
                f"infinite). Lower optimizer.lr (now {lr}) or choose another optimizer."
            )


def _log_epoch(record: EpochRecord, epochs: int) -> None:
    validated = (
        "no validation" if record.val_acc is None else f"val loss {record.val_loss:.4f} acc {record.val_acc:.4f}"
    )
    log.info(
        "epoch %d/%d  train loss %.4f acc %.4f | %s | %.1f s, %.0f img/s",
        record.epoch, epochs, record.train_loss, record.train_acc, validated, record.seconds, record.images_per_second,
    )  # fmt: skip


# ---- the whole run -----------------------------------------------------------------------------


@registered_while_running  # other runs see this one (cli.main registers a single run sooner)
def train(
    cfg: TrainConfig, run_dir: Path, *, on_epoch: EpochCallback | None = None, start_if_unsaved: bool = False
) -> dict[str, Any]:
    """Train (or resume) the run in `run_dir` and return what metrics.json holds; `on_epoch` is
    called after every saved epoch (see EpochCallback); `start_if_unsaved`: a sweep's job that
    never started starts on resume (run.admission.admit)."""
    compute_on_one_thread()  # every computation of the run: its numbers must not depend on a thread count
    config, device = to_plain(cfg), select_device(cfg.device)
    admitted = admission.admit(
        run_dir, config, str(device), load=checkpoint.resumable, start_if_unsaved=start_if_unsaved
    )
    if admitted.completed is not None:
        return admitted.completed
    watch = LoadWatch()  # the load of other programs, watched while the data loads
    splits = data.load(cfg.data.root, cfg.data.val_size, cfg.data.split_seed).to(device)
    teachers = distill.configured(cfg.distill, config["data"], device, cfg.eval_batch_size)
    state = TrainingState(cfg, config, device, len(splits.train.labels), teachers)
    # Decided as late as possible, so that runs started a few seconds apart see each other.
    threads = training_threads(cfg.threads, watch=watch) if device.type == "cpu" else ONE_GPU_THREAD
    ran = _circumstances(state, threads)
    if admitted.saved is not None:
        _resume(state, admitted, ran.processor, run_dir)
    recorder = Recorder(run_dir, config, start_epoch=state.epoch + 1, ran=ran)
    _log_recipe(cfg, ran)
    with recorder.ending_recorded(state), Workers(ran.threads) as workers:
        training = Training(cfg, state, splits, recorder, workers)
        training.fit(on_epoch)
        return recorder.finish(state, training.test())


def _resume(state: TrainingState, admitted: admission.Admission, processor: str, run_dir: Path) -> None:
    """Continue `state` from the checkpoint `admit` read; say so if another processor computes now."""
    try:
        state.load_state_dict(admitted.saved)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as error:
        detail = " ".join(str(error).split())[:300]
        raise UserError(
            f"{run_dir / LAST_CHECKPOINT} cannot be resumed from: its state does not fit this run ({type(error).__name__}: "
            f"{detail}); the checkpoint is damaged or was edited. Restore it, or train the run afresh elsewhere."
        ) from None
    log.info("Resuming %s after epoch %d", run_dir, state.epoch)
    if moved := admitted.facts.moved(processor, state.epoch):
        log.warning(moved)
        state.warnings.append(moved)


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
        "%s (%s, %s pool, dropout %.2f), %s lr %g, %d parameters, on %s with %d threads",
        "LeNet-5" if cfg.model.width == 1 else f"LeNet-5 {cfg.model.width}x wide", cfg.activation.name.value, cfg.pool.name.value, cfg.dropout.p, cfg.optimizer.name, cfg.optimizer.lr,
        ran.parameters, ran.device, ran.threads,
    )  # fmt: skip
