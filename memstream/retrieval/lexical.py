"""BM25 over an in-memory inverted index that grows as turns arrive.

Why not the alternatives (measured in benchmarks/retrieval_scale.py, see
reports/retrieval_scale.md): bm25s scores fast but rebuilds its whole index to add a
document, and SQLite FTS5's OR-queries over a million rows take around a second on two
cores. Here postings are numpy chunks appended per batch (doc order, so each term's
postings are sorted) and scored with vectorised BM25 (Lucene's idf, k1=1.2, b=0.75).
Removed documents are masked (their postings stay until the index is rebuilt, which
happens on every process start: the database is the truth).

Queries use MaxScore pruning (Turtle & Flood 1995; Lucene's block-max scorer is its
descendant): terms are taken rarest first, the documents of those "essential" terms are
scored on every query term (binary search in the sorted postings), and the common terms'
own postings are never scanned once the k-th best score beats the most a document
matching only common terms could score (the sum of their per-term upper bounds, from
each term's largest tf and shortest document). The top k is exactly that of scoring
every posting; at a million turns, where a place name or a verb has tens of thousands
of postings, it skips most of the work.

Tokens: lowercase words and numbers, English stopwords dropped, Snowball-stemmed
(PyStemmer), so "painted" matches "painting".
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np
import Stemmer

K1 = 1.2
B = 0.75
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Short function words; kept small so that names and numbers ("may", "one") survive where they matter.
STOPWORDS = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their then there these they
    this to was will with i me my we our you your he him his she her its them what which who whom do does did
    have has had am were been being so than too very can just s t don should now about would could""".split()
)


class Tokenizer:
    """Text -> stemmed term strings. Keeps a word -> stem cache (words repeat a lot)."""

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self._cache: dict[str, str | None] = {}

    def __call__(self, text: str) -> list[str]:
        out = []
        cache = self._cache
        for word in _WORD.findall(text.lower()):
            stem = cache.get(word, "")
            if stem == "":
                base = word.split("'", 1)[0]
                stem = None if base in STOPWORDS or not base else self._stemmer.stemWord(base)
                if len(cache) < 2_000_000:
                    cache[word] = stem
            if stem is not None:
                out.append(stem)
        return out


class LexicalIndex:
    """Documents (int64 ids -> text) scored with BM25. Not thread-safe: the retriever serialises writes."""

    def __init__(self, tokenizer: Tokenizer | None = None) -> None:
        self.tokenizer = tokenizer or Tokenizer()
        self._vocab: dict[str, int] = {}
        self._chunks: list[list[tuple[np.ndarray, np.ndarray]]] = []  # term -> [(doc idx int32, tf float32)]
        self._doc_ids = np.zeros(0, np.int64)
        self._doc_len = np.zeros(0, np.float32)
        self._alive = np.zeros(0, bool)
        self._id_to_doc: dict[int, int] = {}
        self._alive_count = 0
        self._alive_len = 0.0
        # Per term, for MaxScore upper bounds: the largest tf and the shortest document length seen.
        self._max_tf = np.zeros(0, np.float32)
        self._min_len = np.zeros(0, np.float32)

    def __len__(self) -> int:
        return self._alive_count

    def add(self, ids: Sequence[int] | np.ndarray, texts: Sequence[str]) -> None:
        """Index texts under ids; an id already present is replaced."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        if len(ids) == 0:
            return
        self.remove(ids)
        base = len(self._doc_ids)
        term_lists = []
        vocab = self._vocab
        for text in texts:
            terms = []
            for stem in self.tokenizer(text):
                term = vocab.get(stem)
                if term is None:
                    term = vocab[stem] = len(vocab)
                    self._chunks.append([])
                terms.append(term)
            term_lists.append(terms)
        lengths = np.fromiter((len(t) for t in term_lists), dtype=np.int64, count=len(term_lists))
        terms = np.fromiter((t for ts in term_lists for t in ts), dtype=np.int64, count=int(lengths.sum()))
        docs = np.repeat(np.arange(base, base + len(ids), dtype=np.int64), lengths)
        if len(terms):
            # Count each (term, doc) pair once with its frequency, grouped by term.
            pairs, tf = np.unique(terms * (base + len(ids)) + docs, return_counts=True)
            pair_terms = pairs // (base + len(ids))
            pair_docs = (pairs % (base + len(ids))).astype(np.int32)
            starts = np.flatnonzero(np.r_[True, pair_terms[1:] != pair_terms[:-1]])
            ends = np.r_[starts[1:], len(pairs)]
            tf = tf.astype(np.float32)
            for start, end in zip(starts.tolist(), ends.tolist()):
                self._append_postings(int(pair_terms[start]), pair_docs[start:end], tf[start:end])
            self._grow_bounds(len(vocab))
            group_terms = pair_terms[starts]
            group_max_tf = np.maximum.reduceat(tf, starts)
            group_min_len = np.minimum.reduceat(lengths[pair_docs - base].astype(np.float32), starts)
            self._max_tf[group_terms] = np.maximum(self._max_tf[group_terms], group_max_tf)
            self._min_len[group_terms] = np.minimum(self._min_len[group_terms], group_min_len)
        self._doc_ids = np.concatenate([self._doc_ids, ids])
        self._doc_len = np.concatenate([self._doc_len, lengths.astype(np.float32)])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), bool)])
        for offset, item_id in enumerate(ids.tolist()):
            self._id_to_doc[item_id] = base + offset
        self._alive_count += len(ids)
        self._alive_len += float(lengths.sum())

    def _append_postings(self, term: int, docs: np.ndarray, tf: np.ndarray) -> None:
        """Append a batch's postings of one term, merging the newest chunks while the last is at least as long as
        the one before it (a binary counter): a term keeps at most log2(postings) + 1 chunks, each posting is
        copied O(log n) times, and an index fed one turn at a time for hours holds no pile of tiny arrays."""
        chunks = self._chunks[term]
        chunks.append((docs, tf))
        while len(chunks) > 1 and len(chunks[-1][0]) >= len(chunks[-2][0]):
            (docs_a, tf_a), (docs_b, tf_b) = chunks[-2], chunks[-1]
            chunks[-2:] = [(np.concatenate([docs_a, docs_b]), np.concatenate([tf_a, tf_b]))]

    def _grow_bounds(self, vocab_size: int) -> None:
        grow = vocab_size - len(self._max_tf)
        if grow > 0:
            self._max_tf = np.concatenate([self._max_tf, np.zeros(grow, np.float32)])
            self._min_len = np.concatenate([self._min_len, np.full(grow, np.inf, np.float32)])

    def remove(self, ids: Iterable[int]) -> None:
        for item_id in np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64).tolist():
            doc = self._id_to_doc.pop(item_id, None)
            if doc is not None and self._alive[doc]:
                self._alive[doc] = False
                self._alive_count -= 1
                self._alive_len -= float(self._doc_len[doc])

    def __contains__(self, item_id: int) -> bool:
        return int(item_id) in self._id_to_doc

    def _postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        chunks = self._chunks[term]
        if len(chunks) > 1:
            # Merge once; later queries reuse the merged arrays.
            merged = (np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]))
            self._chunks[term] = [merged]
            return merged
        return chunks[0]

    def _contribution(self, idf: float, tf: np.ndarray, docs: np.ndarray, avgdl: float) -> np.ndarray:
        norm = K1 * (1.0 - B + B * self._doc_len[docs] / avgdl)
        return (idf * tf * (K1 + 1.0) / (tf + norm)).astype(np.float32)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (ids, BM25 scores), best first; `allowed` restricts to those ids. Documents matching no term are not returned."""
        if self._alive_count == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        term_ids = sorted({self._vocab[t] for t in self.tokenizer(query) if t in self._vocab})
        if not term_ids:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        avgdl = max(self._alive_len / self._alive_count, 1e-6)
        postings = [self._postings(term) for term in term_ids]
        dfs = np.array([len(docs) for docs, _ in postings], dtype=np.int64)
        idfs = np.log1p((self._alive_count - dfs + 0.5) / (dfs + 0.5))
        allowed_docs = None
        if allowed is not None:
            allowed_docs = np.fromiter((self._id_to_doc.get(i, -1) for i in np.asarray(allowed).tolist()), dtype=np.int64)
        found = self._search_maxscore(term_ids, postings, dfs, idfs, avgdl, k, allowed_docs)
        if found is None:
            found = self._search_all(postings, idfs, avgdl, allowed_docs)
        candidates, candidate_scores = found
        if len(candidates) > k:
            top = np.argpartition(-candidate_scores, k - 1)[:k]
            candidates, candidate_scores = candidates[top], candidate_scores[top]
        order = np.lexsort((candidates, -candidate_scores))  # best first; ties by insertion order
        return self._doc_ids[candidates[order]], candidate_scores[order].astype(np.float32)

    def _keep(self, candidates: np.ndarray, allowed_docs: np.ndarray | None) -> np.ndarray:
        keep = self._alive[candidates]
        if allowed_docs is not None:
            keep &= np.isin(candidates, allowed_docs)
        return keep

    def _search_all(
        self, postings: list[tuple[np.ndarray, np.ndarray]], idfs: np.ndarray, avgdl: float, allowed_docs: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score every posting of every query term: (doc indexes, scores) of the matching documents."""
        contributions = [self._contribution(idf, tf, docs, avgdl) for (docs, tf), idf in zip(postings, idfs.tolist())]
        if len(postings) == 1:
            candidates, scores = postings[0][0].astype(np.int64), contributions[0]
        else:
            docs = np.concatenate([d for d, _ in postings])
            totals = np.bincount(docs, weights=np.concatenate(contributions), minlength=len(self._doc_ids))
            matched = np.zeros(len(self._doc_ids), bool)
            matched[docs] = True  # a linear pass; np.unique would sort every posting
            candidates = np.flatnonzero(matched)
            scores = totals[candidates]
        keep = self._keep(candidates, allowed_docs)
        return candidates[keep], scores[keep]

    def _search_maxscore(
        self,
        term_ids: list[int],
        postings: list[tuple[np.ndarray, np.ndarray]],
        dfs: np.ndarray,
        idfs: np.ndarray,
        avgdl: float,
        k: int,
        allowed_docs: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Exact top-k candidates by MaxScore, or None when pruning would not beat scoring every posting."""
        if len(term_ids) < 2:
            return None
        terms = np.asarray(term_ids)
        max_tf = self._max_tf[terms]
        bounds = idfs * max_tf * (K1 + 1.0) / (max_tf + K1 * (1.0 - B + B * self._min_len[terms] / avgdl))
        order = np.argsort(dfs, kind="stable")
        # Past this much lookup work, one pass over all postings is cheaper.
        budget = int(dfs.sum()) + len(self._doc_ids) // 4
        for split in range(1, len(terms)):
            essential, rest = order[:split], order[split:]
            candidates = np.unique(np.concatenate([postings[i][0] for i in essential.tolist()])).astype(np.int64)
            if len(candidates) * len(terms) > budget:
                return None
            candidates = candidates[self._keep(candidates, allowed_docs)]
            if len(candidates) < k:
                continue
            # Sum in term-id order, as _search_all does, so scores match it exactly.
            scores = np.zeros(len(candidates), np.float64)
            for (docs, tf), idf in zip(postings, idfs.tolist()):
                at = np.minimum(np.searchsorted(docs, candidates), len(docs) - 1)
                hit = docs[at] == candidates
                if hit.any():
                    scores[hit] += self._contribution(idf, tf[at[hit]], candidates[hit], avgdl)
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            if kth > float(bounds[rest].sum()):
                return candidates, scores
        return None

