"""The policies' side of the local runner's two attention hooks (memstream.backends.attention).

The runner's cache (`memstream.backends.kv_cache.PagedKVCache`) is used through its public
surface only: k(layer)/v(layer), block_table, seq_lens, lengths (host copies), block_size,
rewrite(row, block_ids, length), and `policy_state`, a dict the cache keeps for policies.

- snapkv: after each layer's prefill, that layer's prompt KV is compressed in place
  (`snapkv.compress_sequence`) and the cache length is set to the kept count; `positions`
  keeps counting true positions, so new tokens are rotated where they really are.
- block_topk: after prefill, every full block gets representatives chosen with the prompt's
  own queries (InfLLM); in decode, a block that fills gets representatives from its keys
  (the runner keeps no decode queries). They live in policy_state[("representatives", layer)].
- sink_window: nothing to do after prefill; decode reads only sinks + window, so the other
  blocks are dead (`sink_window.evictable_blocks`). This runner allocates a sequence's blocks
  up front, so they are not returned to a pool; q_far is not passed (the runner's context is
  capped at the model's trained window, where true distances are in range).
- dense: nothing.
"""

from __future__ import annotations

import torch

from .block_topk import block_representatives, new_representatives_cache
from .layout import AttentionParams, check_policy
from .snapkv import compress_sequence

REPS = "representatives"


def after_prefill(policy: str, q: torch.Tensor, cache, layer_idx: int, params: AttentionParams) -> None:
    """Reshape one layer's prompt cache after prefill. q: the prompt's queries [1, H, T, Dh] (after RoPE)."""
    check_policy(policy)
    prompt_len = q.shape[2]
    if policy == "snapkv":
        n_obs = min(params.observation_window, prompt_len)
        kept = compress_sequence(q[0, :, -n_obs:], cache.k(layer_idx), cache.v(layer_idx), cache.block_table, 0, prompt_len, params)
        if kept < prompt_len:
            n_blocks = -(-kept // cache.block_size)
            # Same blocks, shorter sequence: every layer compresses to the same count.
            cache.rewrite(0, cache.block_table[0, :n_blocks].clone(), kept)
    elif policy == "block_topk":
        reps = representatives(cache, layer_idx, params)
        size = cache.block_size
        k_layer = cache.k(layer_idx)
        for block in range(prompt_len // size):
            phys = int(cache.block_table[0, block])
            reps[phys] = block_representatives(k_layer[phys], reps.shape[2], q[0, :, block * size : (block + 1) * size])


def representatives(cache, layer_idx: int, params: AttentionParams) -> torch.Tensor:
    """This layer's block_topk representatives store, created on first use."""
    key = (REPS, layer_idx)
    if key not in cache.policy_state:
        cache.policy_state[key] = new_representatives_cache(cache.k(layer_idx), params.representatives)
    return cache.policy_state[key]


def before_decode(policy: str, cache, layer_idx: int, params: AttentionParams) -> dict:
    """Keyword arguments for decode_attention; for block_topk, first give a just-filled block its representatives."""
    if policy != "block_topk":
        return {}
    reps = representatives(cache, layer_idx, params)
    size = cache.block_size
    for row, length in enumerate(cache.lengths):
        # The new token is already written: a length that is a multiple of the block size means
        # the token just completed block length // size - 1.
        if length and length % size == 0:
            phys = int(cache.block_table[row, length // size - 1])
            reps[phys] = block_representatives(cache.k(layer_idx)[phys], reps.shape[2])
    return {"representatives": reps}
