"""The attention-policy object the runner calls, and the RoPE helper every policy shares.

One class per kernel module (dense.py, sink_window.py, block_topk.py, snapkv.py) subclasses
`AttentionPolicy`; `memstream.backends.kernels.make_policy` builds them from a name and
`AttentionParams`, so strings live only at the config edge. The runner (llama.py) calls, per layer:

- `attend_prefill(q, cache, layer, rope)`: one prefill chunk. q [1, H, C, Dh] (after RoPE); the
  chunk's keys/values are already written at cache positions [start, start + C) with
  start = cache.lengths_before_write[0]. Returns [1, H, C, Dh]. A chunk attends exactly what a
  decode step at each of its positions would (so no query sees a distance the decode path would
  not), except where a policy documents otherwise (block_topk selects blocks once per chunk).
- `attend_decode(q, cache, layer, rope)`: one decode step, q [B, H, Dh] -> [B, H, Dh].
- `finish_prefill(cache)`: once, after the prompt's last chunk (snapkv compresses here).
- `snapshot(cache)` / `rollback(cache, length, state)`: return a cache to an earlier length with the
  policy's state as it was then (a prompt prefix shared by many continuations, backends/prefix.py).

`cache_tokens(max_tokens)` says how many physical cache slots a sequence of max_tokens needs
(sink_window evicts, so it needs only its budget).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch

from .layout import AttentionParams


@dataclass(frozen=True)
class Rope:
    """The model's RoPE tables: cos and signed sin [positions, Dh] (llama.rope_tables' layout).

    Keys are cached after RoPE. Rotations compose, so a cached (rotated) vector is moved to
    another position by rotating it by the difference: `shift(x, delta)`, delta >= 0 or < 0.
    """

    cos: torch.Tensor
    sin: torch.Tensor

    def shift(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """x [..., Dh] rotated by `delta` positions (int tensor broadcastable to x.shape[:-1])."""
        delta = delta.to(device=x.device, dtype=torch.long)
        mag = delta.abs()
        # On CUDA the check would be a host sync per call; indexing past the table fails there anyway.
        if not mag.is_cuda and int(mag.max()) >= self.cos.shape[0]:
            raise ValueError(f"RoPE tables hold {self.cos.shape[0]} positions; a shift of {int(mag.max())} needs more")
        cos = self.cos[mag].to(torch.float32)
        # R(-a) x = x cos(a) - rotate_half(x) sin(a): the same tables with the sine negated.
        sin = self.sin[mag].to(torch.float32) * delta.sign()[..., None].to(torch.float32)
        xf = x.float()
        return torch.addcmul(xf * cos, xf.roll(x.shape[-1] // 2, dims=-1), sin).to(x.dtype)


class AttentionPolicy(abc.ABC):
    """Base class: a policy's parameters, its Triton/torch choice and the runner hooks (module doc)."""

    name: ClassVar[str] = ""
    reuses_prefix: ClassVar[bool] = False
    """Whether a finished cache holds exactly its tokens' keys/values in order (the prompt cache may reuse it)."""
    reads_past_window: ClassVar[bool] = False
    """Whether no query ever sees a distance past the budget, so the context may exceed the trained window."""
    rolls_back: ClassVar[bool] = False
    """Whether `rollback` returns any cache of this policy to an earlier length (nothing is ever evicted or compressed)."""

    def __init__(self, params: AttentionParams | None = None):
        self.params = (params or AttentionParams()).validate()
        self.check_params()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.params == self.params

    def check_params(self) -> None:
        """Raise ValueError when the parameters make no sense for this policy."""

    def settings(self) -> dict:
        """The config fields that rebuild this policy (`AttentionSettings(**policy.settings())`)."""
        fields = {k: v for k, v in dataclasses.asdict(self.params).items()}
        return {"policy": self.name, **fields}

    def with_params(self, **changes) -> "AttentionPolicy":
        return type(self)(dataclasses.replace(self.params, **changes))

    def use_triton(self, q: torch.Tensor) -> bool:
        """params.use_triton, or by default: Triton on CUDA, the torch reference elsewhere."""
        return q.is_cuda if self.params.use_triton is None else bool(self.params.use_triton)

    def cache_tokens(self, max_tokens: int) -> int:
        return max_tokens

    @abc.abstractmethod
    def attend_prefill(self, q: torch.Tensor, cache, layer: int, rope: Rope) -> torch.Tensor:
        """One prefill chunk's attention through this policy (each kernel module implements it)."""

    @abc.abstractmethod
    def attend_decode(self, q: torch.Tensor, cache, layer: int, rope: Rope) -> torch.Tensor:
        """One decode step's attention through this policy."""

    def finish_prefill(self, cache) -> None:
        """After the prompt's last chunk; nothing by default."""

    def snapshot(self, cache) -> dict:
        """The `policy_state` entries `rollback` must put back to return `cache` to its current length.

        Nothing by default: a policy without state beside the cache needs none.
        """
        return {}

    def rollback(self, cache, length: int, state: dict) -> None:
        """Keep only the first `length` tokens of `cache`, as if nothing after them had been fed.

        `state` is what `snapshot(cache)` returned when the cache held exactly `length` tokens.
        `cache.truncate` drops all policy state (it cannot tell what is still valid); the policy's
        snapshot restores what is. Raises ValueError for a cache the policy evicted or compressed.
        """
        cache.truncate(length)
        cache.policy_state.update(state)


def query_positions(cache, n: int) -> torch.Tensor:
    """True positions [n] of the chunk being prefilled (batch 1; positions == tokens fed)."""
    start = int(cache.positions[0]) - n
    return torch.arange(start, start + n, device=cache.block_table.device)


def gather_range(layer_cache: torch.Tensor, block_table: torch.Tensor, row: int, start: int, stop: int) -> torch.Tensor:
    """Cached rows of tokens [start, stop) of sequence `row`: [H_kv, stop - start, Dh] (reads only their blocks)."""
    size = layer_cache.shape[2]
    first, last = start // size, -(-stop // size)
    ids = block_table[row, first:last].long()
    blocks = layer_cache[ids]  # [nb, H_kv, size, Dh]
    flat = blocks.transpose(0, 1).reshape(layer_cache.shape[1], -1, layer_cache.shape[3])
    return flat[:, start - first * size : stop - first * size]


def softmax_attend(scores: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """softmax(scores) @ values with -inf rows giving zeros; scores [..., n], values [..., n, Dh] (float32)."""
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ values
