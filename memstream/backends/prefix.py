"""A prompt prefix prefilled once and shared by many continuations (many questions over one transcript).

`SharedPrefix.build` prefills the prefix through the attention policy and takes the policy's
snapshot; `SharedPrefix.greedy` prefills one suffix after it, decodes greedily, then rolls the
cache back to the prefix (`AttentionPolicy.rollback`), so every suffix starts from the cache a
fresh prefill of the prefix gives. The suffix continues the prefix's chunking (its chunks start
at the prefix's end), which matters to block_topk: it selects blocks once per chunk.

Unlike `LocalBackend`'s prompt cache (dense only) this serves block_topk too: its representatives
are rolled back with the cache. Policies that evict or compress the cache (sink_window, snapkv)
hold no reusable prefix and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Sequence

import torch

from memstream.backends.kernels import AttentionPolicy
from memstream.backends.kv_cache import PagedKVCache
from memstream.backends.llama import Transformer
from memstream.backends.local import decode_tokens, new_cache, prefill


def _greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=-1)


@dataclass
class SharedPrefix:
    """A cache holding a prefilled prefix; continuations run after it one at a time."""

    model: Transformer
    policy: AttentionPolicy
    cache: PagedKVCache
    length: int
    """Prefix tokens; the cache is back at this length after every continuation."""
    chunk: int | None = None
    """Prefill chunk (None: the policy's prefill_chunk), for the prefix and every suffix."""
    state: dict = field(default_factory=dict, repr=False)
    """The policy's snapshot at `length`."""

    @classmethod
    def build(cls, model: Transformer, ids: Sequence[int], policy: AttentionPolicy, room: int,
              chunk: int | None = None) -> "SharedPrefix":
        """Prefill `ids` into a cache with `room` more tokens for each continuation (suffix + decoded)."""
        if not ids:
            raise ValueError("a shared prefix needs at least one token")
        if not policy.rolls_back:
            raise ValueError(f"{policy.name} evicts or compresses the cache: it holds no prefix to roll back to")
        device = model.output.weight.device
        cache = new_cache(model, policy, len(ids) + room, device)
        prefill(model, torch.tensor([list(ids)], device=device), cache, policy, chunk=chunk)
        return cls(model, policy, cache, len(ids), chunk, policy.snapshot(cache))

    @property
    def room(self) -> int:
        return self.cache.capacity - self.length

    def rollback(self) -> None:
        self.policy.rollback(self.cache, self.length, self.state)

    def greedy(self, suffix: Sequence[int], max_new: int, stop_ids: Collection[int] = ()) -> list[int]:
        """Greedy tokens after prefix + suffix (at most max_new, ending before the first stop id); then roll back."""
        if not suffix:
            raise ValueError("a continuation needs at least one suffix token (for the next-token logits)")
        if len(suffix) + max_new > self.room + 1:  # the last decoded token is never fed
            raise ValueError(f"suffix of {len(suffix)} + {max_new} new tokens exceeds the {self.room} tokens of room")
        device = self.cache.block_table.device
        out: list[int] = []
        try:
            logits = prefill(self.model, torch.tensor([list(suffix)], device=device), self.cache, self.policy, chunk=self.chunk)
            for token in decode_tokens(self.model, int(logits.argmax(dim=-1)[0]), max_new, self.cache, _greedy, self.policy):
                if token in stop_ids:
                    break
                out.append(token)
        finally:
            # Also after an error part-way: the next continuation must not see this one's tokens.
            self.rollback()
        return out
