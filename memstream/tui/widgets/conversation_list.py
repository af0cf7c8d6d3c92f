"""The user's conversations; selecting one switches the chat to it."""

from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from memstream.tui.messages import ConversationSelected


class ConversationList(OptionList):
    DEFAULT_CSS = """
    ConversationList {
        height: 1fr;
        background: transparent;
        border: none;
    }
    """

    def show(self, conversations: Sequence, current: str) -> None:
        """`conversations`: the store's ConversationInfo rows; `current` is listed even before it has turns."""
        self.clear_options()
        ids = [c.conversation_id for c in conversations]
        options = []
        for info in conversations:
            label = Text(info.conversation_id, style="bold" if info.conversation_id == current else "")
            detail = f"\n{info.turns} turns"
            if info.last_time is not None:
                detail += f" · {info.last_time:%b %d}"
            label.append(detail, style="dim")
            options.append(Option(label, id=info.conversation_id))
        if current not in ids:
            label = Text(current, style="bold")
            label.append("\nnew", style="dim")
            options.append(Option(label, id=current))
        self.add_options(options)
        self.highlighted = [o.id for o in options].index(current)

    @property
    def ids(self) -> list[str]:
        return [self.get_option_at_index(i).id for i in range(self.option_count)]

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(ConversationSelected(event.option.id))
