"""What this project adds to Hydra's submitit launchers: requeued jobs resume, jobs share cores.

submitit signals a job (SIGUSR2) `signal_delay_s` before its time limit and, on clusters that send
it, at pre-emption; its handler then calls the job callable's `checkpoint` method, requeues whatever
that returns and exits. Hydra's launcher is that callable, and its `checkpoint` resubmits the job
with the same overrides: the requeued job would start its run again in a directory that already
holds it, which the trainer refuses. `ResumeOnRequeue` requeues it with `resume=true` instead, so
it continues from checkpoints/last.pt (written after every epoch; the epoch in flight is lost, and
a job stopped before its first epoch ended starts afresh). `resume` is left out of the sweep
sub-directory names (conf/train.yaml), so the requeued job finds its own directory.

It also gives each job its share of the cores, as the joblib launcher does, because submitit's
local executor starts every job of a sweep at once and each would otherwise take all the cores.

Hydra only instantiates launchers defined under the `hydra_plugins` package, so the launcher
classes themselves are in src/hydra_plugins/lenet_fmnist_launchers; this module imports neither
submitit nor the plugin, so its logic is tested without the `cluster` extra.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from lenet_fmnist.host.threads import job_share, usable_cores
from lenet_fmnist.run.config_keys import RESUME, with_resume

log = logging.getLogger(__name__)


def restarted_by_slurm(environ: Mapping[str, str]) -> bool:
    """SLURM restarts a job by itself after a pre-emption that sent no SIGUSR2 or after a node
    failure: it runs the original submission (without `resume=true`) again and counts restarts."""
    count = environ.get("SLURM_RESTART_COUNT", "0").strip()
    return count.isdigit() and int(count) > 0


class ResumeOnRequeue:
    """Mixin for Hydra's submitit launchers; it comes first in the bases so that its methods wrap
    those of `BaseSubmititLauncher`, whose `__call__` runs a job and whose `checkpoint` requeues it."""

    params: dict[str, Any]  # the launcher's config, set by BaseSubmititLauncher
    # Jobs running at once on this machine (the local executor); None where each has its allocation.
    concurrent_jobs: int | None = None
    # The sweep's command line, taken to each job: a job's own is submitit's (`-m
    # submitit.core._submit FOLDER`), which would make the resume command it prints wrong.
    command_line: list[str] | None = None

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        """Runs in the sweep's process; submitit pickles the launcher into each job after this."""
        self.command_line = list(sys.argv)
        return super().launch(job_overrides, initial_job_idx)  # type: ignore[misc]

    def __call__(
        self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str, singleton_state: Any
    ) -> Any:
        """Runs in the job's own process, once per attempt."""
        if self.command_line:
            sys.argv = self.command_line
        if restarted_by_slurm(os.environ):
            log.warning(
                "SLURM restarted this job (SLURM_RESTART_COUNT=%s); it resumes from its last saved epoch.",
                os.environ["SLURM_RESTART_COUNT"].strip(),
            )
            sweep_overrides = with_resume(sweep_overrides)
        self._share_cores()
        return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)  # type: ignore[misc]

    def checkpoint(self, sweep_overrides: list[str], *args: Any, **kwargs: Any) -> Any:
        """Called by submitit's SIGUSR2 handler in the job's process just before it requeues the job
        and exits; the last completed epoch is already on disk (checkpoints/last.pt)."""
        log.warning("This job was signalled for pre-emption or its time limit; it is requeued with %s.", RESUME)
        return super().checkpoint(with_resume(sweep_overrides), *args, **kwargs)  # type: ignore[misc]

    def _share_cores(self) -> None:
        """Set OMP_NUM_THREADS to this job's share (job_share): a new training run takes that
        many threads (fixed_threads), eval, predict and export at most that many
        (command_threads). An OMP_NUM_THREADS the user exported is kept; `threads=` comes
        before it. Either way only the speed changes, never a bit (lenet_fmnist.training.step)."""
        cpus = self.params.get("cpus_per_task")
        if cpus is None and self.concurrent_jobs is None:
            return  # a cluster job without cpus_per_task: its CPU affinity is its allocation
        share = job_share(usable_cores(), self.concurrent_jobs or 1, cpus)
        os.environ.setdefault("OMP_NUM_THREADS", str(share))
