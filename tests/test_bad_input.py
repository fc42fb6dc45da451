"""Every bad input a user can give, through the command line in a subprocess: a non-zero exit, one
clear paragraph that says what is wrong, no traceback, and nothing on disk lost."""

from __future__ import annotations

import pickle
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import (
    CLI,
    assert_clear_failure,
    output,
    read_metrics,
    snapshot,
    tiny_args,
    train_args,
    write_dataset,
)
from lenet_fmnist.model import LeNet5
from lenet_fmnist.run.files import LOCK_FILE
from lenet_fmnist.training.checkpoint import FORMAT


def assert_each_job_failed_clearly(result: subprocess.CompletedProcess[str], expected: dict[str, str]) -> None:
    """A sweep whose every job is a bad input: each job's error is one logged line naming its
    input, the sweep goes on to the next job, exits non-zero, and shows no traceback."""
    text = output(result)
    assert result.returncode != 0, text
    assert "Traceback" not in text and 'File "' not in text, text
    errors = [line for line in text.splitlines() if "][ERROR]" in line]
    assert len(errors) == len(expected), text
    for name, pattern in expected.items():
        (line,) = [line for line in errors if name in line]
        assert re.search(pattern, line), f"{pattern!r} not in {line!r}"


# ---------------------------------------------------------------------------------------------
# Configuration


CONFIG_CASES = {
    "unknown group option": (["activation=foo"], r"Could not find 'activation/foo'[\s\S]*relu"),
    "wrong type": (["epochs=abc"], r"Value 'abc' of type 'str' could not be converted to Integer"),
    "unknown key": (["foo=1"], r"Could not override 'foo'"),
    "unknown key added with +": (["+foo=1"], r"unknown key\(s\) foo"),
    "learning rate 0": (["optimizer.lr=0"], r"optimizer.lr=0.0 is not allowed: .* > 0"),
    "negative learning rate": (["optimizer=adam", "optimizer.lr=-0.001"], r"optimizer.lr=-0.001 is not allowed"),
    "epochs < 1": (["epochs=0"], r"epochs=0 is not allowed: epochs must be >= 1"),
    "batch_size < 1": (["batch_size=-3"], r"batch_size=-3 is not allowed"),
    "dropout.p = 1": (["dropout=standard", "dropout.p=1.0"], r"dropout.p=1.0 is not allowed: .*\[0, 1\)"),
    "dropout.p < 0": (["dropout.p=-0.2"], r"dropout.p=-0.2 is not allowed"),
    "label smoothing 1": (
        ["label_smoothing=1"],
        r"label_smoothing=1.0 is not allowed: label_smoothing must be in \[0, 1\)",
    ),
    "EMA decay 1": (
        ["ema.decay=1"],
        r"ema.decay=1.0 is not allowed: ema.decay must be null \(no average\) or in \(0, 1\)",
    ),
    "erasing probability > 1": (
        ["augmentation.erase_p=1.5"],
        r"augmentation.erase_p=1.5 is not allowed: .* in \[0, 1\]",
    ),
    "empty erasing size range": (
        ["augmentation.erase_min_area=0.3", "augmentation.erase_max_area=0.1"],
        r"augmentation.erase_max_area=0.1 is not allowed: .*>= augmentation.erase_min_area \(0.3\): \[0.3, 0.1\] is an empty size range",
    ),
    "validation size < 0": (
        ["data.val_size=-1"],
        r"data.val_size=-1 is not allowed: data.val_size must be >= 0 \(0: no validation\)",
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_configuration(cli: CLI, tiny_data: Path, tmp_path: Path, case: str) -> None:
    overrides, pattern = CONFIG_CASES[case]
    run_dir = tmp_path / "run"
    assert_clear_failure(cli.run(*train_args(tiny_data, run_dir, *overrides)), pattern)
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    result = cli.run(*train_args(tiny_data, tmp_path / "run", "device=cuda"))
    assert_clear_failure(result, r"device='cuda' asks for CUDA, but no CUDA GPU is available here")


# ---------------------------------------------------------------------------------------------
# Data


@pytest.fixture(scope="module")
def bad_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bad_roots")
    corrupt = write_dataset(base / "corrupt", train=256, test=64, gz=True)
    images = corrupt / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[: len(images.read_bytes()) // 2])  # cut off mid-stream
    wrong = write_dataset(base / "wrong", train=256, test=64, gz=False)
    shutil.copy(wrong / "t10k-images-idx3-ubyte", wrong / "t10k-labels-idx1-ubyte")  # images where labels belong
    empty = base / "empty"
    empty.mkdir()
    return {"missing": base / "missing", "corrupt": corrupt, "wrong": wrong, "empty": empty}


DATA_CASES = {
    "missing": r"data.root='.*missing' is not an existing directory. Provide the data in one of three ways",
    "empty": r"data.root='.*empty' does not hold the four Fashion-MNIST files",
    "corrupt": r"corrupt/train-images-idx3-ubyte.gz is not a valid IDX image file .* truncated or corrupt",
    "wrong": r"wrong/t10k-labels-idx1-ubyte is not a valid IDX label file",
    "good": r"data.val_size=256 leaves no training data: .* has 256 training images",
}


def test_bad_data_roots_and_a_validation_set_that_leaves_no_training_data(
    cli: CLI, bad_roots: dict[str, Path], tiny_data: Path, tmp_path: Path
) -> None:
    """Each directory as a job of one sweep (one process: each start costs seconds), all with
    data.val_size=256: the bad directories fail on their files, the good one on the split."""
    roots = {**bad_roots, "good": tiny_data}
    overrides = [a for a in tiny_args(tiny_data, tmp_path)[1:] if not a.startswith(("data.", "hydra.run.dir"))]
    result = cli.run(
        "train", "-m", *overrides, "data.val_size=256", f"data.root={','.join(str(roots[name]) for name in DATA_CASES)}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )  # fmt: skip
    assert_each_job_failed_clearly(result, {str(roots[name]): pattern for name, pattern in DATA_CASES.items()})
    assert not list((tmp_path / "sweep").rglob("metrics.json"))


# ---------------------------------------------------------------------------------------------
# Output directories and resume


@pytest.fixture(scope="module")
def not_a_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A path below a regular file: no one, root included, can create a directory there."""
    blocker = tmp_path_factory.mktemp("unwritable") / "a-file"
    blocker.write_text("not a directory")
    return blocker / "run"


def test_output_dir_that_cannot_be_written(cli: CLI, tiny_data: Path, not_a_directory: Path) -> None:
    result = cli.run(*train_args(tiny_data, not_a_directory))
    assert_clear_failure(result, rf"The output directory {re.escape(str(not_a_directory))} cannot be written")


def test_sweep_dir_that_cannot_be_written(cli: CLI, tiny_data: Path, not_a_directory: Path) -> None:
    overrides = [a for a in tiny_args(tiny_data, not_a_directory)[1:] if not a.startswith("hydra.run.dir")]
    result = cli.run("train", "-m", *overrides, "seed=0,1", f"hydra.sweep.dir={not_a_directory}")
    assert_clear_failure(result, r"cannot be written .*hydra.sweep.dir=DIR")


def test_resume_with_nothing_to_resume(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "never-ran"
    result = cli.run(*train_args(tiny_data, run_dir, "resume=true"))
    assert_clear_failure(result, r"resume=true, but there is nothing to resume")
    assert not run_dir.exists(), "a failed resume must not leave an empty run directory behind"


def test_sweep_resume_with_nothing_to_resume(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    overrides = [a for a in tiny_args(tiny_data, tmp_path)[1:] if not a.startswith("hydra.run.dir")]
    result = cli.run("train", "-m", *overrides, "seed=0,1", "resume=true", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert_clear_failure(result, r"nothing to resume: .* holds no sweep")


@pytest.fixture
def finished_run(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of the shared one-epoch run, for tests that try to damage it."""
    return Path(shutil.copytree(tiny_run, tmp_path / "finished"))


def test_an_existing_run_is_never_overwritten(cli: CLI, tiny_data: Path, finished_run: Path) -> None:
    before = snapshot(finished_run)
    result = cli.run(*train_args(tiny_data, finished_run, "seed=1"))
    assert_clear_failure(result, r"already holds a run; it is left untouched. Pass resume=true")
    assert snapshot(finished_run) == before, "the run's files (.hydra/ and train.log included) changed"


def test_an_existing_sweep_is_never_overwritten(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "multirun.yaml").write_text("# an earlier sweep\n")
    overrides = [a for a in tiny_args(tiny_data, tmp_path)[1:] if not a.startswith("hydra.run.dir")]
    result = cli.run("train", "-m", *overrides, "seed=0,1", f"hydra.sweep.dir={sweep_dir}")
    assert_clear_failure(result, r"already holds a sweep; it is left untouched")
    assert [p.name for p in sweep_dir.iterdir() if p.name != LOCK_FILE] == ["multirun.yaml"]
    assert (sweep_dir / "multirun.yaml").read_text() == "# an earlier sweep\n"


def test_resume_with_another_configuration(cli: CLI, tiny_data: Path, finished_run: Path) -> None:
    results = snapshot(finished_run, skip=lambda p: ".hydra" in p.parts or p.suffix == ".log")
    result = cli.run(*train_args(tiny_data, finished_run, "resume=true", "epochs=1", "optimizer.lr=0.5"))
    assert_clear_failure(result, r"configuration differs from the saved run's: optimizer.lr: 0.01 -> 0.5")
    assert snapshot(finished_run, skip=lambda p: ".hydra" in p.parts or p.suffix == ".log") == results
    assert read_metrics(finished_run)["status"] == "completed"


# ---------------------------------------------------------------------------------------------
# eval on files that are not checkpoints of this model


class Hostile:
    """Unpickling this creates the file `marker` (a stand-in for any code an attacker likes)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def bad_checkpoints(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bad_checkpoints")
    files = {"missing": base / "missing.pt"}

    files["text"] = base / "notes.pt"
    files["text"].write_text("these are not the weights you are looking for\n")

    files["truncated"] = base / "truncated.pt"
    whole = (tiny_run / "checkpoints" / "best.pt").read_bytes()
    files["truncated"].write_bytes(whole[: len(whole) // 2])

    files["foreign"] = base / "foreign.pt"  # a bare state dict, as other tools save them
    torch.save(LeNet5().state_dict(), files["foreign"])

    files["architecture"] = base / "wider.pt"  # our format, but conv1 has 8 filters instead of 6
    state = torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=True)
    state["model"]["features.0.weight"] = torch.zeros(8, 1, 5, 5)
    state["model"]["features.0.bias"] = torch.zeros(8)
    torch.save(state, files["architecture"])

    files["hostile"] = base / "hostile.pt"
    torch.save({"format": FORMAT, "model": Hostile(base / "PWNED-torch")}, files["hostile"])
    files["hostile-pickle"] = base / "hostile.pkl"
    files["hostile-pickle"].write_bytes(pickle.dumps(Hostile(base / "PWNED-pickle")))
    return files


EVAL_CASES = {
    "missing": r"does not exist or is not a file",
    "text": r"is not a PyTorch checkpoint",
    "truncated": r"is not a PyTorch checkpoint",
    "foreign": r"is a PyTorch file but not a lenet_fmnist checkpoint",
    "architecture": r"does not hold weights of this LeNet-5 .*size mismatch for features.0.weight",
    "hostile": r"was refused: .*not unpickled \(its code did not run\)",
    "hostile-pickle": r"was refused: .*not unpickled \(its code did not run\)",
}


def test_eval_on_a_hostile_checkpoint(
    cli: CLI, tiny_data: Path, bad_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    path = bad_checkpoints["hostile"]
    result = cli.run(
        "eval", f"checkpoint={path}", f"data.root={tiny_data}", "device=cpu", f"hydra.run.dir={tmp_path / 'eval'}"
    )
    assert_clear_failure(result, re.escape(str(path)) + r" " + EVAL_CASES["hostile"])
    assert "GLOBAL io.open was not an allowed global" in output(result)  # says what it refused
    assert "weights_only` set to `False`" not in output(result), "never advise an unsafe load"
    assert not list(path.parent.glob("PWNED*")), "loading a checkpoint ran code from it"
    assert not (tmp_path / "eval" / "eval.json").exists()


def test_eval_on_files_that_are_not_checkpoints_of_this_model(
    cli: CLI, tiny_data: Path, bad_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """Each file as a job of one eval sweep (one process: each start costs seconds)."""
    paths = ",".join(str(path) for path in bad_checkpoints.values())
    result = cli.run(
        "eval", "-m", f"checkpoint={paths}", f"data.root={tiny_data}", "device=cpu",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )  # fmt: skip
    assert_each_job_failed_clearly(
        result, {str(bad_checkpoints[name]): pattern for name, pattern in EVAL_CASES.items()}
    )
    assert not list((tmp_path / "sweep").rglob("eval.json"))
    assert not list(bad_checkpoints["hostile"].parent.glob("PWNED*")), "loading a checkpoint ran code from it"


def test_the_hostile_payload_is_real(bad_checkpoints: dict[str, Path]) -> None:
    """Control: an unsafe load of the same file does run its code, so the test above means
    something. (Done last on a copy: it creates its own marker.)"""
    copy = bad_checkpoints["hostile"].parent / "control" / "hostile.pt"
    copy.parent.mkdir(exist_ok=True)
    marker = bad_checkpoints["hostile"].parent / "PWNED-torch"
    shutil.copy(bad_checkpoints["hostile"], copy)
    torch.load(copy, weights_only=False)
    assert marker.exists()
    marker.unlink()


def test_eval_output_dir_that_cannot_be_written(cli: CLI, tiny_run: Path, not_a_directory: Path) -> None:
    result = cli.run("eval", f"checkpoint={tiny_run / 'checkpoints' / 'best.pt'}", f"hydra.run.dir={not_a_directory}")
    assert_clear_failure(result, r"cannot be written")


def test_eval_into_a_run_directory_is_refused(cli: CLI, finished_run: Path) -> None:
    before = snapshot(finished_run)
    result = cli.run("eval", f"checkpoint={finished_run / 'checkpoints' / 'best.pt'}", f"hydra.run.dir={finished_run}")
    assert_clear_failure(result, r"already holds a run; it is left untouched. Choose another directory")
    assert "resume=true" not in output(result)  # eval has nothing to resume
    assert snapshot(finished_run) == before
