"""Where and how fast to compute: the torch device, its kernels, and the team of threads of a command."""

from __future__ import annotations

from typing import Any

import torch

from lenet_fmnist.host.threads import command_threads
from lenet_fmnist.run.errors import UserError
from lenet_fmnist.workers import Workers


def resolve_device(name: str, gpu_count: int) -> torch.device:
    """The device that `name` (auto, cpu, cuda or cuda:N) means on a machine with `gpu_count`
    usable CUDA GPUs, or a UserError saying why there is none. `auto` and `cuda` mean cuda:0, so
    metrics.json names the GPU a run used. Asking for CUDA without it is an error here rather
    than a crash deep inside the first step."""
    if name == "auto":
        return torch.device("cuda", 0) if gpu_count else torch.device("cpu")
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not gpu_count:
        raise UserError(
            f"device={name!r} asks for CUDA, but no CUDA GPU is available here. Use device=cpu or device=auto."
        )
    index = device.index or 0
    if index >= gpu_count:
        visible = "1 CUDA GPU is" if gpu_count == 1 else f"{gpu_count} CUDA GPUs are"
        names = "cuda:0" if gpu_count == 1 else f"cuda:0 to cuda:{gpu_count - 1}"
        raise UserError(
            f"device={name!r} names a GPU that does not exist: {visible} visible here ({names}). "
            "Use one of those, device=cuda or device=auto (CUDA_VISIBLE_DEVICES decides which GPUs are visible)."
        )
    return torch.device("cuda", index)


def visible_gpus() -> int:
    """The CUDA GPUs this process may use (CUDA_VISIBLE_DEVICES; a SLURM job with one GPU sees only its own)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def select_device(name: str) -> torch.device:
    """`resolve_device` on this machine, made ready for a run. On a GPU it becomes the current
    device (what an unindexed `cuda` means to torch), and cuDNN may use only deterministic
    convolution algorithms, chosen by its fixed heuristics rather than by timing (benchmark off).
    The other operations of a training step have deterministic CUDA kernels (tests/test_cuda.py
    has torch's deterministic mode check that) and cuBLAS is deterministic on one stream, so a run repeated or resumed on the same GPU and software
    computes the same bits, as on the CPU. TF32 convolutions stay as torch sets them: they change
    rounding, not reproducibility. On the CPU nothing is changed."""
    device = resolve_device(name, visible_gpus())
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return device


def spread_over_gpus(device: str, job_num: int | None, gpu_count: int) -> str:
    """The device for job `job_num` of a sweep: with `auto` and several GPUs, job N gets GPU
    N mod gpu_count, so parallel jobs (hydra/launcher=joblib on a multi-GPU machine) do not all
    crowd onto cuda:0. An explicit device, a single run (job_num None) or fewer than two GPUs
    keep `device` as given. Sequential sweeps alternate GPUs too, which changes nothing."""
    if device != "auto" or job_num is None or gpu_count < 2:
        return device
    return f"cuda:{job_num % gpu_count}"


def gpu_facts(device: torch.device) -> dict[str, Any] | None:
    """A GPU run's GPU, as metrics.json records it (None on the CPU): its model and compute
    capability, and the CUDA and cuDNN versions torch runs it with. Each computes other bits."""
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return {
        "name": torch.cuda.get_device_name(device),
        "capability": f"{major}.{minor}",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads for export, whose model and check are no run's numbers
    (command_threads)."""
    count = command_threads(threads).count
    torch.set_num_threads(count)
    return count


def command_workers(threads: int | None, device: torch.device) -> Workers:
    """The team that computes eval's, predict's and export's pieces (command_threads; one
    thread on a GPU, which does the work)."""
    return Workers(command_threads(threads).count if device.type == "cpu" else 1)
