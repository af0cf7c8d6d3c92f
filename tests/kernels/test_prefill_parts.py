"""Prefill-chunk attention over several key sets (kernels/_prefill.py): the log-sum-exp merge equals one softmax."""

from __future__ import annotations

import pytest
import torch

from memstream.backends.kernels import _prefill
from memstream.backends.kernels._prefill import KeyPart, attend_parts

PATHS = ["fused", "math"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    if request.param == "math":
        monkeypatch.setattr(_prefill, "_FLASH_CPU", None)
    elif _prefill._FLASH_CPU is None:
        pytest.skip("this torch has no fused CPU attention with log-sum-exp")
    return request.param


def one_softmax(parts: list[KeyPart], scale: float) -> torch.Tensor:
    """The definition: every part's scores side by side, one softmax, -inf where masked; empty rows give zeros."""
    scores, values = [], []
    for part in parts:
        n_heads, n_kv = part.q.shape[0], part.k.shape[0]
        k = part.k.repeat_interleave(n_heads // n_kv, dim=0)
        v = part.v.repeat_interleave(n_heads // n_kv, dim=0)
        s = part.q @ k.transpose(-1, -2) * scale  # [H, C, N]
        mask = part.mask
        if mask is not None:
            if mask.dim() == 3 and mask.shape[0] == n_kv:
                mask = mask.repeat_interleave(n_heads // n_kv, dim=0)
            s = s.masked_fill(~mask.expand_as(s), float("-inf"))
        scores.append(s)
        values.append(v)
    weights = torch.softmax(torch.cat(scores, dim=-1), dim=-1).nan_to_num(0.0)
    return weights @ torch.cat(values, dim=1)


def test_parts_with_their_own_queries_and_masks_merge_into_one_softmax(path):
    gen = torch.Generator().manual_seed(0)
    n_heads, n_kv, c, dim = 6, 2, 37, 64
    rnd = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    rows = torch.arange(c)[:, None]
    causal = torch.arange(50)[None, :] <= rows + 10  # query-only [C, N]
    per_head = torch.rand(n_kv, 1, 40, generator=gen) > 0.3  # key-only per KV head
    late = (rows >= 20).expand(c, 5)  # the first 20 queries see nothing in this part
    parts = [KeyPart(rnd(n_heads, c, dim), rnd(n_kv, 50, dim), rnd(n_kv, 50, dim), causal),
             KeyPart(rnd(n_heads, c, dim), rnd(n_kv, 40, dim), rnd(n_kv, 40, dim), per_head),
             KeyPart(rnd(n_heads, c, dim), rnd(n_kv, 5, dim), rnd(n_kv, 5, dim), late)]
    got = attend_parts(parts, dim**-0.5)
    torch.testing.assert_close(got, one_softmax(parts, dim**-0.5), atol=2e-5, rtol=1e-4)
    # A part no query can see changes nothing (its rows weigh zero, not exp(0)).
    hidden = KeyPart(rnd(n_heads, c, dim), rnd(n_kv, 5, dim), rnd(n_kv, 5, dim), torch.zeros(c, 5, dtype=torch.bool))
    torch.testing.assert_close(attend_parts(parts + [hidden], dim**-0.5), got, atol=2e-5, rtol=1e-4)


def test_a_query_with_no_key_at_all_gets_zeros(path):
    gen = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(2, 4, 16, generator=gen), torch.randn(1, 3, 16, generator=gen), torch.randn(1, 3, 16, generator=gen)
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[2] = False
    out = attend_parts([KeyPart(q, k, v, mask), KeyPart(q, k, v, torch.zeros(4, 3, dtype=torch.bool))], 0.25)
    assert torch.isfinite(out).all()
    assert out[:, 2].abs().max() == 0
    torch.testing.assert_close(out, one_softmax([KeyPart(q, k, v, mask)], 0.25), atol=2e-5, rtol=1e-4)
