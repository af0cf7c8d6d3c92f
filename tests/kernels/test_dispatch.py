"""decode_attention: Triton == reference per policy, policies == dense with full budgets, bad configs."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from memstream.backends.kernels import POLICIES, AttentionParams, decode_attention, dense_reference
from memstream.backends.kernels.block_topk import build_representatives

from .conftest import HAS_CUDA, make_paged, tolerance

LENS = (77, 150, 9)
SMALL = AttentionParams(sinks=4, window=20, block_size=16, topk=2, representatives=3, budget=32, observation_window=8)


def run(policy, params, q, k, v, table, lens):
    reps = build_representatives(k, table, lens, params.representatives)
    return decode_attention(policy, q, k, v, table, lens, params, representatives=reps)


@pytest.mark.parametrize("policy", POLICIES)
def test_triton_path_matches_reference_path(policy):
    q, k, v, table, lens = make_paged(6, 2, 64, LENS)
    triton_out = run(policy, dataclasses.replace(SMALL, use_triton=True), q, k, v, table, lens)
    torch_out = run(policy, dataclasses.replace(SMALL, use_triton=False), q, k, v, table, lens)
    torch.testing.assert_close(triton_out, torch_out, **tolerance(q.dtype))


@pytest.mark.parametrize("use_triton", [True, False])
@pytest.mark.parametrize("policy", POLICIES)
def test_policy_equals_dense_when_budgets_cover_the_context(policy, use_triton):
    q, k, v, table, lens = make_paged(8, 2, 64, LENS)
    # Window past the context and topk past the block count: both documented clamps.
    covering = dataclasses.replace(SMALL, window=10_000, topk=10_000, budget=10_000, use_triton=use_triton)
    out = run(policy, covering, q, k, v, table, lens)
    torch.testing.assert_close(out, dense_reference(q, k, v, table, lens), **tolerance(q.dtype))
    # block_topk with a small window but every distant block selected is dense too.
    if policy == "block_topk":
        all_blocks = dataclasses.replace(SMALL, topk=10_000, use_triton=use_triton)
        torch.testing.assert_close(run(policy, all_blocks, q, k, v, table, lens), dense_reference(q, k, v, table, lens), **tolerance(q.dtype))


def test_sparse_policies_differ_from_dense_with_small_budgets():
    q, k, v, table, lens = make_paged(4, 2, 64, (150,))
    dense = dense_reference(q, k, v, table, lens)
    for policy in ("sink_window", "block_topk"):
        assert not torch.allclose(run(policy, SMALL, q, k, v, table, lens), dense, atol=1e-3)


def test_unknown_policy():
    q, k, v, table, lens = make_paged(2, 2, 64, (20,))
    with pytest.raises(ValueError, match="unknown attention policy 'h2o'"):
        decode_attention("h2o", q, k, v, table, lens, SMALL)


@pytest.mark.parametrize(
    "change, message",
    [({"window": 0}, "window"), ({"sinks": -1}, "sinks"), ({"topk": 0}, "topk"), ({"pool_kernel": 4}, "odd"), ({"budget": 1.5}, "budget")],
)
def test_bad_parameters(change, message):
    q, k, v, table, lens = make_paged(2, 2, 64, (20,))
    with pytest.raises(ValueError, match=message):
        decode_attention("dense", q, k, v, table, lens, dataclasses.replace(SMALL, **change))


def test_bad_shapes():
    q, k, v, table, lens = make_paged(3, 2, 64, (20,))
    with pytest.raises(ValueError, match="not a multiple"):
        decode_attention("dense", q, k, v, table, lens, SMALL)
    q, k, v, table, lens = make_paged(4, 2, 64, (20,))
    with pytest.raises(ValueError, match="head_dim"):
        decode_attention("dense", q[..., :32], k, v, table, lens, SMALL)
    with pytest.raises(ValueError, match="block_size=32 must equal the cache block size 16"):
        decode_attention("block_topk", q, k, v, table, lens, dataclasses.replace(SMALL, block_size=32))


@pytest.mark.skipif(HAS_CUDA, reason="CPU-only behaviour")
def test_triton_on_cpu_without_interpreter_names_the_fix():
    # Triton fixes interpret mode at import, so this needs a fresh process without the variable.
    code = (
        "import torch\n"
        "from memstream.backends.kernels import AttentionParams, decode_attention\n"
        "q = torch.zeros(1, 2, 64); cache = torch.zeros(2, 2, 16, 64)\n"
        "table = torch.zeros(1, 2, dtype=torch.int32); lens = torch.tensor([5], dtype=torch.int32)\n"
        "decode_attention('dense', q, cache, cache, table, lens, AttentionParams(block_size=16, use_triton=True))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "RuntimeError" in result.stderr and "TRITON_INTERPRET=1" in result.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_compiled_kernels_at_llama_shapes_bf16():
    from memstream.backends.kernels import block_topk, sink_window

    q, k, v, table, lens = make_paged(32, 8, 128, (5000, 1234), page=128, dtype=torch.bfloat16)
    params = AttentionParams(sinks=4, window=1024, block_size=128, topk=8, representatives=4, use_triton=True)
    bf16 = {"atol": 3e-2, "rtol": 3e-2}
    out = sink_window.sink_window_attention(q, k, v, table, lens, params.sinks, params.window)
    torch.testing.assert_close(out.float(), sink_window.sink_window_reference(q, k, v, table, lens, 4, 1024).float(), **bf16)
    reps = build_representatives(k, table, lens, params.representatives)
    # Same selection on both sides: bf16 rounding may reorder near-tied block scores.
    selected = block_topk.select_blocks(block_topk.block_scores(q, reps, table, lens, 4, 1024, 128), 8)
    out = block_topk.block_topk_attention_selected(q, k, v, table, lens, selected, 4, 1024)
    ref = block_topk.attend_selected_reference(q, k, v, table, lens, selected, 4, 1024)
    torch.testing.assert_close(out.float(), ref.float(), **bf16)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("policy", POLICIES)
def test_decode_step_replays_in_a_cuda_graph(policy):
    # The Triton path launches kernels only (no host syncs), so one decode call can be captured
    # and replayed; a replay after new inputs are copied in must match an eager call on them.
    q, k, v, table, lens = make_paged(32, 8, 128, (3000, 700), page=128, dtype=torch.bfloat16)
    params = AttentionParams(sinks=4, window=512, block_size=128, topk=4, representatives=4, use_triton=True)
    extra = {"representatives": build_representatives(k, table, lens, 4)} if policy == "block_topk" else {}
    call = lambda: decode_attention(policy, q, k, v, table, lens, params, check=False, **extra)  # noqa: E731
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        call()  # compile outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = call()
    q.copy_(torch.randn_like(q))
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out.float(), call().float(), atol=1e-2, rtol=1e-2)
