"""Messages the app's workers and widgets send each other.

Plain dataclasses on top of Textual's `Message`: a worker thread posts them (posting is
thread-safe) and the app handles them on the event loop, so only the event loop touches
widgets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message


class _DataMessage(Message):
    """Base for dataclass messages (Message.__post_init__ does its bookkeeping after the dataclass __init__)."""


# -- model loading --------------------------------------------------------------------


@dataclass
class AgentReady(_DataMessage):
    """The store, index and chat model are loaded; the app can answer."""

    agent: Any


@dataclass
class AgentFailed(_DataMessage):
    """Startup failed in a way the user must fix (broken database URL, missing model)."""

    title: str
    detail: str
    hint: str = ""


# -- one answer -----------------------------------------------------------------------


@dataclass
class ReplyPiece(_DataMessage):
    """A piece of the reply being streamed."""

    text: str


@dataclass
class ReplyFinished(_DataMessage):
    """The agent's full `Reply` (text, plan, memories, timings, notes)."""

    reply: Any


@dataclass
class ReplyCancelled(_DataMessage):
    """Generation was stopped; `text` is what had been said (the agent stored it)."""

    text: str


@dataclass
class ReplyFailed(_DataMessage):
    """The backend failed or the message was refused; the user's turn is kept when it was stored."""

    error: str
    partial: str = ""


# -- memories -------------------------------------------------------------------------


@dataclass
class PinRequested(_DataMessage):
    turn_id: int
    pinned: bool


@dataclass
class ForgetRequested(_DataMessage):
    turn_id: int


@dataclass
class OpenMemory(_DataMessage):
    """Show one memory in full (from the inspector or the search results)."""

    turn_id: int
    hit: Any = None


@dataclass
class MemoryForgotten(_DataMessage):
    """A memory was deleted from the store and dropped from the index."""

    turn_id: int


@dataclass
class EverythingForgotten(_DataMessage):
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class SearchResults(_DataMessage):
    query: str
    hits: list
    time_window: Any = None
    error: str = ""


# -- conversations and backends ---------------------------------------------------------


@dataclass
class ConversationSelected(_DataMessage):
    conversation_id: str


@dataclass
class BackendReady(_DataMessage):
    """A backend from the settings was built; the agent now answers with it."""

    name: str
    backend: Any


@dataclass
class BackendFailed(_DataMessage):
    name: str
    error: str
