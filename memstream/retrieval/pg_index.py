"""The database-resident index (PostgreSQL): pgvector for dense search, PostgreSQL full text for lexical search.

Invariants:
- The index lives in the database, beside the rows: a process holds no per-user copy, no catch-up cursor and no
  queue. Any number of server processes search the same committed keys.
- A write commits its rows and their keys in one transaction (the store calls `on_insert` inside it): a turn
  is found by every process as soon as it is committed. Keys reference their turn or fact ON DELETE CASCADE,
  so delete and forget are immediate everywhere. Dense keys are embedded before the transaction opens. A round key's
  vector is pooled from its turns' statement vectors by default (retrieval.round_vectors), so it costs no model pass
  of its own. With round_vectors 'encoded', the round key of a session's newest turn is written without its vector
  (its text changes when the next turn arrives, and that write embeds it); `embed_deferred` embeds the ones still
  open after DEFERRED_ROUND_S (the conversation paused or ended), and `flush` all of them. Until then the turn is
  found through its turn and statement keys (dense and lexical) and its round key's text (lexical).
- Every query filters by user first; hits are re-read from the store filtered by user.
- Fusion is the in-process path's own (retrieval/fusion.py): only the ranked lists come from SQL here.

Dense search: a user with at most `ann_threshold` keys of a kind is searched exactly (the btree on
(user_id, kind), then a sort: a few thousand inner products); a larger one through the HNSW index with
pgvector's iterative scan (`hnsw.iterative_scan = relaxed_order`), which keeps scanning the graph until
enough rows pass the user filter. Lexical search: the query's lexemes OR-ed, ranked by `ts_rank_cd`.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from memstream.memory.model import Fact, NewSession, NewTurn, Turn
from memstream.memory.store import StoreError
from memstream.memory.validate import naive_utc, utcnow
from memstream.retrieval import keys as keymod
from memstream.retrieval import pg_schema
from memstream.retrieval.pg_keys import UPSERT_KEYS, IndexKey, embedded_texts, key_rows, vector_from_literal, vector_literal
from memstream.retrieval.pg_queries import BM25_B, BM25_K1, BM25_SQL, DENSE_EXACT_SQL, LEXICAL_RANK, RANK_NORMALIZATION
from memstream.retrieval.embedder import Embedder, QueryVectors
from memstream.retrieval.errors import EmbeddingModelMismatch, RetrievalError
from memstream.retrieval.event_windows import fact_window
from memstream.retrieval.fusion import fused_search, mode_lists
from memstream.retrieval.results import SearchResult, SessionHit
from memstream.retrieval.search_args import check_search, check_time_mode, rank_sessions, session_search_k
from memstream.retrieval.session_context import context_lookback  # the same look-back as the in-process index
from memstream.retrieval.timeparse import TimeWindow

log = logging.getLogger(__name__)

DEFERRED_ROUND_S = 30.0
"""How long the round key of a session's newest turn waits for the next turn before it is embedded as it is: a live
chat's next turn comes sooner and embeds it (one round key per turn instead of two)."""
DEFERRED_BATCH = 32  # deferred keys claimed (FOR UPDATE SKIP LOCKED) and embedded per transaction
EF_SEARCH = 100  # hnsw.ef_search for the ANN path (>= the candidates fused)
MAX_SCAN_TUPLES = 50_000  # hnsw.max_scan_tuples: how far an iterative scan may go for a selective user filter


class PgIndex:
    """Per-user hybrid search whose index is the database itself. Thread-safe (no in-process state but a
    query-embedding cache). Writes go through `Memory`, which passes `on_insert` hooks into the store."""

    writes_in_transaction = True
    """Memory: hand writes to `*_hook` here instead of catching an in-process index up after commit."""
    background = False
    skipped: dict[str, str] = {}

    def __init__(
        self,
        store,
        embedder: Embedder | None,
        *,
        model_name: str,
        ann_threshold: int = 50_000,
        rrf_k: int = 30,
        candidates: int = 100,
        round_neighbours: int = 1,
        dense_kinds: Sequence[str] = keymod.KINDS,
        round_vectors: str = "statements",
        session_decomposition: bool = True,
        fact_expansion: bool = True,
        time_expansion: bool = True,
        time_mode: str = "boost",
        time_weight: float = 1.0,
    ):
        if store.is_sqlite:
            raise RetrievalError("the database-resident index needs PostgreSQL; SQLite uses the in-process index")
        check_time_mode(time_mode)
        self.store = store
        self.engine = store.engine
        self.embedder = embedder
        self.model_name = model_name
        self.ann_threshold = ann_threshold
        self.rrf_k = rrf_k
        self.candidates = candidates
        self.round_neighbours = round_neighbours
        self.session_decomposition = session_decomposition
        self.dense_kinds = tuple(dense_kinds)
        try:
            self.pooled_rounds = keymod.check_round_vectors(round_vectors, self.dense_kinds)
        except ValueError as exc:
            raise RetrievalError(str(exc)) from None
        self.fact_expansion = fact_expansion
        self.time_expansion = time_expansion
        self.time_mode = time_mode
        self.time_weight = time_weight
        self.skipped = {}
        self.queries = QueryVectors(embedder)
        self.dim = self._open_schema()

    def _open_schema(self) -> int | None:
        with self.engine.begin() as conn:
            if self.embedder is None:
                meta = pg_schema.stored_meta(conn)  # forget and export only: deletes cascade without the index
            else:
                meta = pg_schema.ensure_schema(conn, self.embedder.dim, self.model_name)
        if not meta:
            return None
        if self.embedder is not None and meta["model"] != self.model_name:
            raise EmbeddingModelMismatch(self.model_name, {meta["model"]: self.key_count()})
        if self.embedder is not None and int(meta["dim"]) != self.embedder.dim:
            raise RetrievalError(f"the database index holds {meta['dim']}-dimensional vectors; the embedder makes {self.embedder.dim}")
        return int(meta["dim"])

    # -- writes: keys built and embedded before the store's transaction, written inside it ----------

    def turns_hook(self, user_id: str, conversation_id: str, new_turns: Sequence[NewTurn], session_id: int | None) -> Callable[[Connection, list[Turn]], None]:
        """The `on_insert` hook for `store.add_turns`: the session's recent turns are read and the keys of the new
        ones embedded now (outside the transaction); the hook writes them, re-embedding only a key whose text
        changed meanwhile (another writer appended to the same session first)."""
        self._require_embedder()
        now = utcnow()
        target = session_id if session_id is not None else self.store.latest_session(user_id, conversation_id)
        before = self._before(user_id, target, None) if target is not None else []
        start = before[-1].position + 1 if before else 0
        predicted = [
            Turn(id=-(i + 1), user_id=user_id, conversation_id=conversation_id, session_id=target, role=t.role, speaker=t.speaker,
                 text=t.text, event_time=naive_utc(t.event_time) or now, ingested_at=now, position=start + i)
            for i, t in enumerate(new_turns)
        ]
        cache = self._vectors(self._turn_keys(before, predicted, defer_open=True))

        def hook(conn: Connection, stored: list[Turn]) -> None:
            context = before if stored and stored[0].session_id == target else self._before(user_id, stored[0].session_id, stored[0].id)
            self._write_keys(conn, self._turn_keys(context, stored, defer_open=True), cache)

        return hook

    def sessions_hook(self, user_id: str, sessions: Sequence[NewSession]) -> Callable[[Connection, list[Turn]], None]:
        """The `on_insert` hook for `store.ingest_session_batch`: new sessions are their own context, so every key
        is known (and embedded, in one batch) before the transaction."""
        self._require_embedder()
        now = utcnow()
        texts: list[str] = []
        for session in sessions:
            default = naive_utc(session.started_at) or now
            predicted = [
                Turn(id=-(i + 1), user_id=user_id, conversation_id=session.conversation_id, session_id=None, role=t.role,
                     speaker=t.speaker, text=t.text, event_time=naive_utc(t.event_time) or default, ingested_at=now, position=i)
                for i, t in enumerate(session.turns)
            ]
            texts += embedded_texts(self._turn_keys([], predicted))
        cache = self._embed_texts(texts)

        def hook(conn: Connection, stored: list[Turn]) -> None:
            by_session: dict[int | None, list[Turn]] = defaultdict(list)
            for turn in stored:
                by_session[turn.session_id].append(turn)
            keys = [key for turns in by_session.values() for key in self._turn_keys([], turns)]
            self._write_keys(conn, keys, cache)

        return hook

    def fact_hook(self, text_: str, valid_from: datetime | None) -> Callable[[Connection, Fact], None]:
        """The `on_insert` hook for `store.add_fact` (a duplicate fact inserts nothing and runs no hook)."""
        self._require_embedder()
        predicted = Fact(id=0, user_id="", conversation_id=None, subject="", text=text_.strip(), source_turn_ids=[],
                         valid_from=naive_utc(valid_from) or utcnow())
        key = self._fact_key(predicted)
        cache = self._embed_texts(embedded_texts([key]))

        def hook(conn: Connection, fact: Fact) -> None:
            self._write_keys(conn, [self._fact_key(fact)], cache)

        return hook

    def _turn_keys(self, before: list[Turn], fresh: list[Turn], defer_open: bool = False) -> list[IndexKey]:
        """The turn, round and statement keys of `fresh` (in session order after `before`), and the round keys of
        the last turns of `before`, whose neighbours just arrived. `defer_open` (a live write): round keys whose
        later neighbours are not there yet are marked deferred."""
        context = before + fresh
        statement = keymod.statement_texts(context)
        keys = []
        offset = len(before)
        for i in range(max(0, offset - self.round_neighbours), len(context)):
            kinds = ("round",) if i < offset else ("turn", "round", "statement")
            for kind in kinds:
                key = self._turn_key(context, i, kind, statement)
                # A pooled round is not deferred: its parts are the new turns' statements, embedded by this write anyway.
                key.deferred = (defer_open and kind == "round" and not self.pooled_rounds and self.round_neighbours > 0
                                and i + self.round_neighbours >= len(context))
                keys.append(key)
        return keys

    def _turn_key(self, context: list[Turn], i: int, kind: str, statement: Callable[[int], str]) -> IndexKey:
        """The `kind` key of the turn at `i` of its session's `context`; `statement`: keys.statement_texts(context)."""
        turn = context[i]
        if kind == "turn":
            body = keymod.turn_key_text(turn)
        elif kind == "round":
            body = keymod.round_key_text(context, i, self.round_neighbours)
        else:
            body = statement(i)
        # A pooled round's parts: the new turns' statements are this write's own texts, the older turns' vectors are
        # read back from index_keys (`_vectors`).
        parts = keymod.round_parts(context, i, self.round_neighbours, statement) if kind == "round" and self.pooled_rounds else ()
        return IndexKey(keymod.key_id(turn.id, kind), turn.user_id, kind, body, [turn.id], turn.conversation_id, turn_id=turn.id,
                        event_time=turn.event_time, dense=kind in self.dense_kinds, parts=parts)

    def _fact_key(self, fact: Fact) -> IndexKey:
        return IndexKey(keymod.key_id(fact.id, "fact"), fact.user_id, "fact", keymod.fact_key_text(fact), list(fact.source_turn_ids),
                        fact.conversation_id, fact_id=fact.id, window=fact_window(fact), dense="fact" in self.dense_kinds)

    def _before(self, user_id: str, session_id: int | None, before_id: int | None) -> list[Turn]:
        """The last turns of a session (before `before_id`), oldest first: a new turn's neighbours and other speaker."""
        if session_id is None:
            return []
        filters: dict[str, Any] = {"session_id": session_id, "limit": context_lookback(self.round_neighbours), "newest_first": True}
        if before_id is not None:
            filters["before_id"] = before_id
        return list(reversed(self.store.list_turns(user_id, **filters)))

    def _vectors(self, keys: list[IndexKey]) -> dict[str, np.ndarray]:
        """{text: vector} for writing `keys`: the pooled rounds' parts already in the index (earlier turns' statement
        keys) read back, everything else embedded."""
        indexed = {key_id: text_ for k in keys if k.embedded for key_id, text_ in k.parts if key_id > 0}  # < 0: a turn not yet stored
        cache: dict[str, np.ndarray] = {}
        if indexed:
            rows = self.store.read_sql("SELECT key_id, embedding::text FROM index_keys WHERE key_id = ANY(:ids) AND embedding IS NOT NULL",
                                       ids=list(indexed))
            cache = {indexed[key_id]: vector_from_literal(vector) for key_id, vector in rows}
        cache.update(self._embed_texts(t for t in embedded_texts(keys) if t not in cache))
        return cache

    def _embed_texts(self, texts: Iterable[str]) -> dict[str, np.ndarray]:
        unique = list(dict.fromkeys(texts))
        if not unique:
            return {}
        vectors = self.embedder.embed(unique)
        return dict(zip(unique, vectors))

    def _write_keys(self, conn: Connection, keys: list[IndexKey], cache: dict[str, np.ndarray]) -> None:
        if not keys:
            return
        missing = [t for t in embedded_texts(keys) if t not in cache]
        if missing:
            cache.update(self._embed_texts(missing))  # rare: the session changed between the embedding and the commit
        conn.execute(text(UPSERT_KEYS), key_rows(keys, cache))

    def embed_deferred(self, older_than_s: float = DEFERRED_ROUND_S, limit: int | None = None) -> int:
        """Embed the round keys still waiting for a later neighbour whose turns were stored more than `older_than_s`
        ago (0: all of them); returns how many. Processes share the work: each transaction claims its rows with
        SKIP LOCKED, and a write that refreshes a claimed key waits for the claim's commit."""
        if self.embedder is None or self.dim is None or "round" not in self.dense_kinds:
            return 0  # without round vectors, round keys are keyword-only: nothing waits for one
        # Pooled round keys are never deferred; this still embeds those a release with encoded ones left waiting.
        cutoff = utcnow() - timedelta(seconds=max(0.0, older_than_s))
        try:
            return self._embed_deferred(cutoff, limit)
        except SQLAlchemyError as exc:
            raise StoreError(f"embedding deferred round keys failed: {str(exc).splitlines()[0]}") from exc

    def _embed_deferred(self, cutoff: datetime, limit: int | None) -> int:
        done = 0
        while limit is None or done < limit:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    text(
                        "SELECT t.id, t.user_id, t.session_id FROM index_keys k JOIN turns t ON t.id = k.turn_id "
                        "WHERE k.embedding IS NULL AND k.kind = :kind AND t.ingested_at <= :cutoff "
                        "ORDER BY k.key_id LIMIT :n FOR UPDATE OF k SKIP LOCKED"
                    ),
                    {"kind": keymod.KIND_CODE["round"], "cutoff": cutoff,
                     "n": DEFERRED_BATCH if limit is None else min(DEFERRED_BATCH, limit - done)},
                ).all()
                if not rows:
                    break
                keys = []
                for turn_id, user_id, session_id in rows:
                    # The turn, its earlier neighbours and any later ones (a turn written since the claim was made).
                    if session_id is None:
                        context = self.store.get_turns(user_id, [turn_id])
                    else:
                        context = self._before(user_id, session_id, turn_id + 1)
                        context += self.store.list_turns(user_id, session_id=session_id, after_id=turn_id, limit=self.round_neighbours)
                    index = next((i for i, turn in enumerate(context) if turn.id == turn_id), None)
                    if index is not None:
                        keys.append(self._turn_key(context, index, "round", keymod.statement_texts(context)))
                if not keys:
                    break  # nothing could be rebuilt (never expected: the claim holds the rows and their turns)
                self._write_keys(conn, keys, self._vectors(keys))
                done += len(keys)
        return done

    def sync(self, save: bool = True, turns: bool = True, user_id: str | None = None) -> int:
        """Index the rows that have no keys: a database written before this index existed, or an import (a live
        write cannot leave any: rows and keys share its transaction). Nothing to catch up otherwise."""
        if self.embedder is None or self.dim is None:
            return 0
        indexed = 0
        only = " AND t.user_id = :u" if user_id is not None else ""
        params = {"u": user_id} if user_id is not None else {}
        missing = self.store.read_sql(
            "SELECT t.user_id, t.session_id FROM turns t WHERE NOT EXISTS (SELECT 1 FROM index_keys k WHERE k.turn_id = t.id)"
            f"{only} GROUP BY t.user_id, t.session_id", **params
        ) if turns else []
        for user_id, session_id in missing:
            session_turns = self.store.list_turns(user_id, session_id=session_id) if session_id is not None else [
                t for t in self.store.list_turns(user_id) if t.session_id is None
            ]
            keys = self._turn_keys([], session_turns)
            cache = self._embed_texts(embedded_texts(keys))
            with self.engine.begin() as conn:
                self._write_keys(conn, keys, cache)
            indexed += len(session_turns)
        facts = self.store.read_sql(
            "SELECT f.user_id, f.id FROM facts f WHERE NOT EXISTS (SELECT 1 FROM index_keys k WHERE k.fact_id = f.id)"
            + only.replace("t.", "f."), **params
        )
        by_user: dict[str, list[int]] = defaultdict(list)
        for user_id, fact_id in facts:
            by_user[user_id].append(fact_id)
        for user_id, ids in by_user.items():
            keys = [self._fact_key(f) for f in self.store.get_facts(user_id, ids=ids)]
            cache = self._embed_texts(k.text for k in keys if k.embedded)
            with self.engine.begin() as conn:
                self._write_keys(conn, keys, cache)
            indexed += len(keys)
        return indexed

    # -- search -----------------------------------------------------------------------------------

    def search(
        self, user_id: str, query: str, k: int = 10, now: datetime | None = None, conversation_id: str | None = None,
        time_window: TimeWindow | None = None, mode: str = "memstream", time_mode: str | None = None,
        exclude: Iterable[int] = (),
    ) -> SearchResult:
        """As Retriever.search, over the database's keys."""
        started = time.perf_counter()
        time_mode = time_mode or self.time_mode
        query = check_search(user_id, query, k, mode, time_mode, can_embed=self.embedder is not None, index_name="index")
        if self.dim is None:
            self.store.require_user(user_id)
            return SearchResult(query, [], time_window, mode, {"total": 0.0})
        try:
            # The store's autocommit reader: a search's statements need no common snapshot, and BEGIN and COMMIT were
            # two of its six round trips.
            with self.store.reader.connect() as conn:
                kinds = {kind for _, kind in mode_lists(mode, self.session_decomposition, self.fact_expansion)}
                ranker = _PgRanker.open(self, conn, user_id, query, kinds)
                if ranker is None:
                    self.store.require_user(user_id)  # unknown user: a clear error; known but empty: no hits
                return fused_search(
                    self, ranker, user_id, query, k, now=now, conversation_id=conversation_id, time_window=time_window,
                    mode=mode, time_mode=time_mode, embed_query=self._embed_query, fetch_turns=self.store.get_turns,
                    started=started, exclude=frozenset(exclude),
                )
        except SQLAlchemyError as exc:
            raise RetrievalError(f"database search failed: {str(exc).splitlines()[0]}") from exc

    def _embed_query(self, query: str) -> np.ndarray:
        return self.queries.vector(query)

    def prime_query_cache(self, queries: Sequence[str], vectors: np.ndarray) -> None:
        self.queries.prime(queries, vectors)

    def search_sessions(self, user_id: str, query: str, k: int = 5, **options) -> list[SessionHit]:
        return rank_sessions(self.search(user_id, query, k=session_search_k(k), **options).hits, k)

    # -- what Memory, the agent and the server ask of an index ------------------------------------

    def speakers(self, user_id: str) -> set[str]:
        return {row[0] for row in self.store.read_sql("SELECT DISTINCT speaker FROM turns WHERE user_id = :u AND speaker IS NOT NULL", u=user_id)}

    def facts_of_turns(self, user_id: str, turn_ids: Iterable[int]) -> tuple[set[int], int]:
        """(ids of the facts drawn from these turns, the fact id through which that is complete): every committed
        fact has its key, so it is complete through the newest fact id."""
        ids = sorted({int(t) for t in turn_ids})
        rows = self.store.read_sql(
            "SELECT fact_id FROM index_keys WHERE user_id = :u AND kind = 3 AND turn_ids && CAST(:ids AS integer[])", u=user_id, ids=ids
        ) if ids else []
        return {row[0] for row in rows}, self.store.max_ids()["fact"]

    def pending(self, user_id: str | None = None) -> int:
        return 0  # keys are written with their rows

    def pending_turns(self, user_id: str) -> set[int]:
        return set()

    def wait_until_embedded(self, user_id: str | None, timeout_s: float) -> bool:
        return True

    def indexed_turns(self, user_id: str) -> int:
        return int(self.store.read_sql("SELECT count(*) FROM index_keys WHERE user_id = :u AND kind = 0", u=user_id)[0][0]) if self.dim else 0

    def indexed_turns_total(self) -> int:
        return int(self.store.read_sql("SELECT count(*) FROM index_keys WHERE kind = 0")[0][0]) if self.dim else 0

    def key_count(self) -> int:
        return int(self.store.read_sql("SELECT count(*) FROM index_keys")[0][0])

    def close(self) -> None:
        pass  # nothing held in process: the database is the index

    def _require_embedder(self) -> None:
        if self.embedder is None or self.dim is None:
            raise RetrievalError("this memory was opened without an embedder: it can forget and export, not write new rows")


class _PgRanker:
    """One search's ranked lists, read on one connection in autocommit."""

    def __init__(self, index: PgIndex, conn: Connection, user_id: str, exact: bool, lexemes: list[str], has_facts: bool,
                 kinds: set[str]):
        self.index, self.conn, self.user_id, self.exact, self.lexemes = index, conn, user_id, exact, lexemes
        self.has_facts = has_facts
        self.kinds = {kind for kind in kinds if has_facts or kind != "fact"}
        """The key kinds of the search's unfiltered lists: ranked by one statement per retriever."""
        self._lists: dict[tuple[str, int], dict[str, list[tuple[int, float]]]] = {}
        # OR of the query's lexemes (already normalised: quoted so that the tsquery parser leaves them as they are).
        self.tsquery = " | ".join("'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'" for lexeme in lexemes) or None

    @classmethod
    def open(cls, index: PgIndex, conn: Connection, user_id: str, query: str, kinds: set[str]) -> "_PgRanker | None":
        # How many turn keys the user has, counted no further than the threshold (an index-only scan), whether they
        # have fact keys (most users without enrichment have none: two queries fewer), and the query's lexemes, in one
        # round trip.
        size, has_facts, lexemes = conn.execute(
            text("SELECT (SELECT count(*) FROM (SELECT 1 FROM index_keys WHERE user_id = :u AND kind = 0 LIMIT :n) s), "
                 "EXISTS (SELECT 1 FROM index_keys WHERE user_id = :u AND kind = :fact), "
                 "tsvector_to_array(to_tsvector(CAST(:config AS regconfig), :q))"),
            {"u": user_id, "n": index.ann_threshold + 1, "fact": keymod.KIND_CODE["fact"], "config": pg_schema.TEXT_CONFIG,
             "q": query},
        ).one()
        if not size:
            return None
        exact = size <= index.ann_threshold
        if not exact:
            # Session settings, set before every ANN search in one round trip: only this index's HNSW scans read them.
            conn.execute(
                text("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', false), set_config('hnsw.ef_search', :ef, false), "
                     "set_config('hnsw.max_scan_tuples', :tuples, false)"),
                {"ef": str(min(1000, max(EF_SEARCH, index.candidates))), "tuples": str(MAX_SCAN_TUPLES)},  # 1000: pgvector's maximum
            )
        return cls(index, conn, user_id, exact, list(lexemes or []), has_facts, kinds)

    def allowed(self, window: TimeWindow | None, conversation_id: str | None) -> np.ndarray | None:
        """Turn ids inside the window (said then, or about then: event-time facts) and conversation; None: all."""
        if window is None and conversation_id is None:
            return None
        where, params = ["user_id = :u", "kind = 0"], {"u": self.user_id}
        if window is not None:
            where.append("event_time >= :ws AND event_time < :we")
            params.update(ws=naive_utc(window.start), we=naive_utc(window.end))
        if conversation_id is not None:
            where.append("conversation_id = :c")
            params["c"] = conversation_id
        sql = f"SELECT turn_id FROM index_keys WHERE {' AND '.join(where)}"
        if window is not None:
            about = "SELECT unnest(turn_ids) FROM index_keys WHERE user_id = :u AND kind = 3 AND window_start < :we AND window_end > :ws"
            if conversation_id is not None:
                about = f"SELECT turn_id FROM index_keys WHERE user_id = :u AND kind = 0 AND conversation_id = :c AND turn_id IN ({about})"
            sql = f"{sql} UNION {about}"
        ids = [row[0] for row in self.conn.execute(text(sql), params)]
        return np.array(sorted(set(ids)), dtype=np.int64)

    def ranked(self, retriever: str, kind: str, query_vector: np.ndarray | None, query: str, depth: int,
               allowed: np.ndarray | None) -> list[tuple[int, float]]:
        if (allowed is not None and len(allowed) == 0) or (kind == "fact" and not self.has_facts):
            return []
        if retriever == "dense" and query_vector is None:
            return []
        if retriever != "dense" and self.tsquery is None:
            return []
        # Exact dense search and BM25 rank several kinds in one statement; HNSW and ts_rank_cd one kind at a time.
        several = self.exact if retriever == "dense" else LEXICAL_RANK == "bm25"
        batched = allowed is None and kind in self.kinds and several
        if batched:
            # The search's other lists of this retriever come from the same statement.
            key = (retriever, depth)
            if key not in self._lists:
                self._lists[key] = self._rank(retriever, sorted(self.kinds, key=keymod.KIND_CODE.get), query_vector, depth, None)
            return self._lists[key].get(kind, [])
        return self._rank(retriever, [kind], query_vector, depth, allowed).get(kind, [])

    def _rank(self, retriever: str, kinds: list[str], query_vector: np.ndarray | None, depth: int,
              allowed: np.ndarray | None) -> dict[str, list[tuple[int, float]]]:
        """{kind: [(turn id, score), ...] best first, each turn once} for each of `kinds`."""
        params: dict[str, Any] = {"u": self.user_id, "kinds": [keymod.KIND_CODE[k] for k in kinds], "depth": depth}
        facts_only = kinds == ["fact"]
        allowed_sql = "{p}turn_ids && CAST(:allowed AS integer[])" if facts_only else "{p}turn_id = ANY(CAST(:allowed AS integer[]))"
        if allowed is not None:
            params["allowed"] = allowed.tolist()
        params["kind"] = params["kinds"][0]  # the statements that rank one kind
        one_kind = "user_id = :u AND kind = :kind" + (" AND " + allowed_sql.format(p="") if allowed is not None else "")
        if retriever == "dense":
            params["q"] = vector_literal(query_vector)
            if self.exact:
                sql = DENSE_EXACT_SQL.format(allowed="AND " + allowed_sql.format(p="") if allowed is not None else "")
            else:
                # ANN: the HNSW index, scanned iteratively past the user filter.
                sql = (f"SELECT kind, turn_ids, -(embedding <#> CAST(:q AS vector)) AS score FROM index_keys "
                       f"WHERE {one_kind} AND embedding IS NOT NULL ORDER BY embedding <#> CAST(:q AS vector) LIMIT :depth")
        elif LEXICAL_RANK == "ts_rank_cd":
            params.update(tq=self.tsquery, norm=RANK_NORMALIZATION)
            sql = (f"SELECT kind, turn_ids, ts_rank_cd(tsv, CAST(:tq AS tsquery), :norm) AS score FROM index_keys "
                   f"WHERE {one_kind} AND tsv @@ CAST(:tq AS tsquery) ORDER BY score DESC, key_id LIMIT :depth")
        else:
            params.update(tq=self.tsquery, lexemes=self.lexemes, k1=BM25_K1, b=BM25_B)
            # Document frequencies count every key of the user; the window or conversation only filters the result.
            sql = BM25_SQL.format(allowed=allowed_sql.format(p="d.") if allowed is not None else "TRUE")
        rows = self.conn.execute(text(sql), params).all()
        if retriever == "dense" and not self.exact:
            rows.sort(key=lambda r: -r[2])  # relaxed_order returns nearly sorted rows
        allowed_set = set(params["allowed"]) if allowed is not None and facts_only else None
        out: dict[str, list[tuple[int, float]]] = {kind: [] for kind in kinds}
        seen: dict[str, set[int]] = {kind: set() for kind in kinds}
        for code, turn_ids, score in rows:
            kind = keymod.KINDS[code]
            for turn_id in turn_ids:
                if turn_id in seen[kind] or (allowed_set is not None and turn_id not in allowed_set):
                    continue
                seen[kind].add(turn_id)
                out[kind].append((turn_id, float(score)))
        return out
