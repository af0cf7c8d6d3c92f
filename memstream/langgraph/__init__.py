"""memstream as LangGraph's long-term store: `MemstreamStore` (a `BaseStore`), for graphs and LangMem's tools.

    from memstream.langgraph import MemstreamStore
    store = MemstreamStore(open_memory(load_settings()))
    graph = builder.compile(store=store)

Needs the `langgraph` extra: pip install 'memstream[langgraph]'.
"""

from memstream.langgraph.store import MemstreamStore

__all__ = ["MemstreamStore"]
