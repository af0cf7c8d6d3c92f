"""Dense keys waiting for their embedding, and the one routine that embeds and adds them.

The write path adds a turn's lexical keys at once and queues its dense keys here; the background indexer
(memstream/memory/indexer.py) drains the queue in batches across turns and users. A job remembers which
`UserIndex` object it was made for, so a job whose user was forgotten, or whose turn was deleted while it
waited, is dropped instead of resurrecting a key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from memstream.retrieval import keys as keymod
from memstream.retrieval.embedder import Embedder, from_bytes

if TYPE_CHECKING:
    from memstream.retrieval.user_index import UserIndex

log = logging.getLogger(__name__)


@dataclass
class DenseJob:
    index: "UserIndex"
    user_id: str
    kind: str
    """Key kind: turn, round, statement, fact."""
    item_id: int
    """Turn id (fact id for fact keys)."""
    text: str
    origin: int
    """Smallest turn (or fact) id of the batch that made this job: a cache saved while it waits resumes there."""
    stored: bytes | None = field(default=None, repr=False)
    """The vector the database already holds for this item with this model (turn and fact keys), if any."""

    @property
    def key(self) -> int:
        return keymod.key_id(self.item_id, self.kind)

    def is_live(self, users: dict[str, "UserIndex"]) -> bool:
        """Still wanted: the user's index is the one the job was made for, and the turn or fact is still in it."""
        if users.get(self.user_id) is not self.index:
            return False
        if self.kind == "fact":
            return self.item_id in self.index.fact_turns
        return self.item_id in self.index.turn_time


def embed_jobs(embedder: Embedder, dim: int, jobs: Sequence[DenseJob]) -> tuple[list[np.ndarray | None], dict[int, str]]:
    """Vectors for these jobs (reusing stored ones), and {position: reason} for jobs that could not be embedded.

    One bad text must not cost the batch: when the batched call fails, each text is tried alone."""
    vectors: list[np.ndarray | None] = [from_bytes(job.stored, dim) if job.stored is not None else None for job in jobs]
    todo = [p for p, v in enumerate(vectors) if v is None]
    failed: dict[int, str] = {}
    if not todo:
        return vectors, failed
    try:
        for p, vector in zip(todo, embedder.embed([jobs[p].text for p in todo])):
            vectors[p] = vector
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        log.warning("embedding a batch of %d keys failed (%s); embedding them one by one", len(todo), exc)
        for p in todo:
            try:
                vectors[p] = embedder.embed([jobs[p].text])[0]
            except (RuntimeError, ValueError, TypeError, IndexError) as one:
                failed[p] = f"{type(one).__name__}: {str(one)[:200]}"
    return vectors, failed
