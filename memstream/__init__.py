"""memstream: long-term memory for chat agents."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["MemoryAgent", "Settings", "__version__"]


def __getattr__(name: str):
    # Lazy imports keep `import memstream` cheap: torch and the models load only when used.
    if name == "MemoryAgent":
        from memstream.agent.controller import MemoryAgent

        return MemoryAgent
    if name == "Settings":
        from memstream.config import Settings

        return Settings
    raise AttributeError(name)
