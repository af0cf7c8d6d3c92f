"""InfLLM block top-k: scoring kernel and attention kernel == torch references."""

from __future__ import annotations

import pytest
import torch

from memstream.backends.kernels import block_topk as bt

from .conftest import DEVICE, DTYPES, HEAD_DIMS, HEAD_LAYOUTS, make_paged, tolerance

LENS = (77, 150, 9)
PAGE = 16


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", HEAD_LAYOUTS)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_block_scores_kernel_matches_reference(head_dim, heads, dtype):
    q, k, v, table, lens = make_paged(*heads, head_dim, LENS, page=PAGE, dtype=dtype)
    reps = bt.build_representatives(k, table, lens, 3)
    out = bt.block_scores(q, reps, table, lens, 4, 20, PAGE)
    ref = bt.block_scores_reference(q, reps, table, lens, 4, 20, PAGE)
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(out), finite)
    # Row 1 (150 tokens, window 20): distant range [4, 130) -> blocks 0..8 scored, the rest local or empty.
    assert finite[1].sum(dim=-1).tolist() == [9] * heads[1]
    assert not finite[2].any()  # 9 tokens: nothing distant
    torch.testing.assert_close(out[finite], ref[finite].float(), **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", HEAD_LAYOUTS)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_block_topk_attention_kernel_matches_reference(head_dim, heads, dtype):
    q, k, v, table, lens = make_paged(*heads, head_dim, LENS, page=PAGE, dtype=dtype)
    n_kv = heads[1]
    # Fixed selections so the comparison isolates the attention kernel: per head different
    # blocks, a block overlapping the sinks (0), a block inside the local window (4 for row 0),
    # and empty slots (-1).
    selected = torch.tensor([[[0, 2, -1], [4, 1, 3]], [[7, 5, 0], [2, -1, -1]], [[0, -1, -1], [-1, -1, -1]]],
                            dtype=torch.int32, device=q.device)[:, :n_kv]
    if n_kv > 2:
        selected = selected.repeat(1, n_kv, 1)[:, :n_kv]
    out = bt.block_topk_attention_selected(q, k, v, table, lens, selected, 4, 20, splits=3, block_n=16)
    ref = bt.attend_selected_reference(q, k, v, table, lens, selected, 4, 20)
    torch.testing.assert_close(out.float(), ref.float(), **tolerance(dtype))


@pytest.mark.parametrize("heads", HEAD_LAYOUTS)
def test_block_topk_end_to_end_matches_reference(heads):
    q, k, v, table, lens = make_paged(*heads, 64, LENS, page=PAGE)
    reps = bt.build_representatives(k, table, lens, 4)
    out = bt.block_topk_attention(q, k, v, table, lens, reps, 4, 20, 2, block_n=16)
    ref = bt.block_topk_reference(q, k, v, table, lens, reps, 4, 20, 2)
    torch.testing.assert_close(out, ref, **tolerance(q.dtype))


def test_selection_finds_the_block_the_query_points_at():
    q, k, v, table, lens = make_paged(4, 2, 64, (200,), page=PAGE)
    # Plant keys aligned with head 0's query in logical block 5: its representatives score highest.
    phys = int(table[0, 5])
    k[phys, 0, 3:6] = 4 * q[0, 0]
    reps = bt.build_representatives(k, table, lens, 4)
    selected = bt.select_blocks(bt.block_scores(q, reps, table, lens, 4, 32, PAGE), 2)
    assert 5 in selected[0, 0].tolist()


def test_block_representatives_are_rows_of_the_block_in_order():
    keys = torch.randn(2, 16, 64)
    reps = bt.block_representatives(keys, 4)
    assert reps.shape == (2, 4, 64)
    for head in range(2):
        rows = [int((keys[head] == r).all(dim=-1).nonzero()) for r in reps[head]]
        assert rows == sorted(rows)
    queries = torch.zeros(4, 16, 64)
    queries[:, :, 0] = 1.0
    keys[:, 9, 0] = 100.0  # token 9 receives the most attention from these queries
    with_queries = bt.block_representatives(keys, 1, queries)
    assert torch.equal(with_queries[:, 0], keys[:, 9])
    assert bt.block_representatives(keys, 50).shape == (2, 16, 64)  # clamped to the block


def test_missing_or_mismatched_representatives():
    q, k, v, table, lens = make_paged(2, 2, 64, (40,))
    with pytest.raises(ValueError, match="representatives"):
        bt.block_topk_reference(q, k, v, table, lens, None, 4, 8, 2)
    with pytest.raises(ValueError, match="representatives must be"):
        bt.block_topk_reference(q, k, v, table, lens, torch.zeros(1, 2, 4, 64), 4, 8, 2)


@pytest.mark.parametrize("n_table,topk", [(5, 3), (37, 8), (37, 100), (300, 24)])
def test_select_kernel_keeps_the_same_blocks_as_torch_topk(n_table, topk):
    gen = torch.Generator().manual_seed(n_table)
    scores = torch.randn(2, 3, n_table, generator=gen).to(DEVICE)
    scores[0, 0, : n_table // 2] = float("-inf")  # not distant: never selected
    scores[1, 2] = float("-inf")  # nothing distant at all: every slot empty
    got = bt.select_blocks_triton(scores, topk)
    want = bt.select_blocks(scores, topk)
    assert got.shape == want.shape and got.dtype == torch.int32
    for row in range(2):
        for head in range(3):
            assert sorted(got[row, head].tolist()) == sorted(want[row, head].tolist())
    # Ids come out ascending within a row (the attention kernel then walks the cache forward).
    assert all(ids == sorted(ids) for ids in (r[r >= 0].tolist() for r in got.flatten(0, 1)))


@pytest.mark.parametrize("splits", [1, 3, 40])
def test_fused_split_reduction_matches_the_separate_reduction(splits):
    # 40 splits: more than one chunk of partials in the fused reduction.
    q, k, v, table, lens = make_paged(8, 2, 64, (700, 333), page=PAGE)
    reps = bt.build_representatives(k, table, lens, 4)
    selected = bt.select_blocks_triton(bt.block_scores(q, reps, table, lens, 4, 100, PAGE), 20)
    args = (q, k, v, table, lens, selected, 4, 100, None, splits, 16)
    fused = bt._launch_attention(*args, fused_reduce=True)
    again = bt._launch_attention(*args, fused_reduce=True)
    separate = bt._launch_attention(*args, fused_reduce=False)
    torch.testing.assert_close(fused, separate, **tolerance(q.dtype))
    assert torch.equal(fused, again)  # the arrival counters are back at zero after a launch
    assert not bt.arrival_counters(q.device, 2 * 2).any()
    ref = bt.attend_selected_reference(q, k, v, table, lens, selected, 4, 100)
    torch.testing.assert_close(fused, ref, **tolerance(q.dtype))
