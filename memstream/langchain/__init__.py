"""LangChain adapters for memstream: a retriever over a user's memory, a chat history kept in the
store, a vector store, and a chat model over any memstream backend.

Importing this package loads neither torch nor a model: the embedder and the chat model load
when first used (or when you build the memstream objects you pass in).

    from memstream.langchain import MemstreamChatModel, MemstreamRetriever
"""

from memstream.langchain.chat_model import MemstreamChatModel, UnsupportedMessageError
from memstream.langchain.history import MemstreamChatMessageHistory
from memstream.langchain.retriever import MemstreamRetriever
from memstream.langchain.vectorstore import MemstreamEmbeddings, MemstreamVectorStore

__all__ = [
    "MemstreamChatMessageHistory",
    "MemstreamChatModel",
    "MemstreamEmbeddings",
    "MemstreamRetriever",
    "MemstreamVectorStore",
    "UnsupportedMessageError",
]
