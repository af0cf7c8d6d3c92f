"""InfLLM block top-k decode attention.

The context splits into three parts per sequence of length L:
  sinks    [0, n_sink)              n_sink = min(sinks, L), always attended;
  local    [win_start, L)           the recent window, always attended;
  distant  [n_sink, win_start)      cut into the cache's blocks; per decode step and KV head
                                    only the `topk` best-scoring blocks are attended.
win_start = max(n_sink, min(L - window, full_blocks * block_size)): the local window always
covers the block still being filled, whose representatives do not exist yet (a documented
clamp that only matters when window < block_size).

Each full block keeps `representatives` keys per KV head (`block_representatives`, computed
once when the block fills; stored in a tensor parallel to the cache, indexed by physical
block id, so the blocks themselves may live elsewhere, e.g. in CPU memory, and be fetched
only when selected). A block's score is max over its representatives of q . r, summed over
the query heads of the GQA group (`block_scores`, its own kernel); selection keeps the top-k
per (sequence, KV head) without sorting (`select_blocks_triton`; `select_blocks` is the
torch.topk version); `block_topk_attention` attends sinks + selected blocks + local window in
one split-K kernel that reads the selected ids directly and gathers their tokens through the
block table, with no copy of the selected KV. When there are few splits per (sequence, KV head)
(batch >= 2 on a large GPU) the split reduction runs inside the attention launch: the last split
to finish does it, counted with an atomic. With many splits (batch 1) that serial tail costs more
than a separate reduction launch; reports/block_topk_variants.md has the measurements.

Clamps: topk larger than the number of distant blocks selects them all (the policy then equals
dense attention); window or sinks larger than the sequence shrink to it.

Positions: keys are cached after RoPE at their true positions. Without `far` every token is
attended at its true distance. With `far` (FarPositions, what BlockTopkPolicy passes) the sinks
and selected blocks farther than far.distance are scored at that distance, as InfLLM places
its memory: the kernel rotates each such key back to position 0 from the RoPE tables (an extra
read of the key's other half and of two table rows) and scores it with the query rotated at
far.distance; the representatives are then stored at position 0 too.

Memory traffic per step ~= scores: n_blocks * R * D reads of representatives, then
2 * (sinks + topk * block_size + window) * D per KV head: independent of L but for the scores.
"""

from __future__ import annotations

import functools

import torch

from ._launch import cdiv, check_device, dot_precision, group_pad, jit, num_splits, pow2, tl
from .dense import alloc_partials, reduce_splits
from ._softmax import load_kv_tile, online_softmax_step, store_partials
from .layout import check_inputs, gather_tokens
from .policy import Rope, softmax_attend

SCORE_BLOCKS = 16  # blocks scored per program; 16 x R_PAD rows also satisfies tl.dot's minimum


@jit
def _block_score_kernel(
    Q, Reps, BlockTable, SeqLens, Scores,
    sinks, window, n_table, n_reps,
    stride_qb, stride_qh,
    stride_rb, stride_rh, stride_rr,
    stride_tb, stride_sb, stride_sh,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE: tl.constexpr,
    BLOCKS: tl.constexpr, R_PAD: tl.constexpr, PRECISION: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    chunk = tl.program_id(2)
    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_g = offs_g < GROUP
    heads = kvh * GROUP + offs_g
    q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :], mask=mask_g[:, None], other=0.0)

    seq_len = tl.load(SeqLens + b)
    n_sink = tl.minimum(sinks, seq_len)
    win_start = tl.maximum(n_sink, tl.minimum(seq_len - window, (seq_len // PAGE) * PAGE))
    # Rows are (block, representative) pairs: BLOCKS * R_PAD representative keys per program.
    rows = tl.arange(0, BLOCKS * R_PAD)
    blk = chunk * BLOCKS + rows // R_PAD
    rep = rows % R_PAD
    # A block is distant when it overlaps [n_sink, win_start).
    distant = (blk < n_table) & (tl.maximum(blk * PAGE, n_sink) < tl.minimum((blk + 1) * PAGE, win_start))
    valid = distant & (rep < n_reps)
    phys = tl.load(BlockTable + b * stride_tb + blk, mask=valid, other=0).to(tl.int64)
    # Memory traffic: R representative rows per block instead of PAGE key rows.
    r = tl.load(Reps + phys[:, None] * stride_rb + kvh * stride_rh + rep[:, None] * stride_rr + offs_d[None, :],
                mask=valid[:, None], other=0.0)
    s = tl.dot(q, tl.trans(r), input_precision=PRECISION)  # [GROUP_PAD, BLOCKS * R_PAD]
    s = tl.where(valid[None, :], s, float("-inf"))
    best = tl.max(tl.reshape(s, [GROUP_PAD, BLOCKS, R_PAD]), 2)  # max over representatives
    best = tl.where(mask_g[:, None], best, 0.0)
    score = tl.sum(best, 0)  # summed over the GQA group; -inf for blocks that are not distant
    out_blk = chunk * BLOCKS + tl.arange(0, BLOCKS)
    tl.store(Scores + b * stride_sb + kvh * stride_sh + out_blk, score, mask=out_blk < n_table)


@jit
def _select_blocks_kernel(
    Scores, Selected, n_table, topk, n_out,
    stride_sb, stride_sh, stride_ob, stride_oh,
    ROW_PAD: tl.constexpr, OUT_PAD: tl.constexpr,
):
    """Top-k block ids of one (sequence, KV head) score row, ascending, -1 padded; no sort.

    The row stays in registers. A binary search over order-preserving integer keys of the
    float scores finds the k-th largest score T in 32 steps; blocks scoring above T are kept,
    and ties at T in block order until k are kept. Blocks scoring -inf (not distant) never are.
    Memory traffic: one read of the row (4 bytes per block) and k id writes.
    """
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    offs = tl.arange(0, ROW_PAD)
    s = tl.load(Scores + b * stride_sb + kvh * stride_sh + offs, mask=offs < n_table, other=float("-inf"))
    finite = s > float("-inf")
    bits = s.to(tl.int32, bitcast=True)
    key = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)  # same order as the floats
    n_sel = tl.minimum(tl.sum(finite.to(tl.int32), 0), topk)
    # Invariant: at least n_sel finite keys are >= lo. After 32 halvings lo == hi == T.
    lo = (n_sel * 0).to(tl.int64) - 2147483648
    hi = lo + 4294967295
    for _ in range(32):
        mid = lo + ((hi - lo + 1) >> 1)
        enough = tl.sum((finite & (key >= mid)).to(tl.int32), 0) >= n_sel
        lo = tl.where(enough, mid, lo)
        hi = tl.where(enough, hi, mid - 1)
    above = finite & (key > lo)
    tie = finite & (key == lo)
    tie_rank = tl.cumsum(tie.to(tl.int32), 0)  # 1-based among the ties, in block order
    keep = above | (tie & (tie_rank <= n_sel - tl.sum(above.to(tl.int32), 0)))
    slot = tl.cumsum(keep.to(tl.int32), 0) - 1
    out = Selected + b * stride_ob + kvh * stride_oh
    tl.store(out + slot, offs, mask=keep)
    offs_o = tl.arange(0, OUT_PAD)
    tl.store(out + offs_o, tl.full([OUT_PAD], -1, tl.int32), mask=(offs_o >= n_sel) & (offs_o < n_out))


@jit
def _last_arrival(Counters, index, n_programs):
    """Whether this program is the last of `n_programs` to arrive at counter `index`; the last one resets it.

    The barrier makes every thread's stores happen before the release of the atomic, so the last
    program, after its acquire, sees what all the others stored (threadFenceReduction pattern).
    """
    tl.debug_barrier()
    arrived = tl.atomic_add(Counters + index, 1, sem="acq_rel", scope="gpu")
    last = arrived == n_programs - 1
    if last:
        tl.atomic_xchg(Counters + index, 0, sem="relaxed", scope="gpu")  # ready for the next call (and graph replay)
    return last


@jit
def _block_topk_split_kernel(
    Q, QF, Cos, SSin, K, V, BlockTable, SeqLens, Selected, MPart, LPart, AccPart, Counters, Out,
    scale, tokens_per_split, n_heads, n_splits, sinks, window, n_kv, topk, far_distance,
    stride_qb, stride_qh, stride_fb, stride_fh,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_tb, stride_ob, stride_oh,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    PAGE: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
    FUSED_REDUCE: tl.constexpr, SPLIT_CHUNK: tl.constexpr, HAS_FAR: tl.constexpr,
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
    if HAS_FAR:
        qf = tl.load(QF + b * stride_fb + heads[:, None] * stride_fh + offs_d[None, :], mask=mask_g[:, None], other=0.0)
        offs_roll = (offs_d + HEAD_DIM // 2) % HEAD_DIM  # rotate_half's source lanes

    seq_len = tl.load(SeqLens + b)
    n_sink = tl.minimum(sinks, seq_len)
    win_start = tl.maximum(n_sink, tl.minimum(seq_len - window, (seq_len // PAGE) * PAGE))
    # Virtual index: [0, sinks) sinks | [sinks, local0) the selected blocks, PAGE slots each |
    # [local0, local0 + L - win_start) the local window.
    local0 = sinks + topk * PAGE
    virtual_end = local0 + seq_len - win_start
    start = split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, virtual_end)
    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        v_idx = n0 + offs_n
        is_sink = v_idx < sinks
        is_local = v_idx >= local0
        is_sel = (~is_sink) & (~is_local)
        sel_slot = (v_idx - sinks) // PAGE
        sel_blk = tl.load(Selected + (b * n_kv + kvh) * topk + sel_slot, mask=is_sel & (v_idx < end), other=-1)
        sel_tok = sel_blk * PAGE + (v_idx - sinks) % PAGE
        tok = tl.where(is_sink, v_idx, tl.where(is_local, win_start + v_idx - local0, sel_tok))
        # Selected tokens are masked to the distant range, so no token is counted twice.
        valid = (v_idx < end) & tl.where(
            is_sink, v_idx < n_sink,
            tl.where(is_local, tok < seq_len, (sel_blk >= 0) & (sel_tok >= n_sink) & (sel_tok < win_start)))
        k, v, phys, slot = load_kv_tile(K, V, BlockTable, b, kvh, tok, valid, offs_d,
                                        stride_tb, stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt, PAGE)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        if HAS_FAR:
            # Sinks and selected blocks past far_distance are scored at that distance (InfLLM):
            # q_far sits at position far_distance, the key is rotated back to position 0.
            far = (~is_local) & (seq_len - 1 - tok > far_distance)
            k_roll = tl.load(K + phys[:, None] * stride_kb + kvh * stride_kh + slot[:, None] * stride_kt + offs_roll[None, :],
                             mask=valid[:, None], other=0.0)
            cos = tl.load(Cos + tok[:, None] * HEAD_DIM + offs_d[None, :], mask=valid[:, None], other=0.0)
            ssin = tl.load(SSin + tok[:, None] * HEAD_DIM + offs_d[None, :], mask=valid[:, None], other=0.0)
            k_raw = (k.to(tl.float32) * cos.to(tl.float32) - k_roll.to(tl.float32) * ssin.to(tl.float32)).to(k.dtype)
            s = tl.where(far[None, :], tl.dot(qf, tl.trans(k_raw), input_precision=PRECISION), s)
        s = tl.where(valid[None, :], s * scale, float("-inf"))
        m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc, PRECISION)

    part = (b * n_heads + heads) * n_splits + split
    store_partials(MPart, LPart, AccPart, part, m_i, l_i, acc, mask_g, offs_d, HEAD_DIM)
    if FUSED_REDUCE:
        # The last split of this (sequence, KV head) to finish combines all splits' partials.
        if _last_arrival(Counters, b * n_kv + kvh, n_splits):
            offs_s = tl.arange(0, SPLIT_CHUNK)
            for g in tl.static_range(GROUP):
                head = kvh * GROUP + g
                m_run = tl.full([1], float("-inf"), tl.float32)
                l_run = tl.zeros([1], tl.float32)
                acc_run = tl.zeros([HEAD_DIM], tl.float32)
                for s0 in range(0, n_splits, SPLIT_CHUNK):
                    mask_s = s0 + offs_s < n_splits
                    rows = (b * n_heads + head) * n_splits + s0 + offs_s
                    m = tl.load(MPart + rows, mask=mask_s, other=float("-inf"), cache_modifier=".cg")
                    l = tl.load(LPart + rows, mask=mask_s, other=0.0, cache_modifier=".cg")
                    a = tl.load(AccPart + rows[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_s[:, None], other=0.0,
                                cache_modifier=".cg")
                    m_new = tl.maximum(m_run, tl.max(m, 0))
                    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                    w = tl.exp(m - m_safe)  # empty splits have m = -inf and weigh nothing
                    alpha = tl.exp(m_run - m_safe)
                    l_run = l_run * alpha + tl.sum(w * l, 0)
                    acc_run = acc_run * alpha + tl.sum(w[:, None] * a, 0)
                    m_run = m_new
                out = acc_run / tl.maximum(l_run, 1e-30)  # nothing attended -> zeros
                tl.store(Out + b * stride_ob + head * stride_oh + offs_d, out.to(Out.dtype.element_ty))


# ---------------------------------------------------------------------------------------------
# Representatives


def block_representatives(keys: torch.Tensor, n_reps: int, queries: torch.Tensor | None = None) -> torch.Tensor:
    """Representative keys of full blocks: keys [..., H_kv, block_size, D] -> [..., H_kv, n_reps, D].

    A token's representativeness is the attention logit it receives: from the block's own
    queries when given (queries [n_heads, block_size, D] for a single block, InfLLM's choice),
    otherwise from the block's mean key, a query-free stand-in that needs nothing but the
    cache. The top n_reps tokens per KV head are kept in position order. n_reps larger than
    the block is clamped.
    """
    top = representative_index(keys, n_reps, queries)
    return torch.gather(keys, -2, top[..., None].expand(*top.shape, keys.shape[-1]))


def representative_index(keys: torch.Tensor, n_reps: int, queries: torch.Tensor | None = None) -> torch.Tensor:
    """Slots [..., H_kv, n_reps] (ascending) of the representative keys `block_representatives` keeps."""
    n_kv, size, head_dim = keys.shape[-3:]
    n_reps = min(n_reps, size)
    if queries is not None:
        probe = queries.float().reshape(n_kv, -1, head_dim)  # [H_kv, G * size, D]
    else:
        probe = keys.float().mean(dim=-2, keepdim=True)  # [..., H_kv, 1, D]
    received = (probe @ keys.float().transpose(-1, -2)).sum(dim=-2)  # [..., H_kv, size]
    return received.topk(n_reps, dim=-1).indices.sort(dim=-1).values


def new_representatives_cache(k_cache: torch.Tensor, n_reps: int) -> torch.Tensor:
    """Zeroed [num_blocks, H_kv, n_reps, D] store, indexed by physical block like the cache."""
    num_blocks, n_kv, size, head_dim = k_cache.shape
    return k_cache.new_zeros(num_blocks, n_kv, min(n_reps, size), head_dim)


def update_representatives(reps: torch.Tensor, k_cache: torch.Tensor, block_table: torch.Tensor, row: int,
                           block: int, queries: torch.Tensor | None = None) -> None:
    """Compute and store the representatives of logical block `block` of sequence `row` (call it when the block fills)."""
    phys = int(block_table[row, block])
    reps[phys] = block_representatives(k_cache[phys], reps.shape[2], queries)


def build_representatives(k_cache: torch.Tensor, block_table: torch.Tensor, seq_lens: torch.Tensor, n_reps: int) -> torch.Tensor:
    """Representatives of every full block of every sequence (after a prefill without queries)."""
    reps = new_representatives_cache(k_cache, n_reps)
    size = k_cache.shape[2]
    full = [block_table[row, : int(seq_lens[row]) // size] for row in range(block_table.shape[0])]
    phys = torch.cat(full).long() if full else torch.empty(0, dtype=torch.long)
    for chunk in phys.split(4096):  # bounded temporaries at long contexts
        reps[chunk] = block_representatives(k_cache[chunk], reps.shape[2])
    return reps


# ---------------------------------------------------------------------------------------------
# Scoring and selection


def check_budget(sinks: int, window: int, topk: int) -> None:
    if sinks < 0 or window < 1 or topk < 1:
        raise ValueError(f"block_topk needs sinks >= 0, window >= 1, topk >= 1; got sinks={sinks}, window={window}, topk={topk}")


def check_representatives(reps: torch.Tensor | None, k_cache: torch.Tensor) -> torch.Tensor:
    if reps is None:
        raise ValueError("block_topk needs the representatives tensor (see build_representatives / update_representatives)")
    if reps.dim() != 4 or reps.shape[:2] != k_cache.shape[:2] or reps.shape[3] != k_cache.shape[3]:
        raise ValueError(f"representatives must be [num_blocks, n_kv_heads, R, head_dim] matching the cache, got {tuple(reps.shape)}")
    return reps


def distant_range(seq_len: int, sinks: int, window: int, block_size: int) -> tuple[int, int]:
    """Token range [n_sink, win_start) split into scored blocks (see the module doc for the clamp)."""
    n_sink = min(sinks, seq_len)
    win_start = max(n_sink, min(seq_len - window, (seq_len // block_size) * block_size))
    return n_sink, win_start


def block_scores(q, reps, block_table, seq_lens, sinks: int, window: int, block_size: int) -> torch.Tensor:
    """Triton block scores [B, H_kv, max_blocks] float32; -inf for blocks outside the distant range."""
    check_device(q)
    return _launch_scores(q.contiguous(), reps.contiguous(), block_table, seq_lens, sinks, window, block_size)


def _launch_scores(q, reps, block_table, seq_lens, sinks: int, window: int, block_size: int) -> torch.Tensor:
    # Unchecked: callers have validated the inputs (q and reps contiguous).
    batch, n_heads, head_dim = q.shape
    n_kv = reps.shape[1]
    group = n_heads // n_kv
    n_table = block_table.shape[1]
    scores = torch.empty(batch, n_kv, n_table, device=q.device, dtype=torch.float32)
    _block_score_kernel[(batch, n_kv, cdiv(n_table, SCORE_BLOCKS))](
        q, reps, block_table, seq_lens, scores,
        sinks, window, n_table, reps.shape[2],
        q.stride(0), q.stride(1),
        reps.stride(0), reps.stride(1), reps.stride(2),
        block_table.stride(0), scores.stride(0), scores.stride(1),
        GROUP=group, GROUP_PAD=group_pad(group), HEAD_DIM=head_dim, PAGE=block_size,
        BLOCKS=SCORE_BLOCKS, R_PAD=pow2(reps.shape[2]), PRECISION=dot_precision(q.dtype),
    )
    return scores


@functools.lru_cache(maxsize=16)
def arrival_counters(device: torch.device, count: int) -> torch.Tensor:
    """Zeroed int32 counters for the fused kernels' last-program-arrives pattern, one per (sequence, KV head).

    Allocated once per device and size (a workspace, like a BLAS handle's): every kernel that
    counts on them sets its counter back to zero before it exits, so they stay zero between
    launches and across CUDA-graph replays. One stream at a time may use them.
    """
    return torch.zeros(count, device=device, dtype=torch.int32)


def block_scores_reference(q, reps, block_table, seq_lens, sinks: int, window: int, block_size: int) -> torch.Tensor:
    """Torch block scores, same contract as `block_scores`."""
    batch, n_heads, head_dim = q.shape
    n_kv = reps.shape[1]
    n_table = block_table.shape[1]
    scores = torch.full((batch, n_kv, n_table), float("-inf"), device=q.device)
    for row in range(batch):
        n_sink, win_start = distant_range(int(seq_lens[row]), sinks, window, block_size)
        blocks = [b for b in range(n_table) if max(b * block_size, n_sink) < min((b + 1) * block_size, win_start)]
        if not blocks:
            continue
        r = reps[block_table[row, blocks].long()].float()  # [nb, H_kv, R, D]
        queries = q[row].float().reshape(n_kv, -1, head_dim)  # [H_kv, G, D]
        logits = torch.einsum("hgd,bhrd->hgbr", queries, r)
        scores[row, :, blocks] = logits.amax(dim=-1).sum(dim=1)
    return scores


def top_blocks(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the k best scores along the last dim; among equal scores the lowest index wins.

    Equal scores are real: in the first layer a block's representatives depend only on its tokens
    (rotated back to position 0), so two blocks holding the same token score exactly alike.
    torch.topk breaks such ties by its own internal order, which differs between the prefill's
    selection and the decode step's; a stable sort breaks them the Triton kernel's way.
    """
    values, index = scores.sort(dim=-1, descending=True, stable=True)
    return values[..., :k], index[..., :k]


def select_blocks(scores: torch.Tensor, topk: int) -> torch.Tensor:
    """Top-k logical block ids per (sequence, KV head), [B, H_kv, k] int32; -1 marks an empty slot.

    Clamp: k = min(topk, max_blocks); blocks outside the distant range score -inf and become -1.
    Torch version (`top_blocks`, ids in score order); `select_blocks_triton` is the kernel.
    """
    values, index = top_blocks(scores, min(topk, scores.shape[-1]))
    return torch.where(values == float("-inf"), -1, index).to(torch.int32).contiguous()


# Rows longer than this (2M tokens at 128-token blocks) would spill the select kernel's
# registers; they go through torch.topk instead.
MAX_SELECT_ROW = 16384


def select_blocks_triton(scores: torch.Tensor, topk: int) -> torch.Tensor:
    """`select_blocks` as one Triton launch: the same set of blocks, ids ascending, -1 padded.

    The same set as `select_blocks` (among equal scores at the k-th place, the lowest block ids).
    """
    check_device(scores)
    return _launch_select(scores.contiguous(), topk)


def _launch_select(scores: torch.Tensor, topk: int) -> torch.Tensor:
    batch, n_kv, n_table = scores.shape
    if n_table > MAX_SELECT_ROW:
        return select_blocks(scores, topk)
    k = min(topk, n_table)
    selected = torch.empty(batch, n_kv, k, device=scores.device, dtype=torch.int32)
    row_pad = pow2(n_table, 16)
    _select_blocks_kernel[(batch, n_kv)](
        scores, selected, n_table, k, k,
        scores.stride(0), scores.stride(1), selected.stride(0), selected.stride(1),
        ROW_PAD=row_pad, OUT_PAD=pow2(k, 16), num_warps=4 if row_pad <= 2048 else 8,
    )
    return selected


# ---------------------------------------------------------------------------------------------
# Attention


def block_topk_attention_selected(
    q, k_cache, v_cache, block_table, seq_lens, selected: torch.Tensor, sinks: int, window: int,
    scale: float | None = None, *, splits: int | None = None, block_n: int = 64, far: "FarPositions | None" = None,
) -> torch.Tensor:
    """Triton attention over sinks + the given selected blocks [B, H_kv, k] + local window."""
    check_inputs(q, k_cache, v_cache, block_table, seq_lens)
    check_device(q)
    batch, n_kv = q.shape[0], k_cache.shape[1]
    if selected.shape[:2] != (batch, n_kv):
        raise ValueError(f"selected must be [batch={batch}, n_kv_heads={n_kv}, k], got {tuple(selected.shape)}")
    return _launch_attention(q.contiguous(), k_cache.contiguous(), v_cache.contiguous(), block_table, seq_lens,
                             selected.to(torch.int32).contiguous(), sinks, window, scale, splits, block_n, far=far)


class FarPositions:
    """InfLLM's position handling for decode: tokens outside the local window (sinks, selected
    blocks) whose true distance exceeds `distance` are scored at that distance instead.

    q_far [B, H, Dh] is the query rotated at position `distance`; such a key is rotated back to
    position 0 with the RoPE tables (its cached row is rotated at its true position). The
    representatives must then be stored rotated back to position 0 too: selection scores them
    with q_far (BlockTopkPolicy does both).
    """

    def __init__(self, q_far: torch.Tensor, rope: Rope, distance: int):
        self.q_far, self.rope, self.distance = q_far, rope, int(distance)


REDUCE_SPLIT_CHUNK = 32  # partials combined per step by the fused reduction
# Up to this many splits per (sequence, KV head) the fused reduction wins; measured on an H200
# (reports/block_topk_variants.md): 9 splits (batch 8) -10 us, 66 splits (batch 1) +9 us.
MAX_FUSED_REDUCE_SPLITS = 16


def _launch_attention(q, k_cache, v_cache, block_table, seq_lens, selected, sinks, window, scale, splits, block_n,
                      fused_reduce: bool | None = None, far: FarPositions | None = None):
    """Split-K attention over sinks + selected blocks + window. fused_reduce: the last split of each
    (sequence, KV head) combines the partials in the same launch; otherwise a second launch does.
    None picks by the number of splits (MAX_FUSED_REDUCE_SPLITS)."""
    # Unchecked: q, caches and selected (int32) contiguous, shapes validated by the caller.
    batch, n_heads, head_dim = q.shape
    n_kv, page = k_cache.shape[1], k_cache.shape[2]
    group = n_heads // n_kv
    topk = selected.shape[2]
    scale = head_dim**-0.5 if scale is None else scale
    capacity = block_table.shape[1] * page
    virtual_len = sinks + topk * page + min(window + page, capacity)
    n_splits = num_splits(batch * n_kv, virtual_len, block_n, q.device, splits)
    tokens_per_split = cdiv(cdiv(virtual_len, n_splits), block_n) * block_n
    m_part, l_part, acc_part = alloc_partials(batch, n_heads, n_splits, head_dim, q.device)
    out = torch.empty_like(q)
    if fused_reduce is None:
        fused_reduce = n_splits <= MAX_FUSED_REDUCE_SPLITS
    counters = arrival_counters(q.device, batch * n_kv) if fused_reduce else m_part
    if far is not None:
        qf, cos, ssin, distance = far.q_far.to(q.dtype).contiguous(), far.rope.cos.contiguous(), far.rope.sin.contiguous(), far.distance
    else:
        qf, cos, ssin, distance = q, q, q, 0  # unused (HAS_FAR=False)
    _block_topk_split_kernel[(batch, n_kv, n_splits)](
        q, qf, cos, ssin, k_cache, v_cache, block_table, seq_lens, selected, m_part, l_part, acc_part, counters, out,
        scale, tokens_per_split, n_heads, n_splits, sinks, window, n_kv, topk, distance,
        q.stride(0), q.stride(1), qf.stride(0), qf.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_table.stride(0), out.stride(0), out.stride(1),
        GROUP=group, GROUP_PAD=group_pad(group), HEAD_DIM=head_dim, PAGE=page, BLOCK_N=block_n,
        PRECISION=dot_precision(q.dtype), FUSED_REDUCE=fused_reduce, SPLIT_CHUNK=REDUCE_SPLIT_CHUNK,
        HAS_FAR=far is not None,
    )
    return out if fused_reduce else reduce_splits(m_part, l_part, acc_part, out)


def block_topk_attention(
    q, k_cache, v_cache, block_table, seq_lens, reps: torch.Tensor, sinks: int, window: int, topk: int,
    scale: float | None = None, *, splits: int | None = None, block_n: int = 64, check: bool = True,
    far: FarPositions | None = None,
) -> torch.Tensor:
    """Score blocks, select the top-k, attend sinks + blocks + window: Triton launches only
    (score, select, split-K attention, and a reduction unless the attention launch fuses it), no
    torch ops or host syncs between them, so a decode step can be captured in a CUDA graph.

    far: InfLLM positions (FarPositions); blocks are then scored with far.q_far.
    check=False skips input validation (for callers that validated these shapes once).
    """
    if check:
        check_budget(sinks, window, topk)
        check_inputs(q, k_cache, v_cache, block_table, seq_lens)
        check_representatives(reps, k_cache)
        check_device(q)
    q, k_cache, v_cache, reps = q.contiguous(), k_cache.contiguous(), v_cache.contiguous(), reps.contiguous()
    q_score = q if far is None else far.q_far.to(q.dtype).contiguous()
    scores = _launch_scores(q_score, reps, block_table, seq_lens, sinks, window, k_cache.shape[2])
    selected = _launch_select(scores, topk)
    return _launch_attention(q, k_cache, v_cache, block_table, seq_lens, selected, sinks, window, scale, splits, block_n,
                             far=far)


def attend_selected_reference(
    q, k_cache, v_cache, block_table, seq_lens, selected: torch.Tensor, sinks: int, window: int, scale: float | None = None,
    *, far: FarPositions | None = None,
) -> torch.Tensor:
    """Torch attention over sinks + selected blocks + local window; reads only those blocks."""
    check_inputs(q, k_cache, v_cache, block_table, seq_lens)
    batch, n_heads, head_dim = q.shape
    n_kv, size = k_cache.shape[1], k_cache.shape[2]
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.empty_like(q)
    for row in range(batch):
        seq_len = int(seq_lens[row])
        n_sink, win_start = distant_range(seq_len, sinks, window, size)
        # Per KV head the kept set differs; gather the union once and mask per head.
        chosen = {int(b) for b in selected[row].flatten() if int(b) >= 0}
        distant = [t for b in sorted(chosen) for t in range(b * size, (b + 1) * size) if n_sink <= t < win_start]
        tokens = torch.tensor([*range(n_sink), *distant, *range(win_start, seq_len)], dtype=torch.long)
        keep = torch.ones(n_kv, len(tokens), dtype=torch.bool, device=q.device)
        token_block = tokens // size
        is_distant = torch.zeros(len(tokens), dtype=torch.bool)
        is_distant[n_sink:n_sink + len(distant)] = True
        for head in range(n_kv):
            mine = torch.isin(token_block, selected[row, head].long().cpu())
            keep[head] = (~is_distant | mine).to(q.device)
        keys = gather_tokens(k_cache, block_table, row, tokens).float()
        values = gather_tokens(v_cache, block_table, row, tokens).float()
        queries = q[row].float().reshape(n_kv, -1, head_dim)
        scores = queries @ keys.transpose(1, 2) * scale  # [H_kv, G, n]
        if far is not None:
            tokens_dev = tokens.to(q.device)
            is_far = (tokens_dev < win_start) & (seq_len - 1 - tokens_dev > far.distance)
            raw = far.rope.shift(keys, -tokens_dev[None, :]).float()
            far_scores = far.q_far[row].float().reshape(n_kv, -1, head_dim) @ raw.transpose(1, 2) * scale
            scores = torch.where(is_far[None, None, :], far_scores, scores)
        scores = scores.masked_fill(~keep[:, None, :], float("-inf"))
        out[row] = softmax_attend(scores, values).reshape(-1, head_dim).to(q.dtype)
    return out


def block_topk_reference(
    q, k_cache, v_cache, block_table, seq_lens, reps: torch.Tensor, sinks: int, window: int, topk: int,
    scale: float | None = None, *, far: FarPositions | None = None,
) -> torch.Tensor:
    """Torch block top-k: reference scores, torch.topk, reference attention."""
    check_budget(sinks, window, topk)
    check_inputs(q, k_cache, v_cache, block_table, seq_lens)
    check_representatives(reps, k_cache)
    q_score = q if far is None else far.q_far.to(q.dtype)
    scores = block_scores_reference(q_score, reps, block_table, seq_lens, sinks, window, k_cache.shape[2])
    selected = select_blocks(scores, topk)
    return attend_selected_reference(q, k_cache, v_cache, block_table, seq_lens, selected, sinks, window, scale, far=far)
