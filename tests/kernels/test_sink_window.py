"""Sink + window kernel == torch reference; eviction never changes the output."""

from __future__ import annotations

import pytest
import torch

from memstream.backends.kernels import dense, sink_window

from .conftest import DTYPES, HEAD_DIMS, HEAD_LAYOUTS, make_paged, tolerance

LENS = (37, 70, 5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", HEAD_LAYOUTS)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("with_q_far", [False, True])
def test_sink_window_kernel_matches_reference(head_dim, heads, dtype, with_q_far):
    q, k, v, table, lens = make_paged(*heads, head_dim, LENS, dtype=dtype)
    q_far = torch.randn_like(q) if with_q_far else None
    out = sink_window.sink_window_attention(q, k, v, table, lens, 4, 20, q_far=q_far, splits=2, block_n=16)
    ref = sink_window.sink_window_reference(q, k, v, table, lens, 4, 20, q_far=q_far)
    torch.testing.assert_close(out.float(), ref.float(), **tolerance(dtype))


def test_sink_window_attends_only_sinks_and_window():
    q, k, v, table, lens = make_paged(4, 2, 64, (70,))
    out = sink_window.sink_window_attention(q, k, v, table, lens, 3, 10, block_n=16)
    # The same attention written as dense over a cache that holds only the kept tokens.
    tokens = torch.tensor([0, 1, 2, *range(60, 70)])
    kept_k = sink_window.gather_tokens(k, table, 0, tokens)  # [H_kv, 13, D]
    kept_v = sink_window.gather_tokens(v, table, 0, tokens)
    small_k = torch.zeros(1, 2, 16, 64, dtype=k.dtype, device=k.device)
    small_v = torch.zeros_like(small_k)
    small_k[0, :, :13], small_v[0, :, :13] = kept_k, kept_v
    one = torch.zeros(1, 1, dtype=torch.int32, device=k.device)
    expected = dense.dense_reference(q, small_k, small_v, one, torch.tensor([13], device=k.device))
    torch.testing.assert_close(out, expected, **tolerance(q.dtype))


def test_evicted_blocks_are_never_read():
    q, k, v, table, lens = make_paged(6, 2, 64, (150, 90), page=16)
    before = sink_window.sink_window_attention(q, k, v, table, lens, 4, 24, block_n=16)
    poisoned_k, poisoned_v = k.clone(), v.clone()
    freed = 0
    for row, length in enumerate(lens.tolist()):
        for block in sink_window.evictable_blocks(length, 4, 24, 16):
            poisoned_k[table[row, block].long()] = float("nan")
            poisoned_v[table[row, block].long()] = float("nan")
            freed += 1
    assert freed >= 8  # 150 tokens keep block 0 and the last two or three blocks only
    after = sink_window.sink_window_attention(q, poisoned_k, poisoned_v, table, lens, 4, 24, block_n=16)
    ref = sink_window.sink_window_reference(q, poisoned_k, poisoned_v, table, lens, 4, 24)
    assert torch.isfinite(after).all()
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    torch.testing.assert_close(ref, before, **tolerance(q.dtype))


def test_far_query_position_is_identity_inside_the_budget():
    assert sink_window.far_query_position(100, 4, 1024) == 100
    assert sink_window.far_query_position(50_000, 4, 1024) == 1028


def test_sink_window_bad_budget():
    q, k, v, table, lens = make_paged(2, 2, 64, (20,))
    with pytest.raises(ValueError, match="window >= 1"):
        sink_window.sink_window_reference(q, k, v, table, lens, 4, 0)
    with pytest.raises(ValueError, match="q_far"):
        sink_window.sink_window_attention(q, k, v, table, lens, 4, 8, q_far=q[:, :1])
