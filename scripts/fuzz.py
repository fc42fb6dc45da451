"""The fuzz campaign of issue 33, for as long as asked: every surface a user feeds the toolkit.

    python scripts/fuzz.py --minutes 30                    # every surface, each its share of 30 minutes
    python scripts/fuzz.py --minutes 3 --surface images    # one surface (repeat --surface for more)
    python scripts/fuzz.py --minutes 30 --out fuzz-out     # where the world, corpora and failures go

The surfaces and their targets are tests/fuzz/'s, the same the CI tests run at a fixed size
(tests/test_fuzz.py). Each surface gets an equal share of the time. Its raw-byte targets (IDX files,
images, checkpoints, metrics.json, the sweeper's files) spend half of it under Atheris, a
coverage-guided fuzzer: one subprocess per target, started again should it die, its corpus grown
from the target's seeds in OUT/corpus/<target>/. The rest goes to Hypothesis, every target in turn,
from random seeds, without shrinking: a failing input is saved as it was found.

It prints the CPU first and, at the end, per surface: the inputs tried, how many were accepted,
the distinct refusals (their messages with paths, numbers and quoted values replaced) and the
failures, each saved as OUT/failures/<target>/<digest>.bin with what failed in the .txt beside it.
Replay one with tests/test_fuzz.py's regression test: copy it into tests/fuzz/regressions/<target>/
with a .txt that says what it found. OUT/summary.json holds the figures and every refusal's kind.
Exit status 1 when any input failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the harness (tests/fuzz/) and conftest's helpers

DEFAULT_MINUTES = 30
DUMP_SECONDS = 0.5  # how often an Atheris worker writes its figures (it ends with libFuzzer's exit)
# Code Atheris instruments for coverage: the toolkit, the sweeper, and Pillow's Python parsers.
INSTRUMENTED = ["lenet_fmnist", "optuna_pruning_sweeper", "PIL"]


SURFACES = ("overrides", "data", "images", "checkpoints", "rundirs", "sweeper")  # tests/fuzz/surfaces.py's


def arguments(argv: list[str]) -> argparse.Namespace:
    """The command line; nothing of the toolkit imported yet (an Atheris worker instruments it first)."""
    parser = argparse.ArgumentParser(description="The fuzz campaign of issue 33 (see this script's docstring).")
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, help="the whole campaign's time")
    parser.add_argument("--surface", action="append", choices=SURFACES, help="only these surfaces (default: all)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-out"), help="world, corpora, failures, summary.json")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis's first seed (each round takes the next)")
    parser.add_argument("--no-atheris", action="store_true", help="Hypothesis only")
    parser.add_argument("--atheris", help=argparse.SUPPRESS)  # a worker's target
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)  # a worker's time
    return parser.parse_args(argv)


def machine() -> str:
    """The CPU and the software that computed the figures."""
    from importlib.metadata import version

    from lenet_fmnist.host.cpu import this_cpu
    from lenet_fmnist.host.threads import usable_cores

    versions = f"Python {platform.python_version()}, " + ", ".join(
        f"{name} {version(name)}" for name in ("torch", "pillow", "hydra-core", "optuna", "hypothesis", "atheris")
    )
    return f"CPU: {this_cpu()} ({usable_cores()} cores usable of {os.cpu_count()})\n{versions}"


# ---- Hypothesis, in this process ----------------------------------------------------------------


class TimeUp(Exception):
    """A target's share of the time is spent."""


def hypothesis_run(target: object, world: object, seconds: float, tally: object, options: argparse.Namespace) -> None:
    """`target` from random seeds until `seconds` are spent; every input counted in `tally`."""
    from hypothesis import HealthCheck, Phase, given, seed, settings

    from fuzz.surfaces import attempt

    deadline = time.monotonic() + seconds
    inputs = target.strategy(world)

    @settings(
        max_examples=10**9, deadline=None, database=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck), print_blob=False,
    )  # fmt: skip
    @given(inputs)
    def case(data: bytes) -> None:
        if time.monotonic() > deadline:
            raise TimeUp
        attempt(target, world, data, tally, options.out / "failures")

    while time.monotonic() < deadline:
        options.seed += 1
        try:
            seed(options.seed)(case)()
        except TimeUp:
            return


# ---- Atheris, one subprocess per target ------------------------------------------------------------


def atheris_worker(options: argparse.Namespace) -> None:
    """In the subprocess: Atheris on one target until libFuzzer's -max_total_time ends it."""
    import atheris

    with atheris.instrument_imports(include=INSTRUMENTED):
        from fuzz import world as worlds
        from fuzz.harness import Tally
        from fuzz.surfaces import BY_NAME, attempt
    target, out = BY_NAME[options.atheris], options.out
    world, tally = worlds.at(out / "world"), Tally(BY_NAME[options.atheris].surface)
    work = out / "atheris"
    stats, current = work / f"{target.name}.json", work / f"{target.name}.current"
    corpus = out / "corpus" / target.name
    corpus.mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(target.seeds(world)):
        (corpus / f"seed-{index}").write_bytes(data)
    dumped = [0.0]

    def one(data: bytes) -> None:
        current.write_bytes(data)  # the input in hand, should the process die on it
        attempt(target, world, data, tally, out / "failures")
        if time.monotonic() - dumped[0] > DUMP_SECONDS:
            stats.write_text(json.dumps(tally.as_json()))
            dumped[0] = time.monotonic()

    flags = [f"-max_total_time={int(options.seconds)}", "-timeout=0", "-rss_limit_mb=6144", "-print_final_stats=1"]
    flags.append(f"-artifact_prefix={out / 'crashes'}/{target.name}-")
    (out / "crashes").mkdir(exist_ok=True)
    with worlds.guarded(world):
        atheris.Setup([sys.argv[0], *flags, str(corpus)], one)
        atheris.Fuzz()


def _died(name: str, out: Path, tally: object, why: str) -> None:
    """A worker that died on an input (a crash or a hang in native code): that input is a failure."""
    from fuzz.harness import Failure

    current = out / "atheris" / f"{name}.current"
    data = current.read_bytes() if current.is_file() else b""
    tally.fail(name, data, Failure(f"the Atheris worker died on this input: {why} (log: {out}/atheris/{name}.log)"),
               out / "failures")  # fmt: skip


def atheris_run(name: str, seconds: float, tally: object, options: argparse.Namespace) -> None:
    """Atheris on target `name` for `seconds` in subprocesses (a new one should one die), their
    figures added to `tally`."""
    out, started = options.out, time.monotonic()
    work = out / "atheris"
    work.mkdir(parents=True, exist_ok=True)
    stats = work / f"{name}.json"
    while (left := seconds - (time.monotonic() - started)) > 5:
        stats.unlink(missing_ok=True)
        command = [sys.executable, str(SCRIPT), "--atheris", name, "--seconds", f"{left:.0f}", "--out", str(out)]
        with open(work / f"{name}.log", "ab") as log:
            try:
                code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=left + 120).returncode
            except subprocess.TimeoutExpired:
                code = None
        if stats.is_file():
            tally.merge(json.loads(stats.read_text()))
        if code == 0:
            return
        _died(name, out, tally, "no answer (a hang), killed" if code is None else f"exit status {code}")


# ---- the campaign -----------------------------------------------------------------------------------


def run_surface(surface: str, seconds: float, world: object, options: argparse.Namespace) -> object:
    from fuzz.harness import Tally
    from fuzz.surfaces import TARGETS

    tally, deadline = Tally(surface), time.monotonic() + seconds
    targets = [target for target in TARGETS if target.surface == surface]
    raw = [target for target in targets if target.seeds is not None and not options.no_atheris]
    for target in raw:  # half the share, split between them
        atheris_run(target.name, seconds / 2 / len(raw), tally, options)
    for done, target in enumerate(targets):  # the rest, split between all of them
        hypothesis_run(target, world, (deadline - time.monotonic()) / (len(targets) - done), tally, options)
    return tally


def report(tallies: list[object], out: Path) -> str:
    lines = [f"{'surface':<12} {'inputs tried':>12} {'accepted':>9} {'distinct refusals':>18} {'failures':>9}"]
    for tally in tallies:
        lines.append(
            f"{tally.surface:<12} {tally.tried:>12,} {tally.accepted:>9,} {len(tally.refusals):>18,} {len(tally.failures):>9,}"
        )
    total = [sum(getattr(t, key) for t in tallies) for key in ("tried", "accepted")]
    kinds, failures = sum(len(t.refusals) for t in tallies), [f for t in tallies for f in t.failures]
    lines.append(f"{'all':<12} {total[0]:>12,} {total[1]:>9,} {kinds:>18,} {len(failures):>9,}")
    lines.append("")
    lines += ["Failures (input saved, what failed):", *(f"  {f}" for f in failures)] if failures else ["No failures."]
    lines.append(f"Every refusal's kind, per surface: {out / 'summary.json'}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    warnings.simplefilter("ignore")  # Pillow's and Hypothesis's notes on odd inputs, thousands of them
    logging.getLogger("optuna_pruning_sweeper").setLevel(logging.ERROR)  # its warning per damaged journal, likewise
    options = arguments(argv)
    options.out = options.out.resolve()  # the cases run from a directory of their own
    if options.atheris:
        atheris_worker(options)
        return 0
    from fuzz import world as worlds
    from fuzz.surfaces import SURFACES as KNOWN

    if set(SURFACES) != set(KNOWN):
        raise SystemExit(f"scripts/fuzz.py's SURFACES {SURFACES} are not tests/fuzz/surfaces.py's {KNOWN}")
    surfaces = options.surface or list(SURFACES)
    options.out.mkdir(parents=True, exist_ok=True)
    print(machine(), flush=True)
    print(f"Campaign: {options.minutes:g} minutes over {', '.join(surfaces)}; output in {options.out}/", flush=True)
    world = worlds.at(options.out / "world")
    if not (world.search / "search.json").is_file():
        worlds.build(world.root)
    seconds, tallies = options.minutes * 60 / len(surfaces), []
    for surface in surfaces:
        started = time.monotonic()
        with worlds.guarded(world):
            tallies.append(run_surface(surface, seconds, world, options))
        print(f"  {surface}: {tallies[-1].tried:,} inputs in {time.monotonic() - started:.0f} s", flush=True)
    (options.out / "summary.json").write_text(json.dumps([t.as_json() for t in tallies], indent=1) + "\n")
    print(report(tallies, options.out))
    return 1 if any(t.failures for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
