"""Our Transformer against transformers' LlamaForCausalLM on small random models (no download).

Covers each RoPE scaling the runner supports, GQA, untied heads, prefill and step-by-step decode.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from memstream.backends.kv_cache import PagedKVCache
from memstream.backends.llama import ModelArgs, Transformer
from memstream.backends.local import decode_one, prefill

ROPES = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    "llama3": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
}


def tiny_pair(rope: dict, tie: bool = False) -> tuple[LlamaForCausalLM, Transformer]:
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128, max_position_embeddings=512,
                         rope_parameters=dict(rope), tie_word_embeddings=tie)
    hf = LlamaForCausalLM(config).eval()
    ours = Transformer.from_hf_state_dict(ModelArgs.from_hf_config(config), hf.state_dict())
    ours.setup_rope()
    return hf, ours


def new_cache(model: Transformer, block_size: int = 16, tokens: int = 256) -> PagedKVCache:
    a = model.args
    return PagedKVCache(a.n_layers, a.n_kv_heads, a.head_dim, block_size, tokens)


@pytest.mark.parametrize("rope", list(ROPES))
def test_prefill_logits_match_transformers(rope):
    hf, ours = tiny_pair(ROPES[rope])
    tokens = torch.randint(0, 128, (1, 150))  # long enough that the llama3 ramp and scaled bands all matter
    with torch.inference_mode():
        expected = hf(tokens).logits
    got = prefill(ours, tokens, new_cache(ours), all_logits=True)
    assert (got - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("block_size", [16, 32])
def test_decode_steps_match_full_forward(block_size):
    hf, ours = tiny_pair(ROPES["llama3"], tie=True)
    tokens = torch.randint(0, 128, (1, 40))
    with torch.inference_mode():
        expected = hf(tokens).logits[0]  # [T, V]
    cache = new_cache(ours, block_size)
    prefill(ours, tokens[:, :5], cache)
    for t in range(5, 40):  # crosses block boundaries at 16 and 32
        logits = decode_one(ours, tokens[:, t : t + 1], cache)
        assert (logits[0] - expected[t]).abs().max().item() < 1e-4, f"step {t}"
    assert cache.lengths == [40] and int(cache.positions[0]) == 40


def test_unsupported_rope_and_architecture_are_named():
    config = LlamaConfig(hidden_size=64, num_attention_heads=4, rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0})
    with pytest.raises(ValueError, match="yarn"):
        tiny = Transformer(ModelArgs.from_hf_config(config))
        tiny.setup_rope()
    config.model_type = "gpt2"
    with pytest.raises(ValueError, match="gpt2"):
        ModelArgs.from_hf_config(config)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_prefill_and_decode_match_transformers():
    """On CUDA, decode attention runs the kernels package's Triton path through the dense policy."""
    hf, ours = tiny_pair(ROPES["llama3"], tie=True)
    hf, ours = hf.cuda(), ours.cuda()
    ours.setup_rope("cuda")
    tokens = torch.randint(0, 128, (1, 70), device="cuda")
    with torch.inference_mode():
        expected = hf(tokens).logits[0]
    a = ours.args
    cache = PagedKVCache(a.n_layers, a.n_kv_heads, a.head_dim, 16, 80, device="cuda")
    assert (prefill(ours, tokens[:, :50], cache, all_logits=True)[0] - expected[:50]).abs().max().item() < 2e-3
    for t in range(50, 70):
        logits = decode_one(ours, tokens[:, t : t + 1], cache)
        assert (logits[0] - expected[t]).abs().max().item() < 2e-3, f"step {t}"


@pytest.mark.parametrize("past, chunk", [(5, 2048), (16, 2048), (37, 7)])
def test_prefill_after_a_cached_prefix_matches_a_full_prefill(past, chunk, monkeypatch):
    """A prompt continued after cached tokens (the prompt cache) sees exactly what a whole prefill does."""
    from memstream.backends.kernels import dense

    monkeypatch.setattr(dense, "PREFIX_QUERY_CHUNK", chunk)  # 7: the new tokens attend in several chunks
    hf, ours = tiny_pair(ROPES["llama3"], tie=True)
    tokens = torch.randint(0, 128, (1, 61))
    with torch.inference_mode():
        expected = hf(tokens).logits[0]
    cache = new_cache(ours, block_size=16)
    prefill(ours, tokens[:, :past], cache)
    got = prefill(ours, tokens[:, past:60], cache, all_logits=True)[0]
    assert (got - expected[past:60]).abs().max().item() < 1e-4
    assert cache.lengths == [60] and int(cache.positions[0]) == 60
    # Decoding goes on from there.
    assert (decode_one(ours, tokens[:, 60:], cache)[0] - expected[60]).abs().max().item() < 1e-4


@pytest.mark.parametrize("chunk", [7, 16, 50])
def test_chunked_prefill_matches_transformers(chunk):
    """The prompt prefilled in chunks (7: not a multiple of the block size) gives every position's logits."""
    hf, ours = tiny_pair(ROPES["default"])
    tokens = torch.randint(0, 128, (1, 50))
    with torch.inference_mode():
        expected = hf(tokens).logits[0]
    cache = new_cache(ours, block_size=16)
    got = prefill(ours, tokens, cache, all_logits=True, chunk=chunk)[0]
    assert (got - expected).abs().max().item() < 1e-4
    assert cache.lengths == [50]


def test_positions_past_the_rope_tables_name_the_fix():
    _, ours = tiny_pair(ROPES["default"])  # 512 positions
    cache = new_cache(ours, tokens=600)
    with pytest.raises(ValueError, match="setup_rope"):
        prefill(ours, torch.randint(0, 128, (1, 520)), cache)


def test_decode_n_feeds_each_token_and_stops_when_the_callback_says_so():
    from memstream.backends.local import decode_n, decode_tokens

    _, ours = tiny_pair(ROPES["default"])
    tokens = torch.randint(0, 128, (1, 12))
    greedy = lambda logits: logits.argmax(dim=-1)  # noqa: E731
    cache = new_cache(ours)
    first = int(prefill(ours, tokens, cache).argmax())
    full = decode_n(ours, first, 6, cache, greedy)
    assert len(full) == 6 and cache.lengths == [12 + 6]  # first token and five more were fed
    # The same loop by hand: feed, take the argmax, repeat.
    cache = new_cache(ours)
    prefill(ours, tokens, cache)
    token, by_hand = first, []
    for _ in range(6):
        token = int(decode_one(ours, torch.tensor([[token]]), cache).argmax())
        by_hand.append(token)
    assert full == by_hand
    cache = new_cache(ours)
    prefill(ours, tokens, cache)
    seen = []
    assert decode_n(ours, first, 6, cache, greedy, callback=lambda t: seen.append(t) or len(seen) < 3) == full[:3]
    cache = new_cache(ours)
    prefill(ours, tokens, cache)
    assert list(decode_tokens(ours, first, 4, cache, greedy)) == [first] + full[:3]
