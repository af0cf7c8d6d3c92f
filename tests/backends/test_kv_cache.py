from __future__ import annotations

import pytest
import torch

from memstream.backends.kernels import make_policy
from memstream.backends.kernels.dense import dense_sdpa
from memstream.backends.kernels import AttentionParams, dense_reference
from memstream.backends.kv_cache import PagedKVCache

H_KV, DH = 2, 8


def fill(cache: PagedKVCache, k: torch.Tensor, v: torch.Tensor) -> None:
    """Write [B, Hkv, T, Dh] into layer 0 as one forward pass would."""
    cache.begin_write(k.shape[2])
    cache.write(0, k, v)
    cache.end_write()


def test_prefill_then_decode_round_trips_through_blocks():
    cache = PagedKVCache(1, H_KV, DH, block_size=4, max_tokens=11)
    k, v = torch.randn(1, H_KV, 11, DH), torch.randn(1, H_KV, 11, DH)
    fill(cache, k[:, :, :6], v[:, :, :6])
    for t in range(6, 11):  # the single-token fast path, across a block boundary
        fill(cache, k[:, :, t : t + 1], v[:, :, t : t + 1])
    got_k, got_v = cache.sequence(0)
    assert torch.equal(got_k, k[0]) and torch.equal(got_v, v[0])
    assert cache.seq_lens.tolist() == [11] and cache.room() == 1
    # Block 1 holds tokens 4..7 in the kernels' layout [num_blocks, Hkv, block, Dh].
    assert torch.equal(cache.k(0)[1], k[0, :, 4:8])
    with pytest.raises(ValueError, match="full"):
        cache.begin_write(2)


def test_batched_write_and_rewritten_block_table():
    cache = PagedKVCache(1, H_KV, DH, block_size=4, max_tokens=8, batch=2)
    k, v = torch.randn(2, H_KV, 7, DH), torch.randn(2, H_KV, 7, DH)
    fill(cache, k, v)
    for row in range(2):
        assert torch.equal(cache.sequence(0, row)[0], k[row])
    # A policy that evicts the first block of sequence 1 points it at its second block only.
    cache.rewrite(1, torch.tensor([cache.block_table[1, 1].item()]), 3)
    assert torch.equal(cache.sequence(0, 1)[0], k[1, :, 4:7])
    assert cache.positions.tolist() == [7, 7]  # RoPE positions are untouched by eviction


def test_dense_sdpa_matches_the_kernels_reference():
    torch.manual_seed(0)
    cache = PagedKVCache(1, H_KV, DH, block_size=4, max_tokens=13)
    fill(cache, torch.randn(1, H_KV, 13, DH), torch.randn(1, H_KV, 13, DH))
    q = torch.randn(1, 3 * H_KV, DH)  # GQA group of 3
    expected = dense_reference(q, cache.k(0), cache.v(0), cache.block_table, cache.seq_lens)
    assert torch.allclose(dense_sdpa(q, cache, 0), expected, atol=1e-5)
    assert torch.allclose(make_policy("dense", AttentionParams(block_size=4)).attend_decode(q, cache, 0, None), expected, atol=1e-5)


def test_truncate_and_copy_prefix_keep_the_first_tokens():
    cache = PagedKVCache(2, H_KV, DH, block_size=4, max_tokens=12)
    k, v = torch.randn(1, H_KV, 10, DH), torch.randn(1, H_KV, 10, DH)
    cache.begin_write(10)  # both layers in one pass, as a forward pass writes them
    cache.write(0, k, v)
    cache.write(1, 2 * k, 2 * v)
    cache.end_write()

    bigger = cache.copy_prefix(6, 30)  # a copy with room for more: the original is untouched
    assert bigger.capacity >= 30 and bigger.lengths == [6] and bigger.positions.tolist() == [6] and bigger.seq_lens.tolist() == [6]
    assert torch.equal(bigger.sequence(1)[0], 2 * k[0, :, :6]) and cache.lengths == [10]

    cache.truncate(5)
    assert cache.lengths == [5] and cache.positions.tolist() == [5] and cache.seq_lens.tolist() == [5]
    assert torch.equal(cache.sequence(0)[0], k[0, :, :5]) and torch.equal(cache.sequence(0)[1], v[0, :, :5])
    fill(cache, k[:, :, 9:10], v[:, :, 9:10])  # the next token lands at position 5
    assert torch.equal(cache.sequence(0)[0][:, 5], k[0, :, 9])
    with pytest.raises(ValueError, match="holds 6"):
        cache.truncate(7)


def test_an_evicted_cache_has_no_reusable_prefix():
    cache = PagedKVCache(1, H_KV, DH, block_size=4, max_tokens=8)
    fill(cache, torch.randn(1, H_KV, 8, DH), torch.randn(1, H_KV, 8, DH))
    cache.rewrite(0, torch.tensor([1]), 4)  # a policy dropped the first block
    for keep in (cache.truncate, lambda n: cache.copy_prefix(n, 8)):
        with pytest.raises(ValueError, match="evicted"):
            keep(2)


def test_a_pooled_cache_recycles_released_blocks_and_names_a_full_pool():
    cache = PagedKVCache(1, 1, 4, 4, max_tokens=40, pool_tokens=8)  # 10 logical blocks, 2 physical
    assert cache.pooled and cache.k_cache.shape[1] == 2
    for _ in range(2):
        cache.begin_write(4)
        cache.write(0, torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4))
        cache.end_write()
    assert sorted(cache.block_table[0, :2].tolist()) == [0, 1]
    with pytest.raises(ValueError, match="pool of 2 blocks is full"):
        cache.begin_write(1)
    cache.release(0, [0])
    cache.begin_write(1)  # logical block 2 takes block 0's physical slot
    cache.end_write()
    assert int(cache.block_table[0, 2]) == int(cache.block_table[0, 0]) and cache.lengths == [9]
