"""Killing a writer at a chosen moment, to prove that a kill at any point of a save leaves
the old folder or the new one, never half of one.

A kill point is (os function, its n-th call, "before" or "after" it runs, whether the new
folder is in place by then). `die_at` runs `action` in a forked child that SIGKILLs itself
at that point, and waits for it to die.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest


def die_at(point: tuple, action: Callable[[], object]) -> None:
    function, nth, when, _ = point
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            real, calls = getattr(os, function), [0]

            def hook(*args):
                calls[0] += 1
                if calls[0] == nth and when == "before":
                    os.kill(os.getpid(), signal.SIGKILL)
                result = real(*args)
                if calls[0] == nth and when == "after":
                    os.kill(os.getpid(), signal.SIGKILL)
                return result

            setattr(os, function, hook)
            action()
        finally:
            os._exit(0)
    deadline = time.monotonic() + 60
    while not (done := os.waitpid(pid, os.WNOHANG))[0]:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the writing child hung")
        time.sleep(0.01)
    status = done[1]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
