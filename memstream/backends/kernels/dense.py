"""Dense decode attention over the paged KV cache: split-K (FlashDecoding) and a reduction.

One decode step has a single query token per sequence, so the work is a matrix-vector
product bound by memory traffic: every cached K and V row is read once. To use the whole GPU
at batch 1, the sequence is split into `num_splits` chunks; each program handles one
(sequence, KV head, split), keeps an online softmax (running max m, running sum l, unnormalised
accumulator) over its chunk, and writes the partial state. A second small kernel rescales and
sums the partials. GQA: one program loads each K/V tile once for all query heads of its group
(the tile is shared by the GROUP rows of the query block), so traffic is per KV head, not per
query head:  bytes ~= 2 * seq_len * n_kv_heads * head_dim * itemsize per sequence.
"""

from __future__ import annotations

import torch

from ._launch import cdiv, check_device, dot_precision, group_pad, jit, num_splits, pow2, tl
from .layout import check_inputs, gather_sequence


@jit
def _dense_split_kernel(
    Q, K, V, BlockTable, SeqLens, MPart, LPart, AccPart,
    scale, tokens_per_split, n_heads, n_splits,
    stride_qb, stride_qh,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_tb,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    PAGE: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    mask_g = offs_g < GROUP
    heads = kvh * GROUP + offs_g
    # The group's queries: GROUP rows of HEAD_DIM, read once and kept in registers.
    q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :], mask=mask_g[:, None], other=0.0)

    seq_len = tl.load(SeqLens + b)
    start = split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, seq_len)
    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        tok = n0 + offs_n
        valid = tok < end
        # Block-table lookup per token: tiles need not align with cache blocks.
        phys = tl.load(BlockTable + b * stride_tb + tok // PAGE, mask=valid, other=0).to(tl.int64)
        slot = tok % PAGE
        # Memory traffic: BLOCK_N rows of K and of V, HEAD_DIM contiguous elements each.
        k = tl.load(K + phys[:, None] * stride_kb + kvh * stride_kh + slot[:, None] * stride_kt + offs_d[None, :],
                    mask=valid[:, None], other=0.0)
        v = tl.load(V + phys[:, None] * stride_vb + kvh * stride_vh + slot[:, None] * stride_vt + offs_d[None, :],
                    mask=valid[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no NaN from (-inf) - (-inf)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    part = (b * n_heads + heads) * n_splits + split
    tl.store(MPart + part, m_i, mask=mask_g)
    tl.store(LPart + part, l_i, mask=mask_g)
    tl.store(AccPart + part[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=mask_g[:, None])


@jit
def _reduce_splits_kernel(
    MPart, LPart, AccPart, Out, n_heads, n_splits, stride_ob, stride_oh,
    SPLITS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_s = offs_s < n_splits
    part = (b * n_heads + h) * n_splits + offs_s
    m = tl.load(MPart + part, mask=mask_s, other=float("-inf"))
    l = tl.load(LPart + part, mask=mask_s, other=0.0)
    acc = tl.load(AccPart + part[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_s[:, None], other=0.0)
    m_max = tl.max(m, 0)
    m_safe = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.exp(m - m_safe)  # empty splits have m = -inf and weigh nothing
    denom = tl.sum(w * l, 0)
    out = tl.sum(w[:, None] * acc, 0) / tl.maximum(denom, 1e-30)  # nothing attended -> zeros
    tl.store(Out + b * stride_ob + h * stride_oh + offs_d, out.to(Out.dtype.element_ty))


def alloc_partials(batch: int, n_heads: int, splits: int, head_dim: int, device: torch.device):
    m = torch.empty(batch, n_heads, splits, device=device, dtype=torch.float32)
    return m, torch.empty_like(m), torch.empty(batch, n_heads, splits, head_dim, device=device, dtype=torch.float32)


def reduce_splits(m_part, l_part, acc_part, out: torch.Tensor) -> torch.Tensor:
    """Combine per-split softmax partials ([B, H, S], [B, H, S], [B, H, S, D]) into out [B, H, D]."""
    batch, n_heads, splits, head_dim = acc_part.shape
    _reduce_splits_kernel[(batch, n_heads)](
        m_part, l_part, acc_part, out, n_heads, splits, out.stride(0), out.stride(1),
        SPLITS_PAD=pow2(splits), HEAD_DIM=head_dim,
    )
    return out


def dense_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
    *,
    splits: int | None = None,
    block_n: int = 64,
    check: bool = True,
) -> torch.Tensor:
    """Triton split-K decode attention over the whole cached sequence; [B, H, D] in q's dtype.

    The split size comes from the block table's capacity, not from seq_lens, so no host sync
    is needed; splits past a sequence's end exit at once and weigh nothing in the reduction.
    check=False skips input validation (for callers that validated these shapes once).
    """
    if check:
        check_inputs(q, k_cache, v_cache, block_table, seq_lens)
        check_device(q)
    batch, n_heads, head_dim = q.shape
    n_kv, page = k_cache.shape[1], k_cache.shape[2]
    group = n_heads // n_kv
    scale = head_dim**-0.5 if scale is None else scale
    q, k_cache, v_cache = q.contiguous(), k_cache.contiguous(), v_cache.contiguous()
    capacity = block_table.shape[1] * page
    n_splits = num_splits(batch * n_kv, capacity, block_n, q.device, splits)
    tokens_per_split = cdiv(cdiv(capacity, n_splits), block_n) * block_n
    m_part, l_part, acc_part = alloc_partials(batch, n_heads, n_splits, head_dim, q.device)
    _dense_split_kernel[(batch, n_kv, n_splits)](
        q, k_cache, v_cache, block_table, seq_lens, m_part, l_part, acc_part,
        scale, tokens_per_split, n_heads, n_splits,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_table.stride(0),
        GROUP=group, GROUP_PAD=group_pad(group), HEAD_DIM=head_dim, PAGE=page, BLOCK_N=block_n,
        PRECISION=dot_precision(q.dtype),
    )
    return reduce_splits(m_part, l_part, acc_part, torch.empty_like(q))


def dense_reference(q, k_cache, v_cache, block_table, seq_lens, scale: float | None = None) -> torch.Tensor:
    """Plain torch decode attention over the whole cached sequence (the ground truth)."""
    batch, n_heads, head_dim = q.shape
    n_kv = k_cache.shape[1]
    group = n_heads // n_kv
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.empty_like(q)
    for row in range(batch):
        length = int(seq_lens[row])
        keys = gather_sequence(k_cache, block_table, length, row).float()  # [H_kv, L, D]
        values = gather_sequence(v_cache, block_table, length, row).float()
        queries = q[row].float().reshape(n_kv, group, head_dim)  # [H_kv, G, D]
        weights = torch.softmax(queries @ keys.transpose(1, 2) * scale, dim=-1)  # [H_kv, G, L]
        out[row] = (weights @ values).reshape(n_heads, head_dim).to(q.dtype)
    return out
