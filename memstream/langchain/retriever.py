"""`MemstreamRetriever`: one user's memstream memory as a LangChain retriever.

Each document is a remembered turn; its metadata says why it was found (dense, lexical and
fused scores, which key matched) and where it came from (turn id, conversation, session,
time, the dataset's source id).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, field_validator

from memstream.memory.store import check_id
from memstream.retrieval.search_args import MODES


def hit_document(hit: Any) -> Document:
    """A retrieval hit as a Document: the turn's text, its provenance and scores as metadata."""
    metadata = hit.to_dict()
    metadata.pop("text", None)
    metadata["user_id"] = hit.turn.user_id
    return Document(page_content=hit.turn.text, metadata=metadata, id=str(hit.turn.id))


class MemstreamRetriever(BaseRetriever):
    """Search one user's memory with memstream's time-aware hybrid retrieval.

    Args:
        memory: a memstream `Memory` (`open_memory(settings)`).
        user_id: whose memory to search; other users' turns are never returned.
        k: how many documents to return (a per-call `k=` overrides it).
        mode: memstream | hybrid | dense | bm25.
        conversation_id: search only this conversation (None: all of the user's).
        sync: catch the index up with the database before each search (sees turns written
            by other processes; cheap when nothing is new).
        wait_s: wait up to this long for the user's newest turns to be embedded before searching
            (a turn stored a moment ago is found by keyword at once, by meaning once embedded).

    A user with nothing stored yet gets no documents (not an error): a new user has no memory.

    Example:
        >>> docs = MemstreamRetriever(memory=open_memory(settings), user_id="ada", k=3).invoke("where does my sister live?")
        >>> docs[0].metadata["event_time"], docs[0].metadata["fused_score"]
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memory: Any = Field(exclude=True)
    user_id: str
    k: int = Field(4, ge=1)
    mode: str = "memstream"
    conversation_id: str | None = None
    sync: bool = True
    wait_s: float = Field(5.0, ge=0.0)

    @field_validator("user_id")
    @classmethod
    def _check_user(cls, value: str) -> str:
        return check_id("user id", value)

    @field_validator("mode")
    @classmethod
    def _check_mode(cls, value: str) -> str:
        if value not in MODES:
            raise ValueError(f"unknown search mode {value!r}; choose one of {', '.join(MODES)}")
        return value

    @classmethod
    def from_settings(cls, user_id: str, settings: Any = None, **kwargs: Any) -> "MemstreamRetriever":
        """Open the configured memory (loads the embedder) and search `user_id`'s memory."""
        from memstream.config import load_settings
        from memstream.memory.core import open_memory

        return cls(memory=open_memory(settings or load_settings()), user_id=user_id, **kwargs)

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        now: datetime | None = None,
        conversation_id: str | None = None,
        time_window: Any = None,
        mode: str | None = None,
    ) -> list[Document]:
        """`now` is the question's date (relative times like "last May" resolve against it); `time_window`
        (a memstream TimeWindow) overrides the window parsed from the query."""
        if not self.memory.has_user(self.user_id):
            return []
        if self.sync:
            self.memory.refresh()
        result = self.memory.search(
            self.user_id,
            query,
            k=k or self.k,
            now=now,
            conversation=conversation_id or self.conversation_id,
            time_window=time_window,
            mode=mode or self.mode,
            wait_s=self.wait_s,
        )
        return [hit_document(hit) for hit in result.hits]
