"""Training speed of lenet_fmnist against the conventional pipeline and the compute floor.

Measured side by side in one process, on the same data, model (LeNet-5, relu, max pool), optimizer
(SGD lr 0.01, momentum 0.9) and augmentation (random flip + shift of up to 2 px):

  conventional-wN  torchvision FashionMNIST + RandomHorizontalFlip + RandomCrop(28, padding=2)
                   + ToTensor + Normalize, DataLoader with N workers (what most users write)
  project          lenet_fmnist.train.train_epoch: tensors on the device, whole-batch augmentation
  floor            the project's model: forward, backward and optimizer step on one ready-made
                   batch, no data work at all

Variants run in interleaved rounds and each reports its median, so a burst of load elsewhere on
the machine hits all of them alike. On a GPU every variant runs under the settings of a real run
(runtime.select_device: deterministic cuDNN algorithms). This is a benchmark, run by hand; the tests
assert no timings.

    python scripts/bench.py                       # CPU, batch 64 and 256
    python scripts/bench.py --device cuda         # on a GPU
    python scripts/bench.py --accuracy-epochs 3   # also: test accuracy, conventional vs project
    python scripts/bench.py --startup             # also: start-up time and peak RSS of a real run
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from lenet_fmnist import data, openmp
from lenet_fmnist.augment import Augmenter, normalise
from lenet_fmnist.config import AugmentationConfig, SGDConfig
from lenet_fmnist.errors import UserError
from lenet_fmnist.evaluate import evaluate
from lenet_fmnist.model import CHANNELS_LAST, LeNet5
from lenet_fmnist.runtime import configure_threads, select_device
from lenet_fmnist.train import build_optimizer, build_scheduler, train_epoch

EPOCH_IMAGES = 50_000  # one epoch: the training split left after 10,000 validation images
# After a DataLoader measurement stops, its workers go on preparing the batches they prefetch
# (2 per worker); a pause lets them finish, so their work is not timed as the next variant's.
SETTLE_SECONDS = 1.0
AUGMENTATION = AugmentationConfig(flip=True, max_shift=2)
SGD = SGDConfig(lr=0.01, momentum=0.9)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torchvision_root(source: Path, into: Path) -> Path:
    """torchvision's FashionMNIST reads plain files from ROOT/FashionMNIST/raw: decompress there."""
    raw = into / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for names in data.FILES.values():
        for name in names:
            plain, packed = source / name, source / f"{name}.gz"
            if plain.exists():
                shutil.copy(plain, raw / name)
            else:
                with gzip.open(packed) as src, open(raw / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    return into


def conventional_loader(root: Path, batch_size: int, workers: int, train_idx: torch.Tensor) -> DataLoader:
    transform = transforms.Compose(
        [
            transforms.RandomHorizontalFlip(),
            transforms.RandomCrop(28, padding=2),
            transforms.ToTensor(),
            transforms.Normalize((data.MEAN,), (data.STD,)),
        ]
    )
    train = Subset(datasets.FashionMNIST(str(root), train=True, transform=transform), train_idx.tolist())
    # persistent workers: their start-up is paid once, not per measurement (favours this variant)
    return DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0)


Runner = Callable[[int], None]  # trains on the given number of images


def conventional_runner(loader: DataLoader, device: torch.device) -> tuple[Runner, torch.nn.Module]:
    """A plain NCHW model and the default SGD, fed by the DataLoader: the textbook loop."""
    model = LeNet5("relu", "max").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=SGD.lr, momentum=SGD.momentum)
    batches = iter(loader)

    def run(images: int) -> None:
        nonlocal batches
        model.train()
        done = 0
        while done < images:
            try:
                inputs, targets = next(batches)
            except StopIteration:
                batches = iter(loader)
                continue
            inputs, targets = inputs.to(device), targets.to(device)
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += len(targets)
        synchronize(device)

    return run, model


def project_model(device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = LeNet5("relu", "max")
    model.to(device, memory_format=CHANNELS_LAST)
    return model, build_optimizer(SGD, model.parameters())


def project_runner(
    train: data.Split, batch_size: int, device: torch.device, seed: int = 0
) -> tuple[Runner, torch.nn.Module]:
    """The project's own epoch function, on the first `images` training images; `seed` draws its
    data order and augmentation (the conventional loop draws them from the global seed)."""
    model, optimizer = project_model(device)
    schedule = build_scheduler(optimizer, SGD, steps_per_epoch=1, epochs=1)
    generator = torch.Generator(device=device).manual_seed(seed)
    stop = threading.Event()

    augmenters: dict[int, Augmenter] = {}  # per measurement size, built once as a run does

    def run(images: int) -> None:
        if images not in augmenters:
            augmenters[images] = Augmenter(train.images[:images], AUGMENTATION.flip, AUGMENTATION.max_shift)
        train_epoch(
            model, optimizer, schedule, augmenters[images], train.labels[:images], batch_size, generator, stop, "bench"
        )

    return run, model


def floor_runner(train: data.Split, batch_size: int, device: torch.device) -> tuple[Runner, torch.nn.Module]:
    """Forward, backward and optimizer step of the project's model on one ready-made batch."""
    model, optimizer = project_model(device)
    inputs, targets = normalise(train.images[:batch_size]), train.labels[:batch_size]

    def run(images: int) -> None:
        model.train()
        for _ in range(images // batch_size):
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)

    return run, model


def measure(runners: dict[str, Runner], images: int, rounds: int) -> dict[str, float]:
    """Median seconds per image of each runner over interleaved rounds, after a warm-up."""
    for run in runners.values():
        run(min(images, 2048))
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            time.sleep(SETTLE_SECONDS)
            started = time.perf_counter()
            run(images)
            samples[name].append((time.perf_counter() - started) / images)
    return {name: statistics.median(values) for name, values in samples.items()}


def accuracy_check(
    root: Path, fashion: data.FashionMNISTData, train_idx: torch.Tensor, epochs: int, seeds: int, device: torch.device
) -> dict[str, list[float]]:
    """Test accuracy after `epochs` epochs at batch 64: the conventional loop against the project's."""
    test_images, test_labels = fashion.test.images.to(device), fashion.test.labels.to(device)
    train = data.Split(fashion.train.images.to(device), fashion.train.labels.to(device))
    results: dict[str, list[float]] = {"conventional": [], "project": []}
    for seed in range(seeds):
        for name in results:
            torch.manual_seed(seed)
            if name == "conventional":
                run, model = conventional_runner(conventional_loader(root, 64, 0, train_idx), device)
            else:
                run, model = project_runner(train, 64, device, seed)
            for _ in range(epochs):
                run(len(train_idx))
            results[name].append(evaluate(model, test_images, test_labels, 1000, test_flip=False)[1])
    return results


# Runs the command in argv[1:] and prints its peak RSS. Measured from this small process, the
# run's peak is its own: a child of the benchmark would inherit the benchmark's high-water mark,
# which survives fork and exec (Linux), and report ~1 GiB for any command.
PEAK_RSS_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def startup(python: str) -> dict[str, float]:
    """Seconds from command to `--help` output and to the first training step of a default run,
    and the run's peak resident memory."""
    started = time.perf_counter()
    subprocess.run([python, "-m", "lenet_fmnist", "--help"], check=True, capture_output=True)
    help_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        command = [python, "-m", "lenet_fmnist", "train", "epochs=1", f"hydra.run.dir={run_dir}/run"]
        process = subprocess.Popen(
            [python, "-c", PEAK_RSS_WRAPPER, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        first_step, peak_kib = None, None
        assert process.stdout is not None
        for line in process.stdout:
            if first_step is None and "Training starts" in line:
                first_step = time.perf_counter() - started
            if line.startswith("peak_rss_kib "):
                peak_kib = int(line.split()[1])  # Linux: KiB
        process.wait()
        total = time.perf_counter() - started
    if process.returncode or first_step is None or peak_kib is None:
        raise SystemExit(f"the default run failed (exit {process.returncode})")
    return {
        "help_seconds": help_seconds,
        "seconds_to_first_step": first_step,
        "run_seconds": total,
        "peak_rss_mib": peak_kib / 1024,
    }


# --side-by-side: the wait settings compared, each exported to the runs (so the command keeps it).
# libgomp's own default spin count is 300,000 turns when neither variable is set.
WAIT_SETTINGS = {
    "libgomp default": {"GOMP_SPINCOUNT": "300000"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    f"GOMP_SPINCOUNT={openmp.SPIN_COUNT} (ours)": {"GOMP_SPINCOUNT": openmp.SPIN_COUNT},
}


def runs_at_once(count: int, wait: dict[str, str], data_root: str | None, val_size: int) -> list[float]:
    """Start `count` default-threaded training runs of one epoch at the same moment (as a user
    would in several terminals); each run's training seconds for its epoch."""
    env = {key: value for key, value in os.environ.items() if key not in (*openmp.WAIT_VARIABLES, "OMP_NUM_THREADS")}
    env.update(wait)
    with tempfile.TemporaryDirectory() as tmp:
        commands = [
            [sys.executable, "-m", "lenet_fmnist", "train", "epochs=1", "activation=relu", "pool=max",
             f"data.val_size={val_size}", f"hydra.run.dir={tmp}/run{index}",
             *([f"data.root={data_root}"] if data_root else [])]
            for index in range(count)
        ]  # fmt: skip
        processes = [
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for command in commands
        ]
        for process in processes:
            _, errors = process.communicate()
            if process.returncode:
                raise SystemExit(f"a side-by-side run failed (exit {process.returncode}): {errors.decode()[-2000:]}")
        return [
            json.loads(Path(f"{tmp}/run{index}/metrics.json").read_text())["train_seconds"] for index in range(count)
        ]


def side_by_side(data_root: str | None, val_size: int, counts: list[int]) -> dict:
    """Per wait setting: seconds per epoch of 1, 2, 3 runs at once, and each against its fair share
    (n runs on the cores should each take n times as long as one run alone, no more)."""
    rows = []
    for name, wait in WAIT_SETTINGS.items():
        alone = None
        for count in counts:
            seconds = runs_at_once(count, wait, data_root, val_size)
            mean = statistics.mean(seconds)
            alone = mean if count == 1 else alone
            rows.append({"setting": name, "runs": count, "seconds": seconds, "mean": mean,
                         "vs_fair_share": mean / (count * alone) if alone else None})  # fmt: skip
            sys.stdout.write(f"{name}, {count} run(s): {', '.join(f'{value:.1f}' for value in seconds)} s\n")
    return {"train_images": 60_000 - val_size, "rows": rows}


def format_side_by_side(result: dict) -> str:
    default_alone = next(
        row["mean"] for row in result["rows"] if row["setting"] == "libgomp default" and row["runs"] == 1
    )
    lines = [
        f"One epoch of {result['train_images']:,} images per run, every run with all the cores as threads",
        "",
        "| OpenMP wait setting | runs at once | s per epoch (each run) | vs fair share | alone vs libgomp default |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        fair = f"{row['vs_fair_share']:.2f}x" if row["runs"] > 1 else "—"
        solo = f"{row['mean'] / default_alone:.2f}x" if row["runs"] == 1 else ""
        each = ", ".join(f"{value:.1f}" for value in row["seconds"])
        lines.append(f"| {row['setting']} | {row['runs']} | {each} | {fair} | {solo} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--images", type=int, default=12_800, help="images per measurement (default: 12800)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median counts (default: 3)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the cores this process may use)"
    )
    parser.add_argument(
        "--accuracy-epochs", type=int, default=0, help="also compare test accuracy after this many epochs"
    )
    parser.add_argument("--accuracy-seeds", type=int, default=2)
    parser.add_argument("--startup", action="store_true", help="also time start-up and peak RSS of a default run")
    parser.add_argument("--data-root", default=None, help="directory of the four files (default: the usual places)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/bench.json"))
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="only measure 1, 2 and 3 runs at once under each OpenMP wait setting",
    )
    parser.add_argument(
        "--side-by-side-val-size", type=int, default=40_000,
        help="data.val_size of those runs: 40,000 leaves 20,000 training images, so a collapse ends in minutes",
    )  # fmt: skip
    args = parser.parse_args()
    if args.side_by_side:
        result = side_by_side(args.data_root, args.side_by_side_val_size, [1, 2, 3])
        out = args.out.with_name("side_by_side.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        sys.stdout.write(format_side_by_side(result) + f"\nWrote {out}\n")
        return

    try:
        device = select_device(args.device)
    except UserError as error:  # e.g. --device cuda without a GPU: the message, exit 1
        raise SystemExit(f"bench.py: {error}") from None
    threads = configure_threads(args.threads)
    fashion = data.load(args.data_root, 10_000, 0)
    train_idx, _ = data.split_indices(60_000, 10_000, 0)
    train = data.Split(fashion.train.images.to(device), fashion.train.labels.to(device))
    workers = [0, 2]
    rows, ratios = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(fashion.source, Path(tmp))
        for batch_size in args.batch_sizes:
            runners = {
                f"conventional-w{w}": conventional_runner(conventional_loader(root, batch_size, w, train_idx), device)[
                    0
                ]
                for w in workers
            }
            runners["project"] = project_runner(train, batch_size, device)[0]
            runners["floor"] = floor_runner(train, batch_size, device)[0]
            seconds_per_image = measure(runners, args.images, args.rounds)
            best_conventional = min(seconds_per_image[f"conventional-w{w}"] for w in workers)
            project = seconds_per_image["project"]
            ratios[batch_size] = {
                "project_speedup_vs_best_conventional": best_conventional / project,
                "project_time_vs_floor": project / seconds_per_image["floor"],
            }
            for name, per_image in seconds_per_image.items():
                rows.append(
                    {
                        "batch_size": batch_size,
                        "variant": name,
                        "images_per_second": 1 / per_image,
                        "seconds_per_epoch": per_image * EPOCH_IMAGES,
                    }
                )
        accuracy = (
            accuracy_check(root, fashion, train_idx, args.accuracy_epochs, args.accuracy_seeds, device)
            if args.accuracy_epochs
            else None
        )

    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "device": str(device),
            "threads": threads,
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "settings": {"images_per_measurement": args.images, "rounds": args.rounds, "epoch_images": EPOCH_IMAGES},
        "results": rows,
        "ratios": ratios,
        "accuracy": accuracy and {"epochs": args.accuracy_epochs, **accuracy},
        "startup": startup(sys.executable) if args.startup else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    sys.stdout.write(format_report(report) + f"\nWrote {args.out}\n")


def format_report(report: dict) -> str:
    machine = report["machine"]
    lines = [
        f"LeNet-5 relu/max, SGD, flip + shift 2 px, on {machine['cuda'] or machine['device']} with {machine['threads']} threads, torch {machine['torch']}",
        "",
        "| batch | variant | images/s | s/epoch (50k) |",
        "|---:|---|---:|---:|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['batch_size']} | {row['variant']} | {row['images_per_second']:,.0f} | {row['seconds_per_epoch']:.2f} |"
        )
    lines.append("")
    for batch_size, ratio in report["ratios"].items():
        lines.append(
            f"batch {batch_size}: project is {ratio['project_speedup_vs_best_conventional']:.2f}x faster than the best conventional loop, "
            f"and takes {ratio['project_time_vs_floor']:.2f}x the compute floor's time"
        )
    if report["accuracy"]:
        acc = report["accuracy"]
        for name in ("conventional", "project"):
            values = acc[name]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            lines.append(
                f"test accuracy after {acc['epochs']} epochs, {name}: {statistics.mean(values):.4f} ± {spread:.4f} (n={len(values)}: {', '.join(f'{v:.4f}' for v in values)})"
            )
    if report["startup"]:
        s = report["startup"]
        lines.append(
            f"start-up: --help {s['help_seconds']:.2f} s; default run: first training step after {s['seconds_to_first_step']:.2f} s, "
            f"peak RSS {s['peak_rss_mib']:.0f} MiB"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
