"""The run directory's rules as plain functions: the next step each command's stop gets, a
sweep's verdict, and where a run starts (the same through the command line: test_shared_machine,
test_faults, test_train), with the facts a resume keeps."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import assert_imports_no_torch
from lenet_fmnist.host.cpu import processor
from lenet_fmnist.run.admission import Admission, ResumeFacts, admit
from lenet_fmnist.run.endings import Status
from lenet_fmnist.run.errors import UserError
from lenet_fmnist.run.files import BEST_CHECKPOINT, HYDRA_CONFIG, LAST_CHECKPOINT, METRICS_FILE
from lenet_fmnist.run.metrics_file import Circumstances, metrics_json, sweep_failures
from lenet_fmnist.run.next_step import RESUME_WITH, RUN_AGAIN_WITH, next_step


def words(step: str) -> list[str]:
    """The command of a next step as the shell splits it."""
    return shlex.split(step.split(": ", 1)[1])


def test_a_run_resumes_in_its_directory_with_the_users_other_overrides() -> None:
    step = next_step("train", ["epochs=3", "resume=false", "hydra.run.dir=elsewhere"], Path("out/run"))
    assert step.startswith(RESUME_WITH)
    assert words(step) == ["python", "-m", "lenet_fmnist", "train", "hydra.run.dir=out/run", "epochs=3", "resume=true"]


@pytest.mark.parametrize("search", [[], ["hydra/sweeper=optuna", "optimizer.lr=tag(log, interval(0.001, 0.3))"]])
def test_a_sweep_or_a_search_resumes_in_the_sweep_directory(search: list[str]) -> None:
    args = ["--multirun", "seed=0,1", *search, "hydra.sweep.dir=old"]
    step = next_step("train", args, Path("s/0_seed=0"), Path("s"))
    assert words(step) == ["python", "-m", "lenet_fmnist", "train", "-m", "hydra.sweep.dir=s", "seed=0,1", *search, "resume=true"]  # fmt: skip


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_the_other_commands_run_again_as_they_were_given(command: str) -> None:
    args = ["checkpoint=a b/best.pt", "images=shop/*.jpg", "hydra.run.dir=out/x"]
    step = next_step(command, args, Path("out/x"))
    assert step.startswith(RUN_AGAIN_WITH)
    assert words(step) == ["python", "-m", "lenet_fmnist", command, *args]  # quoted: no glob, no split path
    # A sweep of them starts anew elsewhere: they have no resume=true, and the old sweep directory refuses a new sweep.
    swept = next_step(command, ["-m", "checkpoint=a.pt,b.pt", "hydra.sweep.dir=s"], Path("s/0"), Path("s"))
    assert words(swept) == ["python", "-m", "lenet_fmnist", command, "-m", "checkpoint=a.pt,b.pt"]


def test_a_report_runs_again_on_its_directories() -> None:
    step = next_step("report", ["outputs/sweeps/a", "outputs/sweeps/b"])
    assert words(step) == ["python", "-m", "lenet_fmnist", "report", "outputs/sweeps/a", "outputs/sweeps/b"]


def job(sweep: Path, name: str, status: str | None) -> None:
    (sweep / name / ".hydra").mkdir(parents=True)
    (sweep / name / HYDRA_CONFIG).write_text("seed: 0\n")
    if status is not None:
        (sweep / name / METRICS_FILE).write_text(json.dumps({"status": status}))


def test_a_training_sweep_fails_by_its_jobs_that_did_not_end_as_asked(tmp_path: Path) -> None:
    for name, status in [("0_a", "completed"), ("1_b", "pruned"), ("2_c", "diverged"), ("3_d", None)]:
        job(tmp_path, name, status)
    assert sweep_failures(tmp_path, "train") == f"2 job(s) of the sweep in {tmp_path} did not complete: 2_c, 3_d."
    assert sweep_failures(tmp_path, "eval") is None  # its jobs write no metrics.json
    (tmp_path / "search.json").write_text("{}")
    assert sweep_failures(tmp_path, "train") is None  # a search judges its own trials


def never(path: Path) -> dict:
    raise AssertionError(f"{path} read")


def saved_state(config: dict, on_gpu: bool = False) -> dict:
    """What admit reads of a last.pt: its config and whether its RNG states are a GPU's."""
    return {"config": config, "rng": {"cuda": b"state" if on_gpu else None}}


def test_where_a_run_starts(tmp_path: Path) -> None:
    def admit_here(run_dir: Path, config: dict, start_if_unsaved: bool = False, load=never) -> Admission:
        return admit(run_dir, config, "cpu", load=load, start_if_unsaved=start_if_unsaved)

    assert admit_here(tmp_path / "new", {"resume": False}) == Admission()
    assert admit_here(tmp_path / "job", {"resume": True}, start_if_unsaved=True) == Admission()
    with pytest.raises(UserError, match="nothing to resume"):
        admit_here(tmp_path / "empty", {"resume": True})
    done = tmp_path / "done"
    (done / "checkpoints").mkdir(parents=True)
    (done / LAST_CHECKPOINT).write_bytes(b"")
    (done / BEST_CHECKPOINT).write_bytes(b"")
    (done / METRICS_FILE).write_text(json.dumps({"status": "completed"}))
    with pytest.raises(UserError, match="already holds a run"):
        admit_here(done, {"resume": False})
    saved = saved_state({"seed": 0, "threads": 1, "resume": False})
    began = admit_here(done, {"seed": 0, "threads": 2, "resume": True}, load=lambda _: saved)
    assert began == Admission(saved, ResumeFacts(), {"status": "completed"})
    with pytest.raises(UserError, match=r"differs from the saved run's: seed: 0 -> 1"):
        admit_here(done, {"seed": 1, "threads": 1, "resume": True}, load=lambda _: saved)


def saved_run(run_dir: Path, metrics: dict | None) -> Path:
    """A run directory with a last.pt and a best.pt (their content unread here) and `metrics` as
    metrics.json."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / LAST_CHECKPOINT).write_bytes(b"")
    (run_dir / BEST_CHECKPOINT).write_bytes(b"")
    if metrics is not None:
        (run_dir / METRICS_FILE).write_text(json.dumps(metrics))
    return run_dir


def test_a_resume_without_best_pt_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    """best.pt is written with every epoch's last.pt and tested at the end: a run that lost it (by
    hand) would resume, rewrite metrics.json and only then fail (fuzz regression run_edit/best-removed)."""
    run_dir = saved_run(tmp_path / "run", {"status": "interrupted"})
    (run_dir / BEST_CHECKPOINT).unlink()
    with pytest.raises(UserError, match=rf"resume=true, but {re.escape(str(run_dir / BEST_CHECKPOINT))} is missing"):
        admit(run_dir, {"resume": True}, "cpu", load=never)


GPU = {"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "cuda": "12.8", "cudnn": 91002}


def test_a_resume_is_accepted_with_the_facts_its_metrics_record(tmp_path: Path) -> None:
    """What computed a run so far comes from metrics.json, the fields the run wrote as its
    circumstances."""
    ran = Circumstances("cpu", 3, "threads=3 in the config", "a CPU", "AVX2", None, 61706)
    progress = SimpleNamespace(history=[], best_epoch=0, warnings=[], validated_on="")
    run_dir = saved_run(tmp_path / "run", metrics_json(Status.interrupted, progress, {}, ran))
    admitted = admit(run_dir, {"resume": True}, "cpu", load=lambda _: saved_state({"resume": False}))
    assert admitted.facts == ResumeFacts("a CPU with AVX2 kernels")


def test_a_resume_on_another_cpu_or_kernels_is_told_once_recorded() -> None:
    facts = ResumeFacts.recorded_in({"cpu": "AMD EPYC (family 26, model 2)", "cpu_kernels": "AVX512"})
    assert facts.moved("AMD EPYC (family 26, model 2) with AVX512 kernels", 3) is None  # the same machine
    assert ResumeFacts().moved("another CPU with AVX2 kernels", 3) is None  # not recorded
    for cpu, kernels in [("AMD EPYC (family 23, model 49)", "AVX512"), ("AMD EPYC (family 26, model 2)", "AVX2")]:
        warning = facts.moved(processor(cpu, kernels, None), 3)
        assert warning is not None and f"on {cpu} with {kernels} kernels" in warning, warning
        assert "with AVX512 kernels so far" in warning and "from epoch 4 on its bits differ" in warning, warning


def test_a_gpu_run_compares_gpus_not_the_hosts_cpu() -> None:
    """A GPU run resumed on a host with another CPU computes as before; on another GPU model, not."""
    facts = ResumeFacts.recorded_in({"cpu": "Intel Xeon", "cpu_kernels": "AVX512", "gpu": GPU})
    assert facts.moved(processor("AMD EPYC", "AVX2", GPU), 2) is None
    other = {**GPU, "name": "NVIDIA H200", "capability": "9.0"}
    warning = facts.moved(processor("Intel Xeon", "AVX512", other), 2)
    assert warning is not None and "on NVIDIA H200 (compute capability 9.0, CUDA 12.8, cuDNN 91002)" in warning
    assert "it ran on NVIDIA H100 80GB HBM3" in warning


def test_the_run_side_imports_no_torch() -> None:
    """Admission, locking, metrics.json and the next step are decided without torch (or Hydra)."""
    assert_imports_no_torch("import lenet_fmnist.run.admission, lenet_fmnist.run.next_step, lenet_fmnist.run.locking")


@pytest.mark.parametrize(
    "metrics",
    [None, {"status": "running"}, {"cpu": 7, "cpu_kernels": "AVX2"}, {"cpu": "a CPU"}, {"gpu": "a GPU"}],
)
def test_facts_a_run_did_not_record_are_none(tmp_path: Path, metrics: dict | None) -> None:
    """A run killed before its first metrics.json resumes without them: nothing to compare."""
    admitted = admit(saved_run(tmp_path / "run", metrics), {"resume": True}, "cpu", load=lambda _: saved_state({}))
    assert admitted.saved is not None and admitted.facts == ResumeFacts()


def test_a_restart_has_no_facts(tmp_path: Path) -> None:
    stopped = tmp_path / "stopped"  # interrupted in epoch 1: metrics.json, no last.pt
    stopped.mkdir()
    (stopped / METRICS_FILE).write_text(json.dumps({"status": "interrupted", "threads": 2}))
    assert admit(stopped, {"resume": True}, "cpu", load=never) == Admission()


@pytest.mark.parametrize(("on_gpu", "now"), [(False, "cpu"), (True, "cuda:0"), (True, "cuda:1")])
def test_a_run_resumes_on_its_kind_of_device(tmp_path: Path, on_gpu: bool, now: str) -> None:
    run_dir = saved_run(tmp_path / "run", None)
    assert admit(run_dir, {"resume": True}, now, load=lambda _: saved_state({}, on_gpu)).saved is not None


@pytest.mark.parametrize(
    ("on_gpu", "now", "message"),
    [
        (True, "cpu", r"was saved by a run on a CUDA GPU and this run would continue on cpu\..*device=cuda on a"),
        (False, "cuda:0", r"was saved by a run on the CPU and this run would continue on cuda:0\..*device=cpu\.$"),
    ],
)
def test_a_run_does_not_resume_on_the_other_kind_of_device(
    tmp_path: Path, on_gpu: bool, now: str, message: str
) -> None:
    run_dir = saved_run(tmp_path / "run", None)
    with pytest.raises(UserError, match=message) as caught:
        admit(run_dir, {"resume": True}, now, load=lambda _: saved_state({}, on_gpu))
    assert str(caught.value).startswith(f"resume=true, but {run_dir / LAST_CHECKPOINT} ")
    assert "\n" not in str(caught.value)
