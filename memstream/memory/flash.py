"""Flash memory: the most recent turns of a conversation, within a token budget, always in context."""

from __future__ import annotations

from typing import Callable

from memstream.memory.model import Turn


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters a token), used when no backend tokenizer is at hand."""
    return max(1, (len(text) + 3) // 4)


def flash_turns(
    store,  # Memory or MemoryStore: anything with recent_turns
    user_id: str,
    conversation_id: str,
    token_budget: int,
    count_tokens: Callable[[str], int] = approx_tokens,
    max_turns: int = 64,
) -> list[Turn]:
    """The newest turns whose text fits `token_budget`, oldest first. A turn that alone exceeds the budget is left out."""
    if token_budget <= 0:
        return []
    kept: list[Turn] = []
    used = 0
    for turn in reversed(store.recent_turns(user_id, conversation_id, max_turns)):
        cost = count_tokens(turn.text) + 4
        if used + cost > token_budget:
            break
        kept.append(turn)
        used += cost
    return list(reversed(kept))
