"""A FAISS vector index over int64 ids: exact inner product (IndexFlatIP in an IndexIDMap2)
while small, an inverted-file index (IndexIVFFlat) once it grows past `ann_threshold`,
exact search moved to the GPU when faiss-gpu and a CUDA device are there.

Why IVF and not HNSW (measured in benchmarks/retrieval_scale.py, reports/retrieval_scale*.md):
at a million MiniLM-like vectors on two cores, HNSW (M=32, efConstruction=40) reached
recall@10 0.81 at efSearch=96 and needs a much larger efSearch (and slower inserts) to
pass 0.95, while IVFFlat with sqrt(n) lists and 16 probes gives ~0.98 in a few
milliseconds and adds vectors several times faster. The coarse centroids are trained on
the vectors present when the index turns approximate, and retrained (the index rebuilt
from its own vectors) each time it has grown fourfold, so lists stay near sqrt(n) long.

It is a cache of vectors held in the database: `save`/`load` write and read one file,
and a file that cannot be read (truncated, corrupt, wrong dimension) raises
`IndexFileError` so the caller rebuilds from the database. HNSW cannot remove vectors,
so removed ids are masked at search time and the index is rebuilt from its own stored
vectors once a quarter of it is dead. (IVF indexes follow the same path. Files written
with an HNSW index still load and search.)
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 96
IVF_NPROBE = 16
IVF_RETRAIN_GROWTH = 4  # rebuild the coarse quantizer when the index has grown this many times
IVF_TRAIN_PER_LIST = 40  # training sample: this many vectors per list (faiss's own lower bound is 39)


def ivf_lists(n: int) -> int:
    """Number of inverted lists for n vectors: the power of two nearest sqrt(n), at least 64."""
    return max(64, 1 << int(round(np.log2(max(n, 1)) / 2)))


class IndexFileError(RuntimeError):
    """An index file on disk cannot be used; rebuild it from the database."""


SEARCH_THREADS = 1
"""OpenMP threads of one query's search. A team of 2 on a busy 2-core machine spins for its second thread: one search
of 300 vectors took 13 ms of wall time and 6.5 ms of CPU against 12 us on one thread, and a server runs many
searches at once from its worker threads."""


@contextmanager
def _search_threads() -> Iterator[None]:
    # OpenMP's thread count is per calling thread: set it for this search and put it back, so a local model that
    # generates on this thread (torch shares the OpenMP runtime) keeps its own.
    before = faiss.omp_get_max_threads()
    if before == SEARCH_THREADS:
        yield
        return
    faiss.omp_set_num_threads(SEARCH_THREADS)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def set_faiss_threads(threads: int | None) -> None:
    """Set the OpenMP threads FAISS uses for search, adds and training (process-wide); None leaves them as they are."""
    if threads is not None:
        faiss.omp_set_num_threads(threads)


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class VectorIndex:
    """Vectors by id; `search` returns (ids, scores) best first, cosine scores for normalised vectors."""

    def __init__(self, dim: int, ann_threshold: int = 50_000, use_gpu: bool | None = None):
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.use_gpu = gpu_available() if use_gpu is None else use_gpu and gpu_available()
        self._index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._hnsw = False  # approximate (IVF, or HNSW from an older file): removals are masked
        self._trained_at = 0  # how many vectors the IVF quantizer was trained on
        self._dead: set[int] = set()  # removed ids still inside an approximate index
        self._gpu_index = None

    # -- size and kind ---------------------------------------------------------------

    @property
    def is_approximate(self) -> bool:
        return self._hnsw

    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self._dead)

    # -- writes ----------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(ids) == 0:
            return
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors have shape {vectors.shape}, expected ({len(ids)}, {self.dim})")
        if self._dead:
            self._dead.difference_update(ids.tolist())
        self._index.add_with_ids(vectors, ids)
        self._gpu_index = None
        if not self._hnsw and self._index.ntotal > self.ann_threshold:
            self._convert_to_ann()
        elif self._trained_at and self._index.ntotal >= IVF_RETRAIN_GROWTH * self._trained_at:
            self._compact()

    def remove(self, ids: np.ndarray | list[int]) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        if self._hnsw:
            present = [i for i in ids.tolist() if self._has(i)]
            self._dead.update(present)
            if len(self._dead) * 4 > self._index.ntotal:
                self._compact()
        else:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))
        self._gpu_index = None

    def vector(self, item_id: int) -> np.ndarray | None:
        """The vector stored under this id, None if there is none."""
        if item_id in self._dead:
            return None
        try:
            return self._index.reconstruct(int(item_id))
        except RuntimeError:  # faiss: "key not found"
            return None

    def _has(self, item_id: int) -> bool:
        return self.vector(item_id) is not None

    def _all(self) -> tuple[np.ndarray, np.ndarray]:
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vectors = self._index.index.reconstruct_n(0, self._index.ntotal) if len(ids) else np.zeros((0, self.dim), np.float32)
        if self._dead:
            keep = ~np.isin(ids, np.fromiter(self._dead, dtype=np.int64))
            ids, vectors = ids[keep], vectors[keep]
        return ids, vectors

    def _convert_to_ann(self) -> None:
        ids, vectors = self._all()
        self._index = self._new_ivf(vectors)
        self._hnsw = True
        self._dead.clear()
        self._index.add_with_ids(vectors, ids)

    def _compact(self) -> None:
        ids, vectors = self._all()
        self._dead.clear()
        if len(ids) > self.ann_threshold:
            self._index = self._new_ivf(vectors)
            self._hnsw = True
        else:
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            self._hnsw = False
            self._trained_at = 0
        self._index.add_with_ids(vectors, ids)

    def _new_ivf(self, vectors: np.ndarray) -> faiss.Index:
        """An empty IVFFlat index whose quantizer is trained on a sample of `vectors`."""
        nlist = ivf_lists(len(vectors))
        inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors
        if len(vectors) > nlist * IVF_TRAIN_PER_LIST:
            # A fixed seed: rebuilding from the same vectors gives the same index.
            picks = np.random.default_rng(0).choice(len(vectors), nlist * IVF_TRAIN_PER_LIST, replace=False)
            sample = vectors[np.sort(picks)]
        inner.train(np.ascontiguousarray(sample))
        inner.nprobe = IVF_NPROBE
        inner.make_direct_map(True)  # reconstruct_n for compaction and retraining
        self._trained_at = len(vectors)
        return faiss.IndexIDMap2(inner)

    # -- reads -----------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ids and scores for one query vector; `allowed` restricts the search to those ids."""
        ntotal = int(self._index.ntotal)
        if ntotal == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        fetch = min(ntotal, k + len(self._dead))
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=np.int64)
            if len(allowed) == 0:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            fetch = min(fetch, len(allowed) + len(self._dead))
            with _search_threads():
                scores, ids = self._index.search(query, fetch, params=self._ann_params(faiss.IDSelectorBatch(allowed), fetch, len(allowed)))
        else:
            index = self._searchable()
            params = self._ann_params(None, fetch, ntotal)
            with _search_threads():
                scores, ids = index.search(query, fetch, params=params) if params is not None else index.search(query, fetch)
        ids, scores = ids[0], scores[0]
        keep = ids >= 0
        if self._dead:
            keep &= ~np.isin(ids, np.fromiter(self._dead, dtype=np.int64))
        ids, scores = ids[keep][:k], scores[keep][:k]
        # Equal scores (keys of one text: a session's first question and reply share their round text) in id order,
        # not in the order the index happened to receive them (background indexer threads add batches in any order).
        order = np.lexsort((ids, -scores))
        return ids[order], scores[order]

    def _ann_params(self, selector: faiss.IDSelector | None, fetch: int, candidates: int) -> faiss.SearchParameters | None:
        """Search parameters for the inner index: a wider search for deep or filtered queries."""
        if not self._hnsw:
            return faiss.SearchParameters(sel=selector) if selector is not None else None
        inner = faiss.downcast_index(self._index.index)
        if isinstance(inner, faiss.IndexHNSWFlat):
            if selector is None and fetch <= HNSW_EF_SEARCH:
                return None
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(HNSW_EF_SEARCH, fetch))
        # IVF: probe more lists when only a fraction of the vectors may be returned, so that
        # about as many allowed vectors are scanned as in an unfiltered search (all lists at worst).
        nprobe = IVF_NPROBE * max(1, -(-int(self._index.ntotal) // max(candidates, 1)))
        return faiss.SearchParametersIVF(sel=selector, nprobe=min(inner.nlist, nprobe))

    def _searchable(self) -> faiss.Index:
        if not self.use_gpu or self._hnsw:
            return self._index
        if self._gpu_index is None:
            resources = faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(resources, 0, self._index)
        return self._gpu_index

    # -- persistence -----------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename): a crash leaves the old file or the new one."""
        if self._dead:
            self._compact()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        faiss.write_index(self._index, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, dim: int, ann_threshold: int, expected_count: int | None = None, use_gpu: bool | None = None) -> "VectorIndex":
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:  # faiss reports unreadable files as RuntimeError
            raise IndexFileError(f"cannot read index file {path.name}: {str(exc).splitlines()[0]}") from exc
        if index.d != dim:
            raise IndexFileError(f"index file {path.name} has dimension {index.d}, expected {dim}")
        if expected_count is not None and index.ntotal != expected_count:
            raise IndexFileError(f"index file {path.name} holds {index.ntotal} vectors, expected {expected_count}")
        loaded = cls(dim, ann_threshold, use_gpu)
        # read_index already returns the concrete class; a downcast wrapper would not own the memory.
        loaded._index = index
        if not isinstance(loaded._index, faiss.IndexIDMap2):
            raise IndexFileError(f"index file {path.name} is not an id-mapped index")
        inner = faiss.downcast_index(loaded._index.index)
        loaded._hnsw = isinstance(inner, (faiss.IndexHNSWFlat, faiss.IndexIVFFlat))
        if isinstance(inner, faiss.IndexHNSWFlat):
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        elif isinstance(inner, faiss.IndexIVFFlat):
            inner.nprobe = IVF_NPROBE
            loaded._trained_at = int(inner.ntotal)  # the original training size is not stored; count from here
        return loaded
