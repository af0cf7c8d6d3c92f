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

import torch.nn.functional as F

from ._launch import cdiv, check_device, dot_precision, group_pad, jit, num_splits, pow2, tl
from ._softmax import load_kv_tile, online_softmax_step, store_partials
from .layout import check_inputs, gather_sequence
from .policy import AttentionPolicy, Rope


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
        k, v, _, _ = load_kv_tile(K, V, BlockTable, b, kvh, tok, valid, offs_d,
                                  stride_tb, stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt, PAGE)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc, PRECISION)

    store_partials(MPart, LPart, AccPart, (b * n_heads + heads) * n_splits + split, m_i, l_i, acc, mask_g, offs_d, HEAD_DIM)


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


PREFIX_QUERY_CHUNK = 2048
"""Queries per attention call when a prompt continues after cached tokens (bounds the mask's memory)."""


def dense_sdpa(q: torch.Tensor, cache, layer: int) -> torch.Tensor:
    """Dense decode attention for the CPU path: gather each sequence (a slice at batch 1), one SDPA call."""
    batch, n_heads, head_dim = q.shape
    n_kv = cache.k(layer).shape[1]
    out = torch.empty_like(q)
    for row in range(batch):
        k, v = cache.sequence(layer, row)  # [Hkv, L, Dh]
        # GQA as plain attention: each KV head's group of query heads becomes its G query rows
        # ([1, Hkv, G, Dh]); one token attends to every cached key, so no mask. This shape takes
        # the fused CPU kernel, where enable_gqa with one query row falls back to repeating K/V.
        grouped = q[row].view(1, n_kv, n_heads // n_kv, head_dim)
        out[row] = F.scaled_dot_product_attention(grouped, k[None], v[None]).view(n_heads, head_dim)
    return out


def dense_prefill(q: torch.Tensor, cache, layer: int) -> torch.Tensor:
    """Prefill attention for the T new tokens of a chunk that follow `past` cached ones.

    q [1, H, T, Dh]; the new keys/values are already in the cache. New token i sits at cache
    slot past + i and attends to every cached key up to and including its own: a lower-right
    causal mask. past = 0 is plain causal attention.
    """
    t = q.shape[2]
    past = cache.lengths_before_write[0]
    k, v = cache.sequence(layer)  # [Hkv, past + T, Dh]
    k, v = k[None], v[None]
    if past == 0 and t <= PREFIX_QUERY_CHUNK:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    chunks = []
    for first in range(0, t, PREFIX_QUERY_CHUNK):
        last = min(first + PREFIX_QUERY_CHUNK, t)
        end = past + last  # keys this chunk can see
        mask = torch.ones(last - first, end, dtype=torch.bool, device=q.device).tril(diagonal=past + first)
        chunks.append(F.scaled_dot_product_attention(q[:, :, first:last], k[:, :, :end], v[:, :, :end],
                                                     attn_mask=mask, enable_gqa=True))
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=2)  # [1, H, T, Dh]


class DensePolicy(AttentionPolicy):
    """Every query attends every cached key at its true distance (the baseline)."""

    name = "dense"
    reuses_prefix = True
    rolls_back = True

    def attend_prefill(self, q: torch.Tensor, cache, layer: int, rope: Rope) -> torch.Tensor:
        return dense_prefill(q, cache, layer)

    def attend_decode(self, q: torch.Tensor, cache, layer: int, rope: Rope) -> torch.Tensor:
        if not self.use_triton(q):
            # One SDPA call over a sliced cache beats the reference's per-row loop.
            return dense_sdpa(q, cache, layer)
        return dense_attention(q, cache.k(layer), cache.v(layer), cache.block_table, cache.seq_lens)
