"""Policies wired into the local runner (memstream.backends.attention hooks) on a tiny random Llama."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from memstream.backends.kernels import POLICIES, AttentionParams, make_policy
from memstream.backends.kernels.block_topk_policy import REPS
from memstream.backends.kv_cache import PagedKVCache
from memstream.backends.llama import Transformer
from memstream.backends.local import decode_one, prefill
from tests.tiny_llama import tiny_llama

from .conftest import DEVICE

PROMPT, STEPS, BLOCK = 70, 12, 16


@pytest.fixture(scope="module")
def model() -> Transformer:
    return tiny_llama()


def generate_logits(model: Transformer, policy: str, params: AttentionParams, steps: int = STEPS, device: torch.device | None = None):
    a = model.args
    cache = PagedKVCache(a.n_layers, a.n_kv_heads, a.head_dim, BLOCK, PROMPT + steps + 1, device=device)
    tokens = torch.randint(0, 128, (1, PROMPT + steps), generator=torch.Generator().manual_seed(3)).to(device)
    policy = make_policy(policy, params)
    out = [prefill(model, tokens[:, :PROMPT], cache, policy)]
    for t in range(PROMPT, PROMPT + steps):  # teacher-forced, so every policy sees the same tokens
        out.append(decode_one(model, tokens[:, t : t + 1], cache, policy))
    return torch.cat(out), cache


SMALL = AttentionParams(sinks=2, window=16, block_size=BLOCK, topk=1, representatives=2, budget=16, observation_window=8)
COVERING = dataclasses.replace(SMALL, window=1000, topk=100, budget=1000)


@pytest.mark.parametrize("policy", POLICIES)
def test_runner_policy_equals_dense_with_covering_budgets(model, policy):
    dense, _ = generate_logits(model, "dense", COVERING)
    got, _ = generate_logits(model, policy, COVERING)
    torch.testing.assert_close(got, dense, atol=1e-4, rtol=1e-4)


def test_snapkv_compresses_after_prefill_and_keeps_true_positions(model):
    logits, cache = generate_logits(model, "snapkv", SMALL)
    assert cache.lengths == [16 + 8 + STEPS]  # budget + window kept, then one row per decoded token
    assert int(cache.positions[0]) == PROMPT + STEPS  # RoPE positions kept counting
    assert torch.isfinite(logits).all()
    dense, _ = generate_logits(model, "dense", SMALL)
    assert not torch.allclose(logits[1:], dense[1:], atol=1e-4)  # decode really ran on less context


def test_block_topk_keeps_representatives_for_every_full_block(model):
    logits, cache = generate_logits(model, "block_topk", SMALL)
    assert torch.isfinite(logits).all()
    full_blocks = (PROMPT + STEPS) // BLOCK  # 82 tokens: 5 full blocks, the 5th filled during decode
    for layer in range(model.args.n_layers):
        reps = cache.policy_state[(REPS, layer)]
        filled = reps.flatten(1).abs().sum(dim=1) > 0
        assert filled[cache.block_table[0, :full_blocks].long()].all()
        assert not filled[cache.block_table[0, full_blocks:].long()].any()


def test_sparse_runner_triton_path_matches_torch_path(model):
    # Triton runs compiled on a GPU and under the interpreter on CPU, so the model and cache go
    # where the kernels can run; both paths are named explicitly (None would pick by device).
    on_device = copy.deepcopy(model).to(DEVICE)
    torch_params, triton_params = (dataclasses.replace(SMALL, use_triton=flag) for flag in (False, True))
    torch_logits, _ = generate_logits(on_device, "block_topk", torch_params, steps=3, device=DEVICE)
    triton_logits, _ = generate_logits(on_device, "block_topk", triton_params, steps=3, device=DEVICE)
    torch.testing.assert_close(triton_logits, torch_logits, atol=1e-4, rtol=1e-4)
