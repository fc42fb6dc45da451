"""The `export` command: a checkpoint as an ONNX or TorchScript model for use outside the toolkit.

The exported graph is `evaluate.Classifier`: what `predict` and `eval` compute, test-time flip
included when the checkpoint was trained with it. Its input is either float32 N x 1 x 28 x 28
normalised as in training, or uint8 N x 28 x 28 grey pixels with the normalisation inside the
graph; images must first be prepared as `predict` does (light item on black, centred, 28 x 28).
A JSON sidecar records the input, the classes, the normalisation and the training config.

The model is serialised in memory, checked there against PyTorch on real test images (the
onnxruntime session or the TorchScript module is built from those very bytes), and only then
written, atomically: a failed check, a crash or a refusal leaves no file behind, and existing
files are only replaced with overwrite=true.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lenet_fmnist import data
from lenet_fmnist.device import configure_threads
from lenet_fmnist.inference.config import ExportConfig, ExportFormat, ExportInput
from lenet_fmnist.inference.evaluate import Classifier, load_classifier
from lenet_fmnist.run.admission import claim_output
from lenet_fmnist.run.errors import UserError
from lenet_fmnist.run.files import ONNX_MODEL, SIDECAR_SUFFIX, TORCHSCRIPT_MODEL
from lenet_fmnist.run.locking import unlock
from lenet_fmnist.run.paths import user_path
from lenet_fmnist.run.storage import write_atomic, write_json
from lenet_fmnist.training import checkpoint
from lenet_fmnist.training.augment import normalise
from lenet_fmnist.training.distill import sha256_of

log = logging.getLogger(__name__)

# torch's exporter builds opset 18 natively (higher ones go through a version converter), and
# onnxruntime has run it since 1.14: the widest reach, from servers to onnxruntime-web.
OPSET = 18
TOLERANCE = 1e-4  # largest allowed |logit difference| between the written model and PyTorch
FILES = {ExportFormat.onnx: ONNX_MODEL, ExportFormat.torchscript: TORCHSCRIPT_MODEL}
EXPORT_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def input_spec(kind: ExportInput) -> dict[str, Any]:
    """The graph's input, as the sidecar documents it."""
    if kind == ExportInput.uint8:
        return {
            "name": "pixels",
            "dtype": "uint8",
            "shape": ["batch", 28, 28],
            "meaning": "grey pixels 0-255, light item on black, prepared as `predict` does; normalised inside the graph",
        }
    return {
        "name": "images",
        "dtype": "float32",
        "shape": ["batch", 1, 28, 28],
        "meaning": "grey pixels prepared as `predict` does (light item on black), then (pixel / 255 - mean) / std",
    }


def _destination(cfg: ExportConfig, directory: Path) -> tuple[Path, Path]:
    """The model file and its sidecar in `directory`; refuses, before any work, files that exist
    there (unless overwrite=true)."""
    model_path = directory / FILES[cfg.format]
    sidecar = model_path.with_name(model_path.name + SIDECAR_SUFFIX)
    existing = [str(p) for p in (model_path, sidecar) if p.exists()]
    if existing and not cfg.overwrite:
        raise UserError(
            f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''} and {'is' if len(existing) == 1 else 'are'} "
            "left untouched. Pass overwrite=true to replace them, write elsewhere with out=DIR, or leave out "
            "unset: each export then gets a directory of its own."
        )
    return model_path, sidecar


def _require_packages() -> None:
    missing = [name for name in EXPORT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"format=onnx needs {', '.join(missing)}, which are not installed. Install the export extra: "
            "pip install 'lenet-fmnist[export]' (from a checkout: pip install -e '.[export]')."
        )


def _example(kind: ExportInput, images: torch.Tensor) -> torch.Tensor:
    """`images` (uint8 N x 28 x 28) in the form the graph takes."""
    return images if kind == ExportInput.uint8 else normalise(images)


def onnx_bytes(classifier: Classifier, kind: ExportInput) -> bytes:
    example = _example(kind, torch.zeros(2, 28, 28, dtype=torch.uint8))
    batch = torch.export.Dim("batch")
    for name in ("onnxscript", "onnx_ir"):  # their INFO lines on each optimisation pass are noise here
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals say nothing to a user
        program = torch.onnx.export(
            classifier,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=[input_spec(kind)["name"]],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    return program.model_proto.SerializeToString()


def torchscript_bytes(classifier: Classifier, kind: ExportInput) -> bytes:
    example = _example(kind, torch.zeros(2, 28, 28, dtype=torch.uint8))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch 2.14 marks TorchScript deprecated; it is still what libtorch (C++) loads.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(classifier, example)
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _run_written(fmt: ExportFormat, payload: bytes, inputs: torch.Tensor) -> np.ndarray:
    """Logits of the serialised model, run from its bytes by the runtime that will load it."""
    if fmt == ExportFormat.onnx:
        import onnxruntime

        session = onnxruntime.InferenceSession(payload, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(io.BytesIO(payload))
    with torch.inference_mode():
        return loaded(inputs).numpy()


def self_check(
    fmt: ExportFormat, payload: bytes, classifier: Classifier, kind: ExportInput, images: torch.Tensor
) -> dict[str, Any]:
    """Compare the written model with PyTorch on `images` (uint8 N x 28 x 28): the same
    predicted class for every image, logits within TOLERANCE."""
    inputs = _example(kind, images)
    with torch.inference_mode():
        expected = classifier(inputs).numpy()
    got = _run_written(fmt, payload, inputs)
    max_diff = float(np.abs(got - expected).max())
    same = int((got.argmax(1) == expected.argmax(1)).sum())
    return {
        "runtime": "onnxruntime" if fmt == ExportFormat.onnx else "torch.jit",
        "images": len(images),
        "same_predictions": same,
        "max_abs_logit_difference": max_diff,
        "tolerance": TOLERANCE,
        "passed": same == len(images) and max_diff <= TOLERANCE,
    }


def _check_images(cfg: ExportConfig) -> tuple[torch.Tensor, Path]:
    """The first check_images test images of data.root (null: the real test set, found as eval finds it)."""
    directory = data.locate(cfg.data.root)
    test = data.load_test(str(directory))
    return test.images[: cfg.check_images], directory


def export_checkpoint(cfg: ExportConfig, run_dir: Path) -> dict[str, Any]:
    """The `export` command: serialise, check, then write the model file and its sidecar into
    `run_dir`, this export's own directory, or into out=DIR, which it holds meanwhile (lock)."""
    directory = user_path(cfg.out, "out") if cfg.out else run_dir
    if directory.resolve() == run_dir.resolve():  # claimed already, before Hydra wrote into it
        return _export(cfg, directory)
    claim_output(directory, "out")
    try:
        return _export(cfg, directory)
    finally:
        unlock(directory)


def _export(cfg: ExportConfig, directory: Path) -> dict[str, Any]:
    model_path, sidecar = _destination(cfg, directory)
    if cfg.format == ExportFormat.onnx:
        _require_packages()  # before loading anything: the fix is an install
    configure_threads(cfg.threads)
    classifier, state = load_classifier(cfg.checkpoint, uint8_input=cfg.input == ExportInput.uint8)
    log.info(
        "Exporting %s (epoch %d, %s, test-time flip %s) as %s with %s input",
        cfg.checkpoint, state["epoch"], checkpoint.weights_used(state), "on" if classifier.test_flip else "off",
        cfg.format.value, cfg.input.value,
    )  # fmt: skip
    serialise = onnx_bytes if cfg.format == ExportFormat.onnx else torchscript_bytes
    payload = serialise(classifier, cfg.input)
    check = _checked(cfg, payload, classifier)
    record = _sidecar(cfg, model_path, classifier, state, check)
    write_atomic(model_path, lambda handle: handle.write(payload))
    try:
        write_json(sidecar, record)
    except BaseException:
        if not cfg.overwrite:  # it was not there before: a model without its sidecar would refuse the next try
            model_path.unlink(missing_ok=True)
        raise
    log.info("Wrote %s (%d bytes) and %s", model_path, len(payload), sidecar)
    return record


def _checked(cfg: ExportConfig, payload: bytes, classifier: Classifier) -> dict[str, Any]:
    """The self-check of the serialised model against PyTorch (self_check), with where its test
    images came from; a failed one stops the export before anything is written."""
    images, source = _check_images(cfg)
    check = self_check(cfg.format, payload, classifier, cfg.input, images)
    summary = (
        f"{check['runtime']} vs PyTorch on {check['images']} test images from {source}: same prediction for "
        f"{check['same_predictions']} of {check['images']}, max |logit difference| "
        f"{check['max_abs_logit_difference']:.2e} (limit {TOLERANCE:g})"
    )
    if not check["passed"]:
        raise UserError(f"Self-check FAILED, nothing was written: {summary}.")
    log.info("Self-check passed: %s.", summary)
    return {**check, "data": str(source)}


def _sidecar(
    cfg: ExportConfig, model_path: Path, classifier: Classifier, state: dict[str, Any], check: dict[str, Any]
) -> dict[str, Any]:
    """The model's description, written beside it: what goes in and out, and where it came from."""
    checkpoint_path = Path(cfg.checkpoint).expanduser().resolve()
    return {
        "file": model_path.name,
        "format": cfg.format.value,
        **({"opset": OPSET} if cfg.format == ExportFormat.onnx else {}),
        "input": input_spec(cfg.input),
        "output": {"name": "logits", "dtype": "float32", "shape": ["batch", 10], "meaning": "softmax gives the class probabilities"},
        "classes": list(data.CLASSES),
        "normalisation": {"mean": data.MEAN, "std": data.STD, "formula": "(pixel / 255 - mean) / std",
                          "inside_graph": cfg.input == ExportInput.uint8},
        "test_flip": classifier.test_flip,
        "checkpoint": {"path": str(checkpoint_path), "sha256": sha256_of(checkpoint_path), "epoch": state["epoch"],
                       "weights": checkpoint.weights_used(state)},
        "config": state["config"],
        "torch": torch.__version__,
        "self_check": check,
    }  # fmt: skip
