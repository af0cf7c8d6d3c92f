"""One validation for every way a row gets in: live turns, dataset importers, HTTP add and import, CLI, library.

A row is checked before any write, so invalid input changes nothing; what passes here is something every
index can represent (times inside [MIN_TIME, MAX_TIME] have a POSIX timestamp on every platform, metadata is a
JSON object, text fields are strings of bounded length).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from memstream.errors import InvalidInputError

ROLES = ("user", "assistant", "system")
MAX_ID_LENGTH = 200
MAX_SPEAKER_CHARS = 200
MAX_TEXT_CHARS = 1_000_000
MAX_SUMMARY_CHARS = 100_000
MAX_METADATA_BYTES = 64_000
MIN_TIME = datetime(1900, 1, 1)
MAX_TIME = datetime(9999, 12, 30)  # a day short of datetime.max, so a time-zone shift or window end never overflows
MAX_ROW_ID = 2**63 - 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def check_id(kind: str, value: str) -> str:
    """User and conversation ids: non-empty, printable, bounded."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{kind} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInputError(f"{kind} is longer than {MAX_ID_LENGTH} characters")
    if any(ord(c) < 32 for c in value):
        raise InvalidInputError(f"{kind} contains control characters")
    return value


def check_row_id(kind: str, value: Any) -> int:
    """A database row id given by a caller: a positive integer that fits the id column."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{kind} must be an integer, got {type(value).__name__}")
    if not 0 < value <= MAX_ROW_ID:
        raise InvalidInputError(f"{kind} {value} is out of range (1 to {MAX_ROW_ID})")
    return value


def naive_utc(moment: datetime | None) -> datetime | None:
    """Store datetimes naive: aware ones are converted to UTC, naive ones kept as given."""
    if moment is None or moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(timezone.utc).replace(tzinfo=None)
    except OverflowError:
        raise InvalidInputError(f"time {moment.isoformat()} is out of range ({MIN_TIME.date()} to {MAX_TIME.date()})") from None


def check_time(field: str, value: Any, *, required: bool = False) -> datetime | None:
    """A datetime (or ISO 8601 string) inside [MIN_TIME, MAX_TIME], returned naive UTC."""
    if value is None:
        if required:
            raise InvalidInputError(f"{field} is required")
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInputError(f"{field}: invalid ISO 8601 datetime {value[:60]!r}") from None
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{field} must be an ISO 8601 datetime, got {type(value).__name__}")
    moment = naive_utc(value)
    if not MIN_TIME <= moment <= MAX_TIME:
        raise InvalidInputError(f"{field} {value.isoformat()} is out of range ({MIN_TIME.date()} to {MAX_TIME.date()})")
    return moment


def check_text(field: str, value: Any, *, limit: int, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidInputError(f"{field} is {len(value)} characters; the limit is {limit}")
    return value.replace("\x00", "")  # PostgreSQL text rejects NUL; drop it on both backends alike


def check_metadata(field: str, value: Any) -> dict[str, Any]:
    """A JSON object (None means empty), serialisable, finite numbers only, bounded in size."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"{field} must be a JSON object, got {type(value).__name__}")
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{field} is not JSON-serialisable: {str(exc)[:100]}") from None
    if len(encoded) > MAX_METADATA_BYTES:
        raise InvalidInputError(f"{field} is {len(encoded)} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    return json.loads(encoded)  # a plain copy: nothing the caller keeps can change the stored row


def check_turn_fields(role: Any, text: Any, speaker: Any, event_time: Any, metadata: Any, where: str = "turn") -> dict[str, Any]:
    """The checked, normalised fields of one turn about to be stored."""
    if role not in ROLES:
        raise InvalidInputError(f"{where}: role must be one of {', '.join(ROLES)}, got {str(role)[:40]!r}")
    return {
        "role": role,
        "text": check_text(f"{where}: text", text, limit=MAX_TEXT_CHARS),
        "speaker": check_text(f"{where}: speaker", speaker, limit=MAX_SPEAKER_CHARS, optional=True),
        "event_time": check_time(f"{where}: event time", event_time),
        "metadata": check_metadata(f"{where}: metadata", metadata),
    }



def check_sessions(sessions) -> None:
    """Every field of every session and turn, before a bulk load writes anything (a bad row in the last batch
    must not leave the first batches stored)."""
    for number, session in enumerate(sessions, 1):
        where = f"session {number}"
        check_id(f"{where}: conversation id", session.conversation_id)
        check_time(f"{where}: start", session.started_at)
        check_text(f"{where}: external id", session.external_id, limit=MAX_ID_LENGTH, optional=True)
        check_metadata(f"{where}: metadata", session.metadata)
        for position, turn in enumerate(session.turns, 1):
            check_turn_fields(turn.role, turn.text, turn.speaker, turn.event_time, turn.metadata, f"{where}, turn {position}")
