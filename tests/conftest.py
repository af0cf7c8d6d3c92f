"""Shared fixtures: every test gets its own data dir; store tests run on SQLite and, when
MEMSTREAM_TEST_PG_URL names a server (CI starts one), on PostgreSQL too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
LOCOMO_DEV = DATA_DIR / "locomo" / "locomo10_dev.json"
LONGMEMEVAL_SAMPLE = DATA_DIR / "longmemeval" / "longmemeval_sample.json"
PG_URL = os.environ.get("MEMSTREAM_TEST_PG_URL")

# Triton reads TRITON_INTERPRET when first imported (transformers imports it): without a GPU,
# the kernel tests (tests/kernels) run the Triton kernels under its CPU interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def shared_weights(tmp_path_factory) -> Path:
    """One converted-weights cache for the run (backend.weights_cache's default is `weights/` in the data dir):
    converting the default GGUF model costs about 30 s on a 2-core machine, and every test has its own data dir.
    The conversion itself is tested on its own folder (tests/backends/test_weights_cache.py)."""
    return tmp_path_factory.mktemp("weights")


def share_weights(home: Path, shared: Path) -> None:
    """Point a data dir's `weights/` at the run's shared cache (a server child given its own data dir, too)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "weights").symlink_to(shared, target_is_directory=True)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch, shared_weights):
    """No test reads or writes the real user data dir or a stray memstream.toml; no test reaches a model hub."""
    home = tmp_path / "memstream-home"
    share_weights(home, shared_weights)
    monkeypatch.setenv("MEMSTREAM_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    for name in list(os.environ):
        if name.startswith("MEMSTREAM_") and name not in ("MEMSTREAM_HOME", "MEMSTREAM_TEST_PG_URL"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return home


def encoded_rounds(settings):
    """The settings with round vectors embedded from the round's text (retrieval.round_vectors 'encoded'): the tests of
    the machinery that exists for them (open rounds deferred, refreshed texts superseded)."""
    return settings.model_copy(update={"retrieval": settings.retrieval.model_copy(update={"round_vectors": "encoded"})})


def reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _backends():
    params = [pytest.param("sqlite", id="sqlite")]
    params.append(
        pytest.param(
            "postgres",
            id="postgres",
            marks=[pytest.mark.postgres, pytest.mark.skipif(PG_URL is None, reason="MEMSTREAM_TEST_PG_URL not set (CI starts a PostgreSQL server)")],
        )
    )
    return params


@pytest.fixture(params=_backends())
def db_url(request, tmp_path) -> str:
    """A fresh, empty database: a SQLite file, or the test PostgreSQL database wiped clean."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'memstream.db'}"
    reset_postgres(PG_URL)
    return PG_URL


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'memstream.db'}"


@pytest.fixture
def store(db_url):
    from memstream.memory.store import MemoryStore

    with MemoryStore(db_url) as opened:
        yield opened


@pytest.fixture(scope="session")
def embedders():
    """MiniLM loads once for the whole test session (the real model, from its PyPI package): every Memory,
    agent, server and app a test opens shares it."""
    from memstream.retrieval.embedder import EmbedderCache

    return EmbedderCache()


@pytest.fixture
def make_memory(tmp_path, embedders):
    """make_memory(settings=None, name="memory", **open_memory options) -> an open Memory (closed after the test)
    over `settings`, or over a fresh SQLite file `<name>.db` in the test's temp dir; with the session's MiniLM
    unless the options name an `embedder`."""
    from memstream.config import load_settings
    from memstream.memory import open_memory

    opened = []

    def make(settings=None, name: str = "memory", **options):
        if settings is None:
            settings = load_settings(db_url=f"sqlite:///{tmp_path / (name + '.db')}", home=str(tmp_path))
        options.setdefault("embedders", embedders)
        memory = open_memory(settings, **options)
        opened.append(memory)
        return memory

    yield make
    for memory in reversed(opened):
        memory.close()


@pytest.fixture
def memory(make_memory):
    """An open Memory over a fresh SQLite file, with the session's MiniLM."""
    return make_memory()


# CI runs the fuzz targets on a fixed sequence of examples, so a landing never depends on the draw;
# `python benchmarks/reliability.py --only fuzz` explores with fresh randomness and more cases.
if os.environ.get("CI"):
    from hypothesis import settings as hypothesis_settings

    hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
    hypothesis_settings.load_profile("ci")
