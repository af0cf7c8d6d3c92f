"""block_topk as the runner's policy object (InfLLM), beside its kernels in block_topk.py.

Positions (InfLLM): every token outside the local window (the sinks and the selected distant
blocks) is placed at one fixed distance, `window` (InfLLM's local-window length), from the
query, so no query ever sees a relative distance past window + chunk however long the context.
Keys are cached rotated at their true positions; such a key is rotated back to position 0 and
scored with the query rotated at position `window` (`FarPositions`). A sink closer than `window`
keeps its true distance (min(true, window)), so with a window covering the context the policy is
dense attention. Representatives are stored rotated back to position 0 and scored with that
same far query, so selection sees the distances attention will use.

Representatives come from each block's own queries (InfLLM): the queries of the block's tokens,
kept across prefill chunks and decode steps while the block fills (`policy_state`), so they do
not depend on where chunks start. A block with missing queries (a cache continued from tokens
prefilled elsewhere) falls back to its mean key.

Prefill chunk [c0, c0 + C): blocks are selected once per chunk, from the mean of the chunk's
far queries (InfLLM); each query attends the sinks, the selected blocks and the local window
[win_start, p], win_start computed as for a decode step at c0 (so the local part holds at most
window + C tokens, all at true distances). A chunk of one token is exactly a decode step.

Cost per chunk is independent of the context length but for the block scores (R keys per block):
the near keys (true distances) and the far keys (sinks + selected blocks, far-scored) each go
through one fused attention call, merged by log-sum-exp (`_prefill.attend_parts`); only the
selected blocks are gathered, so a long prompt's prefill grows linearly with its length.
"""

from __future__ import annotations

import torch

from . import block_topk as bt
from ._prefill import KeyPart, attend_parts
from .policy import AttentionPolicy, Rope, gather_range, query_positions

REPS = "representatives"
PENDING = "pending_queries"


class BlockTopkPolicy(AttentionPolicy):
    name = "block_topk"
    reads_past_window = True
    rolls_back = True

    def check_params(self) -> None:
        bt.check_budget(self.params.sinks, self.params.window, self.params.topk)

    @property
    def far_distance(self) -> int:
        return self.params.window

    def representatives(self, cache, layer: int) -> torch.Tensor:
        """This layer's representatives store (rotated back to position 0), created on first use."""
        key = (REPS, layer)
        if key not in cache.policy_state:
            cache.policy_state[key] = bt.new_representatives_cache(cache.k(layer), self.params.representatives)
        return cache.policy_state[key]

    def update_representatives(self, cache, layer: int, row: int, q_new: torch.Tensor, start: int, rope: Rope) -> None:
        """Give every block completed by tokens [start, start + n) its representatives; q_new [H, n, Dh]."""
        size = cache.block_size
        n = q_new.shape[1]
        end = start + n
        key = (PENDING, layer, row)
        pending = cache.policy_state.pop(key, None)
        if pending is not None and pending[0] + pending[1].shape[1] == start:
            base, queries = pending[0], torch.cat([pending[1], q_new], dim=1)
        else:
            base, queries = start, q_new
        reps = self.representatives(cache, layer)
        k_layer = cache.k(layer)
        for block in range(start // size, end // size):
            phys = int(cache.block_table[row, block])
            first = block * size
            own = queries[:, first - base : first - base + size] if first >= base else None
            idx = bt.representative_index(k_layer[phys], reps.shape[2], own)  # [H_kv, R]
            rows = torch.gather(k_layer[phys], 1, idx[..., None].expand(-1, -1, k_layer.shape[3]))
            reps[phys] = rope.shift(rows, -(first + idx))  # rotated back to position 0
        tail = (end // size) * size
        if tail < end and base <= tail:
            cache.policy_state[key] = (tail, queries[:, tail - base :].clone())

    def snapshot(self, cache) -> dict:
        """Every entry, by reference: enough to roll the cache back to this length.

        The representatives store stays valid in place: later tokens write only the entries of the
        blocks they complete, and a block is scored only once complete, so a block refilled after a
        rollback is rewritten before it is read. The pending queries of the partial last block are
        replaced (never modified) as tokens come, so the references kept here keep the ones of
        this length: without them the block would fall back to its mean key when it fills.
        """
        return dict(cache.policy_state)

    def far_query(self, q: torch.Tensor, positions: torch.Tensor, rope: Rope) -> torch.Tensor:
        """q (rotated at `positions`, broadcast over q's leading dims) moved to position far_distance.

        A query before far_distance stays where it is: no key is that far from it (and nothing is distant).
        """
        return rope.shift(q, positions.clamp(max=self.far_distance) - positions)

    def attend_decode(self, q: torch.Tensor, cache, layer: int, rope: Rope) -> torch.Tensor:
        p = self.params
        for row in range(q.shape[0]):
            self.update_representatives(cache, layer, row, q[row][:, None], cache.lengths_before_write[row], rope)
        positions = cache.positions - 1
        far = bt.FarPositions(self.far_query(q, positions[:, None], rope), rope, self.far_distance)
        args = (q, cache.k(layer), cache.v(layer), cache.block_table, cache.seq_lens, self.representatives(cache, layer),
                p.sinks, p.window, p.topk)
        if self.use_triton(q):
            return bt.block_topk_attention(*args, check=False, far=far)
        return bt.block_topk_reference(*args, far=far)

    def attend_prefill(self, q: torch.Tensor, cache, layer: int, rope: Rope) -> torch.Tensor:
        _, n_heads, n_q, head_dim = q.shape
        p, size = self.params, cache.block_size
        pos = query_positions(cache, n_q)
        c0, end = int(pos[0]), int(pos[-1]) + 1
        self.update_representatives(cache, layer, 0, q[0], cache.lengths_before_write[0], rope)
        k_layer, v_layer, table = cache.k(layer), cache.v(layer), cache.block_table
        n_kv = k_layer.shape[1]
        n_sink, win_start = bt.distant_range(c0 + 1, p.sinks, p.window, size)
        q_far = self.far_query(q[0], pos[None, :], rope)  # [H, C, Dh]
        rows = pos[:, None]  # [C, 1] query positions
        # Distant blocks exist only once c0 + 1 - window > n_sink, and then every sink is farther than
        # `window` from every query of the chunk: sinks are all far-scored. Before that (no distant
        # blocks) each sink is far-scored only for the queries more than `window` past it.
        near_from = win_start if win_start > n_sink else 0
        parts = []
        k_l = gather_range(k_layer, table, 0, near_from, end)
        v_l = gather_range(v_layer, table, 0, near_from, end)
        j = torch.arange(near_from, end, device=q.device)[None, :]
        near = (j <= rows) & ((j >= n_sink) | (rows - j <= self.far_distance))
        parts.append(KeyPart(q[0], k_l, v_l, near))  # true distances
        far_k, far_v, far_mask = [], [], []
        if n_sink > 0 and end - 1 > self.far_distance:  # some query is far from sink 0
            k_s = gather_range(k_layer, table, 0, 0, n_sink)
            j = torch.arange(n_sink, device=q.device)
            far_k.append(rope.shift(k_s, -j[None, :]))  # rotated back to position 0
            far_v.append(gather_range(v_layer, table, 0, 0, n_sink))
            far_mask.append((rows - j[None, :] > self.far_distance).expand(-1, n_sink))
        if win_start > n_sink:
            # Selection once per chunk: the chunk's mean far query against each distant block's representatives.
            blocks = torch.arange(n_sink // size, -(-win_start // size), device=q.device)  # blocks overlapping [n_sink, win_start)
            ids = table[0, blocks].long()
            reps = self.representatives(cache, layer)[ids].float()  # [nb, H_kv, R, Dh]
            mean_q = q_far.float().mean(dim=1).reshape(n_kv, n_heads // n_kv, head_dim)
            scores = torch.einsum("hgd,bhrd->hgbr", mean_q, reps).amax(dim=-1).sum(dim=1)  # [H_kv, nb]
            chosen = bt.top_blocks(scores, min(p.topk, len(blocks)))[1]  # [H_kv, k] into `blocks`
            tok = (blocks[chosen][..., None] * size + torch.arange(size, device=q.device)).flatten(1)  # [H_kv, k*size]
            phys = table[0].long()[tok // size]
            heads = torch.arange(n_kv, device=q.device)[:, None]
            k_sel = k_layer[phys, heads, tok % size]  # [H_kv, k*size, Dh]: only the selected blocks are read
            # Every selected token is at least `window` before every query of the chunk: far-scored.
            far_k.append(rope.shift(k_sel, -tok))
            far_v.append(v_layer[phys, heads, tok % size])
            valid = (tok >= n_sink) & (tok < win_start)  # [H_kv, k*size]
            if far_mask:  # the sinks are attended by every query here (see above)
                far_mask = [torch.ones(n_kv, 1, n_sink, dtype=torch.bool, device=q.device)]
            far_mask.append(valid[:, None, :])
        if far_k:
            parts.append(KeyPart(q_far, torch.cat(far_k, dim=1), torch.cat(far_v, dim=1), torch.cat(far_mask, dim=-1)))
        out = attend_parts(parts, head_dim**-0.5)  # [H, C, Dh]
        return out[None].to(q.dtype)
