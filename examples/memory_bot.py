"""A bot with long-term memory: tell it something, then ask in a new conversation days later.

    python examples/memory_bot.py [DATA_DIR]

Runs offline with the default local model (SmolLM2-135M) and embedder; pass any memstream
ChatBackend to `main` to use another model.
"""

from __future__ import annotations

import sys
from datetime import datetime

from memstream import MemoryAgent
from memstream.config import load_settings


def main(backend=None, home: str | None = None) -> str:
    settings = load_settings(home=home)  # home: where the memory lives (default: the user data dir)
    with MemoryAgent.from_settings(settings, backend=backend) as agent:
        agent.chat("My sister Ines moved to Lisbon in March.", user="ada", conversation="monday", at=datetime(2024, 4, 1, 9))
        # A new conversation: the fact is no longer in the recent turns, only in long-term memory.
        reply = agent.chat("Which city does my sister live in?", user="ada", conversation="friday", at=datetime(2024, 4, 5, 9))
    for memory in reply.memories:
        print(f"remembered [{memory.event_time:%Y-%m-%d}] {memory.turn.text}")
    print("bot:", reply.text)
    return reply.text


if __name__ == "__main__":
    main(home=sys.argv[1] if len(sys.argv) > 1 else None)
