"""Knowledge distillation's parts: the loss, the teachers' mean logits, labelling each flipped and shifted
copy once, the leak rule, the resume check."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lenet_fmnist.config import TrainConfig, compose
from lenet_fmnist.model import LeNet5
from lenet_fmnist.run.errors import UserError
from lenet_fmnist.training import checkpoint, distill
from lenet_fmnist.training.augment import Augmenter, Erasing, normalise
from lenet_fmnist.workers import Workers

VALIDATING = {"val_size": 10_000, "split_seed": 0}


def _save_teacher(path: Path, seed: int, data: dict[str, Any], width: int = 1, **extra: Any) -> Path:
    torch.manual_seed(seed)
    model = LeNet5("relu", "max", 0.5, width)
    config = {
        "model": {"name": "lenet5" if width == 1 else "lenet5_wide", "width": width},
        **{"activation": {"name": "relu"}, "pool": {"name": "max"}, "dropout": {"p": 0.5}, "data": data},
    }
    checkpoint.save(path, {"model": model.state_dict(), "config": config, **extra})
    return path


def test_the_loss_is_the_hard_loss_at_alpha_0_and_the_scaled_kl_at_alpha_1() -> None:
    torch.manual_seed(0)
    student, teacher, targets = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    hard = F.cross_entropy(student, targets)
    assert torch.equal(distill.loss(hard, student, teacher, alpha=0.0, temperature=4.0), hard)
    t = 3.0
    p_teacher = F.softmax(teacher / t, dim=1)
    kl = (p_teacher * (p_teacher.log() - F.log_softmax(student / t, dim=1))).sum(dim=1).mean()
    torch.testing.assert_close(distill.loss(hard, student, teacher, alpha=1.0, temperature=t), t * t * kl)
    assert distill.loss(hard, teacher, teacher, alpha=1.0, temperature=t).abs() < 1e-6  # agreeing costs nothing


def test_teachers_average_their_logits_in_eval_mode_and_keep_no_gradient(tmp_path: Path) -> None:
    paths = [_save_teacher(tmp_path / f"t{i}.pt", i, VALIDATING, width=1 + 3 * i) for i in range(2)]  # one wide
    teachers = distill.load([str(p) for p in paths], VALIDATING, torch.device("cpu"))
    assert teachers is not None
    teachers.train()  # a caller's train() must not turn the teachers' dropout on
    images = torch.randint(0, 256, (130, 28, 28), dtype=torch.uint8)
    labelled = teachers.label(images, batch_size=50)
    models = [checkpoint.model_from(checkpoint.load(p), p).eval() for p in paths]
    with torch.no_grad():
        expected = torch.stack([m(normalise(images)) for m in models]).mean(dim=0)
    torch.testing.assert_close(labelled, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(labelled, teachers.label(images, batch_size=130))  # no dropout, no randomness
    assert not labelled.requires_grad and not labelled.is_inference()
    assert not any(p.requires_grad for p in teachers.parameters())
    assert [f.sha256 for f in teachers.files] == [distill.sha256_of(p) for p in paths]


@pytest.mark.parametrize(
    ("teacher_data", "why"),
    [
        ({"val_size": 0, "split_seed": 0}, r"all 60,000 training images \(data.val_size=0\)"),
        ({"val_size": 10_000, "split_seed": 1}, r"another split \(data.val_size=10000, data.split_seed=1\)"),
        ({"val_size": 5_000, "split_seed": 0}, r"another split \(data.val_size=5000"),
    ],
)
@pytest.mark.parametrize("width", [1, 4])  # model=lenet5 and model=lenet5_wide
def test_a_teacher_that_saw_the_students_validation_images_is_refused(
    tmp_path: Path, teacher_data: dict[str, int], why: str, width: int
) -> None:
    path = _save_teacher(tmp_path / "t.pt", 0, teacher_data, width)
    with pytest.raises(UserError, match=why) as error:
        distill.load([str(path)], VALIDATING, torch.device("cpu"))
    assert str(path) in str(error.value) and "never have seen" in str(error.value)


def test_a_final_fit_may_learn_from_any_teacher(tmp_path: Path) -> None:
    path = _save_teacher(tmp_path / "t.pt", 0, {"val_size": 0, "split_seed": 3})
    teachers = distill.load([str(path)], {"val_size": 0, "split_seed": 0}, torch.device("cpu"))
    assert teachers is not None and teachers.record()["splits"] == [[0, 3]]


@pytest.mark.parametrize("width", [1, 4])
def test_what_a_distilled_teacher_learned_from_counts_too(tmp_path: Path, width: int) -> None:
    """A teacher trained on the student's split but distilled from one that saw everything carries
    the validation images in its soft targets: refused."""
    inherited = {distill.CHECKPOINT_KEY: {"teachers": [], "splits": [[0, 0]]}}
    path = _save_teacher(tmp_path / "t.pt", 0, VALIDATING, width, **inherited)
    with pytest.raises(UserError, match=r"learned from all 60,000 training images"):
        distill.load([str(path)], VALIDATING, torch.device("cpu"))


def test_a_resume_with_changed_teachers_is_refused(tmp_path: Path) -> None:
    path = _save_teacher(tmp_path / "t.pt", 0, VALIDATING)

    def configured() -> distill.Distillation | None:
        cfg = compose("train", f"distill.teachers=[{path}]", schema=TrainConfig).distill
        return distill.configured(cfg, VALIDATING, torch.device("cpu"), 100)

    saved = configured().teachers.record()
    distill.check_resume(saved, configured())  # unchanged: accepted
    _save_teacher(path, 1, VALIDATING)  # the file now holds other weights
    with pytest.raises(UserError, match="SHA-256"):
        distill.check_resume(saved, configured())
    with pytest.raises(UserError, match="SHA-256"):
        distill.check_resume(saved, None)
    distill.check_resume(None, None)  # a run without teachers, before and now


def test_no_teachers_configured_means_no_distillation() -> None:
    cfg = compose("train", schema=TrainConfig).distill
    assert distill.configured(cfg, VALIDATING, torch.device("cpu"), 100) is None


def test_a_missing_teacher_is_named_before_anything_loads(tmp_path: Path) -> None:
    present = _save_teacher(tmp_path / "present.pt", 0, VALIDATING)
    missing = str(tmp_path / "teachers" / "best.pt")
    with pytest.raises(UserError, match=rf"distill.teachers='{missing}' does not exist.*experiment=best_teachers"):
        distill.load([str(present), missing], VALIDATING, torch.device("cpu"))


@pytest.mark.parametrize("size", [0, 1, (1 << 20) + 3], ids=["empty", "one-byte", "over-a-block"])
def test_sha256_of_a_file_is_the_sha256_of_its_bytes(tmp_path: Path, size: int) -> None:
    path = tmp_path / "file"
    path.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
    assert distill.sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("flip, max_shift", [(True, 1), (False, 0), (True, 2)])
def test_labelling_each_copy_once_gives_the_teachers_logits_of_every_drawn_image(
    tmp_path: Path, flip: bool, max_shift: int
) -> None:
    """Labelled once, a drawn image that erasing left alone gets its flipped and shifted copy's
    logits, which are the teachers' for the drawn image itself; an erased one is labelled anew."""
    teachers = distill.load([str(_save_teacher(tmp_path / "t.pt", 0, VALIDATING))], VALIDATING, torch.device("cpu"))
    assert teachers is not None
    images = torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    augmenter = Augmenter(images, flip, max_shift, Erasing(0.5, 0.1, 0.25))
    distillation = distill.Distillation(teachers, alpha=0.5, temperature=4.0, label_batch=16)
    draw = augmenter.draw(
        torch.randperm(40, generator=torch.Generator().manual_seed(4)), torch.Generator().manual_seed(5)
    )
    assert draw.erased is not None and 0 < draw.erased.sum() < 40
    with Workers(2) as workers:
        once = distill.SoftTargets(distillation, augmenter, workers, once=True)(draw)
        each_epoch = distill.SoftTargets(distillation, augmenter, workers, once=False)(draw)
    assert torch.equal(each_epoch, teachers.label(draw.images, 16))
    torch.testing.assert_close(once, each_epoch)  # equal but for the rounding of other batches
    every_copy = teachers.label(augmenter.variant_images(torch.arange(augmenter.variants)), 16)
    kept = ~draw.erased
    assert torch.equal(once[kept], every_copy[draw.variants[kept]])
    assert torch.equal(once[draw.erased], teachers.label(draw.images[draw.erased], 16))


@pytest.mark.parametrize(
    ("variants_per_image", "epochs", "erase_p", "once"),
    [
        (18, 200, 0.21, True),  # experiment=best: 18 + 42 passes per image instead of 200
        (18, 18, 0.0, False),  # as many passes either way: each epoch's, which start at once
        (50, 10, 0.0, False),  # augmentation=standard's 50 copies, 10 epochs
        (1, 3, 0.5, True),  # no flip or shift: the training images themselves, and the erased ones
        (2, 3, 0.2, True),
        (2, 3, 0.5, False),
    ],
)
def test_the_copies_are_labelled_once_when_that_takes_fewer_teacher_passes(
    variants_per_image: int, epochs: int, erase_p: float, once: bool
) -> None:
    assert distill.labels_once(variants_per_image, epochs, erase_p) is once
