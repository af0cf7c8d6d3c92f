"""The paged KV-cache layout, the policy parameters and the input checks every policy shares.

Cache layout shared by the runner and every kernel:
  k_cache, v_cache: [num_blocks, n_kv_heads, block_size, head_dim]
  block_table:      [batch, max_blocks_per_seq] int32, physical block ids, in token order
  seq_lens:         [batch] int32, valid tokens per sequence
  q:                [batch, n_heads, head_dim]; n_heads is a multiple of n_kv_heads (GQA)
Returns [batch, n_heads, head_dim] in q's dtype.

Block-table entries a policy never reads (evicted by sink_window, or blocks living in CPU
memory for block_topk) may hold any value; kernels only dereference the blocks they attend.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

POLICIES = ("dense", "sink_window", "block_topk", "snapkv")


@dataclass
class AttentionParams:
    """Hyperparameters of the attention policies (defaults follow the papers).

    sinks: initial tokens always attended (StreamingLLM: 4).
    window: recent tokens always attended (sink_window, block_topk local window).
    block_size: tokens per cache block; block_topk scores distant context in blocks of this size.
    topk: distant blocks selected per decode step and KV head (block_topk).
    representatives: representative keys kept per block (block_topk; InfLLM uses 4).
    budget: prompt positions kept per KV head after prefill (snapkv), on top of the observation window.
    observation_window: last prompt tokens whose attention scores the prompt (snapkv: 32).
    pool_kernel: odd 1-D max-pool width that smooths snapkv scores (7).
    prefill_chunk: prompt tokens per prefill forward pass; each chunk attends through the policy.
    use_triton: None picks Triton on CUDA and the torch reference elsewhere.
    """

    sinks: int = 4
    window: int = 1024
    block_size: int = 128
    topk: int = 16
    representatives: int = 4
    budget: int = 2048
    observation_window: int = 32
    pool_kernel: int = 7
    prefill_chunk: int = 1024
    use_triton: bool | None = None

    @classmethod
    def from_settings(cls, attention) -> "AttentionParams":
        return cls(**{name: getattr(attention, name) for name in cls.__dataclass_fields__})

    def settings(self) -> dict:
        """The config fields these parameters come from (inverse of from_settings)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def validate(self) -> "AttentionParams":
        for field in fields(self):
            if field.name == "use_triton":
                continue
            value = getattr(self, field.name)
            minimum = 0 if field.name == "sinks" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"attention parameter {field.name} must be an integer >= {minimum}, got {value!r}")
        if self.pool_kernel % 2 == 0:
            raise ValueError(f"attention parameter pool_kernel must be odd so pooling keeps positions aligned, got {self.pool_kernel}")
        return self


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown attention policy {policy!r}; choose one of {', '.join(POLICIES)}")
    return policy


def check_inputs(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor, seq_lens: torch.Tensor) -> int:
    """Validate shapes, dtypes and devices against the layout; returns the GQA group size."""
    if q.dim() != 3:
        raise ValueError(f"q must be [batch, n_heads, head_dim], got shape {tuple(q.shape)}")
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            f"k_cache and v_cache must both be [num_blocks, n_kv_heads, block_size, head_dim], "
            f"got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    batch, n_heads, head_dim = q.shape
    n_kv = k_cache.shape[1]
    if k_cache.shape[3] != head_dim:
        raise ValueError(f"q head_dim {head_dim} does not match the cache head_dim {k_cache.shape[3]}")
    if n_heads % n_kv:
        raise ValueError(f"n_heads {n_heads} is not a multiple of n_kv_heads {n_kv}")
    if block_table.dim() != 2 or block_table.shape[0] != batch:
        raise ValueError(f"block_table must be [batch={batch}, max_blocks], got {tuple(block_table.shape)}")
    if seq_lens.shape != (batch,):
        raise ValueError(f"seq_lens must be [batch={batch}], got {tuple(seq_lens.shape)}")
    if block_table.dtype not in (torch.int32, torch.int64) or seq_lens.dtype not in (torch.int32, torch.int64):
        raise ValueError("block_table and seq_lens must be integer tensors")
    if k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(f"q ({q.dtype}) and the caches ({k_cache.dtype}, {v_cache.dtype}) must share a dtype")
    devices = {t.device for t in (q, k_cache, v_cache, block_table, seq_lens)}
    if len(devices) != 1:
        raise ValueError(f"all attention inputs must be on one device, got {sorted(map(str, devices))}")
    return n_heads // n_kv


def gather_sequence(cache: torch.Tensor, block_table: torch.Tensor, seq_len: int, row: int) -> torch.Tensor:
    """The first seq_len cached tokens of sequence `row` as [n_kv_heads, seq_len, head_dim]."""
    block_size = cache.shape[2]
    n_blocks = (seq_len + block_size - 1) // block_size
    blocks = cache[block_table[row, :n_blocks].long()]  # [n_blocks, H_kv, B, D]
    return blocks.permute(1, 0, 2, 3).reshape(cache.shape[1], n_blocks * block_size, cache.shape[3])[:, :seq_len]


def gather_tokens(cache: torch.Tensor, block_table: torch.Tensor, row: int, tokens: torch.Tensor) -> torch.Tensor:
    """Cached rows of the given token positions of sequence `row` as [n_kv_heads, len(tokens), head_dim].

    Reads only the blocks those tokens live in, so evicted blocks are never touched.
    """
    block_size = cache.shape[2]
    tokens = tokens.to(device=cache.device, dtype=torch.long)
    phys = block_table[row].long()[tokens // block_size]
    return cache[phys, :, tokens % block_size].transpose(0, 1)


def attend_positions(q_row: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """Reference attention of one sequence's queries over a per-KV-head subset of positions.

    q_row [n_heads, D]; keys/values [H_kv, L, D]; keep [H_kv, L] bool. Returns [n_heads, D] float32;
    a head with nothing to attend returns zeros (the kernels do the same).
    """
    n_kv, _, head_dim = keys.shape
    queries = q_row.float().reshape(n_kv, -1, head_dim)  # [H_kv, G, D]
    scores = queries @ keys.float().transpose(1, 2) * scale  # [H_kv, G, L]
    scores = scores.masked_fill(~keep[:, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return (weights @ values.float()).reshape(-1, head_dim)
