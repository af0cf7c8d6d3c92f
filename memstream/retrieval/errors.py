"""Typed retrieval errors: each message names the problem and, where there is one, the fix."""

from __future__ import annotations


class RetrievalError(ValueError):
    """A search or index request cannot be served (bad query, bad k, unknown mode...)."""


class EmbeddingModelMismatch(RetrievalError):
    """The database holds embeddings made by another model than the configured one."""

    def __init__(self, configured: str, found: dict[str, int]):
        self.configured = configured
        self.found = found
        others = ", ".join(f"{name} ({count} items)" for name, count in sorted(found.items()) if name != configured)
        super().__init__(
            f"the database was embedded with {others}, but the configured embedder is {configured!r}: "
            f"run `memstream memory reembed` to re-embed with {configured!r}, or set embedder.model back"
        )


class EmbedderUnavailable(RetrievalError):
    """The embedding model cannot be loaded (missing package, bad path, no network for a hub name)."""
