"""The memory layer: data model, store, validation, and the `Memory` object every front end opens.

`from memstream.memory import open_memory, Memory` works; they are imported on first use, because the
memory object pulls in the indexes (FAISS, numpy) and the retrieval package imports the data model from here.
"""

from memstream.memory.model import Fact, NewSession, NewTurn, Session, Turn

__all__ = ["Memory", "open_memory", "Fact", "NewSession", "NewTurn", "Session", "Turn"]


def __getattr__(name: str):
    if name in ("Memory", "open_memory"):
        from memstream.memory import core

        return getattr(core, name)
    raise AttributeError(f"module 'memstream.memory' has no attribute {name!r}")
