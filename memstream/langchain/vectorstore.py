"""`MemstreamVectorStore`: a LangChain vector store kept in one user's memstream memory.

Documents are stored as turns of a user in one conversation (default "documents"), embedded
with memstream's own embedder and indexed by its retriever, so the memory agent can find them
too. The document id and metadata live in the turn's metadata and come back unchanged.
Adding a document under an id that exists replaces it.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, Callable, Iterable, Sequence

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from memstream.memory.model import NewTurn, Turn
from memstream.memory.store import check_id

ID_KEY = "langchain_id"
METADATA_KEY = "langchain_metadata"
SEARCH_OPTIONS = ("mode", "now", "time_window")


class MemstreamEmbeddings(Embeddings):
    """memstream's embedder (sentence-transformers, normalised float32) as LangChain `Embeddings`."""

    def __init__(self, embedder: Any):
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed([text])[0].tolist()


class MemstreamVectorStore(VectorStore):
    """Per-user vector store on a memstream `Memory`.

    Args:
        memory: a memstream `Memory` (`open_memory(settings)`; it holds the store, indexes and embedder).
        user_id: whose memory the documents belong to; searches never see another user's.
        conversation_id: the conversation the documents are stored in; searches stay inside it.
        mode: how `similarity_search` ranks: "dense" (cosine similarity, the default, whose
            scores are similarities in [-1, 1]), or "hybrid" / "memstream" / "bm25" (fused scores).

    Example:
        >>> store = MemstreamVectorStore(open_memory(settings), user_id="ada")
        >>> store.add_texts(["The boiler was serviced in March."], ids=["boiler"])
        >>> store.similarity_search("when was the boiler serviced?", k=1)[0].id
        'boiler'
    """

    WAIT_S = 10.0  # a vector store's contract: what was added is found by meaning; wait for its embeddings

    def __init__(self, memory: Any, user_id: str, conversation_id: str = "documents", mode: str = "dense"):
        self.memory = memory
        self.user_id = check_id("user id", user_id)
        self.conversation_id = check_id("conversation id", conversation_id)
        self.mode = mode
        # Replacing a document is delete-then-insert: one writer at a time inside this process.
        self._write_lock = threading.Lock()

    @classmethod
    def from_settings(cls, user_id: str, settings: Any = None, **kwargs: Any) -> "MemstreamVectorStore":
        """Open the configured memory (loads the embedder)."""
        from memstream.config import load_settings
        from memstream.memory.core import open_memory

        return cls(open_memory(settings or load_settings()), user_id, **kwargs)

    @property
    def embeddings(self) -> Embeddings | None:
        embedder = getattr(self.memory.retriever, "embedder", None)
        return MemstreamEmbeddings(embedder) if embedder is not None else None

    # -- writes -------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        if kwargs:
            raise ValueError(f"unknown option(s) for add_texts: {sorted(kwargs)}")
        texts = list(texts)
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        given = list(ids) if ids is not None else [None] * len(texts)
        if len(metadatas) != len(texts) or len(given) != len(texts):
            raise ValueError(f"got {len(texts)} texts, {len(metadatas)} metadatas and {len(given)} ids; the counts must match")
        doc_ids = [str(i) if i is not None else uuid.uuid4().hex for i in given]
        turns = [
            NewTurn(role="user", text=text, metadata={ID_KEY: doc_id, "source_id": doc_id, METADATA_KEY: dict(metadata or {})})
            for text, metadata, doc_id in zip(texts, metadatas, doc_ids)
        ]
        if not turns:
            return []
        with self._write_lock:
            for turn in self._turns_by_id(doc_ids).values():
                self.memory.delete_turn(self.user_id, turn.id)
            self.memory.add(self.user_id, self.conversation_id, turns)
        return doc_ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents by id (missing ids are ignored); ids=None deletes every document of this store."""
        if kwargs:
            raise ValueError(f"unknown option(s) for delete: {sorted(kwargs)}")
        with self._write_lock:
            targets = self._turns_by_id(ids).values() if ids is not None else self._document_turns()
            for turn in targets:
                self.memory.delete_turn(self.user_id, turn.id)
        return True

    # -- reads --------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        found = self._turns_by_id(ids)
        return [_document(found[str(i)]) for i in ids if str(i) in found]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _score in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        """Documents with their score: cosine similarity in dense mode, the fused score otherwise.

        Options: mode, now (the question's date), time_window (a memstream TimeWindow)."""
        unknown = sorted(set(kwargs) - set(SEARCH_OPTIONS))
        if unknown:
            raise ValueError(f"unknown search option(s): {unknown}; accepted: {list(SEARCH_OPTIONS)}")
        mode = kwargs.pop("mode", self.mode)
        if not self.memory.has_user(self.user_id):
            return []  # nothing was ever stored for this user
        self.memory.refresh()
        result = self.memory.search(self.user_id, query, k=k, conversation=self.conversation_id, mode=mode, wait_s=self.WAIT_S, **kwargs)
        scored = []
        for hit in result.hits:
            score = hit.dense_score if mode == "dense" and hit.dense_score is not None else hit.fused_score
            scored.append((_document(hit.turn), float(score)))
        return scored

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self.mode != "dense":
            raise NotImplementedError("relevance scores in [0, 1] exist only for mode='dense'")
        return lambda similarity: (similarity + 1.0) / 2.0  # cosine similarity [-1, 1] -> [0, 1]

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        memory: Any = None,
        user_id: str | None = None,
        **kwargs: Any,
    ) -> "MemstreamVectorStore":
        """A store for `user_id` holding `texts`. memstream embeds with its own model (the embedder.model
        setting), so `embedding` must be None or this store's own `MemstreamEmbeddings`."""
        if embedding is not None and not isinstance(embedding, MemstreamEmbeddings):
            raise ValueError(
                f"MemstreamVectorStore embeds with memstream's embedder (setting embedder.model), not {type(embedding).__name__}; "
                "pass embedding=None"
            )
        if user_id is None:
            raise ValueError("from_texts needs user_id=: memstream keeps every document in one user's memory")
        store = cls(memory, user_id, **kwargs) if memory is not None else cls.from_settings(user_id, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def _document_turns(self) -> list[Turn]:
        return [t for t in self.memory.list_turns(self.user_id, self.conversation_id) if ID_KEY in t.metadata]

    def _turns_by_id(self, ids: Iterable[str]) -> dict[str, Turn]:
        # The store has no index on metadata: scan this store's conversation (documents only, one user).
        wanted = {str(i) for i in ids}
        if not wanted:
            return {}
        return {t.metadata[ID_KEY]: t for t in self._document_turns() if t.metadata[ID_KEY] in wanted}


def _document(turn: Turn) -> Document:
    return Document(page_content=turn.text, metadata=dict(turn.metadata.get(METADATA_KEY, {})), id=turn.metadata.get(ID_KEY, str(turn.id)))
