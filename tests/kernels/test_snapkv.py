"""SnapKV voting kernels == torch reference; compression keeps what the window attends."""

from __future__ import annotations

import pytest
import torch

from memstream.backends.kernels import AttentionParams, dense, snapkv
from memstream.backends.kernels.layout import attend_positions, gather_sequence

from .conftest import DEVICE, DTYPES, HEAD_DIMS, HEAD_LAYOUTS, make_paged, tolerance


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", HEAD_LAYOUTS)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_votes_kernel_matches_reference(head_dim, heads, dtype):
    gen = torch.Generator().manual_seed(1)
    q_obs = torch.randn(heads[0], 8, head_dim, generator=gen).to(DEVICE, dtype)
    keys = torch.randn(heads[1], 101, head_dim, generator=gen).to(DEVICE, dtype)
    out = snapkv.snapkv_votes(q_obs, keys, block_n=32)
    ref = snapkv.snapkv_votes_reference(q_obs, keys)
    assert out.shape == (heads[1], 93)
    torch.testing.assert_close(out, ref, **tolerance(dtype))


def test_compression_keeps_the_attended_positions_and_the_window():
    params = AttentionParams(budget=12, observation_window=4, pool_kernel=3, block_size=16)
    q, k, v, table, lens = make_paged(4, 2, 64, (90,))
    q_obs = torch.randn(4, 4, 64, device=DEVICE)
    # Head group 0's observation queries all point at position 40: it and its pooled neighbours must survive.
    phys = int(table[0, 40 // 16])
    k[phys, 0, 40 % 16] = 3 * q_obs[:2].mean(dim=(0, 1))
    original_k = gather_sequence(k, table, 90, 0).clone()
    original_v = gather_sequence(v, table, 90, 0).clone()
    votes = snapkv.snapkv_votes_reference(q_obs, original_k)
    keep = snapkv.keep_indices(votes, 90, params)
    assert keep.shape == (2, 16)
    assert 40 in keep[0].tolist()
    assert keep[:, -4:].tolist() == [[86, 87, 88, 89]] * 2
    assert all(row == sorted(row) for row in keep.tolist())

    n_keep = snapkv.compress_sequence(q_obs, k, v, table, 0, 90, params)
    assert n_keep == 16
    compressed_k = gather_sequence(k, table, n_keep, 0)
    for head in range(2):
        torch.testing.assert_close(compressed_k[head], original_k[head, keep[head]])
    # Dense decode over the compressed cache == attention over the kept positions of the original.
    out = dense.dense_reference(q, k, v, table, torch.tensor([n_keep], device=DEVICE))
    mask = torch.zeros(2, 90, dtype=torch.bool, device=DEVICE)
    mask.scatter_(1, keep, True)
    expected = attend_positions(q[0], original_k, original_v, mask, 64**-0.5)
    torch.testing.assert_close(out[0], expected, **tolerance(q.dtype))


def test_short_prompt_is_kept_whole():
    params = AttentionParams(budget=64, observation_window=8)
    q, k, v, table, lens = make_paged(4, 2, 64, (70,))
    before = k.clone()
    assert snapkv.compress_sequence(torch.randn(4, 8, 64, device=DEVICE), k, v, table, 0, 70, params) == 70
    assert torch.equal(k, before)


def test_snapkv_bad_inputs():
    keys = torch.randn(2, 30, 64)
    with pytest.raises(ValueError, match="multiple"):
        snapkv.snapkv_votes_reference(torch.randn(3, 4, 64), keys)
    with pytest.raises(ValueError, match="longer than the prompt"):
        snapkv.snapkv_votes_reference(torch.randn(2, 40, 64), keys)
    q, k, v, table, lens = make_paged(4, 2, 64, (70,))
    with pytest.raises(ValueError, match="observation_window"):
        snapkv.compress_sequence(torch.randn(4, 5, 64), k, v, table, 0, 70, AttentionParams(budget=8, observation_window=8))
