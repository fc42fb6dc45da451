"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
    """A mistake in the user's input: reported as one clear paragraph, never as a traceback."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: the run saved its last completed epoch and stopped."""
