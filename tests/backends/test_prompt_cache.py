"""The local runner's prompt cache: a prompt sharing a prefix with an earlier generation prefills
only the rest, and greedy output is the same as without the cache (default model, SmolLM2-135M)."""

from __future__ import annotations

import threading

import pytest

from memstream.backends.local import LocalBackend

pytestmark = pytest.mark.slow

PLACES = ["the harbour", "a pottery class", "her sister's farm", "the night market", "a jazz bar", "the library"]
HISTORY = "Memory records (oldest first):\n" + "\n".join(
    f"[{day} May 2023] {'Caroline' if day % 2 else 'Melanie'}: I spent the afternoon at {PLACES[day % len(PLACES)]} "
    f"and bought {day + 2} postcards."
    for day in range(1, 19)
)


def ask(question: str, *earlier: dict) -> list[dict]:
    return [{"role": "system", "content": HISTORY}, *earlier, {"role": "user", "content": question}]


A = ask("Where was Caroline on 3 May?")
B = ask("How many postcards did Melanie buy on 10 May?")
DIFFERENT = [{"role": "user", "content": "Write a haiku about autumn rain."}]


@pytest.fixture
def pair(local_backend):
    """The same model with the prompt cache on (a fresh, empty one) and off."""
    return LocalBackend(local_backend.local), LocalBackend(local_backend.local, prompt_cache_slots=0)


def same_reply(pair, messages, max_tokens: int = 12) -> str:
    cached, plain = pair
    reply = cached.complete(messages, max_tokens=max_tokens)
    assert reply == plain.complete(messages, max_tokens=max_tokens)
    assert plain.last_stats.reused_tokens == 0
    assert cached.last_stats.prefilled_tokens + cached.last_stats.reused_tokens == cached.last_stats.prompt_tokens
    return reply


def test_greedy_replies_match_and_only_the_new_part_is_prefilled(pair):
    cached, _ = pair
    a_tokens, b_tokens = cached.encode(A), cached.encode(B)
    shared = next(i for i, (x, y) in enumerate(zip(a_tokens, b_tokens)) if x != y)
    assert shared > 300 and len(b_tokens) - shared < 30

    same_reply(pair, A)
    assert cached.last_stats.reused_tokens == 0 and cached.last_stats.prefilled_tokens == len(a_tokens)

    # Another question over the same history: only the question is prefilled.
    reply_b = same_reply(pair, B)
    assert cached.last_stats.reused_tokens == shared
    assert cached.last_stats.prefilled_tokens == len(b_tokens) - shared

    # The identical prompt: everything but its last token (which gives the next-token logits).
    same_reply(pair, B)
    assert (cached.last_stats.reused_tokens, cached.last_stats.prefilled_tokens) == (len(b_tokens) - 1, 1)

    # A follow-up turn extends that prompt with the reply: the generated tokens were kept too.
    follow_up = ask("And on 11 May?", B[1], {"role": "assistant", "content": reply_b})
    follow_tokens = cached.encode(follow_up)
    assert follow_tokens[: len(b_tokens)] == b_tokens
    same_reply(pair, follow_up)
    assert cached.last_stats.reused_tokens > len(b_tokens)

    # A strict prefix of what the cache holds.
    same_reply(pair, B)
    assert (cached.last_stats.reused_tokens, cached.last_stats.prefilled_tokens) == (len(b_tokens) - 1, 1)

    # A completely different prompt shares no more than the chat template's first tokens ...
    same_reply(pair, DIFFERENT)
    assert cached.last_stats.reused_tokens < 5

    # ... and copies them, leaving the long history in its own slot.
    same_reply(pair, A)
    assert cached.last_stats.reused_tokens == shared


def test_a_stream_stopped_early_still_leaves_its_cache(pair):
    cached, _ = pair
    pieces = cached.stream(A, max_tokens=6)
    next(pieces)
    pieces.close()
    same_reply(pair, B)
    assert cached.last_stats.reused_tokens > 300


def test_concurrent_generations_match_sequential_ones(pair):
    cached, plain = pair
    expected = {0: plain.complete(A, max_tokens=6), 1: plain.complete(B, max_tokens=6)}
    cached.complete(A, max_tokens=6)  # something to reuse (or not) under contention
    got: dict[int, str] = {}
    start = threading.Barrier(2)

    def run(index: int, messages: list[dict]) -> None:
        start.wait()
        got[index] = cached.complete(messages, max_tokens=6)

    threads = [threading.Thread(target=run, args=(i, m)) for i, m in enumerate((A, B))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == expected
    assert len(cached._kept) <= cached.prompt_cache_slots


def test_evicting_policies_and_the_setting_prefill_in_full(local_backend):
    from memstream.backends.kernels import make_policy
    from memstream.backends.models import make_backend
    from memstream.config import BackendSettings

    short = [{"role": "user", "content": "Name three colours of the rainbow."}]
    for backend in (LocalBackend(local_backend.local, policy=make_policy("snapkv")), make_backend(BackendSettings(kind="local", prompt_cache_slots=0))):
        assert not backend.reuses_prompts
        backend.complete(short, max_tokens=2)
        backend.complete(short, max_tokens=2)
        assert backend.last_stats.reused_tokens == 0
        assert backend.last_stats.prefilled_tokens == backend.last_stats.prompt_tokens
    assert make_backend(BackendSettings(kind="local")).reuses_prompts
