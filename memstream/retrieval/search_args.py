"""What both index backends (the FAISS Retriever and the database-resident PgIndex) check before a search, and how
both rank sessions from a search's hits: one definition, so the two answer the same request the same way."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from memstream.memory.validate import check_id
from memstream.retrieval.errors import RetrievalError
from memstream.retrieval.results import Hit, SessionHit

MODES = ("memstream", "hybrid", "bm25", "dense")
TIME_MODES = ("boost", "filter")
MAX_K = 1000
MAX_QUERY_CHARS = 20_000


def check_search_args(query: str, k: int) -> str:
    """Validate a query and k before any work (the CLI calls this before loading the model); the query, stripped."""
    if not isinstance(query, str) or not query.strip():
        raise RetrievalError("the query is empty: give some words to search for")
    if len(query) > MAX_QUERY_CHARS:
        raise RetrievalError(f"the query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}")
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise RetrievalError(f"k must be a positive integer, got {k!r}")
    if k > MAX_K:
        raise RetrievalError(f"k={k} is too large; the limit is {MAX_K}")
    return query.strip()


def check_time_mode(time_mode: str) -> str:
    if time_mode not in TIME_MODES:
        raise RetrievalError(f"time_mode must be 'boost' or 'filter', got {time_mode!r}")
    return time_mode


def check_search(user_id: str, query: str, k: int, mode: str, time_mode: str, *, can_embed: bool, index_name: str) -> str:
    """Every argument of a search checked, nothing read yet; the query, stripped. `can_embed`: the index was opened
    with an embedder (without one only 'bm25' can search); `index_name` names the index in that error."""
    try:
        check_id("user id", user_id)
    except ValueError as exc:
        raise RetrievalError(str(exc)) from None
    query = check_search_args(query, k)
    if mode not in MODES:
        raise RetrievalError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
    if not can_embed and mode != "bm25":
        raise RetrievalError(f"this {index_name} was opened without an embedder; only mode='bm25' can search")
    check_time_mode(time_mode)
    return query


def session_search_k(k: int) -> int:
    """How many turns a session search ranks to find its k sessions: several hits per session, within MAX_K."""
    return min(MAX_K, max(k * 10, 50))


def rank_sessions(hits: Sequence[Hit], k: int) -> list[SessionHit]:
    """Sessions ranked by their turns' fused scores (the best, plus a little for each further hit)."""
    grouped: dict[int | None, list[Hit]] = defaultdict(list)
    for hit in hits:
        grouped[hit.session_id].append(hit)
    sessions = [
        SessionHit(session_id, found[0].fused_score + 0.1 * sum(h.fused_score for h in found[1:]), found)
        for session_id, found in grouped.items()
    ]
    sessions.sort(key=lambda s: -s.score)
    return sessions[:k]
