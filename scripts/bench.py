"""Training speed of lenet_fmnist as users meet it: against the conventional pipeline and the
compute floor, and with several runs side by side.

Every variant runs in a process of its own, started with your environment minus its OMP_* and
GOMP_* variables (as from a fresh terminal), on the same data, model (LeNet-5, relu, max pool),
optimizer (SGD lr 0.01, momentum 0.9) and augmentation (random flip + shift of up to 2 px):

  project          `python -m lenet_fmnist train ...` itself, a few epochs: the median of the
                   per-epoch training seconds in its metrics.json history, its first epoch left
                   out when there are more (it pays the set-up that the other variants' warm-up
                   pays outside their timing: cuDNN's and the allocator's first calls on a GPU)
  floor            a process that decides its threads as the command does, then times torch's
                   bare model step on one ready-made batch: forward, backward, optimizer step, no
                   data work, every thread on the whole batch (the speed of today's torch, whose
                   bits follow the thread count)
  sharded-floor    the same with the project's step: the batch in shards, each on one thread,
                   the gradients added in order (bits independent of the thread count)
  conventional-wN  torchvision FashionMNIST + RandomHorizontalFlip + RandomCrop(28, padding=2)
                   + ToTensor + Normalize, DataLoader with N workers, with torch's defaults (what
                   most users write)

Variants run in interleaved rounds and each reports its median, so a burst of load elsewhere on
the machine hits all of them alike. --side-by-side starts 1, 2 and 3 training runs at the same
moment (as from separate terminals) under each candidate thread policy, and
--background-load N one run beside N busy processes. This is a benchmark, run by hand on a quiet
machine; the tests assert no timings.

    python scripts/bench.py                       # CPU, batch 64 and 256
    python scripts/bench.py --device cuda         # on a GPU
    python scripts/bench.py --accuracy-epochs 3   # also: test accuracy, conventional vs project
    python scripts/bench.py --startup             # also: start-up time and peak RSS of a real run
    python scripts/bench.py --side-by-side --background-load 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lenet_fmnist.host.cpu import this_cpu
from lenet_fmnist.host.registry import register
from lenet_fmnist.host.threads import training_threads, usable_cores

EPOCH_IMAGES = 50_000  # a default run's epoch: the training split left after 10,000 validation images
VARIANTS = ("conventional-w0", "conventional-w2", "project", "floor", "sharded-floor")
TRAIN = ("activation=relu", "pool=max", "optimizer=sgd", "augmentation=standard")


def user_env() -> dict[str, str]:
    """This environment as a fresh terminal would have it: no OMP_* or GOMP_* variables."""
    return {key: value for key, value in os.environ.items() if not key.startswith(("OMP_", "GOMP_"))}


def train_command(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "lenet_fmnist", "train", *TRAIN, f"hydra.run.dir={run_dir}", *overrides]


def data_overrides(args: argparse.Namespace, val_size: int | None) -> list[str]:
    """data.val_size (None: the run's own) and data.root (if given) as overrides."""
    sized = [] if val_size is None else [f"data.val_size={val_size}"]
    return [*sized, *([f"data.root={args.data_root}"] if args.data_root else [])]


def epoch_figures(run_dir: Path) -> dict[str, Any]:
    """A finished run's median training seconds per epoch and image, and how it chose its threads."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = metrics["history"][1:] or metrics["history"]  # the first epoch pays the set-up
    return {
        "seconds": statistics.median(record["train_seconds"] for record in history),
        "images": history[0]["train_images"],
        "seconds_per_image": statistics.median(record["train_seconds"] / record["train_images"] for record in history),
        **{key: metrics[key] for key in ("threads", "threads_reason")},
    }


def run_to_end(commands: list[list[str]], env: dict[str, str]) -> None:
    """Start the commands at the same moment and wait for all of them; stop if one fails."""
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for command in commands
    ]
    failures = []
    for process in processes:
        _, errors = process.communicate()
        if process.returncode:
            failures.append(f"exit {process.returncode}: {errors.decode()[-2000:]}")
    if failures:
        raise SystemExit("a training run failed: " + "\n".join(failures))


# ---- project, floor and the conventional loop, in interleaved rounds -----------------------------


def project(args: argparse.Namespace, batch_size: int, run_dir: Path) -> dict[str, Any]:
    """The command as a user starts it, for --project-epochs epochs."""
    overrides = [f"batch_size={batch_size}", f"epochs={args.project_epochs}", f"device={args.device}"]
    overrides += [*data_overrides(args, args.val_size), *([f"threads={args.threads}"] if args.threads else [])]
    run_to_end([train_command(run_dir, *overrides)], user_env())
    return epoch_figures(run_dir)


def child(args: argparse.Namespace, variant: str, batch_size: int) -> dict[str, Any]:
    """A variant measured by bench_loops in a process of its own; what it printed last."""
    command = [sys.executable, __file__, "--child", variant, "--batch-size", str(batch_size)]
    for option in ("device", "images", "threads", "data_root", "val_size", "accuracy_epochs", "accuracy_seeds"):
        value = getattr(args, option)
        command += [f"--{option.replace('_', '-')}", str(value)] if value is not None else []
    result = subprocess.run(command, env=user_env(), capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{variant} failed (exit {result.returncode}): {result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def run_child(args: argparse.Namespace) -> None:
    """In the child: the floors (and the accuracy check) decide their threads as the command does
    (the plain floor gives them all to torch, the others to a team of one-thread workers); the
    conventional loop keeps torch's defaults, cuDNN's included, as a user's script does."""
    conventional = args.child.startswith("conventional")
    threads = None
    if not conventional:
        register()
        threads = training_threads(args.threads)
    import torch

    import bench_loops
    from lenet_fmnist.device import select_device
    from lenet_fmnist.workers import Workers

    device = torch.device(args.device) if conventional else select_device(args.device)
    torch_default = torch.get_num_threads()  # before the team below sets one intra-op thread
    team = threads.count if threads and device.type == "cpu" else 1
    with Workers(team) as workers:  # every thread of the child computes with one intra-op thread from here
        if conventional:  # a user's script: torch's own threads
            torch.set_num_threads(args.threads or torch_default)
        elif args.child == "floor":  # torch's own step: all of the run's threads on the whole batch
            torch.set_num_threads(threads.count)
        result = bench_loops.measure(args.child, vars(args), device, workers)
    reason = threads.reason if threads else ("--threads" if args.threads else "torch's default")
    count = team if args.child in ("sharded-floor", "accuracy") else torch.get_num_threads()
    print(json.dumps({
        **result, "threads": count, "threads_reason": reason, "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
    }))  # fmt: skip


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Per batch size, each variant's median seconds per image over interleaved rounds."""
    rows, ratios, conditions = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for batch_size in args.batch_sizes:
            samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for round_ in range(args.rounds):
                for name in VARIANTS:
                    run_dir = Path(tmp) / f"{batch_size}-{round_}"
                    result = project(args, batch_size, run_dir) if name == "project" else child(args, name, batch_size)
                    samples[name].append(result["seconds_per_image"])
                    conditions[name] = {key: result.get(key) for key in ("threads", "threads_reason")}
                    conditions.setdefault("torch", result.get("torch"))
                    conditions.setdefault("gpu", result.get("gpu"))
                    sys.stdout.write(
                        f"batch {batch_size}, round {round_ + 1}, {name}: {1 / samples[name][-1]:,.0f} images/s\n"
                    )
            per_image = {name: statistics.median(values) for name, values in samples.items()}
            best_conventional = min(per_image[name] for name in VARIANTS if name.startswith("conventional"))
            ratios[batch_size] = {
                "project_speedup_vs_best_conventional": best_conventional / per_image["project"],
                "project_time_vs_floor": per_image["project"] / per_image["floor"],
                "sharded_floor_time_vs_floor": per_image["sharded-floor"] / per_image["floor"],
            }
            rows += [
                {"batch_size": batch_size, "variant": name, "images_per_second": 1 / value,
                 "seconds_per_epoch": value * EPOCH_IMAGES, **conditions[name]}
                for name, value in per_image.items()
            ]  # fmt: skip
    return {"rows": rows, "ratios": ratios, "torch": conditions["torch"], "gpu": conditions["gpu"]}


# ---- start-up -------------------------------------------------------------------------------

# Runs the command in argv[1:] and prints its peak RSS. Measured from this small process, the
# run's peak is its own: a child of the benchmark would inherit the benchmark's high-water mark,
# which survives fork and exec (Linux), and report ~1 GiB for any command.
PEAK_RSS_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


# The yardstick of start-up, timed beside the run: a bare `import torch`, and `import torch._dynamo`
# with it, which torch.optim imports when the run builds its optimizer (torch's _disable_dynamo).
BARE_IMPORTS = {"import_torch_seconds": "import torch", "import_torch_dynamo_seconds": "import torch, torch._dynamo"}


def seconds_of(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def first_step(args: argparse.Namespace, env: dict[str, str]) -> tuple[float, float]:
    """Seconds from command to a default one-epoch run's first training step, and its peak
    resident memory (MiB)."""
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        command = [sys.executable, "-m", "lenet_fmnist", "train", "epochs=1", f"hydra.run.dir={run_dir}/run"]
        command += data_overrides(args, args.val_size)
        process = subprocess.Popen(
            [sys.executable, "-c", PEAK_RSS_WRAPPER, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        seconds, peak_kib = None, None
        assert process.stdout is not None
        for line in process.stdout:
            if seconds is None and "Training starts" in line:
                seconds = time.perf_counter() - started
            if line.startswith("peak_rss_kib "):
                peak_kib = int(line.split()[1])  # Linux: KiB
        process.wait()
    if process.returncode or seconds is None or peak_kib is None:
        raise SystemExit(f"the default run failed (exit {process.returncode})")
    return seconds, peak_kib / 1024


def startup(args: argparse.Namespace) -> dict[str, float]:
    """Seconds from command to `--help` output and to a default run's first training step, beside
    the bare imports (BARE_IMPORTS) in `args.rounds` interleaved rounds (medians: on a shared
    machine only these ratios mean anything), and the run's peak resident memory."""
    env = user_env()
    help_seconds = seconds_of([sys.executable, "-m", "lenet_fmnist", "--help"], env)
    samples: dict[str, list[float]] = {key: [] for key in (*BARE_IMPORTS, "seconds_to_first_step", "peak_rss_mib")}
    for _ in range(args.rounds):
        for key, code in BARE_IMPORTS.items():
            samples[key].append(seconds_of([sys.executable, "-c", code], env))
        for key, value in zip(("seconds_to_first_step", "peak_rss_mib"), first_step(args, env), strict=True):
            samples[key].append(value)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    ratio = medians["seconds_to_first_step"] / medians["import_torch_seconds"]
    return {"help_seconds": help_seconds, **medians, "first_step_vs_import_torch": ratio}


# ---- runs side by side ------------------------------------------------------------------------

ALL_CORES = usable_cores()
# Candidate policies: `threads=` (None: the command decides by the load).
CANDIDATES: dict[str, int | None] = {
    "automatic (ours)": None,
    "all cores each": ALL_CORES,
    "1 thread each": 1,
}
# The most each run's epoch may take against the fastest solo epoch (issue: fair share is n times).
TARGETS = {1: 1.05, 2: 2.5, 3: 3.75}
SPIN_LOOP = "while True: pass"


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """`count` processes that keep a core busy each, from a moment before the runs start to the end."""
    hogs = [subprocess.Popen([sys.executable, "-c", SPIN_LOOP]) for _ in range(count)]
    try:
        if hogs:
            time.sleep(1.0)  # running, and visible in /proc/stat, before the runs start
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def runs_at_once(args: argparse.Namespace, candidate: str, count: int, hogs: int = 0) -> list[dict[str, Any]]:
    """Start `count` runs of the candidate at the same moment, beside `hogs` busy processes."""
    threads = CANDIDATES[candidate]
    overrides = [f"epochs={args.side_by_side_epochs}", f"device={args.device}"]
    overrides += data_overrides(args, args.side_by_side_val_size)
    overrides += [f"threads={threads}"] if threads else []
    with tempfile.TemporaryDirectory() as tmp, busy_processes(hogs):
        run_dirs = [Path(tmp) / f"run{index}" for index in range(count)]
        run_to_end([train_command(run_dir, *overrides) for run_dir in run_dirs], user_env())
        return [epoch_figures(run_dir) for run_dir in run_dirs]


def side_by_side(args: argparse.Namespace) -> dict[str, Any]:
    """Per candidate: each run's seconds per epoch with 1, 2, 3 runs at once (and beside busy
    processes), and each against the fastest solo epoch of all candidates."""
    rows = []
    settings = [(count, 0) for count in args.counts] + ([(1, args.background_load)] if args.background_load else [])
    # Every candidate's case in turn, so that a slow spell of the machine (or the first run's warm
    # start) falls on several candidates, not on all the cases of one.
    for count, hogs in settings:
        for candidate in CANDIDATES:
            runs = runs_at_once(args, candidate, count, hogs)
            rows.append({"candidate": candidate, "runs": count, "busy_processes": hogs, "each": runs})
            seconds = ", ".join(f"{run['seconds']:.1f}" for run in runs)
            sys.stdout.write(f"{candidate}, {count} run(s) beside {hogs} busy process(es): {seconds} s\n")
    rows.sort(key=lambda row: (list(CANDIDATES).index(row["candidate"]), row["busy_processes"], row["runs"]))
    solos = [row["each"][0]["seconds"] for row in rows if row["runs"] == 1 and not row["busy_processes"]]
    fastest = min(solos) if solos else None
    for row in rows:
        target = None if row["busy_processes"] else TARGETS.get(row["runs"])
        ratios = [run["seconds"] / fastest for run in row["each"]] if fastest else []
        row.update(
            vs_fastest_solo=ratios, target=target, met=bool(ratios) and target is not None and max(ratios) <= target
        )
    return {"train_images": rows[0]["each"][0]["images"], "fastest_solo_seconds": fastest, "rows": rows}


def format_side_by_side(result: dict[str, Any]) -> str:
    lines = [
        f"CPU: {this_cpu()} ({ALL_CORES} usable cores); one epoch of {result['train_images']:,} "
        "images per run; ratios against the fastest solo epoch of all candidates",
        "",
        "| candidate | runs at once | threads | s per epoch (each run) | vs fastest solo | target | met |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        runs = f"{row['runs']}" + (f" + {row['busy_processes']} busy" if row["busy_processes"] else "")
        threads = ", ".join(str(run["threads"]) for run in row["each"])
        seconds = ", ".join(f"{run['seconds']:.1f}" for run in row["each"])
        ratios = ", ".join(f"{ratio:.2f}x" for ratio in row["vs_fastest_solo"]) or "—"
        target = f"{row['target']:.2f}x" if row["target"] else "—"
        met = ("yes" if row["met"] else "no") if row["target"] else ""
        lines.append(f"| {row['candidate']} | {runs} | {threads} | {seconds} | {ratios} | {target} | {met} |")
    return "\n".join(lines)


# ---- the report --------------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"LeNet-5 relu/max, SGD, flip + shift 2 px, on {machine['gpu'] or machine['device']}; CPU: {machine['cpu']} "
        f"({machine['usable_cores']} usable cores), torch {machine['torch']}",
        "",
        "| batch | variant | images/s | s/epoch (50k) | threads |",
        "|---:|---|---:|---:|---|---|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['batch_size']} | {row['variant']} | {row['images_per_second']:,.0f} | {row['seconds_per_epoch']:.2f} "
            f"| {row['threads']} ({row['threads_reason']}) |"
        )
    lines.append("")
    for batch_size, ratio in report["ratios"].items():
        lines.append(
            f"batch {batch_size}: project is {ratio['project_speedup_vs_best_conventional']:.2f}x faster than the best "
            f"conventional loop, and takes {ratio['project_time_vs_floor']:.2f}x the compute floor's time"
        )
    if report["accuracy"]:
        acc = report["accuracy"]
        for name in ("conventional", "project"):
            values = acc[name]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            each = ", ".join(f"{v:.4f}" for v in values)
            lines.append(
                f"test accuracy after {acc['epochs']} epochs, {name}: {statistics.mean(values):.4f} ± {spread:.4f} (n={len(values)}: {each})"
            )
    if report["startup"]:
        s = report["startup"]
        lines.append(
            f"start-up: --help {s['help_seconds']:.2f} s; default run: first training step after {s['seconds_to_first_step']:.2f} s "
            f"({s['first_step_vs_import_torch']:.2f}x a bare `import torch`, {s['import_torch_seconds']:.2f} s; "
            f"with torch._dynamo {s['import_torch_dynamo_seconds']:.2f} s), peak RSS {s['peak_rss_mib']:.0f} MiB"
        )
    return "\n".join(lines)


def write(result: dict[str, Any], out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(f"{text}\nWrote {out}\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    add("--batch-sizes", type=int, nargs="+", default=[64, 256])
    add("--images", type=int, default=12_800, help="images per floor and conventional measurement (default: 12800)")
    add("--rounds", type=int, default=3, help="interleaved rounds; the median counts (default: 3)")
    add("--project-epochs", type=int, default=3, help="epochs of each project run; the median counts (default: 3)")
    add(
        "--val-size",
        type=int,
        default=None,
        help="data.val_size: the rest of 60,000 images trains (default: the run's)",
    )
    add("--threads", type=int, default=None, help="threads for every variant (default: each decides as it would)")
    add("--accuracy-epochs", type=int, default=0, help="also compare test accuracy after this many epochs")
    add("--accuracy-seeds", type=int, default=2)
    add(
        "--startup",
        action="store_true",
        help="also time start-up (beside `import torch`) and peak RSS of a default run",
    )
    add("--data-root", default=None, help="directory of the four files (default: the usual places)")
    add("--out", type=Path, default=Path("outputs/bench/bench.json"))
    add("--side-by-side", action="store_true", help="only measure runs started at the same moment, per candidate")
    add("--counts", type=int, nargs="+", default=[1, 2, 3], help="runs at once (default: 1 2 3)")
    add("--background-load", type=int, default=0, metavar="N", help="also: one run beside N busy processes")
    add("--side-by-side-epochs", type=int, default=3, help="epochs of each run; the median counts (default: 3)")
    add(
        "--side-by-side-val-size",
        type=int,
        default=40_000,
        help="40,000 leaves 20,000 images: a collapse ends in minutes",
    )
    add("--child", default=None, help=argparse.SUPPRESS)  # bench.py's own: one variant in this process
    add("--batch-size", type=int, default=64, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        run_child(args)
        return
    if args.side_by_side or args.background_load:
        result = side_by_side(args)
        write(result, args.out.with_name("side_by_side.json"), format_side_by_side(result))
        return
    compared = compare(args)
    report = {
        "machine": {"cpu": this_cpu(), "usable_cores": ALL_CORES, "device": args.device,
                    "torch": compared["torch"], "gpu": compared["gpu"]},
        "settings": {key: getattr(args, key) for key in ("images", "rounds", "project_epochs", "val_size", "threads")},
        "results": compared["rows"],
        "ratios": compared["ratios"],
        "accuracy": child(args, "accuracy", 64) if args.accuracy_epochs else None,
        "startup": startup(args) if args.startup else None,
    }  # fmt: skip
    write(report, args.out, format_report(report))


if __name__ == "__main__":
    main()
