"""OpenMP's wait behaviour, chosen per CPU kind and set before torch loads.

The OpenMP runtime in the torch wheels (GNU libgomp) lets a thread that waits at a barrier spin
for a while before it sleeps (GOMP_SPINCOUNT turns, 300,000 by default). Alone on the cores that
is the fastest on every CPU measured; whether a short spin costs anything alone, and whether the
default collapses when other work shares the cores, depends on the CPU: WAIT_BY_KIND below holds
the measured choice per kind. A run started beside other runs or busy programs takes only the
cores left free (lenet_fmnist.cores: one thread on 2 cores), and a one-thread run never waits at an
OpenMP barrier, so the setting matters most to a run that has all the cores, and to one whose
cores get busy after it started.

libgomp reads the setting once, when torch loads it, so `cli.main` calls `configure_wait` before
anything imports torch; a resumed run gets its recorded setting back the same way (`resume_wait`,
given the setting among the resume facts that rundir.accept read, torch-free). A wait behaviour
the user exported (either variable) is kept, untouched. The setting never changes a run's
results, only its speed. This module must not import torch.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import sys
from collections.abc import Mapping, MutableMapping
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

# The variables with which a user chooses libgomp's wait behaviour; either one means "leave it".
WAIT_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
DEFAULT = "libgomp default"  # what metrics.json records when neither variable is set


class CpuKind(StrEnum):
    amd_without_avx512 = "AMD without AVX-512"
    amd_avx512 = "AMD with AVX-512"
    intel_avx512 = "Intel with AVX-512"
    other = "other"


# The wait setting exported per CPU kind ({}: none, libgomp's default), and the figures behind it
# (2 cores, LeNet-5 relu/max, SGD, flip + shift, batch 64, 2 threads; docs/performance.md, "Runs side by side").
WAIT_BY_KIND: dict[CpuKind, dict[str, str]] = {
    # AMD EPYC (AVX2): alone, GOMP_SPINCOUNT=1000 trained an epoch in 2.5 s against 2.6 s with the
    # default; with the default, two runs side by side took 45x longer per epoch than one, and a
    # run beside a busy program 17x. The short spin costs nothing and prevents both collapses.
    CpuKind.amd_without_avx512: {"GOMP_SPINCOUNT": "1000"},
    # AMD EPYC, Zen 4 (AVX-512): alone, GOMP_SPINCOUNT=1000 took 3.05 s per epoch against 2.7 s
    # with the default (12% slower); 10,000 to 100,000 turns matched the default.
    CpuKind.amd_avx512: {},
    # Intel Xeon (AVX-512, AMX): alone, GOMP_SPINCOUNT=1000 took 4.7-5.0 s per epoch against 3.3 s
    # with the default (1.45x slower), and did not help two runs side by side there.
    CpuKind.intel_avx512: {},
    # Not measured (Intel without AVX-512, other vendors, other architectures): the default, the
    # fastest alone on every kind measured; runs that share the cores get one thread each.
    CpuKind.other: {},
}


def cpu_kind(vendor_id: str, flags: str) -> CpuKind:
    """The kind of CPU that /proc/cpuinfo's `vendor_id` and `flags` describe."""
    avx512 = "avx512f" in flags.split()
    if vendor_id == "AuthenticAMD":
        return CpuKind.amd_avx512 if avx512 else CpuKind.amd_without_avx512
    if vendor_id == "GenuineIntel" and avx512:
        return CpuKind.intel_avx512
    return CpuKind.other


class CpuInfo(NamedTuple):
    # /proc/cpuinfo's "model name" with its family and model numbers, as metrics.json records it:
    # virtual machines often name only "AMD EPYC", which tells a Zen 2 from a Zen 5 by the numbers
    # alone, and each CPU kind rounds differently (a study's figures are read per kind).
    model: str
    kind: CpuKind


def parse_cpuinfo(text: str) -> CpuInfo:
    """The model and kind of the first processor described in /proc/cpuinfo's `text`."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the end of the first processor's block
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        model += f" (family {fields['cpu family']}, model {fields['model']})"
    return CpuInfo(model, cpu_kind(fields.get("vendor_id", ""), fields.get("flags", "")))


@functools.cache
def this_cpu() -> CpuInfo:
    """This machine's CPU (kind `other` where there is no /proc/cpuinfo)."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return parse_cpuinfo("")


# Whether the user exported a wait setting, as `configure_wait` found it (None: it did not run).
_user_chose: bool | None = None


def configure_wait(environ: MutableMapping[str, str] = os.environ, kind: CpuKind | None = None) -> None:
    """Export the wait setting of this CPU's kind unless the user chose one; warn if torch is already
    loaded (its OpenMP runtime has read the environment, so the setting comes too late to count)."""
    global _user_chose
    _user_chose = any(name in environ for name in WAIT_VARIABLES)
    if _user_chose:
        return
    setting = WAIT_BY_KIND[kind or this_cpu().kind]
    environ.update(setting)
    if setting and "torch" in sys.modules:
        log.warning("torch was loaded before %s was set; it may not take effect.", wait_setting(environ))


def wait_setting(environ: Mapping[str, str] = os.environ) -> str:
    """The wait behaviour in force, as metrics.json records it: `NAME=value, ...`, or `libgomp default`."""
    chosen = [f"{name}={environ[name]}" for name in WAIT_VARIABLES if name in environ]
    return ", ".join(chosen) or DEFAULT


def parse_wait_setting(recorded: str) -> dict[str, str] | None:
    """The variables that `wait_setting` wrote as `recorded`; None for text it does not write."""
    if recorded == DEFAULT:
        return {}
    pairs = [item.partition("=") for item in recorded.split(", ")]
    if any(name not in WAIT_VARIABLES or not sep or not value for name, sep, value in pairs):
        return None
    return {name: value for name, _, value in pairs}


def resume_wait(recorded: str | None, environ: MutableMapping[str, str] = os.environ) -> None:
    """Give a resumed run the wait setting it recorded, unless the user chose one (or
    `configure_wait` did not run in this process). Once torch is loaded (a later job of a
    sequential sweep) the setting in force stays: libgomp read it already. Either way the run
    computes the same numbers; only its speed may differ."""
    wanted = None if recorded is None else parse_wait_setting(recorded)
    if wanted is None or _user_chose is not False or wanted == _in_force(environ):
        return
    if "torch" in sys.modules:
        log.info(
            "The run was trained with OpenMP wait setting %s; this process already runs with %s, "
            "which stays (it changes speed, never results).",
            recorded,
            wait_setting(environ),
        )
        return
    for name in WAIT_VARIABLES:
        environ.pop(name, None)
    environ.update(wanted)
    log.info("Resuming with the run's OpenMP wait setting: %s", recorded)


def _in_force(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: environ[name] for name in WAIT_VARIABLES if name in environ}
