"""Dense split-K decode kernel == torch reference."""

from __future__ import annotations

import pytest
import torch

from memstream.backends.kernels import dense

from .conftest import DEVICE, DTYPES, HAS_CUDA, HEAD_DIMS, HEAD_LAYOUTS, make_paged, tolerance

# Ragged, none a multiple of the 16-token block, one shorter than a block.
LENS = (37, 70, 5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", HEAD_LAYOUTS)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_dense_kernel_matches_reference(head_dim, heads, dtype):
    q, k, v, table, lens = make_paged(*heads, head_dim, LENS, dtype=dtype)
    # 3 splits over a 6-block table: splits end mid-sequence, and some sequences leave splits empty.
    out = dense.dense_attention(q, k, v, table, lens, splits=3, block_n=16)
    ref = dense.dense_reference(q, k, v, table, lens)
    assert out.dtype == q.dtype and out.shape == q.shape
    torch.testing.assert_close(out.float(), ref.float(), **tolerance(dtype))


def test_dense_kernel_single_split_and_custom_scale():
    q, k, v, table, lens = make_paged(4, 2, 64, (33, 48))
    out = dense.dense_attention(q, k, v, table, lens, scale=0.05, splits=1, block_n=32)
    torch.testing.assert_close(out, dense.dense_reference(q, k, v, table, lens, scale=0.05), **tolerance(q.dtype))


def test_dense_reference_is_softmax_attention():
    # The ground truth itself, against an independent formula on a contiguous copy.
    q, k, v, table, lens = make_paged(4, 2, 64, (21,))
    keys = k[table[0, :2].long()].permute(1, 0, 2, 3).reshape(2, 32, 64)[:, :21]
    values = v[table[0, :2].long()].permute(1, 0, 2, 3).reshape(2, 32, 64)[:, :21]
    expected = torch.nn.functional.scaled_dot_product_attention(
        q[0].view(2, 2, 1, 64).float(), keys[:, None].float().expand(2, 2, 21, 64), values[:, None].float().expand(2, 2, 21, 64)
    ).reshape(4, 64)
    torch.testing.assert_close(dense.dense_reference(q, k, v, table, lens)[0].float(), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU interpreter path")
def test_cpu_runs_the_triton_interpreter():
    from triton.runtime.interpreter import InterpretedFunction

    assert isinstance(dense._dense_split_kernel, InterpretedFunction)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_dense_kernel_compiled_long_bf16():
    q, k, v, table, lens = make_paged(32, 8, 128, (4099, 1000), page=128, dtype=torch.bfloat16)
    assert q.device.type == DEVICE.type  # cuda:0 vs cuda: compare the kind of device
    out = dense.dense_attention(q, k, v, table, lens)
    torch.testing.assert_close(out.float(), dense.dense_reference(q, k, v, table, lens).float(), atol=2e-2, rtol=2e-2)
