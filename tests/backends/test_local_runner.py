"""The local runner on the default model (SmolLM2-135M-Instruct GGUF) against transformers itself."""

from __future__ import annotations

import pytest
import torch

from memstream.backends.base import ContextOverflowError
from memstream.backends.kv_cache import PagedKVCache
from memstream.backends.local import LocalBackend, decode_n, prefill, sample
from memstream.backends.models import DEFAULT_MODEL, resolve_model

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]


@pytest.fixture(scope="module")
def hf_model():
    """transformers' own model on the same GGUF file (de-quantised by transformers)."""
    from transformers import AutoModelForCausalLM

    spec = resolve_model(DEFAULT_MODEL)
    return AutoModelForCausalLM.from_pretrained(spec.path, gguf_file=spec.gguf_file, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def prompt_64(local_backend):
    text = "Memory lets an assistant recall what a user said weeks ago, even across sessions. " * 6
    ids = local_backend.local.tokenizer(text, add_special_tokens=False)["input_ids"][:64]
    assert len(ids) == 64
    return torch.tensor([ids])


def fresh_cache(backend: LocalBackend, tokens: int = 128) -> PagedKVCache:
    a = backend.local.args
    return PagedKVCache(a.n_layers, a.n_kv_heads, a.head_dim, backend.policy.params.block_size, tokens)


def test_logits_match_transformers(local_backend, hf_model, prompt_64, record_property):
    ours = prefill(local_backend.local.model, prompt_64, fresh_cache(local_backend), all_logits=True)
    with torch.inference_mode():
        reference = hf_model(prompt_64).logits
    diff = (ours - reference).abs().max().item()
    record_property("max_abs_logit_diff", diff)
    print(f"max |logits - transformers| over 64 positions: {diff:.3g} (logit scale {reference.abs().max().item():.1f})")
    assert diff < 1e-3


def test_greedy_32_tokens_identical_to_transformers(local_backend, hf_model, prompt_64):
    with torch.inference_mode():
        expected = hf_model.generate(prompt_64, max_new_tokens=32, min_new_tokens=32, do_sample=False)[0, 64:].tolist()
    model = local_backend.local.model
    cache = fresh_cache(local_backend)
    first = int(sample(prefill(model, prompt_64, cache))[0])
    rest = decode_n(model, first, 31, cache, next_token=sample)
    assert [first] + rest == expected


def test_stream_yields_pieces_that_join_to_the_completion(local_backend):
    pieces = list(local_backend.stream(QUESTION, max_tokens=24))
    assert len(pieces) > 3 and all(pieces)
    assert "".join(pieces) == local_backend.complete(QUESTION, max_tokens=24)
    assert local_backend.last_stats.completion_tokens >= 1


def test_stop_string_ends_the_reply_before_it(local_backend):
    full = local_backend.complete(QUESTION, max_tokens=32)
    words = full.split()
    assert len(words) >= 4, full
    stop = words[3]
    cut = local_backend.complete(QUESTION, max_tokens=32, stop=[stop])
    assert cut == full[: full.index(stop)]
    assert local_backend.last_stats.finish_reason == "stop"


def test_sampling_is_seeded_and_top_p_keeps_the_nucleus(local_backend):
    a = LocalBackend(local_backend.local, seed=7).complete(QUESTION, max_tokens=16, temperature=1.2)
    b = LocalBackend(local_backend.local, seed=7).complete(QUESTION, max_tokens=16, temperature=1.2)
    assert a == b
    # A nucleus this small holds only the most likely token: sampling collapses to greedy.
    tiny_nucleus = LocalBackend(local_backend.local, seed=3).complete(QUESTION, max_tokens=16, temperature=1.0, top_p=1e-6)
    assert tiny_nucleus == local_backend.complete(QUESTION, max_tokens=16)


def test_max_tokens_stops_generation(local_backend):
    local_backend.complete([{"role": "user", "content": "Count from one to one hundred in words."}], max_tokens=5)
    assert local_backend.last_stats.completion_tokens == 5
    assert local_backend.last_stats.finish_reason == "length"


def test_context_overflow_is_an_error_and_the_backend_keeps_working(local_backend):
    small = LocalBackend(local_backend.local, context_limit=128)
    long_message = [{"role": "user", "content": "memory " * 400}]
    with pytest.raises(ContextOverflowError, match="context window is 128"):
        small.stream(long_message)
    # A reply is clipped to the room left in the window.
    prompt_tokens = small.count_tokens(QUESTION)
    small.complete(QUESTION, max_tokens=500)
    assert small.last_stats.completion_tokens <= 128 - prompt_tokens
    assert small.complete(QUESTION, max_tokens=8)


@pytest.mark.parametrize(
    "messages, error",
    [([], "empty"), ([{"role": "robot", "content": "hi"}], "role"), ([{"role": "user"}], "content")],
)
def test_bad_messages_are_rejected(local_backend, messages, error):
    with pytest.raises(ValueError, match=error):
        local_backend.complete(messages)


def test_count_tokens(local_backend):
    assert local_backend.count_tokens("hello world") == 2
    assert local_backend.count_tokens(QUESTION) > local_backend.count_tokens(QUESTION[0]["content"])


def test_policies_that_keep_distances_in_range_read_past_the_trained_window(local_backend):
    from memstream.backends.kernels import make_policy

    trained = local_backend.local.context_window
    long = LocalBackend(local_backend.local, policy=make_policy("block_topk"), context_limit=2 * trained)
    assert long.context_window == 2 * trained
    assert local_backend.local.model.rope_cos.shape[0] >= 2 * trained  # RoPE tables cover the new positions
    assert LocalBackend(local_backend.local, context_limit=2 * trained).context_window == trained  # dense stays capped
    with pytest.raises(TypeError, match="make_policy"):
        LocalBackend(local_backend.local, policy="block_topk")


def test_backend_generation_runs_the_decode_n_loop(local_backend, prompt_64):
    # The benchmarks time decode_n; the backend's stream must produce the same greedy tokens.
    reply = local_backend.complete(QUESTION, max_tokens=6)
    ids = torch.tensor([local_backend.encode(QUESTION)])
    cache = fresh_cache(local_backend, ids.shape[1] + 8)
    first = int(prefill(local_backend.local.model, ids, cache).argmax())
    tokens = [first] + decode_n(local_backend.local.model, first, 5, cache, lambda logits: logits.argmax(dim=-1))
    assert reply == local_backend.local.tokenizer.decode(tokens, skip_special_tokens=True)
