"""Hydra launchers of lenet_fmnist: Hydra's submitit launchers whose requeued jobs resume.

Hydra instantiates launchers only from the `hydra_plugins` namespace package and imports every
module in it at start-up, so this module stays small and defines nothing when the `cluster` extra
(hydra-submitit-launcher) is missing: the base install must start without warnings. The logic is
in lenet_fmnist.launch.launchers; conf/hydra/launcher/{slurm,local}.yaml name these classes.
"""

from __future__ import annotations

from collections.abc import Sequence

from lenet_fmnist.launch.launchers import ResumeOnRequeue

try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher
except ImportError:  # without the `cluster` extra there is nothing to extend
    submitit_launcher = None

if submitit_launcher is not None:
    from hydra.core.utils import JobReturn

    class SlurmLauncher(ResumeOnRequeue, submitit_launcher.SlurmLauncher):
        """`hydra/launcher=slurm`: one SLURM job per sweep job, requeued with resume=true."""

    class LocalLauncher(ResumeOnRequeue, submitit_launcher.LocalLauncher):
        """`hydra/launcher=local`: the same submitit code path (pickled jobs, SIGUSR2, requeue) in
        local processes, all started at once, each with its share of the cores."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            self.concurrent_jobs = len(job_overrides)  # before submitit pickles the launcher into each job
            return super().launch(job_overrides, initial_job_idx)
