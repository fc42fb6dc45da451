"""The exceptions that end a command with a message instead of a traceback, in three families that
say what happened: the user's mistake, the machine's fault, and a run's outcome. endings.ENDINGS
says how each family ends a run, its command, its sweep and its search; nothing decides by the
order of except clauses."""

import re


class Reported(Exception):
    """An ending the command reports as one paragraph, never as a traceback."""


def paragraph(message: str) -> str:
    """`message` as one paragraph: a blank line inside it (a path or value the user gave may hold
    one) would end it early."""
    return re.sub(r"\n\s*\n", "\n", message.strip())


class UserError(Reported):
    """A mistake in the user's input (a bad value, a missing file, a directory in use): fix it and
    run again."""


class MachineFault(Reported):
    """The machine refused (a full disk, an exceeded quota, a directory that became unwritable):
    nothing is wrong with the command, which goes on from where it stopped once the machine lets it."""


class RunOutcome(Reported):
    """How a training run ended when it did not complete; metrics.json's status records which."""


class Diverged(RunOutcome):
    """The loss became NaN or infinite; the run stopped with status "diverged"."""


class Interrupted(RunOutcome):
    """SIGINT or SIGTERM arrived: the run saved its last completed epoch and stopped."""


class Pruned(RunOutcome):
    """A hyperparameter search's pruner stopped the run after a saved epoch: it ended with status
    "pruned", its checkpoints kept and no test (lenet_fmnist.launch.search_trial)."""
