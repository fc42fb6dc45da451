"""What computes a run's numbers on this machine, as metrics.json names it: the CPU (each kind
rounds differently, so a study's figures are read per kind) and torch's kernels for it, or a GPU
run's GPU; a run resumed on another says so (run.admission.ResumeFacts). Importing this module
imports no torch: `cpu_kernels` loads it when asked."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any


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


def cpu_kernels() -> str:
    """The instruction set of torch's CPU kernels, as metrics.json records it beside the CPU: the
    same CPU computes other bits with other kernels, and ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA
    make an AVX-512 machine run an AVX2 machine's (how docs/results.md checks a verdict's rounding)."""
    import torch  # a training run has it loaded already

    kernels = torch.backends.cpu.get_cpu_capability()
    onednn_cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{kernels}, ONEDNN_MAX_CPU_ISA={onednn_cap}" if onednn_cap else kernels


def processor(cpu: Any, cpu_kernels: Any, gpu: Any) -> str | None:
    """What computed a run's numbers, in words, from metrics.json's `cpu`, `cpu_kernels` and
    `gpu`: the GPU (its model, compute capability, CUDA and cuDNN) for a run on one, else the CPU
    and torch's kernels for it; None when they were not recorded."""
    if isinstance(gpu, dict):
        return (
            f"{gpu.get('name')} (compute capability {gpu.get('capability')}, CUDA {gpu.get('cuda')}, "
            f"cuDNN {gpu.get('cudnn')})"
        )
    if isinstance(cpu, str) and isinstance(cpu_kernels, str):
        return f"{cpu} with {cpu_kernels} kernels"
    return None
