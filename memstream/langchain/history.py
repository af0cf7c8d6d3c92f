"""`MemstreamChatMessageHistory`: one conversation of one user, kept in the memstream store.

Messages become turns (human -> user, system -> system, ai and tool messages -> assistant), so
they are durable and, once the retriever catches up, searchable like any other memory. The
full LangChain message is kept in the turn's metadata, so names, tool calls and content blocks
come back exactly as they went in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, message_to_dict, messages_from_dict

from memstream.memory.model import NewTurn, Turn
from memstream.memory.validate import check_id

MESSAGE_KEY = "langchain_message"
_ROLE_OF_TYPE = {"human": "user", "system": "system"}  # every other message type is the assistant's side


def message_from_turn(turn: Turn) -> BaseMessage:
    """The stored LangChain message, or one made from the turn when it was written by memstream itself."""
    stored = turn.metadata.get(MESSAGE_KEY)
    if isinstance(stored, dict):
        return messages_from_dict([stored])[0]
    if turn.role == "user":
        return HumanMessage(content=turn.text)
    if turn.role == "system":
        return SystemMessage(content=turn.text)
    return AIMessage(content=turn.text)


class MemstreamChatMessageHistory(BaseChatMessageHistory):
    """Chat history backed by a memstream `Memory`.

    Args:
        memory: an open `Memory` (`open_memory(settings)`); its indexes follow every write.
        user_id: whose memory this is; nothing of another user is ever read or written.
        conversation_id: the conversation this history holds.

    Example:
        >>> history = MemstreamChatMessageHistory(memory, user_id="ada", conversation_id="chat-1")
        >>> history.add_user_message("My cat is called Turing.")
    """

    def __init__(self, memory: Any, user_id: str, conversation_id: str):
        self.memory = memory
        self.user_id = check_id("user id", user_id)
        self.conversation_id = check_id("conversation id", conversation_id)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return [message_from_turn(t) for t in self.memory.list_turns(self.user_id, self.conversation_id)]

    def add_messages(self, messages: Sequence[BaseMessage], at: datetime | None = None) -> None:
        """Store the messages as turns, in one transaction; `at` sets their time (default: now)."""
        turns = []
        for index, message in enumerate(messages):
            if not isinstance(message, BaseMessage):
                raise TypeError(f"message {index} is a {type(message).__name__}, not a LangChain BaseMessage")
            turns.append(
                NewTurn(
                    role=_ROLE_OF_TYPE.get(message.type, "assistant"),
                    text=message.text,
                    speaker=message.name or message.type,
                    event_time=at,
                    metadata={MESSAGE_KEY: message_to_dict(message)},
                )
            )
        if not turns:
            return
        self.memory.add(self.user_id, self.conversation_id, turns)

    def clear(self) -> None:
        """Delete this conversation's turns (the user's other conversations are untouched)."""
        for turn in self.memory.list_turns(self.user_id, self.conversation_id):
            self.memory.delete_turn(self.user_id, turn.id)
