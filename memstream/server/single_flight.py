"""`SingleFlight`: concurrent callers of an idempotent catch-up share runs instead of each running it.

A caller needs a run that *starts after it arrived* (so everything committed before its call is
covered). If a run is in progress, the caller waits for it and for the next one, which every caller
waiting at that moment shares. N concurrent callers then cost about two runs, not N, and none sees
less than it would have seen running alone. A run's exception is raised to every caller it served.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self, fn: Callable[[], T]):
        self.fn = fn
        self._cond = threading.Condition()
        self._started = 0  # runs started so far
        self._finished = 0  # runs finished so far (the latest one's outcome below)
        self._running = False
        self._outcome: tuple[T | None, BaseException | None] = (None, None)
        self.runs = 0

    def __call__(self) -> T:
        with self._cond:
            need = self._started + 1  # the first run to start from now on
            while self._finished < need:
                if self._running:
                    self._cond.wait()
                    continue
                self._started += 1
                self._running = True
                self._cond.release()
                try:
                    result, error = self.fn(), None
                except BaseException as exc:  # handed to every caller this run serves, below
                    result, error = None, exc
                finally:
                    self._cond.acquire()
                    self._running = False
                self.runs += 1
                self._finished = self._started
                self._outcome = (result, error)
                self._cond.notify_all()
            result, error = self._outcome
        if error is not None:
            raise error
        return result  # type: ignore[return-value]
