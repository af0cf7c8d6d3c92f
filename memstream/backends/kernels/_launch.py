"""Small helpers every kernel wrapper shares: Triton availability, tile sizes, split counts."""

from __future__ import annotations

import functools

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # e.g. macOS or a CPU-only install: the torch references still work
    triton = tl = None


def jit(fn):
    """triton.jit where Triton is installed; otherwise a stub that explains itself when launched."""
    if triton is not None:
        return triton.jit(fn)
    return _NoTriton(fn)


class _NoTriton:
    def __init__(self, fn):
        self.fn = fn

    def __getitem__(self, grid):
        raise RuntimeError(f"{self.fn.__name__} needs Triton (pip install triton); set use_triton=False to run the torch reference")


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def interpreter_ready() -> bool:
    """Whether Triton was imported under its CPU interpreter (TRITON_INTERPRET=1).

    Triton decides at import time, for its own library functions as for ours, so the variable
    must be set before anything (transformers does) first imports triton.
    """
    if triton is None:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.standard.max, InterpretedFunction)


def check_device(tensor: torch.Tensor) -> None:
    """Triton runs compiled on CUDA, or under the interpreter on CPU."""
    if triton is None:
        raise RuntimeError("Triton is not installed (pip install triton); set use_triton=False to run the torch reference")
    if not tensor.is_cuda and not interpreter_ready():
        raise RuntimeError(
            "Triton kernels on CPU tensors need the interpreter: set TRITON_INTERPRET=1 before triton is "
            "first imported, or use_triton=False to run the torch reference"
        )


def pow2(n: int, minimum: int = 1) -> int:
    return max(minimum, 1 << (max(1, int(n)) - 1).bit_length())


def group_pad(group: int) -> int:
    # tl.dot needs at least 16 rows on GPUs; the padded query rows are masked and cost
    # no memory traffic, which is what bounds decode attention.
    return pow2(group, 16)


def dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs would silently use TF32 tensor cores on GPUs; ask for exact products so the
    # kernels match their references. Half-precision inputs ignore this.
    return "ieee" if dtype == torch.float32 else "tf32"


@functools.lru_cache(maxsize=None)
def sm_count(device_index: int) -> int:
    # Cached: the properties query costs microseconds, paid on every decode call otherwise.
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_splits(work_items: int, virtual_len: int, block_n: int, device: torch.device, requested: int | None) -> int:
    """How many KV splits per (sequence, KV head): enough programs to fill the GPU, no empty tiles."""
    max_useful = max(1, cdiv(virtual_len, block_n))
    if requested is not None:
        if requested < 1:
            raise ValueError(f"num_splits must be >= 1, got {requested}")
        return min(requested, max_useful)
    if device.type == "cuda":
        target = 4 * sm_count(device.index if device.index is not None else torch.cuda.current_device())
    else:
        target = 4  # the interpreter runs programs one by one; a few splits still exercise the reduction
    return max(1, min(256, max_useful, cdiv(target, max(1, work_items))))
