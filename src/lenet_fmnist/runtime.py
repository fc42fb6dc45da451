"""Where and how fast to compute: the torch device and the number of intra-op threads."""

from __future__ import annotations

import os

import torch

from lenet_fmnist.errors import UserError


def select_device(name: str) -> torch.device:
    """`auto` means the first GPU when CUDA works here, else the CPU; asking for CUDA without it
    is a UserError rather than a crash deep inside the first step."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device={name!r} asks for CUDA, but no CUDA GPU is available here. Use device=cpu or device=auto."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"device={name!r} names a GPU that does not exist: this machine has "
                f"{torch.cuda.device_count()} (cuda:0 to cuda:{torch.cuda.device_count() - 1})."
            )
    return device


def spread_over_gpus(device: str, job_num: int | None, gpu_count: int) -> str:
    """The device for job `job_num` of a sweep: with `auto` and several GPUs, job N gets GPU
    N mod gpu_count, so parallel jobs (hydra/launcher=joblib on a multi-GPU machine) do not all
    crowd onto cuda:0. An explicit device, a single run (job_num None) or fewer than two GPUs
    keep `device` as given. Sequential sweeps alternate GPUs too, which changes nothing."""
    if device != "auto" or job_num is None or gpu_count < 2:
        return device
    return f"cuda:{job_num % gpu_count}"


def sweep_job_device(device: str, job_num: int | None) -> str:
    """`spread_over_gpus` over the GPUs visible to this process (CUDA_VISIBLE_DEVICES; a SLURM job
    with one GPU sees only its own)."""
    return spread_over_gpus(device, job_num, torch.cuda.device_count() if torch.cuda.is_available() else 0)


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity, which job schedulers and launchers
    narrow), capped by OMP_NUM_THREADS when a launcher set it to give each job its share.
    More threads than cores makes OpenMP spin against itself: measured 15-20x slower here."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cores, int(share))) if share.isdigit() and int(share) > 0 else cores


def configure_threads(threads: int | None) -> int:
    count = threads or default_threads()
    torch.set_num_threads(count)
    return count
