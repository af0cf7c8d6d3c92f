"""The converted-weights cache (GGUF -> safetensors, keyed by the file's SHA-256) and background loading."""

from __future__ import annotations

import threading

import pytest
import torch

from memstream.backends import local as local_module
from memstream.backends.background import BackgroundBackend
from memstream.backends.base import BackendError, ModelNotFoundError
from memstream.backends.models import (
    DEFAULT_MODEL,
    converted_folder,
    file_sha256,
    load_with_cache,
    make_backend,
    resolve_model,
    weights_cache_dir,
)
from memstream.backends.scripted import ScriptedBackend
from memstream.config import BackendSettings

HELLO = [{"role": "user", "content": "hello"}]


def test_the_key_follows_the_file_contents_and_the_dtype(tmp_path):
    cache = tmp_path / "cache"
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF one")
    first = converted_folder(model, "float32", cache)
    assert converted_folder(model, "float32", cache) == first  # remembered by (size, mtime): not re-read
    assert converted_folder(model, "bfloat16", cache) != first
    model.write_bytes(b"GGUF two, longer")
    assert converted_folder(model, "float32", cache) != first
    assert file_sha256(model) == file_sha256(model, cache)
    (cache / "hashes.json").write_text("{not json", encoding="utf-8")  # a damaged index is rebuilt, not fatal
    assert file_sha256(model, cache) == file_sha256(model)


def test_the_cache_lives_in_the_data_dir_unless_configured(isolated_home, tmp_path):
    assert weights_cache_dir(BackendSettings()) == isolated_home / "weights"
    assert weights_cache_dir(BackendSettings(weights_cache=tmp_path / "w")) == tmp_path / "w"


def _same_weights(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_a_warm_load_reads_the_converted_copy_and_a_damaged_copy_is_rebuilt(tmp_path, monkeypatch):
    spec = resolve_model(DEFAULT_MODEL)
    cache = tmp_path / "weights"
    conversions: list[str] = []
    real_load_hf = local_module.load_hf
    converted = {}

    def counting_load_hf(path, gguf_file=None, dtype="float32"):
        conversions.append(gguf_file)
        if "result" not in converted:
            converted["result"] = real_load_hf(path, gguf_file, dtype)
        return converted["result"]  # the rebuild below reuses the first conversion (20 s each on a small CPU)

    monkeypatch.setattr(local_module, "load_hf", counting_load_hf)
    cold = load_with_cache(str(spec.path), spec.gguf_file, "float32", "cpu", spec.name, cache)
    folder = converted_folder(spec.path / spec.gguf_file, "float32", cache)
    assert conversions == [spec.gguf_file]
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert not [p for p in cache.iterdir() if ".tmp" in p.name]  # no staging folder left behind

    warm = load_with_cache(str(spec.path), spec.gguf_file, "float32", "cpu", spec.name, cache)
    assert conversions == [spec.gguf_file]  # no second conversion
    assert _same_weights(cold, warm)
    assert warm.stop_token_ids == cold.stop_token_ids and warm.context_window == cold.context_window
    assert warm.tokenizer.apply_chat_template(HELLO, tokenize=False) == cold.tokenizer.apply_chat_template(HELLO, tokenize=False)
    assert warm.tokenizer.encode("Caroline went to the LGBTQ support group.") == cold.tokenizer.encode(
        "Caroline went to the LGBTQ support group."
    )

    (folder / "model.safetensors").write_bytes(b"\x00" * 64)  # a truncated, damaged copy
    rebuilt = load_with_cache(str(spec.path), spec.gguf_file, "float32", "cpu", spec.name, cache)
    assert conversions == [spec.gguf_file, spec.gguf_file]  # converted again, the damaged copy never served
    assert _same_weights(cold, rebuilt)
    assert (folder / "model.safetensors").stat().st_size > 1_000_000


def test_a_background_backend_answers_its_name_at_once_and_calls_wait_for_the_load():
    release = threading.Event()

    def load():
        release.wait(10)
        return ScriptedBackend(replies=["loaded reply"])

    backend = BackgroundBackend("pending-model", load)
    assert backend.name == "pending-model" and not backend.ready
    with pytest.raises(BackendError, match="still loading"):
        backend.wait(timeout_s=0.05)
    release.set()
    assert backend.complete(HELLO) == "loaded reply"
    assert backend.ready and backend.name == "scripted" and backend.context_window == 8192


def test_a_failed_background_load_raises_its_own_error_from_every_call():
    def load():
        raise ModelNotFoundError("model file x.gguf does not exist")

    backend = BackgroundBackend("x", load)
    for call in (lambda: backend.complete(HELLO), lambda: backend.count_tokens("hi"), lambda: backend.context_window):
        with pytest.raises(ModelNotFoundError, match="x.gguf does not exist"):
            call()


def test_a_load_that_fails_with_a_foreign_error_is_named_as_a_failed_load():
    # Before: a bare RuntimeError (a device that is not there, torn weights) reached the server as a 500, a ValueError
    # as a 400 blaming the request; now every call raises one ModelNotFoundError (502 "failed to load") naming it.
    def load():
        raise RuntimeError("CUDA error: invalid device ordinal")

    backend = BackgroundBackend("tiny", load)
    with pytest.raises(ModelNotFoundError, match="model tiny failed to load: RuntimeError: CUDA error") as first:
        backend.complete(HELLO)
    with pytest.raises(ModelNotFoundError) as second:
        backend.count_tokens("hi")
    assert first.value is second.value and isinstance(first.value.__cause__, RuntimeError)


def test_make_backend_in_the_background_still_rejects_a_missing_model_at_once():
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        make_backend(BackendSettings(kind="local", model="no-such-model"), background=True)
    assert isinstance(make_backend(BackendSettings(kind="scripted"), background=True), ScriptedBackend)
