"""The server's model worker: requests wait on a bounded queue, one thread decodes them in
batches.

Beam search over 8 sentences at once costs far less than 8 searches one after the other
(the matrix products grow, the per-step Python work does not), so the server gathers
what many clients ask and decodes it together:

    handler threads                      the worker (one thread, the only one touching models)
    submit(jobs) -> queue (bounded)  ->  take the oldest job and all that wait behind it
    wait(jobs, deadline, gone)           (up to MAX_ROWS beam rows), wait up to GATHER_S for
                                         the clients it expects back, drop the jobs of
                                         clients that have gone, group the rest by `key`
                                         (checkpoint, beam, n_best), and call
                                         `decode(key, jobs)` once per group

Whom it expects: the clients of the batch it just answered (a client that got its answer
tends to ask again at once) and those that were waiting meanwhile. Under load that turns
batches of half the clients, alternating, into batches of all of them; a lone client is
never kept waiting, since it is all the worker expects.

A job is one text of a request. A full queue refuses the whole request at once (Busy,
which the server answers 503 with Retry-After): waiting without bound is what lets a
server be knocked over. A client that hangs up, or a request past its deadline, has its
jobs cancelled: the worker skips them rather than decode for nobody.

`decode` is the service's (service.py): what a group means, which model, which settings.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Hashable

GATHER_S = 0.01  # the longest the worker waits for the clients it expects back
MAX_ROWS = 256  # beam rows gathered into one batch (texts x beam)
MAX_QUEUED = 512  # texts waiting at once; one more request is refused (503)
POLL_S = 0.05  # how often a waiting handler asks whether its client is still there


class Busy(Exception):
    """The queue is full, or the request's deadline passed before its turn: try later."""


@dataclasses.dataclass(eq=False)
class Job:
    """One text to decode. `key` says which jobs may share a batched call; `rows` is the
    beam rows it keeps busy. The worker fills `answer` or `error`, then sets `done`."""
    key: Hashable
    source: object
    rows: int
    answer: object = None
    error: Exception | None = None
    cancelled: bool = False
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


class Batcher:
    """The queue and its worker thread; `close` stops taking work and ends the thread."""

    def __init__(self, decode: Callable[[Hashable, list[Job]], list], gather_s: float = GATHER_S,
                 max_rows: int = MAX_ROWS, max_queued: int = MAX_QUEUED) -> None:
        self.decode, self.gather_s, self.max_rows = decode, gather_s, max_rows
        self.queue: queue.Queue[Job | None] = queue.Queue(max_queued)
        self.lock = threading.Lock()  # submit puts a request's jobs in together, or none
        self.closed = False
        self.expected = 1  # texts the next batch waits for (up to gather_s): see above
        self.thread = threading.Thread(target=self._work, name="model-worker", daemon=True)
        self.thread.start()

    def submit(self, jobs: list[Job]) -> None:
        with self.lock:
            if self.closed:
                raise Busy("the server is shutting down")
            if self.queue.maxsize - self.queue.qsize() < len(jobs):
                raise Busy(f"{self.queue.qsize()} texts are waiting to be translated; try again")
            for job in jobs:
                self.queue.put_nowait(job)

    def wait(self, jobs: list[Job], deadline: float, gone: Callable[[], bool] = lambda: False
             ) -> list:
        """The jobs' answers in order, once all are done. Past `deadline` (time.monotonic)
        or once `gone()` says the client left, the jobs are cancelled and Busy (deadline)
        or ConnectionError (gone) raised. A job's error is raised as it is."""
        for job in jobs:
            while not job.done.wait(POLL_S):
                left = gone()
                if left or time.monotonic() > deadline:
                    for other in jobs:
                        other.cancelled = True
                    if left:
                        raise ConnectionError("the client has gone")
                    raise Busy("the server is too busy to translate this in time; try again")
            if job.error is not None:
                raise job.error
        return [job.answer for job in jobs]

    def close(self, timeout: float) -> None:
        """Refuse new work, let the worker finish what it is decoding (up to `timeout`
        seconds), and cancel what still waits."""
        with self.lock:
            self.closed = True
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.error = Busy("the server is shutting down")
                job.done.set()
        self.queue.put(None)  # wakes the worker, which then stops
        self.thread.join(timeout)

    # --- the worker ---------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            groups: dict[Hashable, list[Job]] = {}
            for job in batch:
                if job.cancelled:  # its client has gone: nobody would read the answer
                    job.error = Busy("cancelled")
                    job.done.set()
                else:
                    groups.setdefault(job.key, []).append(job)
            for key, jobs in groups.items():
                self._decode(key, jobs)
            self.expected = len(batch) + self.queue.qsize()

    def _gather(self) -> list[Job] | None:
        """The next batch: the oldest job and those queued behind it, then what arrives
        within `gather_s` until `expected` texts are in, while the batch has room; None
        once the batcher is closed."""
        first = self.queue.get()
        if first is None:
            return None
        batch, rows = [first], first.rows
        until = time.monotonic() + self.gather_s
        while rows < self.max_rows:
            try:
                if len(batch) >= self.expected:
                    job = self.queue.get_nowait()
                else:
                    job = self.queue.get(timeout=max(until - time.monotonic(), 0))
            except queue.Empty:
                break
            if job is None:  # closing: decode what was gathered, then stop
                self.queue.put(None)
                break
            batch.append(job)
            rows += job.rows
        return batch

    def _decode(self, key: Hashable, jobs: list[Job]) -> None:
        try:
            answers = self.decode(key, jobs)
        except Exception as error:  # handed to every waiting handler, which answers it
            for job in jobs:
                job.error = error
                job.done.set()
            return
        for job, answer in zip(jobs, answers):
            job.answer = answer
            job.done.set()
