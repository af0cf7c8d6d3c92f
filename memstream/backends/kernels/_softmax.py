"""The online-softmax loop body every split-K decode kernel shares, written once (`@triton.jit` helpers).

As in Triton's fused-attention tutorial: a program keeps a running max m, a running sum l and an
unnormalised accumulator over the key tiles it visits; `online_softmax_step` folds one tile of
scores in, `load_kv_tile` gathers a tile of K/V rows through the block table, and
`store_partials` writes the program's (m, l, acc) for the split reduction (dense.reduce_splits).
dense.py, sink_window.py and block_topk.py differ only in which tokens a tile holds and how
they are scored.
"""

from __future__ import annotations

from ._launch import jit, tl


@jit
def load_kv_tile(K, V, BlockTable, b, kvh, tok, valid, offs_d,
                 stride_tb, stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt, PAGE: tl.constexpr):
    """K and V rows [BLOCK_N, HEAD_DIM] of token positions `tok` of sequence b, KV head kvh (zeros where not valid)."""
    # Block-table lookup per token: tiles need not align with cache blocks.
    phys = tl.load(BlockTable + b * stride_tb + tok // PAGE, mask=valid, other=0).to(tl.int64)
    slot = tok % PAGE
    # Memory traffic: BLOCK_N rows of K and of V, HEAD_DIM contiguous elements each.
    k = tl.load(K + phys[:, None] * stride_kb + kvh * stride_kh + slot[:, None] * stride_kt + offs_d[None, :],
                mask=valid[:, None], other=0.0)
    v = tl.load(V + phys[:, None] * stride_vb + kvh * stride_vh + slot[:, None] * stride_vt + offs_d[None, :],
                mask=valid[:, None], other=0.0)
    return k, v, phys, slot


@jit
def online_softmax_step(s, v, m_i, l_i, acc, PRECISION: tl.constexpr):
    """Fold scores s [ROWS, BLOCK_N] (already scaled, -inf where masked) and values v [BLOCK_N, D] in."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no NaN from (-inf) - (-inf)
    alpha = tl.exp(m_i - m_safe)
    p = tl.exp(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc


@jit
def store_partials(MPart, LPart, AccPart, part, m_i, l_i, acc, mask_g, offs_d, HEAD_DIM: tl.constexpr):
    """Write one program's softmax state for rows `part` (the split reduction combines them)."""
    tl.store(MPart + part, m_i, mask=mask_g)
    tl.store(LPart + part, l_i, mask=mask_g)
    tl.store(AccPart + part[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=mask_g[:, None])
