"""Throughput of `predict`, in images per second, with and without decoding.

Writes real Fashion-MNIST test images as PNG files (and, with --photos, as camera-sized JPEG
"photos": a dark item off-centre on a light, noisy background) into a temporary folder, then
times in interleaved rounds, reporting the median of each:

  model     evaluate's Classifier on the prepared images already in memory: no files, no decoding
            (the model's own throughput at predict's batch size, softmax and copy to the CPU included)
  prepare   read, decode and prepare every file (lenet_fmnist.inference.images.load_image), no model
  predict   what the command does after start-up (predict.predict_files): read, decode, prepare
            and classify, batch by batch

and, with --cli, the whole command once (`python -m lenet_fmnist predict ...`), start-up and
outputs included. This is a benchmark, run by hand; the tests assert no timings.

    python scripts/bench_predict.py --checkpoint outputs/runs/<run>/checkpoints/best.pt --cli
    python scripts/bench_predict.py --photos 500     # an untrained model: speed does not depend on weights
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lenet_fmnist import data
from lenet_fmnist.config import TrainConfig, compose, register, to_plain, validate
from lenet_fmnist.device import command_workers, select_device
from lenet_fmnist.inference.config import PredictConfig
from lenet_fmnist.inference.evaluate import load_classifier
from lenet_fmnist.inference.images import load_image
from lenet_fmnist.inference.predict import predict_files, probabilities
from lenet_fmnist.model import CHANNELS_LAST, LeNet5
from lenet_fmnist.training import checkpoint
from lenet_fmnist.workers import Workers


def untrained_checkpoint(path: Path) -> Path:
    """A checkpoint of a fresh relu/max LeNet-5 with the default training config."""
    from hydra import compose, initialize_config_dir

    from lenet_fmnist.cli import config_dir

    register()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        config = to_plain(validate(compose("train", overrides=["activation=relu", "pool=max"]), TrainConfig))
    checkpoint.save(path, {"model": LeNet5("relu", "max").state_dict(), "config": config, "epoch": 0})
    return path


def write_pngs(images: np.ndarray, folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    paths = [folder / f"{index:05d}.png" for index in range(len(images))]
    for image, path in zip(images, paths, strict=True):
        Image.fromarray(image).save(path)
    return paths


def write_photos(images: np.ndarray, folder: Path, seed: int = 0) -> list[Path]:
    """640 x 480 JPEGs: each item negated (dark on light), enlarged 8x, off-centre, with noise."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index, image in enumerate(images):
        canvas = rng.normal(235, 6, size=(480, 640)).clip(0, 255)
        item = np.asarray(Image.fromarray(255 - image).resize((224, 224), Image.Resampling.BICUBIC), dtype=float)
        top, left = rng.integers(0, 480 - 224), rng.integers(0, 640 - 224)
        canvas[top : top + 224, left : left + 224] = np.minimum(canvas[top : top + 224, left : left + 224], item)
        paths.append(folder / f"{index:05d}.jpg")
        Image.fromarray(canvas.astype(np.uint8)).convert("RGB").save(paths[-1], quality=90)
    return paths


def timed(work: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(paths: list[Path], cfg: PredictConfig, rounds: int, workers: Workers) -> dict[str, float]:
    """Images per second of the three variants, medians over interleaved rounds; `predict` is
    computed by `workers`, as the command does."""
    device = select_device(cfg.device)
    classifier, _ = load_classifier(cfg.checkpoint, uint8_input=True)
    classifier.to(device, memory_format=CHANNELS_LAST)
    prepared = torch.from_numpy(np.stack([load_image(p, cfg.invert).pixels for p in paths])).to(device)

    def model() -> None:
        for start in range(0, len(prepared), cfg.batch_size):
            probabilities(classifier, prepared[start : start + cfg.batch_size])

    variants: dict[str, Callable[[], object]] = {
        "model": model,
        "prepare": lambda: [load_image(p, cfg.invert) for p in paths],
        "predict": lambda: predict_files(classifier, paths, cfg, device, workers),
    }
    model()  # warm-up: first-call allocations and kernel selection
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, work in variants.items():
            seconds[name].append(timed(work, device))
    return {name: len(paths) / statistics.median(times) for name, times in seconds.items()}


def cli_seconds(checkpoint_path: Path, folder: Path, run_dir: Path, threads: int | None) -> float:
    command = [
        sys.executable, "-m", "lenet_fmnist", "predict", f"checkpoint={checkpoint_path}", f"images={folder}",
        f"hydra.run.dir={run_dir}", *([f"threads={threads}"] if threads else []),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="best.pt of a run (default: an untrained model)")
    parser.add_argument("--images", type=int, default=2000, help="test images written as PNG (default: 2000)")
    parser.add_argument("--photos", type=int, default=0, help="also this many 640x480 JPEG photos (default: 0)")
    parser.add_argument("--batch-size", type=int, default=1000, help="predict's batch_size (default: 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median counts (default: 3)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="predict's threads (default: the cores available)")
    parser.add_argument("--cli", action="store_true", help="also time the whole command once, start-up included")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/bench_predict.json"))
    return parser.parse_args()


def measure_sets(args: argparse.Namespace, base: Path, workers: Workers) -> dict[str, dict[str, float]]:
    """Each set of files (PNG test images, and JPEG photos if asked) measured, by its name."""
    test = data.load_test(None)
    ckpt = args.checkpoint or untrained_checkpoint(base / "untrained.pt")
    sets = {"png 28x28": write_pngs(test.images[: args.images].numpy(), base / "png")}
    if args.photos:
        sets["jpeg 640x480"] = write_photos(test.images[: args.photos].numpy(), base / "photos")
    results = {}
    for name, paths in sets.items():
        overrides = (f"checkpoint={ckpt}", f"images={paths[0].parent}", f"batch_size={args.batch_size}")
        cfg = compose("predict", *overrides, f"device={args.device}", schema=PredictConfig)
        rates = measure(paths, cfg, args.rounds, workers)
        if args.cli:
            seconds = cli_seconds(ckpt, paths[0].parent, base / f"cli-{len(results)}", args.threads)
            rates["command, start-up included"] = len(paths) / seconds
        results[f"{name} ({len(paths)} files)"] = rates
        print(f"{name}, {len(paths)} files, {args.device}, {workers.count} thread(s), batch {args.batch_size}:")
        for variant, rate in rates.items():
            print(f"  {variant:<28} {rate:>10,.0f} images/s")
    return results


def main() -> None:
    args = parse_args()
    with command_workers(args.threads, select_device(args.device)) as workers, tempfile.TemporaryDirectory() as tmp:
        results: dict[str, object] = {
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": workers.count, "device": args.device, "batch_size": args.batch_size,
            **measure_sets(args, Path(tmp), workers),
        }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
