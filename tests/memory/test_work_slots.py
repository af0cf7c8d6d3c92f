"""Who runs when the memory is busy (memory/slots.py), and SQLite writers queueing in-process (store.writer_lock)."""

from __future__ import annotations

import threading
import time

import pytest

from memstream.memory.model import NewTurn
from memstream.memory.slots import WorkSlots
from memstream.memory.store import MemoryStore


def waiter(slots: WorkSlots, order: list[str], name: str, continuing: bool = False) -> threading.Thread:
    def run() -> None:
        with slots.hold(continuing):
            order.append(name)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def settle() -> None:
    time.sleep(0.05)  # the waiter has reached acquire() and queued


def test_a_started_chats_step_goes_before_new_work():
    slots, order = WorkSlots(1), []
    slots.acquire()
    threads = []
    for name, continuing in (("new-1", False), ("new-2", False), ("reply", True)):
        threads.append(waiter(slots, order, name, continuing))
        settle()
    slots.release()
    for thread in threads:
        thread.join(5)
    assert order == ["reply", "new-1", "new-2"]  # a plain semaphore: whichever thread wakes first


def test_new_work_is_served_first_come_first_served():
    slots, order = WorkSlots(1), []
    slots.acquire()
    threads = []
    for i in range(6):
        threads.append(waiter(slots, order, f"new-{i}"))
        settle()
    slots.release()
    for thread in threads:
        thread.join(5)
    assert order == [f"new-{i}" for i in range(6)]


def test_a_new_call_does_not_pass_waiting_ones():
    slots, order = WorkSlots(1), []
    slots.acquire()
    first = waiter(slots, order, "waiting")
    settle()
    slots.release()  # handed to the waiter: a caller arriving now queues behind it
    with slots.hold():
        order.append("late")
    first.join(5)
    assert order == ["waiting", "late"]


def test_never_more_holders_than_slots():
    slots, lock = WorkSlots(3), threading.Lock()
    now, peak = [0], [0]

    def work(continuing: bool) -> None:
        for _ in range(50):
            with slots.hold(continuing):
                with lock:
                    now[0] += 1
                    peak[0] = max(peak[0], now[0])
                time.sleep(0.0005)
                with lock:
                    now[0] -= 1

    threads = [threading.Thread(target=work, args=(i % 2 == 0,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads)
    assert peak[0] == 3


def test_zero_slots_is_an_error():
    with pytest.raises(ValueError, match="at least 1"):
        WorkSlots(0)


def test_sqlite_writers_of_one_process_queue_on_the_store_lock(tmp_path):
    store = MemoryStore(f"sqlite:///{tmp_path / 'm.db'}")
    done = threading.Event()

    def add() -> None:
        store.add_turns("u", "c", [NewTurn("user", "hello")])
        done.set()

    with store.writer_lock:
        thread = threading.Thread(target=add)
        thread.start()
        assert not done.wait(0.3)  # waiting on the lock, not in SQLite's sleeping busy handler
    thread.join(5)
    assert done.is_set() and len(store.list_turns("u")) == 1
    store.close()
