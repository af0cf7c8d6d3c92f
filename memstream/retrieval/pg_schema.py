"""The database-resident index's schema on PostgreSQL: the pgvector extension, the key table and its indexes.

One row per retrieval key (retrieval/keys.py: turn, round, statement, fact), holding its vector and its
`tsvector`, beside the rows it points to. The keys reference their turn or fact with ON DELETE CASCADE, so a
deleted turn or a forgotten user loses its keys in the same transaction, in every process at once.

The vector column needs its dimension, which only the embedder knows, so this step runs when the index is
first opened with an embedder (not in the store's own migrations), recorded in `schema_migrations` as
`pg_index_v1` with the model and dimension in `index_meta`.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from memstream.errors import UnavailableError
from memstream.memory.schema import lock_schema

MIGRATION = "pg_index_v1"
TEXT_CONFIG = "english"  # PostgreSQL's Snowball English: stopwords dropped, stemmed (like the BM25 tokenizer)
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64


class PgvectorUnavailableError(UnavailableError):
    """The PostgreSQL server has no pgvector extension."""


def has_pgvector(conn: Connection) -> bool:
    """Whether the server can create (or already has) the `vector` extension."""
    return conn.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first() is not None


def stored_meta(conn: Connection) -> dict[str, str]:
    """The index's recorded model and dimension ({} before the index exists)."""
    if conn.execute(text("SELECT to_regclass('index_meta')")).scalar() is None:
        return {}
    return {name: value for name, value in conn.execute(text("SELECT name, value FROM index_meta"))}


def ensure_schema(conn: Connection, dim: int, model: str) -> dict[str, str]:
    """Create the extension, tables and indexes when missing; return the recorded meta (model, dim)."""
    lock_schema(conn, "index")
    meta = stored_meta(conn)
    if meta:
        ensure_unembedded_index(conn)  # a database indexed before round keys were deferred
        return meta
    if not has_pgvector(conn):
        raise PgvectorUnavailableError(
            "this PostgreSQL server has no pgvector extension (the 'vector' extension is not available), which the "
            "database-resident index needs: install pgvector on the server (https://github.com/pgvector/pgvector), "
            "or keep the in-process index with retrieval.index_backend = 'memory'"
        )
    try:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    except DBAPIError as exc:
        raise PgvectorUnavailableError(
            f"cannot create the pgvector extension ('CREATE EXTENSION vector' failed: {str(exc.orig).splitlines()[0]}): "
            "a superuser must run it once in this database, or use retrieval.index_backend = 'memory'"
        ) from exc
    dim = int(dim)
    conn.execute(text("CREATE TABLE index_meta (name varchar(50) PRIMARY KEY, value text NOT NULL)"))
    conn.execute(
        text(
            f"""
            CREATE TABLE index_keys (
                key_id bigint PRIMARY KEY,              -- item id * 8 + kind code, as retrieval/keys.py packs it
                user_id varchar(200) NOT NULL,
                kind smallint NOT NULL,                 -- keys.KIND_CODE: 0 turn, 1 round, 2 statement, 3 fact
                turn_id integer REFERENCES turns(id) ON DELETE CASCADE,
                fact_id integer REFERENCES facts(id) ON DELETE CASCADE,
                turn_ids integer[] NOT NULL,            -- the turns the key points to: its own, or a fact's sources
                conversation_id varchar(200),
                event_time timestamp,                   -- when the turn was said (turn, round and statement keys)
                window_start timestamp,                 -- an event-time fact's window (time-aware search)
                window_end timestamp,
                embedding vector({dim}),
                tsv tsvector NOT NULL
            )
            """
        )
    )
    # Every query filters by user and kind first: small users are searched exactly through this index.
    conn.execute(text("CREATE INDEX ix_index_keys_user_kind ON index_keys (user_id, kind)"))
    # The cascades look keys up by their turn or fact.
    conn.execute(text("CREATE INDEX ix_index_keys_turn ON index_keys (turn_id)"))
    conn.execute(text("CREATE INDEX ix_index_keys_fact ON index_keys (fact_id)"))
    conn.execute(text("CREATE INDEX ix_index_keys_tsv ON index_keys USING gin (tsv)"))
    # Inner product on L2-normalised vectors (the embedder normalises) ranks as cosine does, without the norms.
    conn.execute(
        text(
            "CREATE INDEX ix_index_keys_hnsw ON index_keys USING hnsw (embedding vector_ip_ops) "
            f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
        )
    )
    ensure_unembedded_index(conn)
    conn.execute(text("INSERT INTO index_meta (name, value) VALUES ('model', :model), ('dim', :dim)"), {"model": model, "dim": str(dim)})
    conn.execute(
        text("INSERT INTO schema_migrations (name, applied_at) VALUES (:name, :at) ON CONFLICT (name) DO NOTHING"),
        {"name": MIGRATION, "at": datetime.now(timezone.utc).replace(tzinfo=None)},
    )
    return {"model": model, "dim": str(dim)}


def ensure_unembedded_index(conn: Connection) -> None:
    """The keys written without a vector (deferred round keys, PgIndex.embed_deferred): found without a scan. With every
    kind's vectors, a few rows; with fewer (retrieval.dense_kinds), also every key of the other kinds."""
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_index_keys_unembedded ON index_keys (key_id) WHERE embedding IS NULL"))
