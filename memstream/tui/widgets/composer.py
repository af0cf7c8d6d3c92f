"""The message box: Enter sends, Ctrl+J adds a line; pasted text is kept whole (newlines included)."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea


class Composer(TextArea):
    """A TextArea rather than an Input: Input keeps only the first line of a paste."""

    DEFAULT_CSS = """
    Composer {
        height: auto;
        min-height: 3;
        max-height: 8;
    }
    """

    BINDINGS = [Binding("ctrl+j", "newline", "New line", show=False)]

    @dataclass
    class Submitted(Message):
        composer: "Composer"
        text: str

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("placeholder", "Message (Enter sends, Ctrl+J new line)")
        super().__init__(soft_wrap=True, show_line_numbers=False, **kwargs)

    async def _on_key(self, event: events.Key) -> None:
        # Textual runs each class's _on_key, subclass first; preventing the default here keeps
        # TextArea's own handler from inserting a newline. Other keys reach TextArea as usual.
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))

    def action_newline(self) -> None:
        self.insert("\n")
