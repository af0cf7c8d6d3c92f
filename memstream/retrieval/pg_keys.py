"""The rows of the database-resident index's `index_keys` table (retrieval/pg_index.py): what one key holds, pgvector's
text form of its vector, and the statement that writes a batch of keys. Kept apart from the index so that the row
format lives in one place: the index writes and ranks through it, and the scale-out benchmark bulk-loads vectors in
the same text form."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

import numpy as np

from memstream.retrieval import keys as keymod
from memstream.retrieval import pg_schema
from memstream.retrieval.timeparse import TimeWindow

_FORMATS: dict[int, str] = {}


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form: '[x,y,...]', 7 significant digits (a float32 holds about 7; one %-format per vector is
    several times faster than a repr per value, which matters for bulk loads)."""
    values = np.asarray(vector, dtype=np.float32).tolist()
    fmt = _FORMATS.get(len(values))
    if fmt is None:
        fmt = _FORMATS[len(values)] = "[" + ",".join(["%.7g"] * len(values)) + "]"
    return fmt % tuple(values)


def vector_from_literal(literal: str) -> np.ndarray:
    """A vector from pgvector's text form (`embedding::text`), as vector_literal writes it."""
    return np.array(literal[1:-1].split(","), dtype=np.float32)


@dataclass
class IndexKey:
    """One row of index_keys, before it is written."""

    key_id: int
    user_id: str
    kind: str
    text: str
    turn_ids: list[int]
    conversation_id: str | None
    turn_id: int | None = None
    fact_id: int | None = None
    event_time: datetime | None = None
    window: TimeWindow | None = None
    deferred: bool = False
    """A round key still missing a later neighbour: written without a vector (see pg_index.DEFERRED_ROUND_S)."""
    dense: bool = True
    """False for a kind without vectors (retrieval.dense_kinds): keyword-searchable only."""
    parts: tuple[tuple[int, str], ...] = ()
    """A pooled round key's statement keys (key id, text): its vector is `keys.pool` of theirs (retrieval.round_vectors)."""

    @property
    def embedded(self) -> bool:
        """Written with its vector now."""
        return self.dense and not self.deferred


def embedded_texts(keys: Iterable[IndexKey]) -> list[str]:
    """What the model embeds for the keys written with vectors: each one's text, or a pooled key's parts."""
    return [t for k in keys if k.embedded for t in ([t for _id, t in k.parts] if k.parts else [k.text])]


def key_vector(key: IndexKey, cache: dict[str, np.ndarray]) -> np.ndarray:
    return keymod.pool([cache[t] for _id, t in key.parts]) if key.parts else cache[key.text]


UPSERT_KEYS = """
INSERT INTO index_keys (key_id, user_id, kind, turn_id, fact_id, turn_ids, conversation_id, event_time,
                        window_start, window_end, embedding, tsv)
VALUES (:key_id, :user_id, :kind, :turn_id, :fact_id, :turn_ids, :conversation_id, :event_time,
        :window_start, :window_end, CAST(:embedding AS vector), to_tsvector(CAST(:config AS regconfig), :body))
ON CONFLICT (key_id) DO UPDATE SET embedding = EXCLUDED.embedding, tsv = EXCLUDED.tsv
"""
"""Write keys, or refresh an existing key's vector and text (a round key whose neighbours arrived): the parameters
are `key_rows`."""


def key_rows(keys: Iterable[IndexKey], cache: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """UPSERT_KEYS's parameters for `keys`; `cache` holds {text: vector} for every text of `embedded_texts(keys)`."""
    return [
        {
            "key_id": k.key_id, "user_id": k.user_id, "kind": keymod.KIND_CODE[k.kind], "turn_id": k.turn_id,
            "fact_id": k.fact_id, "turn_ids": k.turn_ids, "conversation_id": k.conversation_id,
            "event_time": k.event_time, "window_start": k.window.start if k.window else None,
            "window_end": k.window.end if k.window else None,
            "embedding": vector_literal(key_vector(k, cache)) if k.embedded else None,
            "config": pg_schema.TEXT_CONFIG, "body": k.text,
        }
        for k in keys
    ]
