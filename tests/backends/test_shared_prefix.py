"""A shared prompt prefix rolled back after each continuation answers like a fresh prefill (tiny random Llama)."""

from __future__ import annotations

import pytest
import torch

from memstream.backends.kernels import AttentionParams, make_policy
from memstream.backends.kernels.block_topk_policy import PENDING, REPS
from memstream.backends.llama import Transformer
from memstream.backends.local import decode_tokens, new_cache, prefill
from memstream.backends.prefix import SharedPrefix
from tests.tiny_llama import tiny_llama

BLOCK, CHUNK, NEW = 16, 32, 10
# 90 prefix tokens: not a whole number of blocks, so the partial last block's pending queries matter;
# the other question's 30 tokens + decoding fill that block and two more before the rollback.
GEN = torch.Generator().manual_seed(1)
PREFIX = torch.randint(0, 128, (90,), generator=GEN).tolist()
OTHER = torch.randint(0, 128, (30,), generator=GEN).tolist()
SUFFIX = torch.randint(0, 128, (17,), generator=GEN).tolist()
# Small budgets, so block_topk really selects: 5 distant blocks, 2 chosen.
SMALL = AttentionParams(sinks=2, window=20, block_size=BLOCK, topk=2, representatives=2, prefill_chunk=CHUNK,
                        use_triton=False)


@pytest.fixture(scope="module")
def model() -> Transformer:
    return tiny_llama()


def fresh(model, policy, suffix=SUFFIX):
    """Suffix logits and greedy tokens from a new cache: the prefix, then the suffix, in the same chunks."""
    cache = new_cache(model, policy, len(PREFIX) + 64)
    prefill(model, torch.tensor([PREFIX]), cache, policy)
    logits = prefill(model, torch.tensor([suffix]), cache, policy, all_logits=True)[0]
    tokens = list(decode_tokens(model, int(logits[-1].argmax()), NEW, cache, lambda x: x.argmax(dim=-1), policy))
    return logits, tokens


@pytest.mark.parametrize("name", ["dense", "block_topk"])
def test_rolled_back_prefix_answers_like_a_fresh_prefill(model, name):
    policy = make_policy(name, SMALL)
    want_logits, want = fresh(model, policy)
    shared = SharedPrefix.build(model, PREFIX, policy, room=64)
    assert shared.greedy(OTHER, NEW) != want  # a different question really ran first
    assert shared.greedy(SUFFIX, NEW) == want
    assert shared.cache.lengths == [len(PREFIX)]
    # The logits too, not only their argmax: the rolled-back cache is the fresh one.
    got = prefill(model, torch.tensor([SUFFIX]), shared.cache, policy, all_logits=True)[0]
    torch.testing.assert_close(got, want_logits)


def test_block_topk_state_after_rollback_is_the_prefix_state(model):
    policy = make_policy("block_topk", SMALL)
    shared = SharedPrefix.build(model, PREFIX, policy, room=64)
    before = {key: value.clone() for key, value in shared.cache.policy_state.items() if key[0] == REPS}
    shared.greedy(OTHER, NEW)
    full = len(PREFIX) // BLOCK
    ids = shared.cache.block_table[0, :full].long()
    for layer in range(model.args.n_layers):
        reps = shared.cache.policy_state[(REPS, layer)]
        torch.testing.assert_close(reps[ids], before[(REPS, layer)][ids], rtol=0, atol=0)
        start, queries = shared.cache.policy_state[(PENDING, layer, 0)]
        assert start == full * BLOCK and queries.shape[1] == len(PREFIX) - start


def test_truncate_alone_loses_block_topk_state(model):
    # Why rollback goes through the policy: the cache's own truncate drops the representatives,
    # and block selection then reads zeros (this also shows the prompt is long enough to select).
    policy = make_policy("block_topk", SMALL)
    want_logits, _ = fresh(model, policy)
    shared = SharedPrefix.build(model, PREFIX, policy, room=64)
    shared.greedy(OTHER, NEW)
    shared.cache.truncate(len(PREFIX))
    got = prefill(model, torch.tensor([SUFFIX]), shared.cache, policy, all_logits=True)[0]
    assert not torch.allclose(got, want_logits, atol=1e-4)


@pytest.mark.parametrize("name", ["sink_window", "snapkv"])
def test_policies_that_evict_or_compress_hold_no_shared_prefix(model, name):
    with pytest.raises(ValueError, match="no prefix"):
        SharedPrefix.build(model, PREFIX, make_policy(name, SMALL), room=64)


def test_a_continuation_must_fit_the_room(model):
    shared = SharedPrefix.build(model, PREFIX, make_policy("dense", SMALL), room=20)
    with pytest.raises(ValueError, match="room"):
        shared.greedy(OTHER, NEW)
    assert shared.cache.lengths == [len(PREFIX)]
