"""`export` as a user runs it: the written ONNX and TorchScript models, run by onnxruntime and
torch.jit here, give PyTorch's logits; the sidecar documents them; nothing is ever overwritten
unasked; bad input fails in one paragraph."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import CLI, assert_ok, output, snapshot, synthetic_split
from lenet_fmnist import data
from lenet_fmnist.inference.config import ExportFormat, ExportInput
from lenet_fmnist.inference.evaluate import Classifier, Evaluation, load_classifier
from lenet_fmnist.inference.export import TOLERANCE, onnx_bytes, self_check
from lenet_fmnist.run.files import LOCK_FILE
from lenet_fmnist.run.locking import lock, unlock
from lenet_fmnist.training import checkpoint
from test_bad_input import assert_clear_failure

# The `export` extra; without it (a GPU machine's bare Python) these tests skip, the others still run.
onnxruntime = pytest.importorskip("onnxruntime", reason="needs the `export` extra (onnxruntime)")


def export(cli: CLI, run: Path, out: Path, tiny_data: Path, *extra: str) -> str:
    result = cli.run(
        "export", f"checkpoint={run / 'checkpoints' / 'best.pt'}", f"out={out}", f"data.root={tiny_data}",
        "threads=1", f"hydra.run.dir={out.parent / (out.name + '-log')}", *extra, timeout=300,
    )  # fmt: skip
    assert_ok(result)
    return output(result)


def sidecar(path: Path) -> dict[str, Any]:
    return json.loads(path.with_name(path.name + ".json").read_text())


def reference_logits(run: Path, images: np.ndarray, test_flip: bool) -> np.ndarray:
    """PyTorch's logits for uint8 images, normalised by hand from the published constants, with
    the mirror image averaged in when `test_flip` (the definition of the test-time flip)."""
    model = checkpoint.model_from(checkpoint.load(run / "checkpoints" / "best.pt"), run).eval()
    inputs = (torch.from_numpy(images).float().unsqueeze(1) / 255 - data.MEAN) / data.STD
    with torch.inference_mode():
        logits = model(inputs)
        if test_flip:
            logits = (logits + model(inputs.flip(-1))) / 2
    return logits.numpy()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """300 images the self-checks never saw (another seed than tiny_data's)."""
    return synthetic_split(300, seed=5)[0]


def test_onnx_float32_export(cli: CLI, tiny_run: Path, tiny_data: Path, images: np.ndarray, tmp_path: Path) -> None:
    text = export(cli, tiny_run, tmp_path / "out", tiny_data)
    assert re.search(
        rf"Self-check passed: onnxruntime vs PyTorch on 64 test images from {tiny_data}: same prediction for 64 of 64, "
        r"max \|logit difference\| \S+ \(limit 0.0001\)",
        text,
    ), text
    model_path = tmp_path / "out" / "model.onnx"
    record = sidecar(model_path)
    assert record["input"] == {
        "name": "images", "dtype": "float32", "shape": ["batch", 1, 28, 28], "meaning": record["input"]["meaning"],
    }  # fmt: skip
    assert record["classes"] == list(data.CLASSES) and record["opset"] == 18 and record["test_flip"] is False
    assert record["normalisation"] == {
        "mean": data.MEAN, "std": data.STD, "formula": "(pixel / 255 - mean) / std", "inside_graph": False,
    }  # fmt: skip
    assert record["config"] == checkpoint.load(tiny_run / "checkpoints" / "best.pt")["config"]
    assert record["self_check"]["passed"] and record["self_check"]["images"] == 64

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.name == "images" and graph_input.shape[1:] == [1, 28, 28] and graph_input.type == "tensor(float)"
    mean, std = record["normalisation"]["mean"], record["normalisation"]["std"]
    inputs = ((images.astype(np.float32) / 255 - mean) / std)[:, None]
    expected = reference_logits(tiny_run, images, test_flip=False)
    for batch in (1, 7, 300):  # the batch dimension is dynamic
        got = np.concatenate([session.run(None, {"images": inputs[i : i + batch]})[0] for i in range(0, 300, batch)])
        assert np.abs(got - expected).max() < TOLERANCE
        assert (got.argmax(1) == expected.argmax(1)).all()


def test_onnx_uint8_export_of_a_test_time_flip_model(
    cli: CLI, flip_run: Path, tiny_data: Path, images: np.ndarray, tmp_path: Path
) -> None:
    export(cli, flip_run, tmp_path / "out", tiny_data, "input=uint8")
    model_path = tmp_path / "out" / "model.onnx"
    record = sidecar(model_path)
    assert record["input"]["name"] == "pixels" and record["input"]["dtype"] == "uint8"
    assert record["test_flip"] is True and record["normalisation"]["inside_graph"] is True
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": images})[0]
    flipped = reference_logits(flip_run, images, test_flip=True)
    assert np.abs(got - flipped).max() < TOLERANCE
    # Control: the graph does flip; the plain model's logits are not what it computes.
    assert np.abs(got - reference_logits(flip_run, images, test_flip=False)).max() > 10 * TOLERANCE
    # And its classes are eval's.
    model = checkpoint.model_from(checkpoint.load(flip_run / "checkpoints" / "best.pt"), flip_run)
    classifier = Classifier(model, True, uint8_input=True)
    _, _, classes = Evaluation(1000)(classifier, torch.from_numpy(images), torch.zeros(300, dtype=torch.long))
    assert (got.argmax(1) == classes.numpy()).all()


@pytest.fixture(scope="module")
def torchscript(cli: CLI, tiny_run: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of a TorchScript export of the tiny run."""
    out = tmp_path_factory.mktemp("torchscript") / "out"
    text = export(cli, tiny_run, out, tiny_data, "format=torchscript")
    assert "Self-check passed: torch.jit vs PyTorch on 64 test images" in text
    return out


def test_torchscript_export(torchscript: Path, tiny_run: Path, images: np.ndarray) -> None:
    model_path = torchscript / "model.pt"
    assert sidecar(model_path)["format"] == "torchscript" and "opset" not in sidecar(model_path)
    with pytest.warns(FutureWarning):  # torch 2.14 deprecates TorchScript; loading still works
        loaded = torch.jit.load(str(model_path))
    inputs = (torch.from_numpy(images).float().unsqueeze(1) / 255 - data.MEAN) / data.STD
    with torch.inference_mode():
        got = loaded(inputs).numpy()
    assert np.abs(got - reference_logits(tiny_run, images, test_flip=False)).max() < TOLERANCE


def test_the_sidecar_names_the_checkpoint_by_its_sha256(torchscript: Path, tiny_run: Path) -> None:
    best = tiny_run / "checkpoints" / "best.pt"
    recorded = sidecar(torchscript / "model.pt")["checkpoint"]
    assert recorded["path"] == str(best.resolve())
    assert recorded["sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()


def test_export_writes_the_weight_average(
    cli: CLI, ema_run: Path, tiny_data: Path, images: np.ndarray, tmp_path: Path
) -> None:
    """A checkpoint with a moving average of its weights (ema.decay) exports the average."""
    export(cli, ema_run, tmp_path / "out", tiny_data, "format=torchscript", "input=uint8")
    model_path = tmp_path / "out" / "model.pt"
    assert sidecar(model_path)["checkpoint"]["weights"].startswith("the exponential moving average of the weights")
    with pytest.warns(FutureWarning):
        loaded = torch.jit.load(str(model_path))
    with torch.inference_mode():
        got = loaded(torch.from_numpy(images)).numpy()
    assert np.abs(got - reference_logits(ema_run, images, test_flip=False)).max() < TOLERANCE
    state = checkpoint.load(ema_run / "checkpoints" / "best.pt")
    trained = checkpoint.model_from({**state, checkpoint.EMA: None}, ema_run)  # control: the trained weights
    with torch.inference_mode():
        control = trained.eval()((torch.from_numpy(images).float().unsqueeze(1) / 255 - data.MEAN) / data.STD)
    assert np.abs(got - control.numpy()).max() > 100 * TOLERANCE


def test_export_never_overwrites_unasked(
    cli: CLI, torchscript: Path, tiny_run: Path, tiny_data: Path, tmp_path: Path
) -> None:
    out = Path(shutil.copytree(torchscript, tmp_path / "out"))
    before = snapshot(out)
    result = cli.run(
        "export", f"checkpoint={tiny_run / 'checkpoints' / 'best.pt'}", f"out={out}", "format=torchscript",
        f"hydra.run.dir={tmp_path / 'again-log'}",
    )  # fmt: skip
    assert_clear_failure(
        result, r"model.pt and .*model.pt.json already exist and are left untouched. Pass overwrite=true"
    )
    assert snapshot(out) == before
    export(cli, tiny_run, out, tiny_data, "format=torchscript", "input=uint8", "overwrite=true")
    assert sidecar(out / "model.pt")["input"]["dtype"] == "uint8"
    kept = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
    assert kept == ["model.pt", "model.pt.json"], "no temporary file is left behind"


def test_each_export_gets_a_directory_of_its_own(cli: CLI, tiny_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    """Without out=, the model goes into the export's own outputs/export/<date>_<time>/, as eval's
    and predict's results do: a second export lands beside the first, never over it, and one
    pointed at the first's directory is refused before anything there changes."""
    here = replace(cli, cwd=tmp_path)
    checkpoints = snapshot(tiny_run / "checkpoints")
    args = ("export", f"checkpoint={tiny_run / 'checkpoints' / 'best.pt'}", f"data.root={tiny_data}", "threads=1")
    assert_ok(here.run(*args, "format=torchscript", timeout=300))
    (first,) = (tmp_path / "outputs" / "export").iterdir()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}", first.name), first.name
    assert sidecar(first / "model.pt")["format"] == "torchscript"
    written = snapshot(first)
    assert_ok(here.run(*args, "format=torchscript", "input=uint8", timeout=300))
    (second,) = set((tmp_path / "outputs" / "export").iterdir()) - {first}
    assert sidecar(second / "model.pt")["input"]["dtype"] == "uint8"
    again = here.run(*args, f"hydra.run.dir={first}", "format=torchscript")
    assert_clear_failure(again, rf"{re.escape(str(first))} already holds a run; it is left untouched. Choose another")
    assert "resume=true" not in output(again)  # export has nothing to resume
    assert snapshot(first) == written, "the first export, its .hydra/ record included, is left as it was"
    assert snapshot(tiny_run / "checkpoints") == checkpoints, "nothing is written next to the checkpoint"


def test_export_holds_its_out_directory(cli: CLI, tiny_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    """out=DIR is held by one process at a time (rundir's lock), as a run's directory is."""
    out = tmp_path / "out"
    lock(out)  # this test's process works there
    try:
        result = cli.run(
            "export", f"checkpoint={tiny_run / 'checkpoints' / 'best.pt'}", f"out={out}", f"data.root={tiny_data}",
            "format=torchscript", f"hydra.run.dir={tmp_path / 'log'}", timeout=300,
        )  # fmt: skip
    finally:
        unlock(out)
    assert_clear_failure(result, rf"{re.escape(str(out))} is in use by process {os.getpid()} .* with out=DIR")
    assert [p.name for p in out.iterdir()] == [LOCK_FILE]


def test_the_self_check_catches_a_model_that_differs(tiny_run: Path, flip_run: Path, images: np.ndarray) -> None:
    """The check itself, in-process: the ONNX bytes of one model against PyTorch's other model."""
    written, _ = load_classifier(tiny_run / "checkpoints" / "best.pt", uint8_input=True)
    other, _ = load_classifier(flip_run / "checkpoints" / "best.pt", uint8_input=True)
    payload = onnx_bytes(written, ExportInput.uint8)
    same = self_check(ExportFormat.onnx, payload, written, ExportInput.uint8, torch.from_numpy(images))
    assert same["passed"] and same["max_abs_logit_difference"] < TOLERANCE
    differs = self_check(ExportFormat.onnx, payload, other, ExportInput.uint8, torch.from_numpy(images))
    assert not differs["passed"] and differs["max_abs_logit_difference"] > TOLERANCE


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["format=tflite"], r"Invalid value 'tflite', expected one of \[onnx, torchscript\]"),
        (["input=int8"], r"Invalid value 'int8', expected one of \[float32, uint8\]"),
        (["check_images=0"], r"check_images=0 is not allowed: check_images must be >= 1"),
    ],
)
def test_bad_export_settings(cli: CLI, tiny_run: Path, tmp_path: Path, overrides: list[str], pattern: str) -> None:
    result = cli.run(
        "export", f"checkpoint={tiny_run / 'checkpoints' / 'best.pt'}", f"out={tmp_path / 'out'}", *overrides,
        f"hydra.run.dir={tmp_path / 'log'}",
    )  # fmt: skip
    assert_clear_failure(result, pattern)
    assert not (tmp_path / "out").exists()


def test_export_of_a_checkpoint_that_is_not_ours_or_into_an_unwritable_place(
    cli: CLI, tiny_run: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.pt"
    notes.write_text("these are not the weights you are looking for\n")
    result = cli.run("export", f"checkpoint={notes}", f"out={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'log'}")
    assert_clear_failure(result, r"notes.pt is not a PyTorch checkpoint")
    assert not list((tmp_path / "out").glob("model*"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = cli.run(
        "export", f"checkpoint={tiny_run / 'checkpoints' / 'best.pt'}", f"out={blocker / 'out'}",
        f"hydra.run.dir={tmp_path / 'log2'}",
    )  # fmt: skip
    assert_clear_failure(
        result, r"The output directory .*a-file/out cannot be written .* Choose a writable directory with out=DIR"
    )
