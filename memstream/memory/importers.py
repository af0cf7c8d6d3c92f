"""Importers for conversation histories: LoCoMo, LongMemEval and plain JSONL chat logs.

Each parser returns NewSession objects (nothing is written) and raises ImportFormatError
naming the file and field on malformed input, so a bad file changes nothing.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable

from dateutil import parser as date_parser

from memstream.errors import InvalidInputError
from memstream.memory.validate import check_sessions
from memstream.memory.model import NewSession, NewTurn
from memstream.memory.store import naive_utc

FORMATS = ("auto", "locomo", "longmemeval", "jsonl")
SESSION_GAP = timedelta(hours=4)  # a JSONL log starts a new session after this much silence


class ImportFormatError(ValueError):
    """A dataset file is malformed; the message names the file and the field."""


def storable(sessions: list[NewSession], source: str) -> list[NewSession]:
    """What an importer returns passes the store's own validation (memory/validate.py), or the file is refused
    here, naming it, instead of failing later in the store."""
    try:
        check_sessions(sessions)
    except InvalidInputError as exc:
        raise ImportFormatError(f"{source}: {exc}") from None
    return sessions


def parse_locomo_time(value: str) -> datetime:
    """LoCoMo: '1:56 pm on 8 May, 2023'."""
    try:
        clock, _, day = value.partition(" on ")
        return datetime.strptime(f"{day.strip()} {clock.strip().upper()}", "%d %B, %Y %I:%M %p")
    except ValueError:
        return _fallback_time(value)


def parse_longmemeval_time(value: str) -> datetime:
    """LongMemEval: '2023/05/20 (Sat) 02:21'."""
    try:
        date_part, _, rest = value.partition(" (")
        clock = rest.partition(") ")[2]
        return datetime.strptime(f"{date_part} {clock}", "%Y/%m/%d %H:%M")
    except ValueError:
        return _fallback_time(value)


def _fallback_time(value: str) -> datetime:
    try:
        parsed = date_parser.parse(value.replace(" on ", " "), fuzzy=True)
    except (ValueError, OverflowError, TypeError) as exc:
        raise ValueError(f"unrecognised date {value!r}") from exc
    return parsed.replace(tzinfo=None) if parsed.tzinfo is None else parsed


def detect_format(path: Path, data: Any = None) -> str:
    if path.suffix == ".jsonl":
        return "jsonl"
    if data is None:
        data = load_json(path)
    if isinstance(data, dict):
        data = [data]
    if isinstance(data, list) and data and isinstance(data[0], dict):
        first = data[0]
        if "conversation" in first:
            return "locomo"
        if "haystack_sessions" in first:
            return "longmemeval"
        if "role" in first and "content" in first:
            return "jsonl"
    raise ImportFormatError(
        f"{path}: cannot detect the format (expected LoCoMo samples with 'conversation', "
        "LongMemEval questions with 'haystack_sessions', or JSONL lines with 'role' and 'content'); pass --format"
    )


def load_file(path: str | Path, fmt: str = "auto") -> list[NewSession]:
    """Parse a history file into sessions. Raises FileNotFoundError or ImportFormatError."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ImportFormatError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ImportFormatError(f"{path}: not a regular file")
    if fmt == "jsonl" or (fmt == "auto" and path.suffix == ".jsonl"):
        return parse_jsonl(path.read_text(encoding="utf-8", errors="strict").splitlines(), source=str(path))
    data = load_json(path)
    if fmt == "auto":
        fmt = detect_format(path, data)
    if fmt == "locomo":
        return parse_locomo(data, source=str(path))
    if fmt == "longmemeval":
        return parse_longmemeval(data, source=str(path))
    return parse_jsonl([json.dumps(item) for item in data], source=str(path))


def load_json(path: str | Path) -> Any:
    """A dataset file's JSON; FileNotFoundError or ImportFormatError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{path}: not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc


def require_field(obj: Any, key: str, where: str, kind: type | tuple = object) -> Any:
    if not isinstance(obj, dict):
        raise ImportFormatError(f"{where}: expected an object")
    if key not in obj:
        raise ImportFormatError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind):
        raise ImportFormatError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def locomo_session_numbers(conversation: dict) -> list[int]:
    numbers = []
    for key in conversation:
        if key.startswith("session_") and key[8:].isdigit():
            numbers.append(int(key[8:]))
    return sorted(numbers)


def parse_locomo(data: Any, source: str = "locomo") -> list[NewSession]:
    samples = data if isinstance(data, list) else [data]
    sessions: list[NewSession] = []
    for index, sample in enumerate(samples):
        where = f"{source}: sample {index}"
        conversation = require_field(sample, "conversation", where, dict)
        sample_id = str(sample.get("sample_id") or f"locomo-{index}")
        where = f"{source}: sample {sample_id}"
        speaker_a = conversation.get("speaker_a")
        for number in locomo_session_numbers(conversation):
            key = f"session_{number}"
            date_key = f"{key}_date_time"
            turns = require_field(conversation, key, where, list)
            date_text = require_field(conversation, date_key, where, str)
            try:
                started_at = parse_locomo_time(date_text)
            except ValueError as exc:
                raise ImportFormatError(f"{where}: field {date_key!r}: {exc}") from exc
            new_turns = []
            for position, turn in enumerate(turns):
                turn_where = f"{where}, {key}[{position}]"
                speaker = require_field(turn, "speaker", turn_where, str)
                text = require_field(turn, "text", turn_where, str)
                metadata: dict[str, Any] = {"source_id": require_field(turn, "dia_id", turn_where, str)}
                caption = turn.get("blip_caption")
                if caption:
                    metadata["blip_caption"] = caption
                    metadata["img_url"] = turn.get("img_url")
                    # Images matter to LoCoMo questions; the caption is the only text we have of them.
                    text = f"{text} [shares a photo: {caption}]"
                new_turns.append(
                    NewTurn(
                        role="user" if speaker == speaker_a or speaker_a is None else "assistant",
                        text=text,
                        speaker=speaker,
                        event_time=started_at,
                        metadata=metadata,
                    )
                )
            sessions.append(
                NewSession(
                    conversation_id=sample_id,
                    turns=new_turns,
                    started_at=started_at,
                    external_id=key,
                    metadata={"source": "locomo", "sample_id": sample_id, "session": number},
                )
            )
    return storable(sessions, source)


def parse_longmemeval(data: Any, source: str = "longmemeval") -> list[NewSession]:
    questions = data if isinstance(data, list) else [data]
    sessions: list[NewSession] = []
    for index, question in enumerate(questions):
        where = f"{source}: question {index}"
        question_id = str(require_field(question, "question_id", where, (str, int)))
        where = f"{source}: question {question_id}"
        haystack = require_field(question, "haystack_sessions", where, list)
        session_ids = require_field(question, "haystack_session_ids", where, list)
        dates = require_field(question, "haystack_dates", where, list)
        if not len(haystack) == len(session_ids) == len(dates):
            raise ImportFormatError(
                f"{where}: haystack_sessions, haystack_session_ids and haystack_dates have different lengths "
                f"({len(haystack)}, {len(session_ids)}, {len(dates)})"
            )
        answer_ids = question.get("answer_session_ids") or []
        if not isinstance(answer_ids, list):
            raise ImportFormatError(f"{where}: field 'answer_session_ids' has the wrong type ({type(answer_ids).__name__})")
        answer_sessions = {str(a) for a in answer_ids}  # str: ids may be any JSON value, and lists are unhashable
        for session_index, (turns, session_id, date_text) in enumerate(zip(haystack, session_ids, dates)):
            try:
                started_at = parse_longmemeval_time(str(date_text))
            except ValueError as exc:
                raise ImportFormatError(f"{where}: haystack_dates[{session_index}]: {exc}") from exc
            if not isinstance(turns, list):
                raise ImportFormatError(f"{where}: haystack_sessions[{session_index}] is not a list of turns")
            new_turns = []
            for position, turn in enumerate(turns):
                turn_where = f"{where}, haystack_sessions[{session_index}][{position}]"
                role = require_field(turn, "role", turn_where, str)
                if role not in ("user", "assistant", "system"):
                    raise ImportFormatError(f"{turn_where}: unknown role {role!r}")
                content = require_field(turn, "content", turn_where, str)
                metadata = {"source_id": f"{session_id}:{position}", "has_answer": bool(turn.get("has_answer", False))}
                # A second apart per turn keeps event_time monotonic within the session.
                new_turns.append(NewTurn(role, content, role, started_at + timedelta(seconds=position), metadata))
            sessions.append(
                NewSession(
                    conversation_id=question_id,
                    turns=new_turns,
                    started_at=started_at,
                    external_id=str(session_id),
                    metadata={"source": "longmemeval", "is_answer_session": str(session_id) in answer_sessions},
                )
            )
    return storable(sessions, source)


def parse_jsonl(lines: Iterable[str], source: str = "jsonl", default_conversation: str = "default") -> list[NewSession]:
    sessions: list[NewSession] = []
    current: dict[str, NewSession] = {}
    last_time: dict[str, datetime] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}: line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportFormatError(f"{where}: invalid JSON: {exc.msg}") from exc
        role = require_field(record, "role", where, str)
        if role not in ("user", "assistant", "system"):
            raise ImportFormatError(f"{where}: unknown role {role!r}")
        content = require_field(record, "content", where, str)
        conversation = str(record.get("conversation") or default_conversation)
        event_time = None
        if record.get("time") is not None:
            try:
                event_time = naive_utc(_fallback_time(str(record["time"])))
            except ValueError as exc:
                raise ImportFormatError(f"{where}: field 'time': {exc}") from exc
        session = current.get(conversation)
        previous = last_time.get(conversation)
        if session is None or (event_time and previous and event_time - previous > SESSION_GAP):
            session = NewSession(conversation_id=conversation, turns=[], started_at=event_time, metadata={"source": "jsonl"})
            sessions.append(session)
            current[conversation] = session
        if event_time:
            last_time[conversation] = event_time
        metadata = {"source_id": f"line:{number}"}
        session.turns.append(NewTurn(role, content, record.get("speaker") or role, event_time, metadata))
    return storable(sessions, source)
