"""The CUDA path through the real command line, on conftest's synthetic data: device selection,
checkpoints that cross between GPU and CPU, an interrupted run resumed on the GPU, the
augmentation's draws on CUDA, a joblib sweep sharing one GPU, and a GPU that does not exist.

Every test here is marked `cuda` and skips where `torch.cuda.is_available()` is false; on a GPU
machine run them with `python -m pytest -m cuda` (scripts/gpu_check.sh does).

Determinism: on a GPU the trainer lets cuDNN use only deterministic convolution algorithms,
chosen by heuristics rather than timing (runtime.select_device). Every other operation of a
training step already has a deterministic CUDA kernel: gathers, pooling backward by gathering,
reductions without atomic float sums, and a cross-entropy over one class index per image (torch's
documentation lists NLLLoss on CUDA as nondeterministic, but only its per-pixel variant adds with
atomics). cuBLAS is deterministic on one stream. So a run resumed on the same GPU must end bit
for bit as an uninterrupted one, and the tests below assert exactly that;
`test_torch_finds_no_nondeterministic_operation` has torch itself check the claim. Across devices
(a checkpoint evaluated on the other one) the figures differ by rounding only, bounded in
`test_checkpoints_cross_devices`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import (
    CLI,
    assert_clear_failure,
    assert_ok,
    assert_same_run,
    output,
    plain_args,
    random_images,
    read_metrics,
    sigterm_in_epoch_2,
    snapshot,
    tiny_args,
    train_args,
    transform_of,
)
from lenet_fmnist import data
from lenet_fmnist.device import select_device, spread_over_gpus
from lenet_fmnist.model import CHANNELS_LAST
from lenet_fmnist.training import checkpoint
from lenet_fmnist.training.augment import Augmenter, normalise

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is false"),
]

# cuBLAS's deterministic workspace setting, which torch.use_deterministic_algorithms(True) demands;
# the runs that are compared with a strict run use it too, so that only the strict mode differs.
DETERMINISTIC_CUBLAS = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
# Pearson's chi-squared statistic with 24 degrees of freedom (25 shifts) exceeds 65 by chance with
# probability 1.2e-5, and a normal deviate exceeds 4.5 with probability 6.8e-6: a sound draw fails
# these checks about once in 10^5 seeds, a biased one (a shift never drawn, a flip rate of 0.45
# over 1,000 draws) fails them at once.
CHI2_24_LIMIT, Z_LIMIT = 65.0, 4.5


def gpu_args(data_root: Path, run_dir: Path, *extra: str) -> list[str]:
    """plain_args (3 epochs) on the GPU, with dropout and augmentation so that both CUDA
    generators (the global one and the run's own) are in play. Batches of 4 make 384 steps an
    epoch: at plain_args' 24 steps a GPU ends an epoch before a signal can land in the middle."""
    return plain_args(
        data_root, run_dir, "device=cuda", "augmentation=standard", "dropout=standard", "batch_size=4", *extra
    )


def cuda_args(data_root: Path, run_dir: Path) -> list[str]:
    """A 2-epoch run of tiny_args on device=cuda, dropout and augmentation on."""
    return train_args(data_root, run_dir, "device=cuda", "epochs=2", "augmentation=standard", "dropout=standard")


@pytest.fixture(scope="module")
def cuda_run(cli: CLI, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("cuda_run") / "run"
    assert_ok(CLI({**cli.env, **DETERMINISTIC_CUBLAS}, cli.cwd).run(*cuda_args(tiny_data, run_dir)))
    return run_dir


@pytest.fixture(scope="module")
def gpu_reference(cli: CLI, plain_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted GPU run that the interrupted and resumed one must reproduce."""
    run_dir = tmp_path_factory.mktemp("gpu_reference") / "run"
    assert_ok(cli.run(*gpu_args(plain_data, run_dir)))
    return run_dir


# ---------------------------------------------------------------------------------------------
# Device selection


def assert_trained_on_the_gpu(run_dir: Path, epochs: int) -> None:
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["epochs_completed"] == epochs, metrics
    assert metrics["device"] == "cuda:0"
    major, minor = torch.cuda.get_device_capability(0)
    assert metrics["gpu"] == {  # what computed its numbers: a resume elsewhere compares these
        "name": torch.cuda.get_device_name(0), "capability": f"{major}.{minor}", "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }  # fmt: skip
    assert all(math.isfinite(record["train_loss"]) for record in metrics["history"])
    saved = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert saved["rng"]["cuda"] is not None, "the CUDA generator's state must be saved for a resume"
    assert saved["rng"]["generator"].numel() == saved["rng"]["cuda"].numel(), "the run's own generator is a CUDA one"


def test_two_epochs_on_cuda(cuda_run: Path) -> None:
    assert_trained_on_the_gpu(cuda_run, epochs=2)


def test_auto_picks_the_gpu(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = cli.run(*train_args(tiny_data, run_dir, "device=auto", "epochs=2"))
    assert_ok(result)
    assert "on cuda:0 with" in output(result)
    assert_trained_on_the_gpu(run_dir, epochs=2)


def test_a_gpu_that_does_not_exist_is_a_clear_error(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    count = torch.cuda.device_count()
    run_dir = tmp_path / "run"
    result = cli.run(*train_args(tiny_data, run_dir, f"device=cuda:{count}"))
    assert result.returncode == 1, output(result)
    visible = "1 CUDA GPU is visible here" if count == 1 else f"{count} CUDA GPUs are visible here"
    assert_clear_failure(result, rf"device='cuda:{count}' names a GPU that does not exist: {visible}")
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------
# Checkpoints across devices


def logits(state: dict, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The checkpoint's logits for `images` as the eval command computes them on `device` (one
    batch: the test sets here are below eval_batch_size)."""
    model = checkpoint.model_from(state, "checkpoint").to(device, memory_format=CHANNELS_LAST).eval()
    with torch.inference_mode():
        inputs = normalise(images.to(device))
        out = model(inputs)
        if state["config"]["augmentation"]["test_flip"]:
            out = (out + model(inputs.flip(-1))) / 2
    return out.double().cpu()


def evaluate_on(cli: CLI, best: Path, root: Path, device: str, eval_dir: Path) -> dict:
    result = cli.run(
        "eval", f"checkpoint={best}", f"data.root={root}", f"device={device}", "threads=1", f"hydra.run.dir={eval_dir}"
    )
    assert_ok(result)
    return json.loads((eval_dir / "eval.json").read_text())


@pytest.mark.parametrize("written_on", ["cuda", "cpu"])
def test_checkpoints_cross_devices(
    cli: CLI, plain_data: Path, gpu_reference: Path, reference_run: Path, tmp_path: Path, written_on: str
) -> None:
    """A checkpoint written on the GPU evaluates on the CPU, one written on the CPU on the GPU,
    and each gives the test figures its training run measured on its own device, up to rounding.

    Tolerance: the two devices round differently (other summation orders; TF32 in cuDNN's
    convolutions, torch's default), so every logit may move by some small delta, measured here
    on the same images and weights. A prediction can then change only where the top two logits
    are within 2*delta of each other, so the confusion matrices may differ by at most that many
    images, and the mean cross-entropy (which moves by at most 2*delta when every logit moves by
    at most delta) by 2*delta. delta itself must stay below 1% of the largest logit: TF32 rounds
    each operand to 10 mantissa bits (4.9e-4 relative), a few times that after cancellation in
    the sums; FP32 alone gives about 1e-6, and a GPU computing something else misses by far more.
    (1e-5 more covers the CPU's own rounding at another thread count than the run's.)"""
    run_dir = gpu_reference if written_on == "cuda" else reference_run
    other = "cpu" if written_on == "cuda" else "cuda"
    best = run_dir / "checkpoints" / "best.pt"
    trained = read_metrics(run_dir)  # its test figures were measured on the device that wrote it
    assert trained["device"] == ("cuda:0" if written_on == "cuda" else "cpu")

    report = evaluate_on(cli, best, plain_data, other, tmp_path / "eval")

    state = checkpoint.load(best)
    test = data.load_test(str(plain_data))
    select_device("cuda")  # the cuDNN settings of a run, in this process too
    on_cpu, on_gpu = logits(state, test.images, torch.device("cpu")), logits(state, test.images, torch.device("cuda"))
    delta = (on_gpu - on_cpu).abs().max().item()
    assert delta <= 1e-2 * max(1.0, on_cpu.abs().max().item()), delta
    bound = 2 * delta + 1e-5
    top2 = on_cpu.topk(2, dim=1).values
    near_ties = int(((top2[:, 0] - top2[:, 1]) <= bound).sum())

    count = len(test.labels)
    assert report["test_images"] == count and report["epoch"] == state["epoch"]
    # Correct predictions can change only by near-ties; the loss by at most the bound.
    changed = abs(round(report["test_acc"] * count) - round(trained["test_acc"] * count))
    assert changed <= near_ties, (changed, near_ties, delta)
    assert abs(report["test_loss"] - trained["test_loss"]) <= bound
    # In-process, on the same two devices: predictions differ only on near-ties.
    assert int((on_cpu.argmax(1) != on_gpu.argmax(1)).sum()) <= near_ties


# ---------------------------------------------------------------------------------------------
# Interrupt and resume


def test_sigterm_mid_epoch_then_resume_on_the_gpu_is_bit_identical(
    cli: CLI, plain_data: Path, gpu_reference: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    hint = sigterm_in_epoch_2(cli, gpu_args(plain_data, run_dir), run_dir)

    # The GPU's checkpoint cannot continue on the CPU: refused, and nothing on disk changes.
    def results(path: Path) -> bool:  # Hydra records every invocation in .hydra/ and the log
        return ".hydra" in path.parts or path.suffix == ".log"

    before = snapshot(run_dir, skip=results)
    refused = cli.run(*gpu_args(plain_data, run_dir, "device=cpu", "resume=true"))
    assert_clear_failure(refused, r"was saved by a run on a CUDA GPU and this run would continue on cpu")
    assert snapshot(run_dir, skip=results) == before

    resumed = cli.run_hint(hint)
    assert_ok(resumed)
    assert "Resuming" in output(resumed) and "after epoch 1" in output(resumed)
    assert_same_run(run_dir, gpu_reference)
    for name in ("best.pt", "last.pt"):
        mine = torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=True)
        theirs = torch.load(gpu_reference / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert torch.equal(mine["rng"]["cuda"], theirs["rng"]["cuda"]), name  # dropout's generator


STRICT = (
    "import sys, torch; torch.use_deterministic_algorithms(True); "
    "from lenet_fmnist.cli import main; sys.exit(main(sys.argv[1:]))"
)


# Recipes whose every operation the strict mode must accept on the GPU, each beside the default
# recipe's (cuda_args: tanh, average pooling, SGD, dropout, flip and shift).
STRICT_RECIPES = {
    "default": (),
    "relu-max-adam-ema-erasing-smoothing": (
        "activation=relu", "pool=max", "optimizer=adam", "ema.decay=0.99", "augmentation.erase_p=0.5",
        "label_smoothing=0.1",
    ),
    "rmsprop-distilled": ("activation=relu", "pool=max", "optimizer=rmsprop", "distill.teachers=[{teacher}]"),
}  # fmt: skip


def run_strict_and_plain(cli: CLI, args: list[str], strict_dir: Path, plain_dir: Path) -> None:
    """The run `args` (its directory replaced) once under torch.use_deterministic_algorithms(True)
    and once with the trainer's own settings, both with cuBLAS's deterministic workspace."""
    env = {**cli.env, **DETERMINISTIC_CUBLAS}
    for run_dir, prefix in ((strict_dir, [sys.executable, "-c", STRICT]), (plain_dir, None)):
        placed = [a if not a.startswith("hydra.run.dir=") else f"hydra.run.dir={run_dir}" for a in args]
        command = [*prefix, *placed] if prefix else cli.command(placed)
        result = subprocess.run(command, cwd=cli.cwd, env=env, capture_output=True, text=True, timeout=180)
        assert_ok(result)
        assert "does not have a deterministic implementation" not in output(result), output(result)


@pytest.mark.parametrize("recipe", list(STRICT_RECIPES))
def test_torch_finds_no_nondeterministic_operation(
    cli: CLI, cuda_run: Path, tiny_data: Path, tmp_path: Path, recipe: str
) -> None:
    """Each recipe under torch.use_deterministic_algorithms(True), which raises at any operation
    that has no deterministic CUDA kernel and switches the others to their deterministic forms:
    it must complete, and compute what the trainer's own settings computed, bit for bit. The
    distilled recipe learns from cuda_run's weights (trained on the same split)."""
    teacher = cuda_run / "checkpoints" / "best.pt"
    extra = [arg.format(teacher=teacher) for arg in STRICT_RECIPES[recipe]]
    args = [*cuda_args(tiny_data, tmp_path / "unused"), *extra]
    run_strict_and_plain(cli, args, tmp_path / "strict", tmp_path / "plain")
    assert_same_run(tmp_path / "strict", tmp_path / "plain")


# ---------------------------------------------------------------------------------------------
# Augmentation on CUDA


def draws(device: str, images: torch.Tensor, index: torch.Tensor) -> tuple[int, Counter[tuple[int, int]]]:
    """Flips and the histogram of (dy, dx) shifts of the Augmenter's draws on `device`; every
    output must be a flip/shift of its own image within 2 pixels."""
    generator = torch.Generator(device=device).manual_seed(0)
    out = Augmenter(images.to(device), flip=True, max_shift=2)(index.to(device), generator)
    assert out.device.type == device and out.dtype == torch.uint8
    flips, shifts = 0, Counter()
    for position, source in enumerate(index.tolist()):
        found = transform_of(out[position].cpu(), images[source], 2)
        assert found is not None, f"{device}: output {position} is not a flip/shift of image {source}"
        mirrored, dy, dx = found
        assert max(abs(dy), abs(dx)) <= 2
        flips += mirrored
        shifts[dy, dx] += 1
    return flips, shifts


def uniformity(counts: list[int]) -> float:
    """Pearson's statistic of `counts` against equal probabilities (len - 1 degrees of freedom)."""
    expected = sum(counts) / len(counts)
    return sum((count - expected) ** 2 / expected for count in counts)


def homogeneity(first: list[int], second: list[int]) -> float:
    """Pearson's statistic of two histograms against one common distribution (len - 1 degrees
    of freedom): the two-row contingency table's test of independence."""
    total = sum(first) + sum(second)
    statistic = 0.0
    for row in (first, second):
        for count, column in zip(row, map(sum, zip(first, second, strict=True)), strict=True):
            expected = sum(row) * column / total
            statistic += (count - expected) ** 2 / expected
    return statistic


def test_augmentation_draws_on_cuda_have_the_cpu_distribution() -> None:
    """CUDA's generator draws other numbers than the CPU's, but from the same distribution: flip
    rate 1/2, the 25 shifts equally likely, on CUDA as on the CPU. 1,536 images make the
    strided windows view larger than 2^31 elements, the case of a real run (64-bit indexing);
    the last image's mirrored, most shifted window ends at the view's last byte."""
    images = random_images(1536, seed=11)
    index = torch.tensor([0, 700, 1200, 1535]).repeat(250)
    count = len(index)
    (cpu_flips, cpu_shifts), (gpu_flips, gpu_shifts) = draws("cpu", images, index), draws("cuda", images, index)

    cells = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    assert set(gpu_shifts) == set(cells), sorted(gpu_shifts)
    for flips in (cpu_flips, gpu_flips):
        assert abs(flips - count / 2) / math.sqrt(count / 4) < Z_LIMIT, flips
    for shifts in (cpu_shifts, gpu_shifts):
        assert uniformity([shifts[c] for c in cells]) < CHI2_24_LIMIT, shifts
    # CUDA against the CPU: one distribution?
    pooled = (cpu_flips + gpu_flips) / (2 * count)
    assert abs(cpu_flips - gpu_flips) / math.sqrt(2 * count * pooled * (1 - pooled)) < Z_LIMIT
    assert homogeneity([cpu_shifts[c] for c in cells], [gpu_shifts[c] for c in cells]) < CHI2_24_LIMIT


def test_augmentation_on_cuda_draws_from_its_generator_alone() -> None:
    images = random_images(64, seed=5).cuda()
    index = torch.arange(64, device="cuda")
    global_state = torch.cuda.get_rng_state()
    first = Augmenter(images, True, 2)(index, torch.Generator(device="cuda").manual_seed(7))
    assert torch.equal(torch.cuda.get_rng_state(), global_state), "augmentation must not draw from the global RNG"
    assert torch.equal(Augmenter(images, True, 2)(index, torch.Generator(device="cuda").manual_seed(7)), first)
    assert not torch.equal(Augmenter(images, True, 2)(index, torch.Generator(device="cuda").manual_seed(8)), first)


# ---------------------------------------------------------------------------------------------
# A sweep on one GPU


def test_a_joblib_sweep_of_two_jobs_shares_the_gpus(cli: CLI, tiny_data: Path, tmp_path: Path) -> None:
    """Job N runs on GPU N mod the GPUs visible (runtime.spread_over_gpus): both on cuda:0 with one
    GPU, one on each with two or more."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="needs the `cluster` extra")
    sweep_dir = tmp_path / "sweep"
    overrides = [a for a in tiny_args(tiny_data, tmp_path / "unused")[1:] if not a.startswith("hydra.run.dir=")]
    result = cli.run(
        "train", "-m", *overrides, "device=auto", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
    )  # fmt: skip
    assert_ok(result)
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 2, jobs
    for job in jobs:
        metrics = read_metrics(job)
        expected = spread_over_gpus("auto", int(job.name.split("_")[0]), torch.cuda.device_count()).replace(
            "auto", "cuda:0"
        )
        assert metrics["status"] == "completed" and metrics["device"] == expected, metrics
