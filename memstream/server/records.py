"""Request-level checks of import lines: the shape the import route relies on, before the store sees them.

The store's own validation (field values: times, metadata, texts) runs when the records are
stored; here only what would otherwise break the request itself: ids used as keys must be
scalars (`id`, `session`), `source_turn_ids` must be a list of them, and no value may nest deeper
than MAX_DEPTH (a deeply nested line would exhaust the interpreter's recursion further on).
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64


def depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (iterative: safe on any depth json.loads accepted)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _scalar_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def check_records(records: list[dict[str, Any]]) -> None:
    """ValueError naming the first line (1-based, counting records) whose shape is unusable."""
    for number, record in enumerate(records, 1):
        kind = record.get("type")
        if depth(record) > MAX_DEPTH + 1:
            raise ValueError(f"record {number}: values nest deeper than {MAX_DEPTH} levels")
        for name in ("id", "session"):
            if name in record and record[name] is not None and not _scalar_id(record[name]):
                raise ValueError(f"record {number} ({kind}): {name} must be an integer or a string, "
                                 f"got {type(record[name]).__name__}")
        if "source_turn_ids" in record:
            ids = record["source_turn_ids"]
            if not isinstance(ids, list) or not all(_scalar_id(i) for i in ids):
                raise ValueError(f"record {number} ({kind}): source_turn_ids must be a list of turn ids (integers or strings)")
