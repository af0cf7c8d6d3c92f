"""The conversation: a scrolling column of messages that follows the newest one."""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.widgets import Static

from memstream.tui.widgets.chat_message import AssistantMessage, UserMessage

HISTORY_TURNS = 60
"""Turns shown when a conversation is opened (older ones stay in memory, searchable)."""


class ChatView(VerticalScroll):
    DEFAULT_CSS = """
    ChatView {
        height: 1fr;
        padding: 0 1;
        scrollbar-size-vertical: 1;
    }
    ChatView > .empty {
        color: $text-muted;
        margin: 1 0;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.can_focus = False

    async def clear(self, hint: str = "") -> None:
        await self.remove_children()
        if hint:
            await self.mount(Static(hint, classes="empty", markup=False))

    async def show_history(self, turns: list, hint: str) -> None:
        """Replace the view with stored turns (oldest first)."""
        await self.remove_children()
        widgets = []
        for turn in turns:
            if turn.role == "assistant":
                state = "(stopped)" if turn.metadata.get("cancelled") else ""
                widgets.append(AssistantMessage(turn.text, state=state))
            else:
                widgets.append(UserMessage(turn.text))
        if not widgets:
            widgets.append(Static(hint, classes="empty", markup=False))
        await self.mount_all(widgets)
        self.scroll_end(animate=False)

    async def add_user(self, text: str) -> UserMessage:
        await self.query(".empty").remove()
        message = UserMessage(text)
        await self.mount(message)
        self.scroll_end(animate=False)
        return message

    async def add_assistant(self, state: str = "") -> AssistantMessage:
        message = AssistantMessage(state=state)
        await self.mount(message)
        self.scroll_end(animate=False)
        return message
