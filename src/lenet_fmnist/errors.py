"""The exceptions that end a command with a message instead of a traceback (cli.py reports them)."""


class UserError(Exception):
    """A mistake in the user's input: reported as one clear paragraph, never as a traceback."""


class Diverged(UserError):
    """The loss became NaN or infinite; the run stopped with status "diverged"."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: the run saved its last completed epoch and stopped."""


class Pruned(Exception):
    """A hyperparameter search's pruner stopped the run after a saved epoch: it ended with status
    "pruned", its checkpoints kept and no test (lenet_fmnist.search)."""
