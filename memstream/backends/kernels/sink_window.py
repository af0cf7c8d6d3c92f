"""Sink + window decode attention (StreamingLLM, LM-Infinite).

Each query attends the first `sinks` tokens of its sequence and the last `window` tokens,
nothing else, so the cost per step is constant and every block holding neither can be freed
(`evictable_blocks`): memory stays bounded however long the conversation runs.

Positions. Keys are cached after RoPE at their true positions, so a query attends a window
key at a true distance <= window, which stays inside the trained range. A sink key, though,
sits at position < sinks, and its true distance grows without bound. To keep the model in
its trained range (StreamingLLM's positions-within-the-cache, LM-Infinite's distance
ceiling), the caller may pass `q_far`: the same query rotated at `far_query_position(pos)`
= min(pos, sinks + window) instead of pos; sinks are then scored with `q_far`, as if the
query sat just after a cache of sinks + window tokens. Without `q_far` the sinks use true
distances. When sinks + window covers the whole context the kept set is the whole sequence,
`far_query_position(pos) == pos`, and the policy equals dense attention.

Kernel: split-K over a virtual sequence [sinks | window] mapped to token positions through
the block table; the same reduction as dense. Bytes read ~= 2 * (sinks + window) * n_kv *
head_dim * itemsize per sequence, independent of the context length.
"""

from __future__ import annotations

import torch

from ._launch import cdiv, check_device, dot_precision, group_pad, jit, num_splits, tl
from .dense import alloc_partials, reduce_splits
from ._softmax import load_kv_tile, online_softmax_step, store_partials
from .layout import attend_positions, check_inputs, gather_tokens
from ._prefill import KeyPart, attend_parts
from .policy import AttentionPolicy, Rope, gather_range, query_positions


@jit
def _sink_window_split_kernel(
    Q, QF, K, V, BlockTable, SeqLens, MPart, LPart, AccPart,
    scale, tokens_per_split, n_heads, n_splits, sinks, window,
    stride_qb, stride_qh, stride_fb, stride_fh,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_tb,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    PAGE: tl.constexpr, BLOCK_N: tl.constexpr, HAS_QFAR: tl.constexpr, PRECISION: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    mask_g = offs_g < GROUP
    heads = kvh * GROUP + offs_g
    q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :], mask=mask_g[:, None], other=0.0)
    if HAS_QFAR:
        qf = tl.load(QF + b * stride_fb + heads[:, None] * stride_fh + offs_d[None, :], mask=mask_g[:, None], other=0.0)

    seq_len = tl.load(SeqLens + b)
    n_sink = tl.minimum(sinks, seq_len)
    win_start = tl.maximum(n_sink, seq_len - window)
    # Virtual index v: [0, sinks) are the sinks, [sinks, sinks + kept window) the window.
    virtual_end = sinks + seq_len - win_start
    start = split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, virtual_end)
    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        v_idx = n0 + offs_n
        is_sink = v_idx < sinks
        tok = tl.where(is_sink, v_idx, win_start + v_idx - sinks)
        valid = (v_idx < end) & tl.where(is_sink, v_idx < n_sink, tok < seq_len)
        k, v, _, _ = load_kv_tile(K, V, BlockTable, b, kvh, tok, valid, offs_d,
                                  stride_tb, stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt, PAGE)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        if HAS_QFAR:
            s = tl.where(is_sink[None, :], tl.dot(qf, tl.trans(k), input_precision=PRECISION), s)
        s = tl.where(valid[None, :], s * scale, float("-inf"))
        m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc, PRECISION)

    store_partials(MPart, LPart, AccPart, (b * n_heads + heads) * n_splits + split, m_i, l_i, acc, mask_g, offs_d, HEAD_DIM)


def check_budget(sinks: int, window: int) -> None:
    if sinks < 0 or window < 1:
        raise ValueError(f"sink_window needs sinks >= 0 and window >= 1, got sinks={sinks}, window={window}")


def sink_window_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    sinks: int,
    window: int,
    scale: float | None = None,
    *,
    q_far: torch.Tensor | None = None,
    splits: int | None = None,
    block_n: int = 64,
    check: bool = True,
) -> torch.Tensor:
    """Triton attention over sinks + recent window. Clamps: sinks and window larger than a
    sequence shrink to it (the policy is then dense); the two never overlap.
    check=False skips input validation (for callers that validated these shapes once)."""
    if check:
        check_budget(sinks, window)
        check_inputs(q, k_cache, v_cache, block_table, seq_lens)
        check_device(q)
        if q_far is not None and q_far.shape != q.shape:
            raise ValueError(f"q_far must have q's shape {tuple(q.shape)}, got {tuple(q_far.shape)}")
    batch, n_heads, head_dim = q.shape
    n_kv, page = k_cache.shape[1], k_cache.shape[2]
    group = n_heads // n_kv
    scale = head_dim**-0.5 if scale is None else scale
    capacity = block_table.shape[1] * page
    virtual_len = sinks + min(window, capacity)
    n_splits = num_splits(batch * n_kv, virtual_len, block_n, q.device, splits)
    tokens_per_split = cdiv(cdiv(virtual_len, n_splits), block_n) * block_n
    q, k_cache, v_cache = q.contiguous(), k_cache.contiguous(), v_cache.contiguous()
    qf = q if q_far is None else q_far.to(q.dtype).contiguous()
    m_part, l_part, acc_part = alloc_partials(batch, n_heads, n_splits, head_dim, q.device)
    _sink_window_split_kernel[(batch, n_kv, n_splits)](
        q, qf, k_cache, v_cache, block_table, seq_lens, m_part, l_part, acc_part,
        scale, tokens_per_split, n_heads, n_splits, sinks, window,
        q.stride(0), q.stride(1), qf.stride(0), qf.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_table.stride(0),
        GROUP=group, GROUP_PAD=group_pad(group), HEAD_DIM=head_dim, PAGE=page, BLOCK_N=block_n,
        HAS_QFAR=q_far is not None, PRECISION=dot_precision(q.dtype),
    )
    return reduce_splits(m_part, l_part, acc_part, torch.empty_like(q))


def kept_positions(seq_len: int, sinks: int, window: int) -> tuple[range, range]:
    """The (sink, window) token ranges a query at the end of a seq_len-token sequence attends."""
    n_sink = min(sinks, seq_len)
    win_start = max(n_sink, seq_len - window)
    return range(0, n_sink), range(win_start, seq_len)


def far_query_position(position: int, sinks: int, window: int) -> int:
    """Position at which to rotate `q_far` so sinks sit at an in-cache distance (see module doc)."""
    return min(position, sinks + window)


def evictable_blocks(seq_len: int, sinks: int, window: int, block_size: int) -> list[int]:
    """Logical blocks holding no kept token, now or at any later step: the runner may free them.

    The window only moves forward, so a block wholly between the sinks and the window's start
    is never read again.
    """
    sink_range, window_range = kept_positions(seq_len, sinks, window)
    first = (sink_range.stop + block_size - 1) // block_size
    last = window_range.start // block_size  # exclusive
    return list(range(first, max(first, last)))


def sink_window_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    sinks: int,
    window: int,
    scale: float | None = None,
    *,
    q_far: torch.Tensor | None = None,
) -> torch.Tensor:
    """Torch sink + window attention; reads only the kept tokens' blocks."""
    check_budget(sinks, window)
    check_inputs(q, k_cache, v_cache, block_table, seq_lens)
    head_dim = q.shape[2]
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.empty_like(q)
    for row in range(q.shape[0]):
        sink_range, window_range = kept_positions(int(seq_lens[row]), sinks, window)
        tokens = torch.tensor([*sink_range, *window_range], dtype=torch.long)
        keys = gather_tokens(k_cache, block_table, row, tokens)
        values = gather_tokens(v_cache, block_table, row, tokens)
        keep = torch.ones(keys.shape[:2], dtype=torch.bool, device=q.device)
        if q_far is None:
            out[row] = attend_positions(q[row], keys, values, keep, scale).to(q.dtype)
            continue
        # Two queries: q_far scores the sinks, q the window; one softmax over both.
        n_sink = len(sink_range)
        near = attend_scores(q[row], keys[:, n_sink:], scale)
        far = attend_scores(q_far[row], keys[:, :n_sink], scale)
        weights = torch.softmax(torch.cat([far, near], dim=-1), dim=-1)  # [H_kv, G, n]
        out[row] = (weights @ values.float()).reshape(-1, head_dim).to(q.dtype)
    return out


def attend_scores(q_row: torch.Tensor, keys: torch.Tensor, scale: float) -> torch.Tensor:
    n_kv, _, head_dim = keys.shape
    return q_row.float().reshape(n_kv, -1, head_dim) @ keys.float().transpose(1, 2) * scale  # [H_kv, G, n]


class SinkWindowPolicy(AttentionPolicy):
    """StreamingLLM / LM-Infinite: sinks + recent window, sinks scored at an in-cache distance.

    A query at position p scores the sinks with q rotated at far_query_position(p) =
    min(p, sinks + window) (StreamingLLM's positions within the cache, a distance ceiling as in
    LM-Infinite) and the window at true distances (<= window), in prefill chunks and decode alike,
    so no distance exceeds sinks + window however long the sequence. After each forward pass the
    blocks no query will read again are released to the cache's pool (`evictable_blocks`), so a
    sequence holds about sinks + window + one chunk of keys.
    """

    name = "sink_window"
    reads_past_window = True

    def check_params(self) -> None:
        check_budget(self.params.sinks, self.params.window)

    def cache_tokens(self, max_tokens: int) -> int:
        p = self.params
        size = p.block_size
        blocks = -(-p.sinks // size) + -(-(p.window + p.prefill_chunk) // size) + 2
        return min(max_tokens, blocks * size)

    def far_shift(self, positions: torch.Tensor) -> torch.Tensor:
        """Rotation that moves a query from its position to far_query_position (<= 0)."""
        ceiling = self.params.sinks + self.params.window
        return positions.clamp(max=ceiling) - positions

    def attend_decode(self, q: torch.Tensor, cache, layer: int, rope: Rope) -> torch.Tensor:
        p = self.params
        q_far = rope.shift(q, self.far_shift(cache.positions - 1)[:, None])
        args = (q, cache.k(layer), cache.v(layer), cache.block_table, cache.seq_lens, p.sinks, p.window)
        if self.use_triton(q):
            out = sink_window_attention(*args, q_far=q_far, check=False)
        else:
            out = sink_window_reference(*args, q_far=q_far)
        self._evict(cache, layer)
        return out

    def attend_prefill(self, q: torch.Tensor, cache, layer: int, rope: Rope) -> torch.Tensor:
        """Each query of the chunk attends its own sinks + window, exactly as a decode step there would."""
        _, n_heads, n_q, head_dim = q.shape
        sinks, window = self.params.sinks, self.params.window
        pos = query_positions(cache, n_q)  # [C]
        c0, end = int(pos[0]), int(pos[-1]) + 1
        # Keys: A = [0, a_end) are sinks whenever attended; B = [b_start, end) window keys.
        a_end = min(sinks, end)
        b_start = max(a_end, c0 + 1 - window)
        q_far = rope.shift(q[0], self.far_shift(pos)[None, :])  # [H, C, Dh]
        rows = pos[:, None]  # [C, 1] query positions
        parts = []
        if a_end > 0:
            j = torch.arange(a_end, device=q.device)[None, :]
            parts.append(KeyPart(q_far, gather_range(cache.k(layer), cache.block_table, 0, 0, a_end),
                                 gather_range(cache.v(layer), cache.block_table, 0, 0, a_end), j <= rows))
        if b_start < end:
            j = torch.arange(b_start, end, device=q.device)[None, :]
            parts.append(KeyPart(q[0], gather_range(cache.k(layer), cache.block_table, 0, b_start, end),
                                 gather_range(cache.v(layer), cache.block_table, 0, b_start, end),
                                 (j <= rows) & (j > rows - window)))
        out = attend_parts(parts, head_dim**-0.5)  # [H, C, Dh]
        self._evict(cache, layer)
        return out[None].to(q.dtype)

    def _evict(self, cache, layer: int) -> None:
        # The block table is shared by every layer: release once, after the last layer attended.
        if layer != cache.n_layers - 1:
            return
        for row, length in enumerate(cache.lengths):
            # The next query sits at position `length`: blocks it cannot read are dead for good.
            cache.release(row, evictable_blocks(length + 1, self.params.sinks, self.params.window, cache.block_size))
