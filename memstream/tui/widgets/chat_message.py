"""One message in the chat: the user's (plain text, long pastes shown shortened) or the
assistant's (markdown, streamed piece by piece)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Markdown, Static

USER_PREVIEW_CHARS = 1200
"""A pasted 100 KB message is stored whole; the chat shows its start so the screen stays responsive."""


def preview(text: str, limit: int = USER_PREVIEW_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… ({len(text):,} characters in all; stored whole)"


class UserMessage(Static):
    DEFAULT_CSS = """
    UserMessage {
        margin: 1 0 0 4;
        padding: 0 1;
        background: $boost;
        border-left: thick $secondary;
    }
    """

    def __init__(self, text: str, **kwargs) -> None:
        self.text = text
        # Text, not markup: whatever the user typed is shown literally.
        super().__init__(Text(preview(text)), **kwargs)


class AssistantMessage(Vertical):
    """Markdown that grows as pieces arrive; `finish` settles the final text and any notes."""

    DEFAULT_CSS = """
    AssistantMessage {
        height: auto;
        margin: 1 4 0 0;
        border-left: thick $primary;
        padding: 0 0 0 1;
    }
    AssistantMessage Markdown {
        margin: 0;
        padding: 0;
        background: transparent;
    }
    AssistantMessage Markdown > *:last-child {
        margin-bottom: 0;
    }
    AssistantMessage .state {
        color: $text-muted;
        text-style: italic;
    }
    AssistantMessage .state.-empty {
        display: none;
    }
    AssistantMessage .note {
        color: $warning;
    }
    """

    def __init__(self, text: str = "", state: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.text = text
        self._initial_state = state
        self._stream = None

    def compose(self) -> ComposeResult:
        yield Markdown(self.text)
        state = Static(self._initial_state, classes="state", markup=False)
        state.set_class(not self._initial_state, "-empty")
        yield state

    @property
    def markdown(self) -> Markdown:
        return self.query_one(Markdown)

    def set_state(self, state: str) -> None:
        widget = self.query_one(".state", Static)
        widget.update(state)
        widget.set_class(not state, "-empty")

    async def append(self, piece: str) -> None:
        if self._stream is None:
            self._stream = Markdown.get_stream(self.markdown)
        self.text += piece
        await self._stream.write(piece)

    async def finish(self, text: str | None = None, state: str = "", notes: list[str] | None = None) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        if text is not None and text != self.text:
            self.text = text
            await self.markdown.update(text)
        self.set_state(state)
        for note in notes or []:
            await self.mount(Static(Text(f"note: {note}"), classes="note"))
