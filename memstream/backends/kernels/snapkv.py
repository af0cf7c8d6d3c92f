"""SnapKV: compress the prompt's KV cache once, after prefill; decode then runs dense over it.

Per KV head, the last `observation_window` prompt queries vote for the earlier positions with
their attention weights (softmax over the whole causal prompt, summed over the window's
queries and the query heads of the GQA group). The votes are max-pooled (`pool_kernel`, odd,
stride 1) so a kept position brings its neighbours, the top `budget` prefix positions are kept
in position order, and the observation window itself is always kept. Each KV head keeps its
own positions; the compressed rows are written back, in order, into the sequence's first
blocks, so the runner only shortens seq_len and frees the tail blocks.

Positions: keys are cached after RoPE at their true positions, so compression leaves every
kept key's relative position correct; the runner keeps rotating new tokens at their true
positions (prompt length + step), not at the shorter cache length.

Clamp: a prompt of at most budget + observation_window tokens is kept whole (the policy is
then dense).

Kernels: `_snapkv_lse_kernel` computes each observation query's softmax normaliser over the
causal prompt (one program per KV head, the group's W queries as rows of one tile, so each
key row is read once per KV head); `_snapkv_vote_kernel` then sums exp(s - lse) per prefix key
tile in parallel. Neither materialises the [heads, W, L] attention matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._launch import cdiv, check_device, dot_precision, jit, pow2, tl
from .dense import DensePolicy, dense_prefill
from .layout import AttentionParams, gather_sequence
from .policy import AttentionPolicy, Rope


@jit
def _snapkv_lse_kernel(
    Q, K, Lse, seq_len, n_obs, scale,
    stride_qh, stride_qw, stride_kh, stride_kt, stride_lh,
    GROUP: tl.constexpr, ROWS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    kvh = tl.program_id(0)
    rows = tl.arange(0, ROWS_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    row_ok = rows < GROUP * n_obs
    head = kvh * GROUP + rows // n_obs
    obs = rows % n_obs
    q = tl.load(Q + head[:, None] * stride_qh + obs[:, None] * stride_qw + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    query_pos = seq_len - n_obs + obs  # causal limit of each observation query
    m_i = tl.full([ROWS_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([ROWS_PAD], tl.float32)
    for n0 in range(0, seq_len, BLOCK_N):
        tok = n0 + offs_n
        k = tl.load(K + kvh * stride_kh + tok[:, None] * stride_kt + offs_d[None, :], mask=(tok < seq_len)[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        s = tl.where((tok[None, :] <= query_pos[:, None]) & (tok < seq_len)[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(s - m_safe[:, None]), 1)
        m_i = m_new
    tl.store(Lse + kvh * stride_lh + rows, m_i + tl.log(l_i), mask=row_ok)


@jit
def _snapkv_vote_kernel(
    Q, K, Lse, Votes, prefix_len, n_obs, scale,
    stride_qh, stride_qw, stride_kh, stride_kt, stride_lh, stride_vh,
    GROUP: tl.constexpr, ROWS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    kvh = tl.program_id(0)
    tile = tl.program_id(1)
    rows = tl.arange(0, ROWS_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = rows < GROUP * n_obs
    head = kvh * GROUP + rows // n_obs
    obs = rows % n_obs
    q = tl.load(Q + head[:, None] * stride_qh + obs[:, None] * stride_qw + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    lse = tl.load(Lse + kvh * stride_lh + rows, mask=row_ok, other=0.0)
    tok = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    ok = tok < prefix_len  # every observation query sees the whole prefix: no causal mask here
    k = tl.load(K + kvh * stride_kh + tok[:, None] * stride_kt + offs_d[None, :], mask=ok[:, None], other=0.0)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
    p = tl.where(row_ok[:, None] & ok[None, :], tl.exp(s - lse[:, None]), 0.0)
    tl.store(Votes + kvh * stride_vh + tok, tl.sum(p, 0), mask=ok)


def check_params(params: AttentionParams) -> None:
    if params.budget < 1 or params.observation_window < 1 or params.pool_kernel < 1 or params.pool_kernel % 2 == 0:
        raise ValueError(
            f"snapkv needs budget >= 1, observation_window >= 1 and an odd pool_kernel >= 1; got budget={params.budget}, "
            f"observation_window={params.observation_window}, pool_kernel={params.pool_kernel}"
        )


def _check_shapes(q_obs: torch.Tensor, keys: torch.Tensor) -> int:
    if q_obs.dim() != 3 or keys.dim() != 3 or q_obs.shape[2] != keys.shape[2]:
        raise ValueError(f"q_obs must be [n_heads, W, D] and keys [n_kv_heads, L, D], got {tuple(q_obs.shape)}, {tuple(keys.shape)}")
    if q_obs.shape[0] % keys.shape[0]:
        raise ValueError(f"n_heads {q_obs.shape[0]} is not a multiple of n_kv_heads {keys.shape[0]}")
    if q_obs.shape[1] > keys.shape[1]:
        raise ValueError(f"observation window {q_obs.shape[1]} is longer than the prompt {keys.shape[1]}")
    return q_obs.shape[0] // keys.shape[0]


def snapkv_votes(q_obs: torch.Tensor, keys: torch.Tensor, scale: float | None = None, *, block_n: int = 64) -> torch.Tensor:
    """Triton votes [H_kv, L - W] float32 for the prefix positions (before pooling)."""
    group = _check_shapes(q_obs, keys)
    check_device(q_obs)
    n_heads, n_obs, head_dim = q_obs.shape
    n_kv, seq_len, _ = keys.shape
    scale = head_dim**-0.5 if scale is None else scale
    q_obs, keys = q_obs.contiguous(), keys.contiguous()
    rows_pad = pow2(group * n_obs, 16)
    lse = torch.empty(n_kv, rows_pad, device=keys.device, dtype=torch.float32)
    prefix = seq_len - n_obs
    votes = torch.zeros(n_kv, max(prefix, 0), device=keys.device, dtype=torch.float32)
    common = dict(GROUP=group, ROWS_PAD=rows_pad, HEAD_DIM=head_dim, BLOCK_N=block_n, PRECISION=dot_precision(q_obs.dtype))
    _snapkv_lse_kernel[(n_kv,)](
        q_obs, keys, lse, seq_len, n_obs, scale,
        q_obs.stride(0), q_obs.stride(1), keys.stride(0), keys.stride(1), lse.stride(0), **common,
    )
    if prefix > 0:
        _snapkv_vote_kernel[(n_kv, cdiv(prefix, block_n))](
            q_obs, keys, lse, votes, prefix, n_obs, scale,
            q_obs.stride(0), q_obs.stride(1), keys.stride(0), keys.stride(1), lse.stride(0), votes.stride(0), **common,
        )
    return votes


def snapkv_votes_reference(q_obs: torch.Tensor, keys: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Torch votes, same contract as `snapkv_votes` (materialises the attention matrix)."""
    _check_shapes(q_obs, keys)
    n_heads, n_obs, head_dim = q_obs.shape
    n_kv, seq_len, _ = keys.shape
    scale = head_dim**-0.5 if scale is None else scale
    logits = q_obs.float().reshape(n_kv, -1, head_dim) @ keys.float().transpose(1, 2) * scale  # [H_kv, G*W, L]
    query_pos = torch.arange(seq_len - n_obs, seq_len, device=keys.device).repeat(n_heads // n_kv)
    causal = torch.arange(seq_len, device=keys.device)[None, :] <= query_pos[:, None]
    weights = torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1)
    return weights[..., : seq_len - n_obs].sum(dim=1)


def keep_indices(votes: torch.Tensor, seq_len: int, params: AttentionParams) -> torch.Tensor:
    """Sorted positions kept per KV head, [H_kv, n_keep] long: pooled top budget + the window."""
    n_obs = params.observation_window
    n_kv = votes.shape[0]
    if seq_len <= params.budget + n_obs:
        return torch.arange(seq_len, device=votes.device).expand(n_kv, -1)
    pooled = F.max_pool1d(votes[:, None, :], params.pool_kernel, stride=1, padding=params.pool_kernel // 2)[:, 0]
    top = pooled.topk(params.budget, dim=-1).indices
    window = torch.arange(seq_len - n_obs, seq_len, device=votes.device).expand(n_kv, -1)
    return torch.cat([top.sort(dim=-1).values, window], dim=-1)


def compress_sequence(
    q_obs: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    row: int,
    seq_len: int,
    params: AttentionParams,
    scale: float | None = None,
) -> int:
    """Compress sequence `row`'s prompt KV in place; returns its new length.

    q_obs [n_heads, W, D]: the queries of the prompt's last W = observation_window tokens
    (after RoPE, as attention saw them). Kept rows of each KV head are written to positions
    0..n_keep-1 of the sequence's blocks; blocks past ceil(n_keep / block_size) can be freed.
    """
    check_params(params)
    if q_obs.shape[1] != min(params.observation_window, seq_len):
        raise ValueError(f"q_obs holds {q_obs.shape[1]} queries; expected observation_window={params.observation_window} (or the whole prompt when shorter)")
    if seq_len <= params.budget + params.observation_window:
        return seq_len
    keys = gather_sequence(k_cache, block_table, seq_len, row)  # a copy: safe to overwrite the cache below
    values = gather_sequence(v_cache, block_table, seq_len, row)
    use_triton = params.use_triton if params.use_triton is not None else keys.is_cuda
    votes = (snapkv_votes if use_triton else snapkv_votes_reference)(q_obs, keys, scale)
    keep = keep_indices(votes, seq_len, params)  # [H_kv, n_keep]
    head_dim = keys.shape[2]
    kept_k = torch.gather(keys, 1, keep[..., None].expand(-1, -1, head_dim))
    kept_v = torch.gather(values, 1, keep[..., None].expand(-1, -1, head_dim))
    n_keep = keep.shape[1]
    size = k_cache.shape[2]
    pos = torch.arange(n_keep, device=k_cache.device)
    phys = block_table[row].long()[pos // size]
    k_cache[phys, :, pos % size] = kept_k.transpose(0, 1)
    v_cache[phys, :, pos % size] = kept_v.transpose(0, 1)
    return n_keep


OBS_QUERIES = "observation_queries"


class SnapKVPolicy(AttentionPolicy):
    """SnapKV: prefill and decode are dense; after the prompt's last chunk each layer's prompt KV is
    compressed once (`compress_sequence`) from the last observation_window queries, kept across
    chunks. Positions stay true: the cache gets shorter, `positions` keeps counting."""

    name = "snapkv"

    def check_params(self) -> None:
        check_params(self.params)

    def attend_prefill(self, q: torch.Tensor, cache, layer: int, rope: Rope) -> torch.Tensor:
        key = (OBS_QUERIES, layer)
        n_obs = self.params.observation_window
        kept = cache.policy_state.get(key)
        recent = q[0, :, -n_obs:]
        if kept is not None and recent.shape[1] < n_obs:
            recent = torch.cat([kept, recent], dim=1)[:, -n_obs:]
        cache.policy_state[key] = recent.clone()
        return dense_prefill(q, cache, layer)

    def attend_decode(self, q: torch.Tensor, cache, layer: int, rope: Rope) -> torch.Tensor:
        return DensePolicy(self.params).attend_decode(q, cache, layer, rope)

    def finish_prefill(self, cache) -> None:
        # Only the prompt this prefill added is compressed, from its own observation queries.
        prompt_len = cache.lengths[0]
        kept = prompt_len
        for layer in range(cache.n_layers):
            q_obs = cache.policy_state.pop((OBS_QUERIES, layer), None)
            if q_obs is None:
                return
            kept = compress_sequence(q_obs, cache.k(layer), cache.v(layer), cache.block_table, 0, prompt_len, self.params)
        if kept < prompt_len:
            n_blocks = -(-kept // cache.block_size)
            # Same blocks, shorter sequence: every layer compresses to the same count.
            cache.rewrite(0, cache.block_table[0, :n_blocks].clone(), kept)
