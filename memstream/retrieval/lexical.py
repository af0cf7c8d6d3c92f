"""BM25 over an in-memory inverted index that grows as turns arrive.

Why not the alternatives (measured in benchmarks/retrieval_scale.py, see
reports/retrieval_scale.md): bm25s scores fast but rebuilds its whole index to add a
document, and SQLite FTS5's OR-queries over a million rows take around a second on two
cores. Here postings are numpy chunks appended per batch; a query concatenates the
chunks of its few terms and scores them with vectorised BM25 (Lucene's idf, k1=1.2,
b=0.75). Removed documents are masked (their postings stay until the index is rebuilt,
which happens on every process start: the database is the truth).

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
                self._chunks[int(pair_terms[start])].append((pair_docs[start:end], tf[start:end]))
        self._doc_ids = np.concatenate([self._doc_ids, ids])
        self._doc_len = np.concatenate([self._doc_len, lengths.astype(np.float32)])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), bool)])
        for offset, item_id in enumerate(ids.tolist()):
            self._id_to_doc[item_id] = base + offset
        self._alive_count += len(ids)
        self._alive_len += float(lengths.sum())

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

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (ids, BM25 scores), best first; `allowed` restricts to those ids. Documents matching no term are not returned."""
        if self._alive_count == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        term_ids = sorted({self._vocab[t] for t in self.tokenizer(query) if t in self._vocab})
        if not term_ids:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        n_docs = len(self._doc_ids)
        avgdl = max(self._alive_len / self._alive_count, 1e-6)
        all_docs, all_scores = [], []
        for term in term_ids:
            docs, tf = self._postings(term)
            df = len(docs)
            idf = np.log1p((self._alive_count - df + 0.5) / (df + 0.5))
            norm = K1 * (1.0 - B + B * self._doc_len[docs] / avgdl)
            all_docs.append(docs)
            all_scores.append((idf * tf * (K1 + 1.0) / (tf + norm)).astype(np.float32))
        docs = np.concatenate(all_docs)
        scores = np.bincount(docs, weights=np.concatenate(all_scores), minlength=n_docs) if len(term_ids) > 1 else None
        if scores is None:
            candidates, candidate_scores = docs.astype(np.int64), all_scores[0]
        else:
            candidates = np.unique(docs).astype(np.int64)
            candidate_scores = scores[candidates]
        keep = self._alive[candidates]
        if allowed is not None:
            allowed_docs = np.fromiter((self._id_to_doc.get(i, -1) for i in np.asarray(allowed).tolist()), dtype=np.int64)
            keep &= np.isin(candidates, allowed_docs)
        candidates, candidate_scores = candidates[keep], candidate_scores[keep]
        if len(candidates) > k:
            top = np.argpartition(-candidate_scores, k - 1)[:k]
            candidates, candidate_scores = candidates[top], candidate_scores[top]
        order = np.argsort(-candidate_scores, kind="stable")
        return self._doc_ids[candidates[order]], candidate_scores[order].astype(np.float32)
