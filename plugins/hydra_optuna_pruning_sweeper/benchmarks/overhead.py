"""The sweeper's own cost per trial, against upstream's released hydra-optuna-sweeper 1.2.0.

A trivial app (a quadratic of one float, the random sampler with a fixed seed, the basic launcher)
runs 20 and 200 trials with each sweeper, side by side in one run: the candidates alternate within
every repeat, so a machine that speeds up or slows down during the run touches all of them alike.
Each sweeper runs in its own venv, made here on the first run and reused after:

- upstream: hydra-optuna-sweeper==1.2.0, hydra-core==1.3.8, optuna<3, sqlalchemy<2 (1.2.0 alone
  would pull hydra-core 1.4.0rc3; optuna 2.10's RDB storage fails on SQLAlchemy 2);
- ours: this folder's package with its `figures` extra (matplotlib), hydra-core==1.3.8 (and the
  optuna it requires), nothing else; installed again from the working tree at every run.

Ours runs twice: with `hydra.sweeper.summary=false`, and with the summary and figures (a fixed
cost at the end of a search). Both keep the default storage of each sweeper (upstream: in memory;
ours: the sweep directory's journal).

    python plugins/hydra_optuna_pruning_sweeper/benchmarks/overhead.py [--repeats 5] [--venvs DIR]
    python plugins/hydra_optuna_pruning_sweeper/benchmarks/overhead.py --profile DIR  # cProfile files

Wall times are only worth comparing within one run on an otherwise idle machine: the script prints
the CPU model and the load average beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parents[1]
TRIALS = (20, 200)
UPSTREAM_PACKAGES = ["hydra-optuna-sweeper==1.2.0", "hydra-core==1.3.8", "optuna<3", "sqlalchemy<2"]
OURS_PACKAGES = [f"{PLUGIN_DIR}[figures]", "hydra-core==1.3.8"]  # figures: matplotlib, for the summary's

APP = """\
import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=".", config_name="config")
def quadratic(cfg: DictConfig) -> float:
    return (cfg.x - 2.0) ** 2


if __name__ == "__main__":
    quadratic()
"""

CONFIG = """\
defaults:
  - override hydra/sweeper: optuna
  - override hydra/sweeper/sampler: random
  - _self_
x: 0.0
hydra:
  sweeper:
    sampler:
      seed: 0
    params:
      x: interval(-5, 5)
"""


@dataclass(frozen=True)
class Candidate:
    name: str
    python: Path
    overrides: tuple[str, ...] = ()


def venv_python(directory: Path, packages: list[str], refresh: str | None = None) -> Path:
    """The venv's python, made with `packages` unless it already exists; `refresh`, a package
    installed again each time (ours: the working tree as it is now)."""
    python = directory / "bin" / "python"
    if not python.exists():
        print(f"making {directory}: pip install {' '.join(packages)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)  # a no-op once there
    if refresh is not None:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", refresh], check=True
        )
    return python


def write_app(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.py").write_text(APP)
    (directory / "config.yaml").write_text(CONFIG)
    return directory / "app.py"


def run_search(candidate: Candidate, app: Path, trials: int, sweep_dir: Path, profile: Path | None = None) -> float:
    """The wall time of one search, start-up included."""
    prefix = ["-m", "cProfile", "-o", str(profile)] if profile else []
    command = [str(candidate.python), *prefix, str(app), "-m", f"hydra.sweeper.n_trials={trials}",
               f"hydra.sweep.dir={sweep_dir}", *candidate.overrides]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, cwd=app.parent, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{candidate.name} failed ({' '.join(command)}):\n{result.stdout}{result.stderr}")
    return seconds


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no lscpu)"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "unknown")


def measure(candidates: list[Candidate], app: Path, repeats: int, scratch: Path) -> dict[tuple[str, int], list[float]]:
    times: dict[tuple[str, int], list[float]] = {}
    for repeat in range(repeats):
        for trials in TRIALS:
            for candidate in candidates:  # alternating: each repeat runs every candidate once
                sweep_dir = scratch / f"{candidate.name}-{trials}-{repeat}"
                seconds = run_search(candidate, app, trials, sweep_dir)
                times.setdefault((candidate.name, trials), []).append(seconds)
                print(f"  repeat {repeat + 1}: {candidate.name:>12} {trials:4d} trials {seconds:7.2f} s", flush=True)
    return times


def report(candidates: list[Candidate], times: dict[tuple[str, int], list[float]]) -> None:
    print(
        f"\nCPU: {cpu_model()}; load average now {os.getloadavg()[0]:.2f}; medians of {len(times[next(iter(times))])}"
    )
    print(f"{'sweeper':>12} | {'trials':>6} | {'wall s':>7} | {'s/trial':>7} | marginal s/trial (200 vs 20)")
    medians = {key: statistics.median(values) for key, values in times.items()}
    marginal = {c.name: (medians[c.name, 200] - medians[c.name, 20]) / 180 for c in candidates}
    for candidate in candidates:
        for trials in TRIALS:
            wall = medians[candidate.name, trials]
            print(
                f"{candidate.name:>12} | {trials:6d} | {wall:7.2f} | {wall / trials:7.4f} | {marginal[candidate.name]:.4f}"
            )
    base = candidates[0].name
    for candidate in candidates[1:]:
        ratios = ", ".join(f"{trials} trials {medians[candidate.name, trials] / medians[base, trials]:.2f}x"
                           for trials in TRIALS)  # fmt: skip
        print(f"{candidate.name} / {base}: wall {ratios}; marginal per trial "
              f"{marginal[candidate.name] / marginal[base]:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--venvs", type=Path, default=Path(tempfile.gettempdir()) / "optuna-sweeper-overhead")
    parser.add_argument("--ours-python", type=Path, help="an existing interpreter with our plugin, instead of a venv")
    parser.add_argument("--profile", type=Path, help="write a cProfile file of 200 trials per candidate here")
    args = parser.parse_args()
    upstream = venv_python(args.venvs / "upstream", UPSTREAM_PACKAGES)
    ours = args.ours_python or venv_python(args.venvs / "ours", OURS_PACKAGES, refresh=str(PLUGIN_DIR))
    candidates = [
        Candidate("upstream", upstream),
        Candidate("ours", ours, ("hydra.sweeper.summary=false",)),
        Candidate("ours+summary", ours),
    ]
    with tempfile.TemporaryDirectory() as scratch:
        app = write_app(Path(scratch) / "app")
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            for candidate in candidates:
                out = args.profile.resolve() / f"{candidate.name}.prof"
                run_search(candidate, app, 200, Path(scratch) / candidate.name, out)
                print(f"{candidate.name}: {out} (python -m pstats {out}, then sort cumtime / stats 30)")
            return
        report(candidates, measure(candidates, app, args.repeats, Path(scratch)))


if __name__ == "__main__":
    main()
