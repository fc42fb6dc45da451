"""A team of threads that computes a fixed list of pieces of work, each piece on one thread.

A run's numbers must not depend on how many cores it gets: on a CPU, torch splits a reduction (the
batch sum of a convolution's weight gradient, say) between its intra-op threads, and each split
rounds differently. So every thread of this team, the caller's included, computes with exactly one
intra-op thread, and the caller cuts the work into pieces fixed by the config (a batch's shards,
evaluation's chunks), never by the machine. The pieces' results come back in their order, to be
added in that order: the thread count then decides only how many pieces run at once.

torch releases Python's GIL inside its operations, so the threads compute in parallel. They wait
for work on a queue (sleeping, not spinning), so runs side by side on the same cores share them
without the collapse of spinning OpenMP teams (docs/performance.md, "Runs side by side").
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import torch

Item = TypeVar("Item")
Result = TypeVar("Result")


def compute_on_one_thread() -> None:
    """Give the calling thread (and every thread torch starts later) one intra-op thread."""
    torch.set_num_threads(1)


class _Task(Generic[Item, Result]):
    """One call of `Workers.map`: the pieces a helper thread computes, and where it reports."""

    def __init__(self, function: Callable[[Item], Result], items: Sequence[Item], results: list) -> None:
        self.function, self.items, self.results = function, items, results
        self.done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()  # one per call: a
        # helper still busy when an interrupted caller left reports to that call's queue, not the next


class Workers:
    """`count` threads that compute the pieces of `map`: the caller and count - 1 helpers.

    Piece i goes to thread i mod count, so the share of each thread is fixed, and each piece is
    computed alone on its thread: its result is the same bits whichever thread computes it, and so
    whatever `count` is. The helpers wait on their inbox between calls, until `close`.
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"a team needs at least one thread, not {count}")
        compute_on_one_thread()
        self.count = count
        self._inboxes: list[queue.SimpleQueue] = []
        self._threads: list[threading.Thread] = []
        for number in range(1, count):
            inbox: queue.SimpleQueue = queue.SimpleQueue()
            thread = threading.Thread(target=self._serve, args=(inbox,), name=f"worker-{number}", daemon=True)
            thread.start()
            self._inboxes.append(inbox)
            self._threads.append(thread)

    def map(self, function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
        """[function(item) for item in items], computed by the team; an exception in any piece is
        raised here once every thread has finished its share."""
        results: list = [None] * len(items)
        task = _Task(function, items, results)
        helpers = [inbox for number, inbox in enumerate(self._inboxes, start=1) if number < len(items)]
        for number, inbox in enumerate(helpers, start=1):
            inbox.put((task, number))
        error = self._compute(task, 0)
        for _ in helpers:
            error = task.done.get() or error
        if error is not None:
            raise error
        return results

    def _compute(self, task: _Task, first: int) -> BaseException | None:
        """This thread's share of `task`: pieces first, first + count, ...; what it raised, if anything."""
        try:
            for index in range(first, len(task.items), self.count):
                task.results[index] = task.function(task.items[index])
        except BaseException as error:  # handed to the caller, who raises it
            return error
        return None

    def close(self) -> None:
        """End the helpers once they finish what they are doing, and wait for them: a helper still
        ending when the process exits can abort it (torch's per-thread state is torn down then).
        The caller computes alone from now on."""
        for inbox in self._inboxes:
            inbox.put(None)
        for thread in self._threads:
            thread.join()
        self._inboxes, self._threads, self.count = [], [], 1

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        compute_on_one_thread()
        while (work := inbox.get()) is not None:
            task, first = work
            task.done.put(self._compute(task, first))
