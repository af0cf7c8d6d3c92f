"""The one fusion of ranked lists into a search result, shared by every index backend (FAISS + BM25 in process,
pgvector + PostgreSQL full text in the database): which lists a mode asks for, their RRF weights, the time
window's extra restricted rankings, reciprocal-rank fusion, and the hits re-read from the database.

A backend supplies only `ranked(retriever, kind, query_vector, query, depth, allowed)` (one list of
(turn id, score), each turn once, best first) and `allowed(window, conversation)` (its own filter object,
None meaning every turn), so the two backends cannot drift apart in how they fuse."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from datetime import datetime
from typing import Any, Callable, ContextManager, Protocol, Sequence

import numpy as np

from memstream.memory.model import Turn
from memstream.memory.validate import utcnow
from memstream.retrieval.keys import KINDS
from memstream.retrieval.provenance import prefer_own_statements
from memstream.retrieval.results import Hit, SearchResult
from memstream.retrieval.timeparse import TimeWindow, extract_time_window

# RRF weight of each ranked list: (retriever, key kind). Raw turn keys are the precise
# ones; round keys add context; statements and facts add paraphrases. Tuned on the LoCoMo
# dev split (see reports/locomo_retrieval/report.md for the ablation).
LIST_WEIGHTS = {
    ("dense", "turn"): 1.0,
    ("lexical", "turn"): 1.0,
    ("dense", "round"): 1.0,
    ("lexical", "round"): 0.7,
    ("dense", "statement"): 0.7,
    ("lexical", "statement"): 0.7,
    ("dense", "fact"): 0.8,
    ("lexical", "fact"): 0.6,
}


class Ranker(Protocol):
    """One user's ranked lists, from whichever backend holds them."""

    def allowed(self, window: TimeWindow | None, conversation_id: str | None) -> Any: ...
    def ranked(self, retriever: str, kind: str, query_vector: np.ndarray | None, query: str, depth: int, allowed: Any) -> list[tuple[int, float]]: ...


def mode_lists(mode: str, session_decomposition: bool, fact_expansion: bool, dense_kinds: Sequence[str] = KINDS) -> list[tuple[str, str]]:
    """The (retriever, key kind) lists a mode fuses; a kind without vectors (not in `dense_kinds`) has no dense list."""
    lists = _lists(mode, session_decomposition, fact_expansion)
    return [(r, kind) for r, kind in lists if r != "dense" or kind in dense_kinds]


def time_lists(session_decomposition: bool, dense_kinds: Sequence[str] = KINDS) -> list[tuple[str, str]]:
    """The lists a time window restricts (boost mode): round keys (their date heads them) where there are rounds;
    a dense list on turn keys where round keys have no vectors."""
    kind = "round" if session_decomposition else "turn"
    return [("dense", kind if kind in dense_kinds else "turn"), ("lexical", kind)]


def _lists(mode: str, session_decomposition: bool, fact_expansion: bool) -> list[tuple[str, str]]:
    if mode == "dense":
        return [("dense", "turn")]
    if mode == "bm25":
        return [("lexical", "turn")]
    if mode == "hybrid":
        return [("dense", "turn"), ("lexical", "turn")]
    lists = [("dense", "turn"), ("lexical", "turn")]
    if session_decomposition:
        lists += [("dense", "round"), ("lexical", "round")]
    if fact_expansion:
        lists += [("dense", "statement"), ("lexical", "statement"), ("dense", "fact"), ("lexical", "fact")]
    return lists


def fused_search(
    config: Any,
    ranker: Ranker | None,
    user_id: str,
    query: str,
    k: int,
    *,
    now: datetime | None,
    conversation_id: str | None,
    time_window: TimeWindow | None,
    mode: str,
    time_mode: str,
    embed_query: Callable[[str], np.ndarray],
    fetch_turns: Callable[[str, Sequence[int]], list[Turn]],
    lock: ContextManager | None = None,
    started: float | None = None,
    exclude: frozenset[int] = frozenset(),
) -> SearchResult:
    """Fuse `ranker`'s lists for one validated query. `config` carries the retrieval settings (rrf_k, candidates,
    session_decomposition, fact_expansion, time_expansion, time_weight). `ranker` None: the user has no keys.
    `exclude`: turn ids left out before ranking (the question's own turn), so they neither appear nor shift the
    others' ranks, and with them their fused scores."""
    started = time.perf_counter() if started is None else started
    timings: dict[str, float] = {}
    window = time_window
    if window is None and mode == "memstream" and config.time_expansion:
        window = extract_time_window(query, now or utcnow())
    if ranker is None:
        return SearchResult(query, [], window, mode, {"total": _ms(started)})
    lists = mode_lists(mode, config.session_decomposition, config.fact_expansion, config.dense_kinds)
    query_vector = None
    if any(r == "dense" for r, _ in lists):
        t0 = time.perf_counter()
        query_vector = embed_query(query)
        timings["embed"] = _ms(t0)
    depth = max(config.candidates, k) + len(exclude)
    fused: dict[int, float] = defaultdict(float)
    best_dense: dict[int, float] = {}
    best_lexical: dict[int, float] = {}
    via: dict[int, tuple[float, str]] = {}
    with lock if lock is not None else contextlib.nullcontext():
        base_allowed = ranker.allowed(window if time_mode == "filter" and window else None, conversation_id)
        window_allowed = ranker.allowed(window, conversation_id) if window is not None and mode == "memstream" and time_mode == "boost" else None
        runs: list[tuple[str, str, float, Any, str]] = [(r, kind, LIST_WEIGHTS[(r, kind)], base_allowed, kind) for r, kind in lists]
        if window_allowed is not None:
            runs += [(r, kind, config.time_weight, window_allowed, "time") for r, kind in time_lists(config.session_decomposition, config.dense_kinds)]
        for retriever, kind, weight, allowed, label in runs:
            t0 = time.perf_counter()
            ranked = ranker.ranked(retriever, kind, query_vector, query, depth, allowed)
            if exclude:
                ranked = [pair for pair in ranked if pair[0] not in exclude]
            timings[retriever] = timings.get(retriever, 0.0) + _ms(t0)
            scores = best_dense if retriever == "dense" else best_lexical
            for rank, (turn_id, score) in enumerate(ranked):
                contribution = weight / (config.rrf_k + rank + 1)
                fused[turn_id] += contribution
                if score > scores.get(turn_id, float("-inf")):
                    scores[turn_id] = score
                if contribution > via.get(turn_id, (0.0, ""))[0]:
                    via[turn_id] = (contribution, label)
    t0 = time.perf_counter()
    order = sorted(fused, key=lambda t: (-fused[t], t))[:k]
    timings["fuse"] = _ms(t0)
    t0 = time.perf_counter()
    turns = {t.id: t for t in fetch_turns(user_id, order)}  # the database is the truth: deleted turns vanish here
    timings["fetch"] = _ms(t0)
    hits = []
    for turn_id in order:
        turn = turns.get(turn_id)
        if turn is None:
            continue
        hits.append(Hit(turn, best_dense.get(turn_id), best_lexical.get(turn_id), fused[turn_id], len(hits) + 1, via[turn_id][1]))
    if mode == "memstream":
        hits = prefer_own_statements(hits)  # provenance: a statement above the assistant reply that restates it
    timings["total"] = _ms(started)
    return SearchResult(query, hits, window, mode, timings)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)
