"""A paged (block) KV cache in the layout every attention policy reads.

Per layer, in the layout of `memstream.backends.kernels`:
  k(layer), v(layer): [num_blocks, n_kv_heads, block_size, head_dim]
  block_table:        [batch, max_blocks_per_seq] int32, physical block ids in token order
  seq_lens:           [batch] int32, tokens held in the cache per sequence
  positions:          [batch] int64, tokens fed so far (the next RoPE position)

`seq_lens` and `positions` are equal until a policy evicts or compresses cached tokens
(sink_window, snapkv); keys are stored after RoPE, so eviction never re-rotates.

Blocks are handed out contiguously per sequence (sequence b owns blocks
[b * max_blocks, (b + 1) * max_blocks)), so at batch 1 "gather the sequence" is a slice.
With `pool_tokens` below max_tokens (an evicting policy, sink_window), each sequence owns a
smaller pool of physical blocks instead: a logical block gets one when its first token is
written, and `release(row, logical_blocks)` returns dead blocks to the pool for reuse, so
memory stays bounded while positions keep counting.
A forward pass brackets its layers with `begin_write(t)` / `end_write()`: the slots for
the t new tokens are computed once, seq_lens grows before the first layer attends (the
new tokens see themselves), and each layer's `write` scatters its keys/values there.
"""

from __future__ import annotations

import torch


class PagedKVCache:
    def __init__(
        self,
        n_layers: int,
        n_kv_heads: int,
        head_dim: int,
        block_size: int,
        max_tokens: int,
        batch: int = 1,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        pool_tokens: int | None = None,
    ):
        if max_tokens < 1 or batch < 1 or block_size < 1:
            raise ValueError(f"cache needs max_tokens, batch, block_size >= 1, got {max_tokens}, {batch}, {block_size}")
        self.block_size = block_size
        self.batch = batch
        self.n_layers = n_layers
        self.max_blocks = -(-max_tokens // block_size)
        self.capacity = self.max_blocks * block_size
        self.pool_blocks = self.max_blocks if pool_tokens is None else min(self.max_blocks, max(1, -(-pool_tokens // block_size)))
        self.pooled = self.pool_blocks < self.max_blocks
        num_blocks = self.pool_blocks * batch
        shape = (n_layers, num_blocks, n_kv_heads, block_size, head_dim)
        # Zeros, not empty: a policy that reads a partly filled block multiplies unused
        # slots by zero weights, and 0 * garbage-NaN would still be NaN.
        self.k_cache = torch.zeros(shape, dtype=dtype, device=device)
        self.v_cache = torch.zeros(shape, dtype=dtype, device=device)
        # Per-layer views, made once: indexing them is cheaper than indexing the 5-D tensors every step.
        self._k = list(self.k_cache.unbind(0))
        self._v = list(self.v_cache.unbind(0))
        self.block_table = torch.zeros(batch, self.max_blocks, dtype=torch.int32, device=device)
        self.seq_lens = torch.zeros(batch, dtype=torch.int32, device=device)
        self.positions = torch.zeros(batch, dtype=torch.int64, device=device)
        # Host copies so the batch-1 decode path never syncs on a device tensor.
        self.lengths: list[int] = [0] * batch
        self.lengths_before_write: list[int] = [0] * batch
        self._slot: tuple[int, int] | None = None
        self._blocks: torch.Tensor | None = None
        self._offsets: torch.Tensor | None = None
        self.contiguous = True
        """True while every sequence's blocks are in order (no policy has rewritten the block table)."""
        self.policy_state: dict = {}
        """Tensors an attention policy keeps beside the cache (block_topk: per-layer representatives)."""
        self._reset_blocks()

    def _reset_blocks(self) -> None:
        rows = torch.arange(self.batch, dtype=torch.int32)[:, None] * self.pool_blocks
        if not self.pooled:
            self.block_table.copy_(rows + torch.arange(self.max_blocks, dtype=torch.int32))
            return
        self.contiguous = False
        self.block_table.fill_(0)
        self._free = [list(range(int(r) + self.pool_blocks - 1, int(r) - 1, -1)) for r in rows[:, 0]]
        self._mapped = [0] * self.batch  # logical blocks handed a physical block so far
        self._released = [set() for _ in range(self.batch)]

    def _map_blocks(self, new_lengths: list[int]) -> None:
        """Give every logical block up to new_lengths a physical block from its sequence's pool."""
        for row, length in enumerate(new_lengths):
            need = -(-length // self.block_size)
            while self._mapped[row] < need:
                if not self._free[row]:
                    raise ValueError(
                        f"KV cache pool of {self.pool_blocks} blocks is full at {length} tokens: the policy "
                        "must release dead blocks, or the cache needs a larger pool_tokens")
                self.block_table[row, self._mapped[row]] = self._free[row].pop()
                self._mapped[row] += 1

    def release(self, row: int, logical_blocks) -> None:
        """Return dead logical blocks of sequence `row` to its pool (pooled caches; a no-op otherwise).

        Their keys/values are never read again: the block-table entries keep stale ids.
        """
        if not self.pooled:
            return
        done = self._released[row]
        for block in logical_blocks:
            if block not in done and block < self._mapped[row]:
                done.add(block)
                self._free[row].append(int(self.block_table[row, block]))

    def k(self, layer: int) -> torch.Tensor:
        return self._k[layer]

    def v(self, layer: int) -> torch.Tensor:
        return self._v[layer]

    def reset(self) -> None:
        self.seq_lens.zero_()
        self.positions.zero_()
        self.lengths = [0] * self.batch
        self.contiguous = True
        self._reset_blocks()
        self.policy_state.clear()

    def truncate(self, length: int) -> None:
        """Keep only the first `length` tokens of every sequence (to reuse a shared prompt prefix).

        Only for a cache no policy has rewritten (`contiguous`, cached length == position):
        the kept keys/values are then exactly those of tokens 0..length-1. Slots past `length`
        keep stale (finite) values that nothing reads until they are written again. Policy state is
        dropped; `AttentionPolicy.rollback` truncates and puts back what the policy kept valid.
        """
        self._check_prefix(length)
        self.lengths = [length] * self.batch
        self.seq_lens.fill_(length)
        self.positions.fill_(length)
        self.policy_state.clear()

    def copy_prefix(self, length: int, max_tokens: int) -> "PagedKVCache":
        """A new cache for `max_tokens` tokens per sequence holding the first `length` of this one's (same conditions as truncate)."""
        self._check_prefix(length)
        k = self.k_cache
        copy = PagedKVCache(k.shape[0], k.shape[2], k.shape[4], self.block_size, max(max_tokens, length, 1),
                            self.batch, k.dtype, k.device)
        n_blocks = -(-length // self.block_size)
        for row in range(self.batch):
            old, new = row * self.pool_blocks, row * copy.pool_blocks
            copy.k_cache[:, new : new + n_blocks] = self.k_cache[:, old : old + n_blocks]
            copy.v_cache[:, new : new + n_blocks] = self.v_cache[:, old : old + n_blocks]
        copy.lengths = [length] * self.batch
        copy.seq_lens.fill_(length)
        copy.positions.fill_(length)
        return copy

    def _check_prefix(self, length: int) -> None:
        if not self.contiguous or any(n != p for n, p in zip(self.lengths, self.positions.tolist())):
            raise ValueError("only a cache whose tokens were never evicted or compressed holds a reusable prefix")
        if not 0 <= length <= min(self.lengths):
            raise ValueError(f"cannot keep {length} tokens: the cache holds {min(self.lengths)}")

    def room(self) -> int:
        """Tokens that still fit in the fullest sequence."""
        return self.capacity - max(self.lengths)

    def begin_write(self, n_tokens: int) -> None:
        if max(self.lengths) + n_tokens > self.capacity:
            raise ValueError(f"KV cache full: {max(self.lengths)} + {n_tokens} tokens > capacity {self.capacity}")
        self.lengths_before_write = list(self.lengths)
        if self.pooled:
            self._map_blocks([n + n_tokens for n in self.lengths])
        if self.batch == 1 and n_tokens == 1:
            pos = self.lengths[0]
            block = int(self.block_table[0, pos // self.block_size]) if not self.contiguous else pos // self.block_size
            self._slot = (block, pos % self.block_size)
        else:
            self._slot = None
            starts = torch.tensor(self.lengths, dtype=torch.int64, device=self.block_table.device)
            pos = starts[:, None] + torch.arange(n_tokens, device=starts.device)  # [B, T]
            self._blocks = torch.gather(self.block_table.long(), 1, pos // self.block_size)
            self._offsets = pos % self.block_size
        self.lengths = [n + n_tokens for n in self.lengths]
        self.seq_lens += n_tokens
        self.positions += n_tokens

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the new tokens' keys/values, k and v [B, Hkv, T, Dh]."""
        if self._slot is not None:
            block, offset = self._slot
            self._k[layer][block, :, offset] = k[0, :, 0]
            self._v[layer][block, :, offset] = v[0, :, 0]
            return
        # Advanced indices on dims 0 and 2 with a slice between: the indexed view is [B, T, Hkv, Dh].
        self._k[layer][self._blocks, :, self._offsets] = k.transpose(1, 2)
        self._v[layer][self._blocks, :, self._offsets] = v.transpose(1, 2)

    def rewrite(self, row: int, block_ids: torch.Tensor, length: int) -> None:
        """Point sequence `row` at other blocks and set its cached length (for evicting/compressing policies).

        `positions` is left alone: the next token keeps its true RoPE position.
        """
        self.block_table[row, : len(block_ids)] = block_ids.to(self.block_table.dtype)
        self.seq_lens[row] = length
        self.lengths[row] = length
        self.contiguous = False

    def end_write(self) -> None:
        self._slot = self._blocks = self._offsets = None

    def sequence(self, layer: int, row: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of sequence `row` as [Hkv, seq_len, Dh] each (a copy)."""
        length = self.lengths[row]
        n_blocks = -(-length // self.block_size)
        if self.contiguous:
            first = row * self.pool_blocks
            k = self._k[layer][first : first + n_blocks]  # a view: [n_blocks, Hkv, Bs, Dh]
            v = self._v[layer][first : first + n_blocks]
        else:
            ids = self.block_table[row, :n_blocks].long()
            k, v = self._k[layer][ids], self._v[layer][ids]
        heads, dh = k.shape[1], k.shape[3]
        k = k.transpose(0, 1).reshape(heads, n_blocks * self.block_size, dh)[:, :length]
        v = v.transpose(0, 1).reshape(heads, n_blocks * self.block_size, dh)[:, :length]
        return k, v
