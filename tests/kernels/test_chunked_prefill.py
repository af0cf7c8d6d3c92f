"""Chunked prefill through the policy objects on a tiny random Llama, and the policies built from config."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from memstream.backends.kernels import POLICIES, AttentionParams, Rope, make_policy, policy_from_settings
from memstream.backends.kernels import block_topk as bt
from memstream.backends.kernels.block_topk_policy import REPS
from memstream.backends.kv_cache import PagedKVCache
from memstream.backends.llama import ModelArgs, Transformer, apply_rope, rope_tables
from memstream.backends.local import decode_one, new_cache, prefill
from memstream.config import AttentionSettings
from tests.tiny_llama import tiny_llama

BLOCK, PROMPT = 16, 90


@pytest.fixture(scope="module")
def model() -> Transformer:
    return tiny_llama()


TOKENS = torch.randint(0, 128, (1, PROMPT), generator=torch.Generator().manual_seed(1))
SMALL = AttentionParams(sinks=2, window=20, block_size=BLOCK, topk=2, representatives=2, budget=16, observation_window=8,
                        prefill_chunk=PROMPT, use_triton=False)
COVERING = dataclasses.replace(SMALL, window=1000, topk=100, budget=1000)


def run_prefill(model, policy, chunk: int, tokens=TOKENS, pool: bool = True):
    max_tokens = tokens.shape[1] + 4
    cache = new_cache(model, policy, max_tokens) if pool else PagedKVCache(
        model.args.n_layers, model.args.n_kv_heads, model.args.head_dim, BLOCK, max_tokens)
    return prefill(model, tokens, cache, policy, all_logits=True, chunk=chunk)[0], cache


@pytest.mark.parametrize("chunk", [7, 16, 40])
@pytest.mark.parametrize("name", POLICIES)
def test_chunked_prefill_equals_dense_prefill_when_the_budget_covers_everything(model, name, chunk):
    dense, _ = run_prefill(model, make_policy("dense", COVERING), chunk=PROMPT)
    got, _ = run_prefill(model, make_policy(name, COVERING), chunk=chunk)
    torch.testing.assert_close(got, dense, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["sink_window", "block_topk"])
def test_a_one_token_chunk_is_exactly_a_decode_step(model, name):
    policy = make_policy(name, SMALL)
    chunked, _ = run_prefill(model, policy, chunk=1)
    cache = new_cache(model, policy, PROMPT + 4)
    steps = [prefill(model, TOKENS[:, :1], cache, policy)]
    for t in range(1, PROMPT):
        steps.append(decode_one(model, TOKENS[:, t : t + 1], cache, policy))
    torch.testing.assert_close(chunked, torch.cat(steps), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("chunk", [7, 13, 32])
def test_sink_window_chunks_at_any_boundary_attend_what_decode_does(model, chunk):
    # Every query of a chunk reads its own sinks + window, so chunking never changes sink_window.
    policy = make_policy("sink_window", SMALL)
    one, _ = run_prefill(model, policy, chunk=1)
    got, _ = run_prefill(model, policy, chunk=chunk)
    torch.testing.assert_close(got, one, atol=1e-4, rtol=1e-4)
    dense, _ = run_prefill(model, make_policy("dense", SMALL), chunk=PROMPT)
    assert not torch.allclose(got[-1], dense[-1], atol=1e-3)  # the small budget really dropped context


@pytest.mark.parametrize("chunk", [7, 24])
def test_block_topk_representatives_do_not_depend_on_chunk_boundaries(model, chunk):
    policy = make_policy("block_topk", SMALL)
    logits, cache = run_prefill(model, policy, chunk=chunk)
    _, whole = run_prefill(model, policy, chunk=PROMPT)
    assert torch.isfinite(logits).all()
    full = PROMPT // BLOCK
    for layer in range(model.args.n_layers):
        got, want = cache.policy_state[(REPS, layer)], whole.policy_state[(REPS, layer)]
        ids = cache.block_table[0, :full].long()
        assert got[ids].flatten(1).abs().sum(dim=1).gt(0).all()
        if layer == 0:  # deeper layers' keys depend on the chunk-wise selection above them
            torch.testing.assert_close(got[ids], want[whole.block_table[0, :full].long()], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [7, 24, 40])
@pytest.mark.parametrize("name", ["sink_window", "block_topk"])
def test_fused_chunk_attention_equals_the_plain_torch_path(model, name, chunk, monkeypatch):
    # Small budgets, so sinks, selected blocks and window are separate key sets with their own
    # queries; the fused CPU attention + log-sum-exp merge must give what one plain softmax gives.
    from memstream.backends.kernels import _prefill

    if _prefill._FLASH_CPU is None:
        pytest.skip("this torch has no fused CPU attention with log-sum-exp")
    policy = make_policy(name, SMALL)
    fused, _ = run_prefill(model, policy, chunk=chunk)
    monkeypatch.setattr(_prefill, "_FLASH_CPU", None)
    plain, _ = run_prefill(model, policy, chunk=chunk)
    torch.testing.assert_close(fused, plain, atol=1e-4, rtol=1e-4)
    dense, _ = run_prefill(model, make_policy("dense", SMALL), chunk=PROMPT)
    assert not torch.allclose(fused[-1], dense[-1], atol=1e-3)  # the budget really dropped context


def test_sink_window_evicts_into_a_bounded_pool(model):
    policy = make_policy("sink_window", dataclasses.replace(SMALL, prefill_chunk=8))
    pooled, cache = run_prefill(model, policy, chunk=8)
    assert cache.pooled and cache.pool_blocks * BLOCK < PROMPT  # fewer slots than tokens
    full, _ = run_prefill(model, policy, chunk=8, pool=False)
    torch.testing.assert_close(pooled, full, atol=1e-5, rtol=1e-5)
    for t in range(4):  # decoding keeps recycling blocks
        decode_one(model, TOKENS[:, t : t + 1], cache, policy)
    assert cache.lengths == [PROMPT + 4] and int(cache.positions[0]) == PROMPT + 4


@pytest.mark.parametrize("use_triton", [False, True])
def test_block_topk_places_far_tokens_at_the_window_distance(use_triton):
    # InfLLM: with every block selected, the output equals dense attention in which each key
    # outside the local window (and farther than `window`) is rotated at distance `window` from
    # the query, the local keys at their true positions.
    n_kv, group, dim, length, page, sinks, window = 2, 3, 64, 150, 16, 4, 20
    cos, sin = rope_tables(ModelArgs(head_dim=dim, max_seq_len=512), 512)
    rope = Rope(cos, sin)
    gen = torch.Generator().manual_seed(0)
    k_raw, v = torch.randn(n_kv, 160, dim, generator=gen), torch.randn(n_kv, 160, dim, generator=gen)
    q_raw = torch.randn(n_kv * group, dim, generator=gen)

    def rot(x, positions):  # x [heads, n, D] rotated at positions [n]
        return apply_rope(x[None], cos[positions][None, None], sin[positions][None, None])[0]

    query_pos = length - 1
    k_cached = rot(k_raw, torch.arange(160))
    paged = lambda x: x.view(n_kv, 10, page, dim).transpose(0, 1).contiguous()  # noqa: E731
    table, lens = torch.arange(10, dtype=torch.int32)[None], torch.tensor([length], dtype=torch.int32)
    q = rot(q_raw[:, None], torch.tensor([query_pos]))[:, 0][None]  # [1, H, D]
    far = bt.FarPositions(rope.shift(q, torch.tensor([[window - query_pos]])), rope, window)
    reps = bt.new_representatives_cache(paged(k_cached), 2)
    params = (paged(k_cached), paged(v), table, lens, reps, sinks, window, 100)
    if use_triton:
        out = bt.block_topk_attention(q, *params, far=far, block_n=16)
    else:
        out = bt.block_topk_reference(q, *params, far=far)
    _, win_start = bt.distant_range(length, sinks, window, page)
    j = torch.arange(length)
    is_far = (j < win_start) & (query_pos - j > window)
    keys = torch.where(is_far[None, :, None], rot(k_raw[:, :length], torch.full((length,), query_pos - window)),
                       k_cached[:, :length])
    weights = torch.softmax(q[0].reshape(n_kv, group, dim) @ keys.transpose(1, 2) * dim**-0.5, dim=-1)
    expected = (weights @ v[:, :length]).reshape(1, n_kv * group, dim)
    assert is_far.sum() > 100  # most of the context is far
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_rope_shift_moves_rotated_vectors():
    cos, sin = rope_tables(ModelArgs(head_dim=64, max_seq_len=128), 128)
    x = torch.randn(3, 5, 64)
    at = lambda p: apply_rope(x[None], cos[p][None, None], sin[p][None, None])[0]  # noqa: E731
    pos = torch.arange(5)
    rope = Rope(cos, sin)
    torch.testing.assert_close(rope.shift(at(pos + 40), torch.full((5,), -30)), at(pos + 10), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rope.shift(at(pos), torch.full((5,), 7)), at(pos + 7), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="RoPE tables"):
        rope.shift(x, torch.full((5,), 200))


@pytest.mark.parametrize("name", POLICIES)
def test_policy_objects_round_trip_from_config(name):
    settings = AttentionSettings(policy=name, window=256, topk=3, sinks=8, prefill_chunk=512)
    policy = policy_from_settings(settings)
    assert policy.name == name and policy.params.window == 256 and policy.params.prefill_chunk == 512
    assert policy_from_settings(AttentionSettings(**policy.settings())) == policy
    assert make_policy(name, policy.params) == policy


def test_bad_policy_configs_are_named():
    with pytest.raises(ValueError, match="unknown attention policy 'h2o'"):
        make_policy("h2o")
    with pytest.raises(ValueError, match="prefill_chunk"):
        make_policy("dense", AttentionParams(prefill_chunk=0))
