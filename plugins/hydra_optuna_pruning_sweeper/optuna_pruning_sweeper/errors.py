"""The two exceptions of the sweeper's public side.

- SweeperError: the search cannot go on (a bad hydra.sweeper value, a storage that cannot be used,
  too many failed trials). The sweeper logs its message as one paragraph and the app exits with
  status 1, without a traceback: it is the user's to read, not a bug.
- StopSearch: raised by a task when the machine, not the trial, stopped it (a full disk, an
  exceeded quota): the search stops, and resuming it asks that trial's values again.
"""

from __future__ import annotations


class SweeperError(Exception):
    """The search stops with this message, one paragraph, exit status 1, no traceback."""


class StopSearch(Exception):
    """Raise it from a task when the machine stopped the trial (e.g. a full disk): the search stops
    with its message, and `++resume=true` asks the trial's values again, keeping every other trial."""
