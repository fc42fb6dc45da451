"""Knowledge distillation end to end, through the command line: with alpha 0 a distilled run is the
plain run bit for bit (the teachers draw no random numbers and change nothing else), with alpha > 0
it learns something else, records its teachers by content and resumes bit for bit after SIGTERM in
epoch 2, whether the teachers label each flipped and shifted copy once (with erasing or without)
or each epoch's images; a teacher that saw the student's validation images stops the run before
training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from conftest import (
    CLI,
    assert_ok,
    assert_same_run,
    output,
    plain_args,
    read_metrics,
    run_each,
    sigterm_in_epoch_2,
)
from lenet_fmnist.training import distill

TEACHER, LEAKY_TEACHER, PLAIN, SILENT, DISTILLED = "teacher", "leaky", "plain", "alpha0", "distilled"
# Students at alpha 0.5 and how their teachers label (distill.labels_once, for 3 epochs): the
# augmentation, and how many copies are labelled once (None: each epoch's images instead).
LABELLING = {
    DISTILLED: ((), 1536),  # no augmentation: the 1,536 training images themselves
    "erased": (("augmentation.flip=true", "augmentation.erase_p=0.2"), 2 * 1536),  # + the erased each epoch
    "each_epoch": (("augmentation=standard",), None),  # 50 copies of each image cost more than 3 epochs
}


def _teacher(runs: Path, name: str) -> str:
    return str(runs / name / "checkpoints" / "best.pt")


def _student_args(data: Path, runs: Path, run_dir: Path, *extra: str) -> list[str]:
    return plain_args(data, run_dir, f"distill.teachers=[{_teacher(runs, TEACHER)}]", "distill.temperature=2", *extra)


@pytest.fixture(scope="module")
def runs(cli: CLI, plain_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two teachers (one trained on every image), then the plain student, the same student
    distilled with alpha 0 and with alpha 0.5, all trained in one process."""
    base = tmp_path_factory.mktemp("distill")
    commands = [
        plain_args(plain_data, base / TEACHER, "seed=1", "activation=relu", "pool=max"),
        plain_args(plain_data, base / LEAKY_TEACHER, "seed=1", "data.val_size=0", "epochs=1"),
        plain_args(plain_data, base / PLAIN),
        _student_args(plain_data, base, base / SILENT, "distill.alpha=0"),
        *(
            _student_args(plain_data, base, base / name, "distill.alpha=0.5", *args)
            for name, (args, _) in LABELLING.items()
        ),
    ]
    for code, text in run_each(cli, commands):
        assert code == 0 and "Traceback" not in text, text
    return base


def test_alpha_0_computes_the_plain_run_bit_for_bit(runs: Path) -> None:
    assert_same_run(runs / SILENT, runs / PLAIN)


def test_a_distilled_run_learns_from_its_teachers_and_records_them(runs: Path) -> None:
    plain = torch.load(runs / PLAIN / "checkpoints" / "last.pt", weights_only=True)
    distilled = torch.load(runs / DISTILLED / "checkpoints" / "last.pt", weights_only=True)
    assert not torch.equal(plain["model"]["classifier.8.weight"], distilled["model"]["classifier.8.weight"])
    assert distill.CHECKPOINT_KEY not in plain
    teacher = Path(_teacher(runs, TEACHER))
    assert distilled[distill.CHECKPOINT_KEY] == {
        "teachers": [{"path": str(teacher), "sha256": distill.sha256_of(teacher)}],
        "splits": [[256, 0]],
    }
    assert read_metrics(runs / DISTILLED)["status"] == "completed"


@pytest.mark.parametrize("student", LABELLING)
def test_a_distilled_run_resumes_bit_for_bit(
    cli: CLI, plain_data: Path, runs: Path, tmp_path: Path, student: str
) -> None:
    run_dir, (augmentation, copies) = tmp_path / "run", LABELLING[student]
    student_args = _student_args(plain_data, runs, run_dir, "distill.alpha=0.5", *augmentation)
    hint = sigterm_in_epoch_2(cli, student_args, run_dir)
    resumed = cli.run_hint(hint)
    assert_ok(resumed)
    assert "after epoch 1" in output(resumed)
    assert_same_run(run_dir, runs / student)
    labelled_once = re.findall(r"labelled the (\d+) flipped and shifted copies", (run_dir / "train.log").read_text())
    assert labelled_once == ([] if copies is None else [str(copies)] * 2)  # at the start and on resuming


def test_a_teacher_that_saw_the_validation_images_stops_the_run_before_training(
    cli: CLI, plain_data: Path, runs: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = cli.run(*plain_args(plain_data, run_dir, f"distill.teachers=[{_teacher(runs, LEAKY_TEACHER)}]"))
    text = output(result)
    assert result.returncode == 1, text
    assert "Traceback" not in text
    assert "all 60,000 training images (data.val_size=0)" in text and "never have seen" in text
    assert not (run_dir / "checkpoints").exists(), "nothing was trained"
