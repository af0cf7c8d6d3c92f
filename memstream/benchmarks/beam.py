"""BEAM ("Beyond a Million Tokens") chats and probing questions, as the runner reads them.

One chat is a folder holding `chat.json` (a list of batches; each batch has `batch_number` and `turns`, a list of
exchanges, each a list of messages `{role, id, content, time_anchor?}`; the first message of a batch carries the
batch's date as "March-15-2024") and `probing_questions/probing_questions.json` (ability -> list of questions, each
with `question`, an ideal answer under an ability-specific key, a `rubric` list, and for all abilities but abstention
`source_chat_ids`: a list of message ids, or a dict of such lists, e.g. {"first_statement": [24], ...}).

Each chat becomes one user namespace ("beam:<chat id>"), each batch one session. Message ids are the evidence ids
(`source_id` = str(id)). Loading is strict: a malformed file raises DatasetError naming the file, the item and the
field, and nothing is returned for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from memstream.benchmarks.datasets import DatasetError
from memstream.memory.importers import load_json
from memstream.memory.model import NewSession, NewTurn

ABILITIES = (
    "abstention",
    "contradiction_resolution",
    "event_ordering",
    "information_extraction",
    "instruction_following",
    "knowledge_update",
    "multi_session_reasoning",
    "preference_following",
    "summarization",
    "temporal_reasoning",
)
ANSWER_KEYS = ("answer", "ideal_answer", "ideal_response", "ideal_summary")
ROLES = ("user", "assistant")
CHAT_FILE = "chat.json"
QUESTIONS_FILE = Path("probing_questions") / "probing_questions.json"
ANCHOR_FORMAT = "%B-%d-%Y"
TURN_STEP = timedelta(minutes=1)
"""Messages of a batch are dated from its anchor, one minute apart, so their order survives time sorting."""
BEAM_ASK_DELAY = timedelta(days=1)
# BEAM's generator appends "->-> 1,2" (its own plan indices) to user messages; they are not part of what was said.
_PLAN_MARKER = re.compile(r"\s*->->\s*[\d,\s]*$")


@dataclass
class BeamQuestion:
    chat_id: str
    ability: str
    index: int
    question: str
    answer: str | None
    """The ideal answer (None for instruction / preference following, judged on the rubric alone)."""
    rubric: list[str]
    evidence: list[str] = field(default_factory=list)
    """Message ids (as strings) of `source_chat_ids`, flattened; empty for abstention."""
    evidence_groups: dict[str, list[str]] = field(default_factory=dict)
    """`source_chat_ids` when it is a dict (original / updated info, first / second statement, ...)."""

    @property
    def question_id(self) -> str:
        return f"{self.chat_id}:{self.ability}:{self.index}"

    @property
    def namespace(self) -> str:
        return beam_user(self.chat_id)


@dataclass
class BeamChat:
    chat_id: str
    sessions: list[NewSession]
    questions: list[BeamQuestion]

    @property
    def asked_at(self) -> datetime:
        """Questions are asked the day after the last batch's date: all of the chat is then in the past."""
        last = max(s.started_at for s in self.sessions if s.started_at)
        return datetime(last.year, last.month, last.day) + BEAM_ASK_DELAY

    @property
    def message_count(self) -> int:
        return sum(len(s.turns) for s in self.sessions)


def beam_user(chat_id: str) -> str:
    return f"beam:{chat_id}"


def _where(source: str, *parts: str) -> str:
    return ": ".join((source,) + parts)


def _need(item: Any, key: str, where: str, kind: type | tuple) -> Any:
    if not isinstance(item, dict):
        raise DatasetError(f"{where}: expected an object, got {type(item).__name__}")
    if key not in item:
        raise DatasetError(f"{where}: missing field {key!r}")
    value = item[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DatasetError(f"{where}: field {key!r} should be {names}, got {type(value).__name__}")
    return value


def parse_anchor(value: str, where: str) -> datetime:
    try:
        return datetime.strptime(value.strip(), ANCHOR_FORMAT)
    except ValueError:
        raise DatasetError(f"{where}: field 'time_anchor' is {value!r}, expected a date like 'March-15-2024'") from None


def parse_chat(data: Any, chat_id: str, source: str = CHAT_FILE) -> list[NewSession]:
    """The batches of one chat as sessions; message ids must be unique."""
    if not isinstance(data, list) or not data:
        raise DatasetError(f"{source}: expected a non-empty list of batches")
    sessions: list[NewSession] = []
    seen: set[int] = set()
    anchor: datetime | None = None
    for number, batch in enumerate(data):
        where = _where(source, f"batch {number}")
        exchanges = _need(batch, "turns", where, list)
        batch_anchor = batch.get("time_anchor")
        turns: list[NewTurn] = []
        for e, exchange in enumerate(exchanges):
            if not isinstance(exchange, list):
                raise DatasetError(f"{where}, turns[{e}]: expected a list of messages, got {type(exchange).__name__}")
            for m, message in enumerate(exchange):
                at = f"{where}, turns[{e}][{m}]"
                role = _need(message, "role", at, str)
                if role not in ROLES:
                    raise DatasetError(f"{at}: field 'role' is {role!r}, expected user or assistant")
                message_id = _need(message, "id", at, int)
                if message_id in seen:
                    raise DatasetError(f"{at}: field 'id' {message_id} appears twice in the chat")
                seen.add(message_id)
                content = _need(message, "content", at, str)
                if message.get("time_anchor") and not turns:
                    batch_anchor = batch_anchor or message["time_anchor"]
                if batch_anchor is not None and not isinstance(batch_anchor, str):
                    raise DatasetError(f"{at}: field 'time_anchor' should be str, got {type(batch_anchor).__name__}")
                if not turns:
                    if batch_anchor:
                        anchor = parse_anchor(batch_anchor, at)
                    elif anchor is None:
                        raise DatasetError(f"{at}: missing field 'time_anchor' (the first batch must be dated)")
                    else:
                        anchor = anchor + timedelta(days=1)  # an undated batch follows the previous one
                text = _PLAN_MARKER.sub("", content).strip() or content
                turns.append(
                    NewTurn(role, text, role, anchor + TURN_STEP * len(turns), {"source_id": str(message_id), "beam_batch": number})
                )
        if turns:
            sessions.append(NewSession(chat_id, turns, started_at=turns[0].event_time, external_id=f"batch-{batch.get('batch_number', number)}"))
    if not sessions:
        raise DatasetError(f"{source}: the chat has no messages")
    return sessions


def _ids(value: Any, where: str) -> list[str]:
    """Message ids of a `source_chat_ids` list; an inner list groups the ids of one item (event ordering)."""
    if not isinstance(value, list):
        raise DatasetError(f"{where}: field 'source_chat_ids' should hold lists of message ids (integers)")
    out: list[str] = []
    for entry in value:
        group = entry if isinstance(entry, list) else [entry]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in group):
            raise DatasetError(f"{where}: field 'source_chat_ids' should hold lists of message ids (integers), got {entry!r}")
        out.extend(str(v) for v in group)
    return out


def parse_questions(data: Any, chat_id: str, known_ids: set[str], source: str = str(QUESTIONS_FILE)) -> list[BeamQuestion]:
    if not isinstance(data, dict):
        raise DatasetError(f"{source}: expected an object from ability to a list of questions")
    questions: list[BeamQuestion] = []
    for ability, items in data.items():
        if ability not in ABILITIES:
            raise DatasetError(f"{source}: unknown ability {ability!r} (expected one of {', '.join(ABILITIES)})")
        if not isinstance(items, list):
            raise DatasetError(f"{source}: {ability}: expected a list of questions")
        for index, item in enumerate(items):
            where = _where(source, f"{ability}[{index}]")
            question = _need(item, "question", where, str)
            rubric = _need(item, "rubric", where, list)
            if not all(isinstance(r, str) for r in rubric):
                raise DatasetError(f"{where}: field 'rubric' should be a list of strings")
            answer = next((item[k] for k in ANSWER_KEYS if isinstance(item.get(k), str)), None)
            groups: dict[str, list[str]] = {}
            evidence: list[str] = []
            raw = item.get("source_chat_ids")
            if ability != "abstention":
                if raw is None:
                    raise DatasetError(f"{where}: missing field 'source_chat_ids'")
                if isinstance(raw, dict):
                    groups = {str(k): _ids(v, where) for k, v in raw.items()}
                    evidence = [i for ids in groups.values() for i in ids]
                else:
                    evidence = _ids(raw, where)
                unknown = sorted(set(evidence) - known_ids, key=int)
                if unknown:
                    raise DatasetError(f"{where}: field 'source_chat_ids' names message id(s) {', '.join(unknown)} not in the chat")
            questions.append(BeamQuestion(chat_id, ability, index, question, answer, list(rubric), list(dict.fromkeys(evidence)), groups))
    return questions


def load_chat(folder: str | Path, chat_id: str | None = None) -> BeamChat:
    folder = Path(folder)
    chat_id = chat_id or folder.name
    chat_path = folder / CHAT_FILE
    questions_path = folder / QUESTIONS_FILE
    for path in (chat_path, questions_path):
        if not path.exists():
            raise DatasetError(f"{path}: no such file (a BEAM chat folder holds {CHAT_FILE} and {QUESTIONS_FILE})")
    sessions = parse_chat(load_json(chat_path), chat_id, source=f"{chat_id}/{CHAT_FILE}")
    known = {t.metadata["source_id"] for s in sessions for t in s.turns}
    questions = parse_questions(load_json(questions_path), chat_id, known, source=f"{chat_id}/{QUESTIONS_FILE}")
    return BeamChat(chat_id, sessions, questions)


def find_chats(root: str | Path) -> list[Path]:
    """Chat folders under `root` (the folder itself, a tier folder like chats/100K, or the dataset root)."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if (root / CHAT_FILE).exists():
        return [root]
    found = sorted({p.parent for p in root.rglob(CHAT_FILE)}, key=lambda p: (len(p.parts), _natural(p)))
    if not found:
        raise DatasetError(f"{root}: no BEAM chat found (no {CHAT_FILE} under it)")
    return found


def _natural(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in path.parts]


def load_beam(root: str | Path, limit: int | None = None) -> list[BeamChat]:
    """Every chat under `root`, with ids relative to it ("11", or "100K/11" from the dataset root)."""
    root = Path(root)
    folders = find_chats(root)[:limit] if limit else find_chats(root)
    chats = []
    for folder in folders:
        chat_id = folder.name if folder == root else str(folder.relative_to(root)).replace("\\", "/")
        chats.append(load_chat(folder, chat_id if folder != root else folder.name))
    return chats
