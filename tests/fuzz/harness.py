"""The judge of one fuzz case, the same for the CI tests and scripts/fuzz.py.

A case calls a real entry point in-process (the command line's `main`, or the function it calls
for that input: a parser, a loader) under a time limit. The properties of issue 33, for every input:

- no traceback: a user's mistake comes back as the toolkit's UserError (the sweeper's SweeperError;
  an image predict skips, BadImage), anything else escaping is a failure; through the command line,
  the exit status is a documented one (docs/runs.md) and the output holds no traceback;
- no hang: `time_limit`;
- every refusal is one paragraph that names the bad value or the file (`one_paragraph`);
- no file the user had is changed or removed (`unchanged`);
- whatever is accepted is handled correctly: each target checks what it got.

A broken property raises `Failure`; a target returns an `Outcome` otherwise. `Tally` counts, per
surface, the inputs tried, the distinct refusals (their messages with paths, numbers and quoted
values replaced: `kind_of`) and the failures.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
import signal
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from optuna_pruning_sweeper.errors import SweeperError

from lenet_fmnist.inference.images import BadImage
from lenet_fmnist.run.errors import UserError

# What a user's mistake may come back as: the toolkit's, the sweeper's, an image predict skips.
REFUSALS = (UserError, SweeperError, BadImage)
EXIT_STATUSES = frozenset({0, 1, 2, 130})  # docs/runs.md, "Exit statuses"
# Hydra's own report of an override it cannot parse or merge ends with this line (conftest's HYDRA_HINT).
HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."
LIMIT = 30.0  # seconds a case may take (an accepted training run on the tiny set takes under one)


class Failure(AssertionError):
    """A property of issue 33 does not hold for this input; the message says which and how."""


class NotACase(Exception):
    """The input cannot be read as this target's kind of case (a structured target given other
    bytes, e.g. by a mutator): nothing was tried."""


class CaseTimeout(BaseException):
    """The case's time ran out (a BaseException: no `except Exception` of the code under test stops it)."""


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    message: str = ""  # the refusal, one paragraph; or what was accepted, in a few words


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise CaseTimeout in the main thread once `seconds` have passed."""

    def expire(signum: int, frame: object) -> None:
        raise CaseTimeout(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)  # None: not Python's


@contextlib.contextmanager
def no_thread_dies() -> Iterator[None]:
    """Fail if a thread started meanwhile ends in an exception (which Python prints as a traceback
    on the terminal, whatever the command then says)."""
    died: list[threading.ExceptHookArgs] = []
    previous, threading.excepthook = threading.excepthook, died.append
    try:
        yield
    finally:
        threading.excepthook = previous
    if died:
        raise Failure(f"a thread died: {escaped(died[0].exc_value)}")


def escaped(error: BaseException) -> str:
    """What escaped, with the innermost frames (where it was raised): the report of a failure."""
    frames = traceback.format_exception(type(error), error, error.__traceback__, limit=-4)
    return f"{type(error).__name__} escaped: {error}\n{''.join(frames)}"


def one_paragraph(message: str, names: Sequence[str]) -> str:
    """`message`, checked to be one paragraph, no traceback, naming one of `names` (the bad
    value, its key or the file; none to check when `names` is empty)."""
    text = message.strip()
    if not text:
        raise Failure("a refusal with no message")
    if "Traceback" in text or 'File "' in text:
        raise Failure(f"a traceback in the refusal:\n{text}")
    if re.search(r"\n\s*\n", text):
        raise Failure(f"a refusal of more than one paragraph:\n{text}")
    if not names_one_of(text, names):
        raise Failure(f"the refusal names none of {[name[:80] for name in names if name]}:\n{text}")
    return text


def names_one_of(text: str, names: Sequence[str]) -> bool:
    """Whether `text` holds one of `names` (true when there are none), whitespace squeezed: a value
    with a blank line in it is shown with one line break (run.errors.paragraph)."""
    wanted = [" ".join(name.split()) for name in names if name.strip()]
    squeezed = " ".join(text.split())
    return not wanted or any(name in squeezed for name in wanted)


def call(function: Callable[[], Any], names: Sequence[str], limit: float = LIMIT) -> Outcome:
    """Run an entry point: accepted (what it returned), refused (its one-paragraph message) or a
    Failure (anything else escaped, or no answer in time)."""
    try:
        with no_thread_dies(), time_limit(limit):
            result = function()
    except REFUSALS as error:
        return Outcome(False, one_paragraph(str(error), names))
    except Failure:
        raise
    except CaseTimeout as error:
        raise Failure(str(error)) from None
    except Exception as error:
        raise Failure(escaped(error)) from None
    return Outcome(True, str(result)[:200])


# ---- the command line, in-process -----------------------------------------------------------


def run_cli(args: Sequence[str], limit: float = LIMIT) -> tuple[int, str]:
    """`python -m lenet_fmnist ARGS` in this process (lenet_fmnist.cli.main): its exit status and
    everything it printed (Hydra's log handlers write to the redirected streams)."""
    from lenet_fmnist.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer), fresh_logging(), no_thread_dies():
        try:
            with time_limit(limit):
                code = main(list(args))
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        except CaseTimeout as error:
            raise Failure(f"{error}:\n{buffer.getvalue()[-2000:]}") from None
        except Exception as error:
            raise Failure(f"{escaped(error)}\n{buffer.getvalue()[-2000:]}") from None
    return code, buffer.getvalue()


@contextlib.contextmanager
def fresh_logging() -> Iterator[None]:
    """Logging as a new process has it, before and after a command: no handler left by the last
    one (Hydra's go to that command's streams and its log file)."""

    def clear() -> None:
        for handler in logging.root.handlers[:]:
            logging.root.removeHandler(handler)
            handler.close()

    clear()
    try:
        yield
    finally:
        clear()


def logged_errors(text: str) -> list[str]:
    """The errors a command logged: its ERROR records and Hydra's own ([HYDRA], the output-directory
    check's refusals), each with the lines that continue it; Hydra's launch messages left out."""
    records = re.split(r"^(?=\[\d{4}-\d\d-\d\d [\d:,]+\]\[)", text, flags=re.M)
    errors = []
    for record in records:
        if "][ERROR] - " in record:
            errors.append(record.split("][ERROR] - ", 1)[1])
        elif (hydra := re.match(r"\[[^\]]*\]\[HYDRA\] (.*)", record, flags=re.S)) and not re.match(
            r"Launching|\t#\d+ : ", hydra.group(1)
        ):
            errors.append(hydra.group(1))
    return errors


def refusal_in(code: int, text: str, sweep: bool) -> tuple[list[str], bool]:
    """The refusals a failed command printed, and whether they are the toolkit's own (each one
    paragraph, checked), rather than Hydra's report of an override (its message, then HYDRA_HINT)
    or argparse's usage (`report`), which have forms of their own. One, but in a sweep (`sweep`),
    whose every job may fail on its own."""
    if HYDRA_HINT in text:
        return [text.split(HYDRA_HINT)[0]], False
    if code == 2 and text.startswith(("usage:", "lenet-fmnist: unknown command")):
        return [text], False
    errors = logged_errors(text)
    if len(errors) == 1 or (errors and sweep):
        return errors, True
    if errors:
        raise Failure(f"{len(errors)} logged errors where one paragraph was due:\n{text[-3000:]}")
    said = [line for line in text.split("\n") if line.startswith("lenet-fmnist report: ")]
    if len(said) == 1:
        return [said[0].removeprefix("lenet-fmnist report: ")], True
    if text.strip() and not re.search(r"^\[\d{4}-", text, flags=re.M):  # said before logging was set up
        return [text], True
    raise Failure(f"exit status {code} with no refusal a user can read:\n{text[-3000:]}")


def judge_cli(args: Sequence[str], names: Sequence[str], limit: float = LIMIT) -> tuple[Outcome, str]:
    """Run a command line in-process and judge it: a documented exit status, no traceback, and a
    refusal that is one paragraph naming one of `names` (argparse's usage names what it likes).
    The outcome, and all the command printed."""
    code, text = run_cli(args, limit)
    if code not in EXIT_STATUSES:
        raise Failure(f"exit status {code}, not one of {sorted(EXIT_STATUSES)}:\n{text[-3000:]}")
    if "Traceback" in text or 'File "' in text:
        raise Failure(f"a traceback (exit status {code}):\n{text[-4000:]}")
    if re.search(r"Callback \w+\.\w+ raised", text):  # Hydra warns, then goes on without the callback's checks
        raise Failure(f"a callback failed and Hydra went on without it (exit status {code}):\n{text[-3000:]}")
    if code == 0:
        return Outcome(True, "exit 0"), text
    messages, own = refusal_in(code, text, sweep=bool({"-m", "--multirun"} & set(args)))
    if own:
        for message in messages[1:]:
            one_paragraph(message, ())
        return Outcome(False, one_paragraph(messages[0], names if len(messages) == 1 else ())), text
    if not text.startswith("usage:") and not names_one_of(messages[0], names):
        raise Failure(f"Hydra's report names none of {[name[:80] for name in names if name]}:\n{messages[0]}")
    return Outcome(False, messages[0].strip()), text


# ---- files the user had --------------------------------------------------------------------


def snapshot(directory: Path, skip: Callable[[Path], bool] = lambda path: False) -> dict[Path, bytes | str]:
    """Every file under `directory` (links not followed): its bytes, or for one this process cannot
    read, its size and mode; the lock file aside (it says which process last worked there)."""
    files: dict[Path, bytes | str] = {}
    if not directory.is_dir():
        return files
    for path in sorted(directory.rglob("*")):
        if path.name == ".lock" or skip(path) or path.is_symlink() or not path.is_file():
            continue
        try:
            files[path] = path.read_bytes()
        except OSError:
            info = path.stat()
            files[path] = f"unreadable: {info.st_size} bytes, mode {info.st_mode:o}"
    return files


@contextlib.contextmanager
def unchanged(*directories: Path, skip: Callable[[Path], bool] = lambda path: False) -> Iterator[None]:
    """Fail unless every file under `directories` is still there with the same contents afterwards
    (new files may appear: a command's own outputs)."""
    before = {directory: snapshot(directory, skip) for directory in directories}
    yield
    for directory, files in before.items():
        after = snapshot(directory, skip)
        lost = [str(path) for path in files if path not in after]
        changed = [str(path) for path in files if path in after and after[path] != files[path]]
        if lost or changed:
            raise Failure(f"files the user had were removed {lost} or changed {changed}")


# ---- counting --------------------------------------------------------------------------------


def kind_of(message: str) -> str:
    """A refusal with what varies between inputs replaced (quoted values, paths, numbers, an
    override's value), so that its kind is counted once: the first line, at most 240 characters."""
    text = (message.strip().splitlines() or [""])[0]
    text = re.sub(r"(?<!\w)b?'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "'…'", text)
    text = re.sub(r"(?<![\w.])(?:~|\.{0,2}/)\S*", "PATH", text)
    text = re.sub(r"=\S+", "=V", text)
    text = re.sub(r"[-+]?\b(?:0x[0-9a-f]+|\d[\d_]*(?:\.\d*)?(?:e[-+]?\d+)?|nan|inf)\b", "N", text, flags=re.I)
    text = re.sub(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{4,}\b", "N", text)  # hex: a magic number
    return text[:240]


@dataclass
class Tally:
    """One surface's figures: inputs tried, accepted, refusals by kind, failures (saved inputs)."""

    surface: str
    tried: int = 0
    accepted: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # "target: saved file: first line of the failure"

    def add(self, outcome: Outcome) -> None:
        self.tried += 1
        if outcome.accepted:
            self.accepted += 1
        else:
            self.refusals[kind_of(outcome.message)] += 1

    def fail(self, target: str, data: bytes, failure: Failure, directory: Path | None) -> None:
        self.tried += 1
        saved = save_failure(directory, target, data, str(failure)) if directory is not None else "(not saved)"
        first = (str(failure).strip().splitlines() or ["?"])[0]
        self.failures.append(f"{target}: {saved}: {first[:200]}")

    def merge(self, other: dict[str, Any]) -> None:
        self.tried += other["tried"]
        self.accepted += other["accepted"]
        self.refusals.update(other["refusals"])
        self.failures += other["failures"]

    def as_json(self) -> dict[str, Any]:
        return {
            "surface": self.surface, "tried": self.tried, "accepted": self.accepted,
            "refusals": dict(self.refusals), "failures": self.failures,
        }  # fmt: skip


def mutated(seeds: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """The seeds, each changed in a few places as a byte-level fuzzer changes its corpus: a byte
    flipped or set to an edge value, a run of bytes deleted, inserted or repeated, the end cut off."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(list(seeds))))
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            size = draw(st.integers(1, 16))
            how = draw(st.sampled_from(("flip", "set", "delete", "insert", "repeat", "cut")))
            if how == "flip" and data:
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif how == "set" and data:
                data[at] = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFF)))
            elif how == "delete":
                del data[at : at + size]
            elif how == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=size))
            elif how == "repeat":
                data[at:at] = data[at : at + size] * draw(st.integers(1, 8))
            elif how == "cut":
                del data[at:]
        return bytes(data)

    return mutate()


def save_failure(directory: Path, target: str, data: bytes, message: str) -> Path:
    """The failing input as directory/target/<digest>.bin, and what failed beside it (.txt)."""
    path = directory / target / f"{hashlib.sha1(data).hexdigest()[:12]}.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(message + "\n")
    return path
