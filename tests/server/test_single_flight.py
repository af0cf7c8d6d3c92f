"""SingleFlight: concurrent catch-ups share runs, and each caller is served by a run that started after it arrived."""

from __future__ import annotations

import threading
import time

import pytest

from memstream.server.single_flight import SingleFlight


def test_concurrent_callers_share_runs_that_start_after_they_arrive():
    state = {"committed": 0}
    seen_at_start: list[int] = []

    def catch_up() -> int:
        seen_at_start.append(state["committed"])
        time.sleep(0.05)
        return seen_at_start[-1]

    flight = SingleFlight(catch_up)
    results: dict[int, tuple[int, int]] = {}

    def caller(i: int) -> None:
        state["committed"] += 1  # this caller's write, committed before it asks for the catch-up
        mine = state["committed"]
        results[i] = (mine, flight())

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
        time.sleep(0.005)
    for thread in threads:
        thread.join(10)
    assert all(covered >= mine for mine, covered in results.values())  # nobody served by a run older than its write
    assert flight.runs < 20  # shared: far fewer runs than callers


def test_an_error_reaches_every_caller_it_served_and_the_next_call_runs_again():
    calls = []

    def failing():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database down")
        return 7

    flight = SingleFlight(failing)
    with pytest.raises(RuntimeError, match="database down"):
        flight()
    assert flight() == 7
