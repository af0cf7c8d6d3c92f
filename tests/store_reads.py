"""Counting what the store reads, for tests that per-turn work does not grow with the history."""

from __future__ import annotations


def rows_read(store, work):
    """(what `work` returned, rows the store handed back from its reads meanwhile)."""
    count = 0
    original = store._read

    def counting(statement, params=None):
        nonlocal count
        rows = original(statement, params)
        count += len(rows)
        return rows

    store._read = counting
    try:
        return work(), count
    finally:
        store._read = original
