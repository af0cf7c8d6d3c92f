"""Where attention policies plug into the local runner: two functions, called per layer.

- `attend_decode(policy, q, cache, layer_idx, params)`: one decode step. q is
  [B, H, Dh] (RoPE applied), the new token's K/V are already in the cache, and the
  result is [B, H, Dh]. When `memstream.backends.kernels` provides
  `decode_attention(policy, q, k_cache, v_cache, block_table, seq_lens, params)`, every
  policy goes there, except dense without Triton (CPU), which runs `dense_sdpa` below.
- `on_prefill(policy, q, cache, layer_idx, params)`: after a layer's prompt K/V are
  written (q is the prompt's queries, [1, H, T, Dh]). A policy that compresses or evicts
  the prompt (snapkv, sink_window) does it here through `kernels.after_prefill(...)` with
  the same arguments, then `cache.rewrite(row, block_ids, length)`.

The cache object exposes k(layer)/v(layer), block_table, seq_lens and positions
(see `memstream.backends.kv_cache`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from memstream.backends import kernels
from memstream.backends.kernels import AttentionParams
from memstream.backends.kv_cache import PagedKVCache


def dense_sdpa(q: torch.Tensor, cache: PagedKVCache, layer_idx: int) -> torch.Tensor:
    """Dense decode attention for the CPU path: gather each sequence (a slice at batch 1), one SDPA call."""
    batch, n_heads, head_dim = q.shape
    n_kv = cache.k(layer_idx).shape[1]
    out = torch.empty_like(q)
    for row in range(batch):
        k, v = cache.sequence(layer_idx, row)  # [Hkv, L, Dh]
        # GQA as plain attention: each KV head's group of query heads becomes its G query rows
        # ([1, Hkv, G, Dh]); one token attends to every cached key, so no mask. This shape takes
        # the fused CPU kernel, where enable_gqa with one query row falls back to repeating K/V.
        grouped = q[row].view(1, n_kv, n_heads // n_kv, head_dim)
        out[row] = F.scaled_dot_product_attention(grouped, k[None], v[None]).view(n_heads, head_dim)
    return out


def attend_decode(policy: str, q: torch.Tensor, cache: PagedKVCache, layer_idx: int, params: AttentionParams) -> torch.Tensor:
    """Decode attention for one layer under `policy`; q [B, H, Dh] -> [B, H, Dh]."""
    decode_attention = getattr(kernels, "decode_attention", None)
    use_triton = getattr(kernels, "use_triton_for", lambda q, params: False)(q, params)
    # Dense without Triton (CPU): one SDPA call over a sliced cache beats the kernels' reference loop.
    if policy == "dense" and not use_triton:
        return dense_sdpa(q, cache, layer_idx)
    if decode_attention is not None:
        extra = kernels.before_decode(policy, cache, layer_idx, params)  # e.g. block_topk representatives
        return decode_attention(policy, q, cache.k(layer_idx), cache.v(layer_idx), cache.block_table, cache.seq_lens, params, **extra)
    raise ValueError(
        f"attention policy {policy!r} needs memstream.backends.kernels.decode_attention, which is not available; use 'dense'"
    )


def on_prefill(policy: str, q: torch.Tensor, cache: PagedKVCache, layer_idx: int, params: AttentionParams) -> None:
    """Let the policy reshape a layer's prompt cache right after prefill (no-op for dense)."""
    after_prefill = getattr(kernels, "after_prefill", None)
    if after_prefill is not None and policy != "dense":
        after_prefill(policy, q, cache, layer_idx, params)
