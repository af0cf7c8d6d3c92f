"""One user's indexes: dense (FAISS) and lexical (BM25) per key kind, plus the turn table the filters need."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace
from datetime import datetime
from typing import Sequence

import numpy as np

from memstream.memory.model import Turn
from memstream.retrieval import keys as keymod
from memstream.retrieval.event_windows import EventWindows, merge_turn_ids
from memstream.retrieval.lexical import LexicalIndex, Tokenizer
from memstream.retrieval.timeparse import TimeWindow
from memstream.retrieval.vector_index import VectorIndex

SESSION_TAILS = 8
"""Sessions per user whose tails are kept (the newest used): a user's live conversations, each a session that only
grows; a few kilobytes each."""


class UserIndex:
    """Dense and lexical indexes per key kind for one user, plus the turn table
    (event time, conversation) the time window and conversation filters need.

    `lock`: held by a search while it ranks, and by every change to this index (whose writers also hold the
    retriever's lock): a search waits only for changes to its own user's index, not for other users' writes."""

    def __init__(self, user_id: str, dim: int, ann_threshold: int, tokenizer: Tokenizer):
        self.user_id = user_id
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.dense: dict[str, VectorIndex] = {}
        self.lexical: dict[str, LexicalIndex] = {kind: LexicalIndex(tokenizer) for kind in keymod.KINDS}
        self._tokenizer = tokenizer
        self.turn_time: dict[int, int] = {}
        self.turn_conversation: dict[int, str] = {}
        self.turn_speaker: dict[int, str] = {}
        self.speaker_turns: Counter[str] = Counter()
        self.fact_turns: dict[int, list[int]] = {}
        self.turn_facts: dict[int, set[int]] = {}  # the reverse of fact_turns
        self.events = EventWindows()  # event-time facts' windows: time-aware search by when things happened
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.lock = threading.RLock()
        self.session_tails: dict[int, tuple[Turn, ...]] = {}
        """Per session (newest SESSION_TAILS used): the last turns a live write indexed, oldest first, with no position
        missing. The next turn of a live conversation takes its neighbours from here instead of reading them back
        (session_context.py); a turn at any other position reads. Cleared when any of this user's turns is deleted."""

    def remember_tail(self, session_id: int, turns: Sequence[Turn], keep: int) -> None:
        """Keep the last `keep` of `turns` (a session's newest, in order) as the session's tail, if no position is
        missing among them; otherwise forget the session's tail."""
        tail = tuple(t if t.embedding is None else replace(t, embedding=None) for t in turns[-keep:])
        tails = self.session_tails
        tails.pop(session_id, None)
        if tail and all(b.position == a.position + 1 for a, b in zip(tail, tail[1:])):
            tails[session_id] = tail
            while len(tails) > SESSION_TAILS:
                tails.pop(next(iter(tails)))

    def tail_before(self, session_id: int, fresh: Sequence[Turn], lookback: int) -> list[Turn] | None:
        """The `lookback` turns of the session just before `fresh` (consecutive turns, oldest first), or all of them
        from the session's start if it has fewer; None when the tail cannot say (the caller reads them)."""
        tail = self.session_tails.get(session_id)
        if not tail or tail[-1].position + 1 != fresh[0].position:
            return None
        if any(b.position != a.position + 1 for a, b in zip(fresh, fresh[1:])):
            return None
        if len(tail) < lookback and tail[0].position != 0:
            return None
        return list(tail[-lookback:])

    def dense_index(self, kind: str) -> VectorIndex:
        index = self.dense.get(kind)
        if index is None:
            index = self.dense[kind] = VectorIndex(self.dim, self.ann_threshold)
        return index

    def note_turn(self, turn_id: int, when: datetime, conversation_id: str, speaker: str | None = None) -> None:
        self.turn_time[turn_id] = int(when.timestamp())
        self.turn_conversation[turn_id] = conversation_id
        if speaker:
            self.turn_speaker[turn_id] = speaker
            self.speaker_turns[speaker] += 1
        self._arrays = None

    def drop_turn(self, turn_id: int) -> None:
        self.session_tails.clear()  # a tail must not bring a deleted turn's text into a new key
        self.turn_time.pop(turn_id, None)
        self.turn_conversation.pop(turn_id, None)
        speaker = self.turn_speaker.pop(turn_id, None)
        if speaker is not None:
            self.speaker_turns[speaker] -= 1
            if self.speaker_turns[speaker] <= 0:
                del self.speaker_turns[speaker]
        self._arrays = None
        for kind in ("turn", "round", "statement"):
            key = keymod.key_id(turn_id, kind)
            self.lexical[kind].remove([key])
            if kind in self.dense:
                self.dense[kind].remove([key])

    def note_fact(self, fact_id: int, turn_ids: Sequence[int]) -> None:
        self._forget_fact_sources(fact_id)
        self.fact_turns[fact_id] = list(turn_ids)
        for turn_id in turn_ids:
            self.turn_facts.setdefault(turn_id, set()).add(fact_id)

    def _forget_fact_sources(self, fact_id: int) -> None:
        for turn_id in self.fact_turns.pop(fact_id, ()):
            facts = self.turn_facts.get(turn_id)
            if facts is not None:
                facts.discard(fact_id)
                if not facts:
                    del self.turn_facts[turn_id]

    def drop_fact(self, fact_id: int) -> None:
        self._forget_fact_sources(fact_id)
        self.events.drop(fact_id)
        key = keymod.key_id(fact_id, "fact")
        self.lexical["fact"].remove([key])
        if "fact" in self.dense:
            self.dense["fact"].remove([key])

    def turn_count(self) -> int:
        return len(self.turn_time)

    def _turn_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._arrays is None:
            ids = np.fromiter(self.turn_time.keys(), dtype=np.int64, count=len(self.turn_time))
            times = np.fromiter(self.turn_time.values(), dtype=np.int64, count=len(self.turn_time))
            conversations = np.array([self.turn_conversation[i] for i in ids.tolist()], dtype=object)
            self._arrays = (ids, times, conversations)
        return self._arrays

    def allowed_turns(self, window: TimeWindow | None, conversation_id: str | None) -> np.ndarray | None:
        """Turn ids inside the window and conversation; None means every turn."""
        if window is None and conversation_id is None:
            return None
        ids, times, conversations = self._turn_arrays()
        mask = np.ones(len(ids), bool)
        if window is not None:
            mask &= (times >= int(window.start.timestamp())) & (times < int(window.end.timestamp()))
        if conversation_id is not None:
            mask &= conversations == conversation_id
        if window is not None and len(self.events):
            # Turns that talk about the window, whenever they were said.
            extra = {t for t in self.events.turns_in(window, self.fact_turns) if t in self.turn_time}
            if conversation_id is not None:
                extra = {t for t in extra if self.turn_conversation[t] == conversation_id}
            if extra:
                return np.array(merge_turn_ids(ids[mask].tolist(), extra), dtype=np.int64)
        return ids[mask]

    allowed = allowed_turns  # the fusion's Ranker protocol (retrieval/fusion.py)

    def allowed_keys(self, kind: str, turns: np.ndarray | None) -> np.ndarray | None:
        if turns is None:
            return None
        if kind == "fact":
            wanted = set(turns.tolist())
            facts = [f for f, sources in self.fact_turns.items() if wanted.intersection(sources)]
            return np.array([keymod.key_id(f, "fact") for f in facts], dtype=np.int64)
        return turns * 8 + keymod.KIND_CODE[kind]

    def key_turns(self, key: int) -> list[int]:
        item, kind = keymod.split_key(key)
        if kind == "fact":
            return self.fact_turns.get(item, [])
        return [item]

    def ranked(
        self, retriever: str, kind: str, query_vector: np.ndarray | None, query_text: str, depth: int, allowed_turns: np.ndarray | None
    ) -> list[tuple[int, float]]:
        """One ranked list of (turn id, score), each turn once, best first."""
        allowed = self.allowed_keys(kind, allowed_turns)
        if allowed is not None and len(allowed) == 0:
            return []
        if retriever == "dense":
            index = self.dense.get(kind)
            if index is None or query_vector is None:
                return []
            key_ids, scores = index.search(query_vector, depth, allowed)
        else:
            key_ids, scores = self.lexical[kind].search(query_text, depth, allowed)
        if kind != "fact":
            # One key per turn of this kind: no repeats to drop, only turns deleted since (a search's hot loop).
            turn_time = self.turn_time
            return [(turn_id, score) for turn_id, score in zip(keymod.item_ids(key_ids).tolist(), scores.tolist())
                    if turn_id in turn_time]
        out: list[tuple[int, float]] = []
        seen: set[int] = set()
        allowed_set = set(allowed_turns.tolist()) if allowed_turns is not None and kind == "fact" else None
        for key, score in zip(key_ids.tolist(), scores.tolist()):
            for turn_id in self.key_turns(key):
                if turn_id in seen or turn_id not in self.turn_time:
                    continue
                if allowed_set is not None and turn_id not in allowed_set:
                    continue
                seen.add(turn_id)
                out.append((turn_id, float(score)))
        return out
