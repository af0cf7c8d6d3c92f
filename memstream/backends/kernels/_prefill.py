"""Prefill-chunk attention over several key sets, each scored with its own query, merged exactly.

A sparse policy's prefill chunk attends keys of different kinds: keys at their true distance
(scored with the query as rotated at its position) and far keys (sinks, selected blocks) scored
with the query moved to a fixed position. Concatenating all scores into one [heads, C, N] matrix
and running masked_fill / softmax over it reads and writes that matrix several times; at a
1024-token chunk and 4K keys that is ~150 MB per layer, and those passes, not the matmuls, were
most of block_topk's and sink_window's CPU prefill. Here each key set goes through one fused
attention call that also returns its log-sum-exp (the flash-attention kernel behind
`F.scaled_dot_product_attention` on CPU), and the partial outputs are combined with the usual
online-softmax rescaling, so no score matrix is ever materialised. Elsewhere (CUDA, or a torch
without that op) `part_attention_math` computes the same thing in plain torch.

Masks are boolean and broadcast to [1, H, C, N]: a query-only pattern is [C, N] (causal, window),
a key-only pattern per KV head is [H_kv, 1, N] (selected blocks). True = attend.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The fused CPU kernel that F.scaled_dot_product_attention dispatches to, exposed with its
# log-sum-exp output. Private to torch, so its absence is not an error: the math path takes over.
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


@dataclass
class KeyPart:
    """One key set of a chunk: q [H, C, Dh], k / v [H_kv, N, Dh], mask bool broadcastable to [H, C, N] (H_kv-headed masks allowed)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor | None = None


def _head_mask(mask: torch.Tensor | None, n_heads: int, n_kv: int) -> torch.Tensor | None:
    """mask as a 3-D [1 | H, 1 | C, N] tensor with query heads (an H_kv-headed mask repeated over its group)."""
    if mask is None:
        return None
    while mask.dim() < 3:
        mask = mask[None]
    if mask.shape[0] == n_kv and n_kv != n_heads:
        mask = mask.repeat_interleave(n_heads // n_kv, dim=0)
    return mask


def part_attention_math(q, k, v, mask, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [H, C, Dh], lse [H, C]) in plain torch; rows with no key give zeros and lse -inf. k/v have H heads."""
    scores = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ v, lse


def part_attention(q, k, v, mask, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [H, C, Dh], lse [H, C]); q [H, C, Dh], k/v [H, N, Dh], mask bool [1 | H, 1 | C, N] or None."""
    if _FLASH_CPU is None or q.device.type != "cpu" or q.dtype not in (torch.float32, torch.bfloat16):
        return part_attention_math(q, k, v, mask, scale)
    bias = None if mask is None else torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
    out, lse = _FLASH_CPU(q[None], k[None], v[None], 0.0, False, attn_mask=None if bias is None else bias[None], scale=scale)
    out, lse = out[0], lse[0].float()
    if mask is not None:
        # The kernel returns lse 0 (and zeros) for a row with no key; such a row must weigh nothing.
        lse = lse.masked_fill(~mask.any(dim=-1).expand_as(lse), float("-inf"))
    return out, lse


def attend_parts(parts: list[KeyPart], scale: float) -> torch.Tensor:
    """Softmax attention of each query over the union of the parts' keys: [H, C, Dh] float32.

    Equal to one softmax over all parts' scores concatenated; a query with no key at all gets zeros.
    """
    outs, lses = [], []
    for part in parts:
        n_heads, n_kv = part.q.shape[0], part.k.shape[0]
        group = n_heads // n_kv
        # GQA: each KV head's keys serve its group of query heads (a copy of only N rows per head).
        k = part.k.float().repeat_interleave(group, dim=0) if group > 1 else part.k.float()
        v = part.v.float().repeat_interleave(group, dim=0) if group > 1 else part.v.float()
        out, lse = part_attention(part.q.float(), k, v, _head_mask(part.mask, n_heads, n_kv), scale)
        outs.append(out.float())
        lses.append(lse)
    if len(parts) == 1:
        return outs[0]
    top = torch.stack(lses).amax(dim=0)
    top = top.masked_fill(top == float("-inf"), 0.0)
    weights = [(lse - top).exp() for lse in lses]  # exp(-inf) = 0 for empty rows
    total = sum(weights)
    out = sum(w[..., None] * o for w, o in zip(weights, outs))
    return out / total.clamp_min(1e-30)[..., None]
