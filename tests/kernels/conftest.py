"""Kernel tests run compiled on a CUDA GPU and under the Triton interpreter on CPU.

Triton reads TRITON_INTERPRET once, when it is first imported. The repository's root
conftest sets it before any test module can import triton (transformers imports it too);
the line below covers running this folder on its own, and `test_cpu_runs_the_triton_interpreter`
fails loudly if the interpreter is not what runs.
"""

from __future__ import annotations

import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")
# Interpreter shapes stay small: it runs every program in Python.
DTYPES = [torch.float32, torch.bfloat16] if HAS_CUDA else [torch.float32]
# (n_heads, n_kv_heads): GQA ratios 1, 3 and 4.
HEAD_LAYOUTS = [(2, 2), (6, 2), (8, 2)]
HEAD_DIMS = [64, 128]


def tolerance(dtype: torch.dtype) -> dict:
    # fp32: both sides accumulate in fp32, differences are summation order only.
    # bf16: the kernel feeds bf16 probabilities to the PV product, the reference stays fp32.
    return {"atol": 2e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 3e-2}


def make_paged(
    n_heads: int,
    n_kv: int,
    head_dim: int,
    lens: tuple[int, ...],
    page: int = 16,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    spare_blocks: int = 3,
):
    """Random q and a paged cache whose blocks are shuffled, so every test exercises the block table."""
    gen = torch.Generator().manual_seed(seed)
    max_blocks = max(-(-n // page) for n in lens) + 1  # one spare table slot past the longest sequence
    n_blocks = len(lens) * max_blocks + spare_blocks
    k_cache = torch.randn(n_blocks, n_kv, page, head_dim, generator=gen)
    v_cache = torch.randn(n_blocks, n_kv, page, head_dim, generator=gen)
    table = torch.randperm(n_blocks, generator=gen)[: len(lens) * max_blocks].view(len(lens), max_blocks)
    q = torch.randn(len(lens), n_heads, head_dim, generator=gen)
    to = dict(device=DEVICE, dtype=dtype)
    return (
        q.to(**to),
        k_cache.to(**to),
        v_cache.to(**to),
        table.to(device=DEVICE, dtype=torch.int32),
        torch.tensor(lens, device=DEVICE, dtype=torch.int32),
    )
