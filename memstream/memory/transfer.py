"""Export and import of one user's memory as JSON-ready records (JSONL on the wire).

Records: {"type": "session"|"turn"|"fact", ...}, sessions before their turns, facts last (see `export_records`).
Every record is validated before the one transaction that writes them, so a bad line (a list where an id goes,
an out-of-range time, metadata that is not an object) is rejected with its line number and nothing is stored.
Ids are remapped: the importing database assigns its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from memstream.errors import InvalidInputError
from memstream.memory import schema
from memstream.memory.model import NewTurn
from memstream.memory.validate import (
    MAX_ID_LENGTH,
    MAX_SUMMARY_CHARS,
    check_id,
    check_metadata,
    check_text,
    check_time,
    check_turn_fields,
    utcnow,
)

if TYPE_CHECKING:
    from memstream.memory.store import MemoryStore

RECORD_TYPES = ("session", "turn", "fact")
MAX_RECORDS = 1_000_000


def export_records(store: "MemoryStore", user_id: str) -> Iterator[dict[str, Any]]:
    """One user's memory as records: each session, then its turns in order; then the facts."""
    for session in store.sessions(user_id):
        yield {
            "type": "session",
            "id": session.id,
            "conversation_id": session.conversation_id,
            "external_id": session.external_id,
            "started_at": session.started_at.isoformat() if session.started_at else None,
            "summary": session.summary,
            "metadata": session.metadata,
        }
        for turn in store.list_turns(user_id, session_id=session.id):
            yield {
                "type": "turn",
                "id": turn.id,
                "session": session.id,
                "conversation_id": turn.conversation_id,
                "role": turn.role,
                "speaker": turn.speaker,
                "text": turn.text,
                "event_time": turn.event_time.isoformat(),
                "pinned": turn.pinned,
                "metadata": turn.metadata,
            }
    for fact in store.get_facts(user_id):
        yield {
            "type": "fact",
            "id": fact.id,
            "conversation_id": fact.conversation_id,
            "subject": fact.subject,
            "text": fact.text,
            "source_turn_ids": fact.source_turn_ids,
            "valid_from": fact.valid_from.isoformat(),
            "valid_to": fact.valid_to.isoformat() if fact.valid_to else None,
            "metadata": fact.metadata,
        }


def _ref(where: str, field: str, value: Any, required: bool = True) -> int | str | None:
    """A record's own id or a reference to one: an integer or a short string (never a list or an object)."""
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidInputError(f"{where}: {field} must be an integer or a string, got {type(value).__name__}")
    if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
        raise InvalidInputError(f"{where}: {field} is longer than {MAX_ID_LENGTH} characters")
    return value


def check_record(number: int, record: Any, sessions: set, turns: set) -> dict[str, Any]:
    """The checked, normalised form of record `number` (1-based); `sessions`/`turns` are the ids seen so far."""
    if not isinstance(record, dict) or record.get("type") not in RECORD_TYPES:
        raise InvalidInputError(f"record {number}: expected an object with type session, turn or fact")
    kind = record["type"]
    where = f"record {number} ({kind})"

    def need(field: str) -> Any:
        if field not in record:
            raise InvalidInputError(f"{where}: missing field {field!r}")
        return record[field]

    conversation = None
    if kind != "fact" or record.get("conversation_id") is not None:
        given = need("conversation_id")  # names the record itself; check_id does not
        try:
            conversation = check_id("conversation id", given)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
    if kind == "session":
        own = _ref(where, "id", need("id"))
        sessions.add(own)
        return {
            "type": kind, "id": own, "conversation_id": conversation,
            "external_id": check_text(f"{where}: external_id", record.get("external_id"), limit=MAX_ID_LENGTH, optional=True),
            "started_at": check_time(f"{where}: started_at", record.get("started_at")),
            "summary": check_text(f"{where}: summary", record.get("summary"), limit=MAX_SUMMARY_CHARS, optional=True),
            "metadata": check_metadata(f"{where}: metadata", record.get("metadata")),
        }
    if kind == "turn":
        session = _ref(where, "session", need("session"))
        if session not in sessions:
            raise InvalidInputError(f"{where}: refers to session {session!r}, which no earlier record defines")
        own = _ref(where, "id", record.get("id"), required=False)
        if own is not None:
            turns.add(own)
        pinned = record.get("pinned", False)
        if not isinstance(pinned, bool):
            raise InvalidInputError(f"{where}: pinned must be true or false")
        fields = check_turn_fields(need("role"), need("text"), record.get("speaker"), need("event_time"), record.get("metadata"), where)
        if fields["event_time"] is None:
            raise InvalidInputError(f"{where}: event_time is required")
        return {"type": kind, "id": own, "session": session, "conversation_id": conversation, "pinned": pinned, **fields}
    sources = record.get("source_turn_ids", [])
    if not isinstance(sources, list):
        raise InvalidInputError(f"{where}: source_turn_ids must be a list of turn ids, got {type(sources).__name__}")
    subject = check_text(f"{where}: subject", need("subject"), limit=300).strip().lower()
    text = check_text(f"{where}: text", need("text"), limit=MAX_SUMMARY_CHARS).strip()
    if not subject or not text:
        raise InvalidInputError(f"{where}: a fact needs a non-empty subject and text")
    return {
        "type": kind, "conversation_id": conversation, "subject": subject, "text": text,
        "source_turn_ids": [_ref(where, "source_turn_ids item", s) for s in sources],
        "valid_from": check_time(f"{where}: valid_from", need("valid_from"), required=True),
        "valid_to": check_time(f"{where}: valid_to", record.get("valid_to")),
        "metadata": check_metadata(f"{where}: metadata", record.get("metadata")),
    }


def check_records(records: Iterable[Any]) -> list[dict[str, Any]]:
    sessions: set = set()
    turns: set = set()
    checked = []
    for number, record in enumerate(records, 1):
        if number > MAX_RECORDS:
            raise InvalidInputError(f"more than {MAX_RECORDS} records in one import: split the file")
        checked.append(check_record(number, record, sessions, turns))
    return checked


def import_records(store: "MemoryStore", user_id: str, records: Iterable[Any], also=None) -> dict[str, int]:
    """Load exported records into `user_id` in one transaction (all or nothing; ids remapped)."""
    check_id("user id", user_id)
    checked = check_records(records)

    def work(conn: Connection) -> dict[str, int]:
        now = utcnow()
        session_map: dict[Any, int] = {}
        turn_map: dict[Any, int] = {}
        positions: dict[int, int] = {}
        counts = {"sessions": 0, "turns": 0, "facts": 0}
        for record in checked:
            if record["type"] == "session":
                session_map[record["id"]] = conn.execute(
                    insert(schema.sessions).values(
                        user_id=user_id, conversation_id=record["conversation_id"], external_id=record["external_id"],
                        started_at=record["started_at"], summary=record["summary"], metadata=record["metadata"],
                    )
                ).inserted_primary_key[0]
                counts["sessions"] += 1
            elif record["type"] == "turn":
                session_id = session_map[record["session"]]
                position = positions.get(session_id, 0)
                positions[session_id] = position + 1
                row = store._turn_row(
                    user_id, record["conversation_id"], session_id, position,
                    NewTurn(record["role"], record["text"], record["speaker"], record["event_time"], record["metadata"]), now, now,
                )
                row["pinned"] = record["pinned"]
                turn_map[record["id"]] = store._insert_turn_rows(conn, [row])[0]
                counts["turns"] += 1
            else:
                conn.execute(
                    insert(schema.facts).values(
                        user_id=user_id, conversation_id=record["conversation_id"], subject=record["subject"], text=record["text"],
                        source_turn_ids=[turn_map[i] for i in record["source_turn_ids"] if i in turn_map],
                        valid_from=record["valid_from"], valid_to=record["valid_to"], created_at=now, metadata=record["metadata"],
                    )
                )
                counts["facts"] += 1
        return counts

    return store._retry(work, also)
