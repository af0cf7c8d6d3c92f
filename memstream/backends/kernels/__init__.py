"""Decode-attention policies over a block (paged) KV cache.

Cache layout shared by the runner and every kernel:
  k_cache, v_cache: [num_blocks, n_kv_heads, block_size, head_dim]
  block_table:      [batch, max_blocks_per_seq] int32, physical block ids, in token order
  seq_lens:         [batch] int32, valid tokens per sequence
  q:                [batch, n_heads, head_dim]; n_heads is a multiple of n_kv_heads (GQA)
Returns [batch, n_heads, head_dim] in q's dtype.

Each policy lives in its own module with a torch reference beside its Triton kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

POLICIES = ("dense", "sink_window", "block_topk", "snapkv")


@dataclass
class AttentionParams:
    sinks: int = 4
    window: int = 1024
    block_size: int = 128
    topk: int = 16
    representatives: int = 4
    budget: int = 2048
    observation_window: int = 32
    pool_kernel: int = 7
    use_triton: bool | None = None

    @classmethod
    def from_settings(cls, attention) -> "AttentionParams":
        return cls(**{name: getattr(attention, name) for name in cls.__dataclass_fields__})


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown attention policy {policy!r}; choose one of {', '.join(POLICIES)}")
    return policy


def gather_sequence(cache: torch.Tensor, block_table: torch.Tensor, seq_len: int, row: int) -> torch.Tensor:
    """The first seq_len cached tokens of sequence `row` as [n_kv_heads, seq_len, head_dim]."""
    block_size = cache.shape[2]
    n_blocks = (seq_len + block_size - 1) // block_size
    blocks = cache[block_table[row, :n_blocks].long()]  # [n_blocks, H_kv, B, D]
    return blocks.permute(1, 0, 2, 3).reshape(cache.shape[1], n_blocks * block_size, cache.shape[3])[:, :seq_len]


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
        queries = q[row].float().view(n_kv, group, head_dim)  # [H_kv, G, D]
        weights = torch.softmax(queries @ keys.transpose(1, 2) * scale, dim=-1)  # [H_kv, G, L]
        out[row] = (weights @ values).reshape(n_heads, head_dim).to(q.dtype)
    return out
