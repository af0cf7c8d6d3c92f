"""A small deterministic embedder for fast tests of control flow (never a default: the real MiniLM runs in
the slow tests and the benchmarks). Bag of hashed words, L2-normalised, so texts sharing words are close."""

from __future__ import annotations

import hashlib
import re
import threading

import numpy as np

from memstream.memory.indexer import on_indexer_thread

_WORD = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    def __init__(self, dim: int = 64, name: str = "test-hashing-64"):
        self.dim = dim
        self.name = name
        self.calls = 0
        self.gate: threading.Event | None = None
        """When set to an Event, the background indexer's embed() calls block until it is set (to hold vectors
        'pending' in a test); query embeddings on other threads pass."""
        self.fail_on: str | None = None
        """Texts containing this substring raise (an embedder that cannot handle one row)."""

    def embed(self, texts):
        if self.gate is not None and on_indexer_thread():
            self.gate.wait(30)
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            if self.fail_on is not None and self.fail_on in text:
                raise ValueError(f"cannot embed {text[:30]!r}")
            for word in _WORD.findall(text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm else out[row]
            if not norm:
                out[row, 0] = 1.0
        return out


def recording(embedder: HashingEmbedder) -> list[str]:
    """Every text the embedder is asked to embed from now on, in order (a list that grows)."""
    texts: list[str] = []
    embed = embedder.embed
    embedder.embed = lambda batch: texts.extend(batch) or embed(batch)
    return texts
