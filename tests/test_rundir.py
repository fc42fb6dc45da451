"""The run directory's rules as plain functions: the next step each command's stop gets, a
sweep's verdict, and where a run starts (the same through the command line: test_shared_machine,
test_faults, test_train), with the facts a resume keeps."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import assert_imports_no_torch
from lenet_fmnist import rundir
from lenet_fmnist.errors import UserError


def words(step: str) -> list[str]:
    """The command of a next step as the shell splits it."""
    return shlex.split(step.split(": ", 1)[1])


def test_a_run_resumes_in_its_directory_with_the_users_other_overrides() -> None:
    step = rundir.next_step("train", ["epochs=3", "resume=false", "hydra.run.dir=elsewhere"], Path("out/run"))
    assert step.startswith(rundir.RESUME_WITH)
    assert words(step) == ["python", "-m", "lenet_fmnist", "train", "hydra.run.dir=out/run", "epochs=3", "resume=true"]


@pytest.mark.parametrize("search", [[], ["hydra/sweeper=optuna", "optimizer.lr=tag(log, interval(0.001, 0.3))"]])
def test_a_sweep_or_a_search_resumes_in_the_sweep_directory(search: list[str]) -> None:
    args = ["--multirun", "seed=0,1", *search, "hydra.sweep.dir=old"]
    step = rundir.next_step("train", args, Path("s/0_seed=0"), Path("s"))
    assert words(step) == ["python", "-m", "lenet_fmnist", "train", "-m", "hydra.sweep.dir=s", "seed=0,1", *search, "resume=true"]  # fmt: skip


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_the_other_commands_run_again_as_they_were_given(command: str) -> None:
    args = ["checkpoint=a b/best.pt", "images=shop/*.jpg", "hydra.run.dir=out/x"]
    step = rundir.next_step(command, args, Path("out/x"))
    assert step.startswith(rundir.RUN_AGAIN_WITH)
    assert words(step) == ["python", "-m", "lenet_fmnist", command, *args]  # quoted: no glob, no split path
    # A sweep of them starts anew elsewhere: they have no resume=true, and the old sweep directory refuses a new sweep.
    swept = rundir.next_step(command, ["-m", "checkpoint=a.pt,b.pt", "hydra.sweep.dir=s"], Path("s/0"), Path("s"))
    assert words(swept) == ["python", "-m", "lenet_fmnist", command, "-m", "checkpoint=a.pt,b.pt"]


def test_a_report_runs_again_on_its_directories() -> None:
    step = rundir.next_step("report", ["outputs/sweeps/a", "outputs/sweeps/b"])
    assert words(step) == ["python", "-m", "lenet_fmnist", "report", "outputs/sweeps/a", "outputs/sweeps/b"]


def job(sweep: Path, name: str, status: str | None) -> None:
    (sweep / name / ".hydra").mkdir(parents=True)
    (sweep / name / rundir.HYDRA_CONFIG).write_text("seed: 0\n")
    if status is not None:
        (sweep / name / rundir.METRICS_FILE).write_text(json.dumps({"status": status}))


def test_a_training_sweep_fails_by_its_jobs_that_did_not_end_as_asked(tmp_path: Path) -> None:
    for name, status in [("0_a", "completed"), ("1_b", "pruned"), ("2_c", "diverged"), ("3_d", None)]:
        job(tmp_path, name, status)
    assert (
        rundir.sweep_failures(tmp_path, "train") == f"2 job(s) of the sweep in {tmp_path} did not complete: 2_c, 3_d."
    )
    assert rundir.sweep_failures(tmp_path, "eval") is None  # its jobs write no metrics.json
    (tmp_path / "search.json").write_text("{}")
    assert rundir.sweep_failures(tmp_path, "train") is None  # a search judges its own trials


def test_where_a_run_starts(tmp_path: Path) -> None:
    def never(path: Path) -> dict:
        raise AssertionError(f"{path} read")

    def start(run_dir: Path, config: dict, resume: bool, start_if_unsaved: bool = False, load=never) -> rundir.Start:
        accepted = rundir.accept(run_dir, resume=resume, start_if_unsaved=start_if_unsaved)
        return rundir.start(run_dir, accepted, config, load=load, with_later_keys=lambda saved: saved)

    assert start(tmp_path / "new", {}, resume=False) == rundir.Start()
    assert start(tmp_path / "job", {}, resume=True, start_if_unsaved=True) == rundir.Start()
    with pytest.raises(UserError, match="nothing to resume"):
        start(tmp_path / "empty", {}, resume=True)
    done = tmp_path / "done"
    (done / "checkpoints").mkdir(parents=True)
    (done / rundir.LAST_CHECKPOINT).write_bytes(b"")
    (done / rundir.METRICS_FILE).write_text(json.dumps({"status": "completed"}))
    with pytest.raises(UserError, match="already holds a run"):
        start(done, {}, resume=False)
    saved = {"config": {"seed": 0, "threads": 1}}
    began = start(done, {"seed": 0, "threads": 2}, resume=True, load=lambda _: saved)
    assert began == rundir.Start(saved, {"status": "completed"})
    with pytest.raises(UserError, match=r"differs from the saved run's: seed: 0 -> 1"):
        start(done, {"seed": 1, "threads": 1}, resume=True, load=lambda _: saved)


def saved_run(run_dir: Path, metrics: dict | None) -> Path:
    """A run directory with a last.pt (its content unread here) and `metrics` as metrics.json."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / rundir.LAST_CHECKPOINT).write_bytes(b"")
    if metrics is not None:
        (run_dir / rundir.METRICS_FILE).write_text(json.dumps(metrics))
    return run_dir


GPU = {"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "cuda": "12.8", "cudnn": 91002}


def test_a_resume_is_accepted_with_the_facts_its_metrics_record(tmp_path: Path) -> None:
    """What computed a run so far comes from metrics.json, the fields the run wrote as its
    circumstances (read without torch, before the checkpoint)."""
    ran = rundir.Circumstances("cpu", 3, "threads=3 in the config", "a CPU", "AVX2", None, 61706)
    progress = SimpleNamespace(history=[], best_epoch=0, warnings=[], validated_on="")
    run_dir = saved_run(tmp_path / "run", rundir.metrics(rundir.Status.interrupted, progress, {}, ran))
    accepted = rundir.accept(run_dir, resume=True)
    assert accepted == rundir.Accepted(resumes=True, facts=rundir.ResumeFacts("a CPU with AVX2 kernels"))
    assert rundir.accept(run_dir, resume=True, start_if_unsaved=True) == accepted  # something was saved


def test_a_resume_on_another_cpu_or_kernels_is_told_once_recorded() -> None:
    facts = rundir.ResumeFacts.recorded_in({"cpu": "AMD EPYC (family 26, model 2)", "cpu_kernels": "AVX512"})
    assert facts.moved("AMD EPYC (family 26, model 2) with AVX512 kernels", 3) is None  # the same machine
    assert rundir.ResumeFacts().moved("another CPU with AVX2 kernels", 3) is None  # not recorded
    for cpu, kernels in [("AMD EPYC (family 23, model 49)", "AVX512"), ("AMD EPYC (family 26, model 2)", "AVX2")]:
        warning = facts.moved(rundir.processor(cpu, kernels, None), 3)
        assert warning is not None and f"on {cpu} with {kernels} kernels" in warning, warning
        assert "with AVX512 kernels so far" in warning and "from epoch 4 on its bits differ" in warning, warning


def test_a_gpu_run_compares_gpus_not_the_hosts_cpu() -> None:
    """A GPU run resumed on a host with another CPU computes as before; on another GPU model, not."""
    facts = rundir.ResumeFacts.recorded_in({"cpu": "Intel Xeon", "cpu_kernels": "AVX512", "gpu": GPU})
    assert facts.moved(rundir.processor("AMD EPYC", "AVX2", GPU), 2) is None
    other = {**GPU, "name": "NVIDIA H200", "capability": "9.0"}
    warning = facts.moved(rundir.processor("Intel Xeon", "AVX512", other), 2)
    assert warning is not None and "on NVIDIA H200 (compute capability 9.0, CUDA 12.8, cuDNN 91002)" in warning
    assert "it ran on NVIDIA H100 80GB HBM3" in warning


def test_a_resume_is_accepted_before_torch_loads(tmp_path: Path) -> None:
    """The command line accepts a resume before anything imports torch."""
    run_dir = saved_run(tmp_path / "run", {"status": "interrupted", "cpu": "a CPU", "cpu_kernels": "AVX2"})
    assert_imports_no_torch(
        "from pathlib import Path\nfrom lenet_fmnist import rundir\n"
        f"assert rundir.accept(Path({str(run_dir)!r}), resume=True).facts.processor == 'a CPU with AVX2 kernels'"
    )


@pytest.mark.parametrize(
    "metrics",
    [None, {"status": "running"}, {"cpu": 7, "cpu_kernels": "AVX2"}, {"cpu": "a CPU"}, {"gpu": "a GPU"}],
)
def test_facts_a_run_did_not_record_are_none(tmp_path: Path, metrics: dict | None) -> None:
    """A run killed before its first metrics.json resumes without them: nothing to compare."""
    accepted = rundir.accept(saved_run(tmp_path / "run", metrics), resume=True)
    assert accepted.resumes and accepted.facts == rundir.ResumeFacts()


def test_a_new_run_or_a_restart_has_no_facts(tmp_path: Path) -> None:
    stopped = tmp_path / "stopped"  # interrupted in epoch 1: metrics.json, no last.pt
    stopped.mkdir()
    (stopped / rundir.METRICS_FILE).write_text(json.dumps({"status": "interrupted", "threads": 2}))
    assert rundir.accept(stopped, resume=True) == rundir.Accepted()
    assert rundir.accept(tmp_path / "new", resume=False) == rundir.Accepted()


def test_a_run_saved_before_a_key_existed_resumes_at_its_default(tmp_path: Path) -> None:
    """The saved config is completed with the keys added since (config.with_later_keys) before
    it is compared: a run saved without label_smoothing ran as label_smoothing=0 does."""
    accepted = rundir.accept(saved_run(tmp_path, None), resume=True)
    saved = {"config": {"seed": 0}}
    today = {"seed": 0, "label_smoothing": 0.0}

    def start(with_later_keys: Callable[[dict], dict]) -> rundir.Start:
        return rundir.start(tmp_path, accepted, today, load=lambda _: saved, with_later_keys=with_later_keys)

    assert start(lambda c: {**c, "label_smoothing": 0.0}) == rundir.Start(saved)
    with pytest.raises(UserError, match=r"label_smoothing: None -> 0.0"):  # control: compared as saved
        start(lambda c: c)
