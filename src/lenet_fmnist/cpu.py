"""This machine's CPU, as metrics.json names it: each CPU kind rounds differently, so a study's
figures are read per kind, and a run resumed on another kind says so (rundir.ResumeFacts). This
module must not import torch."""

from __future__ import annotations

import functools
import platform
from pathlib import Path


def parse_cpuinfo(text: str) -> str:
    """The model of the first processor described in /proc/cpuinfo's `text`: its "model name"
    with its family and model numbers, since virtual machines often name only "AMD EPYC", which
    tells a Zen 2 from a Zen 5 by the numbers alone."""
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
    return model


@functools.cache
def this_cpu() -> str:
    """This machine's CPU model (the platform's name for it where there is no /proc/cpuinfo)."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return parse_cpuinfo("")
