"""One line at the bottom: backend and model, attention policy, speed of the last answer, memory size, state."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


class StatusBar(Widget):
    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        background: $panel;
        color: $text;
        padding: 0 1;
    }
    """

    backend: reactive[str] = reactive("")
    attention: reactive[str] = reactive("")
    tokens_per_s: reactive[float | None] = reactive(None)
    latency_s: reactive[float | None] = reactive(None)
    memories: reactive[int | None] = reactive(None)
    state: reactive[str] = reactive("")

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(self.state or "", style="bold")
        parts = [self.backend or "no model"]
        if self.attention:
            parts.append(f"attn {self.attention}")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.latency_s is not None:
            parts.append(f"{self.latency_s:.2f} s")
        if self.memories is not None:
            parts.append(f"{self.memories} memories")
        text.append(" │ " + " · ".join(parts))
        return text

    def show_turn_stats(self, tokens_per_s: float | None, latency_s: float | None) -> None:
        self.tokens_per_s = tokens_per_s
        self.latency_s = latency_s
