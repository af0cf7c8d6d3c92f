"""Decode-attention policies over a block (paged) KV cache.

Cache layout shared by the runner and every kernel:
  k_cache, v_cache: [num_blocks, n_kv_heads, block_size, head_dim]
  block_table:      [batch, max_blocks_per_seq] int32, physical block ids, in token order
  seq_lens:         [batch] int32, valid tokens per sequence
  q:                [batch, n_heads, head_dim]; n_heads is a multiple of n_kv_heads (GQA)
Returns [batch, n_heads, head_dim] in q's dtype.

Each policy lives in its own module with a torch reference beside its Triton kernel:
  dense        split-K (FlashDecoding) over the whole sequence        dense.py
  sink_window  initial sinks + recent window (StreamingLLM)            sink_window.py
  block_topk   sinks + top-k scored blocks + local window (InfLLM)     block_topk.py
  snapkv       prompt KV compressed once after prefill, then dense    snapkv.py

The runner uses the policies as objects (`AttentionPolicy`, policy.py: one class per module,
with its prefill-chunk attention, decode attention and cache hooks), built here by `make_policy`
from a name and `AttentionParams` (`policy_from_settings` from the config): the one place a
policy name becomes code. `decode_attention` is the functional entry point for one decode step.

Documented clamps (never wrong output): sinks or window larger than a sequence shrink to it;
topk larger than the number of distant blocks selects them all; a snapkv budget covering the
prompt keeps it whole. With such budgets every policy equals dense attention.
"""

from __future__ import annotations

import torch

from . import block_topk, sink_window
from ._launch import check_device
from .block_topk import FarPositions, block_topk_attention, block_topk_reference
from .block_topk_policy import BlockTopkPolicy
from .dense import DensePolicy, dense_attention, dense_reference
from .layout import POLICIES, AttentionParams, check_inputs, check_policy, gather_sequence, gather_tokens
from .policy import AttentionPolicy, Rope
from .sink_window import SinkWindowPolicy, sink_window_attention, sink_window_reference
from .snapkv import SnapKVPolicy

__all__ = [
    "POLICIES",
    "AttentionParams",
    "AttentionPolicy",
    "Rope",
    "check_policy",
    "decode_attention",
    "dense_reference",
    "gather_sequence",
    "gather_tokens",
    "make_policy",
    "policy_from_settings",
    "use_triton_for",
]

POLICY_CLASSES: dict[str, type[AttentionPolicy]] = {
    cls.name: cls for cls in (DensePolicy, SinkWindowPolicy, BlockTopkPolicy, SnapKVPolicy)
}
assert tuple(POLICY_CLASSES) == POLICIES


def make_policy(name: str, params: AttentionParams | None = None) -> AttentionPolicy:
    """The policy object for a configured name (raises ValueError naming the choices)."""
    return POLICY_CLASSES[check_policy(name)](params)


def policy_from_settings(attention) -> AttentionPolicy:
    """The policy an `AttentionSettings` describes; `AttentionSettings(**policy.settings())` rebuilds it."""
    return make_policy(attention.policy, AttentionParams.from_settings(attention))


def use_triton_for(q: torch.Tensor, params: AttentionParams) -> bool:
    """params.use_triton, or by default: Triton on CUDA, the torch reference elsewhere."""
    return q.is_cuda if params.use_triton is None else bool(params.use_triton)


def decode_attention(
    policy: str,
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    params: AttentionParams,
    scale: float | None = None,
    *,
    representatives: torch.Tensor | None = None,
    q_far: torch.Tensor | None = None,
    far: FarPositions | None = None,
    check: bool = True,
) -> torch.Tensor:
    """One decode step of attention under `policy`; [batch, n_heads, head_dim] in q's dtype.

    representatives: block_topk's [num_blocks, n_kv_heads, R, head_dim] store
        (block_topk.update_representatives fills it as blocks fill); required for block_topk.
    q_far: sink_window only; q rotated at sink_window.far_query_position(pos), used to score
        the sinks so they stay at an in-range distance past the trained length.
    far: block_topk only; InfLLM positions (block_topk.FarPositions); without it every token is
        attended at its true distance.
    check: validate the policy, params and inputs (once per call, not again in the kernel
        wrappers). A caller that validated the same shapes and params before may pass False to
        keep the per-step host work to the kernel launches.
    snapkv decodes densely: its compression happens once, after prefill (snapkv.compress_sequence).

    On CUDA the Triton path runs only Triton launches (no torch ops or host syncs between
    them), so a decode step can be captured in a CUDA graph.
    With params.use_triton=True on CPU tensors, set TRITON_INTERPRET=1 to run the interpreter.
    """
    triton_path = use_triton_for(q, params)
    if check:
        check_inputs_for(policy, q, k_cache, v_cache, block_table, seq_lens, params, representatives, q_far, triton_path)
    if policy in ("dense", "snapkv"):
        if triton_path:
            return dense_attention(q, k_cache, v_cache, block_table, seq_lens, scale, check=False)
        return dense_reference(q, k_cache, v_cache, block_table, seq_lens, scale)
    if policy == "sink_window":
        if triton_path:
            return sink_window_attention(q, k_cache, v_cache, block_table, seq_lens, params.sinks, params.window, scale,
                                         q_far=q_far, check=False)
        return sink_window_reference(q, k_cache, v_cache, block_table, seq_lens, params.sinks, params.window, scale, q_far=q_far)
    if triton_path:
        return block_topk_attention(q, k_cache, v_cache, block_table, seq_lens, representatives, params.sinks, params.window,
                                    params.topk, scale, check=False, far=far)
    return block_topk_reference(q, k_cache, v_cache, block_table, seq_lens, representatives, params.sinks, params.window,
                                params.topk, scale, far=far)


def check_inputs_for(policy, q, k_cache, v_cache, block_table, seq_lens, params, representatives, q_far, triton_path) -> None:
    """Every check `decode_attention` makes before it launches anything; raises ValueError/RuntimeError."""
    check_policy(policy)
    params.validate()
    check_inputs(q, k_cache, v_cache, block_table, seq_lens)
    if triton_path:
        check_device(q)
    if policy == "sink_window":
        sink_window.check_budget(params.sinks, params.window)
        if q_far is not None and q_far.shape != q.shape:
            raise ValueError(f"q_far must have q's shape {tuple(q.shape)}, got {tuple(q_far.shape)}")
    elif policy == "block_topk":
        if params.block_size != k_cache.shape[2]:
            raise ValueError(
                f"block_topk scores the cache's own blocks: params.block_size={params.block_size} "
                f"must equal the cache block size {k_cache.shape[2]}"
            )
        block_topk.check_budget(params.sinks, params.window, params.topk)
        block_topk.check_representatives(representatives, k_cache)
