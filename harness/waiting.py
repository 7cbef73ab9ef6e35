"""Polling helper for tests against the real control plane.

Controllers (kcm, scheduler, kwok) act asynchronously, so tests assert on an
eventual state; this keeps the timeout and the last observed value in the
failure message instead of a bare `assert False`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold in time; carries the last observed value."""


def wait_for(
    probe: Callable[[], T],
    until: Callable[[T], bool],
    what: str,
    timeout: float = 60.0,
    interval: float = 0.25,
) -> T:
    """Call PROBE until UNTIL(value) is true; return that value or raise WaitTimeout."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not until(value):
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}; last value: {value!r}"[:4000])
        time.sleep(interval)
        value = probe()
    return value
