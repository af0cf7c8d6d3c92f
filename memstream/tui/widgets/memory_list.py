"""A list of memories (retrieval hits or stored turns): the inspector and the search modal both use it.

Keys on a highlighted memory: Enter opens it, p pins or unpins, d (or Delete) forgets it.
The list only asks (PinRequested, ForgetRequested, OpenMemory); the app does the work.
"""

from __future__ import annotations

from typing import Any, Sequence

from rich.text import Text
from textual.binding import Binding
from textual.widgets import ListItem, ListView, Static

from memstream.tui.messages import ForgetRequested, OpenMemory, PinRequested

TIME_FORMAT = "%Y-%m-%d %H:%M"


def _score(value: Any, digits: int = 3) -> str | None:
    if value is None:
        return None
    return f"{float(value):.{digits}f}"


def score_line(hit: Any) -> str:
    """'fused 0.033 · dense 0.612 · bm25 4.210 · via turn' (parts the hit does not have are left out)."""
    if hit is None:
        return ""
    parts = []
    for label, name, digits in (("fused", "fused_score", 4), ("dense", "dense_score", 2), ("bm25", "lexical_score", 2)):
        value = _score(getattr(hit, name, None), digits)
        if value is not None:
            parts.append(f"{label} {value}")
    via = getattr(hit, "matched_via", None)
    if via:
        parts.append(f"via {via}")
    return " · ".join(parts)


def header_line(turn: Any, hit: Any = None) -> str:
    source = (getattr(hit, "source_id", None) if hit is not None else None) or turn.source_id
    parts = [f"#{turn.id}", turn.event_time.strftime(TIME_FORMAT), turn.speaker or turn.role]
    if source:
        parts.append(str(source))
    if turn.conversation_id:
        parts.append(turn.conversation_id)
    return " · ".join(parts)


class MemoryCard(ListItem):
    DEFAULT_CSS = """
    MemoryCard {
        padding: 0 1;
        margin-bottom: 1;
        height: auto;
    }
    MemoryCard .head { color: $text-muted; }
    MemoryCard .scores { color: $accent; }
    MemoryCard.-pinned .head { color: $warning; text-style: bold; }
    """

    def __init__(self, turn: Any, hit: Any = None, max_chars: int = 240) -> None:
        super().__init__()
        self.turn = turn
        self.hit = hit
        self.max_chars = max_chars
        self.set_class(bool(turn.pinned), "-pinned")

    def compose(self):
        yield Static(self._head(), classes="head", markup=False)
        text = self.turn.text if len(self.turn.text) <= self.max_chars else self.turn.text[: self.max_chars] + "…"
        yield Static(Text(text), classes="text")
        scores = score_line(self.hit)
        if scores:
            yield Static(scores, classes="scores", markup=False)

    def _head(self) -> str:
        head = header_line(self.turn, self.hit)
        return f"{head} · pinned" if self.turn.pinned else head

    def set_pinned(self, pinned: bool) -> None:
        self.turn.pinned = pinned
        self.set_class(pinned, "-pinned")
        if self.is_mounted:
            self.query_one(".head", Static).update(self._head())


class MemoryList(ListView):
    DEFAULT_CSS = """
    MemoryList {
        height: 1fr;
        background: transparent;
    }
    """

    BINDINGS = [
        Binding("p", "pin", "Pin/unpin"),
        Binding("d,delete", "forget", "Forget"),
    ]

    async def show(self, hits: Sequence[Any]) -> None:
        """Retrieval hits (each with .turn and scores)."""
        await self.clear()
        await self.extend([MemoryCard(hit.turn, hit) for hit in hits])
        if hits:
            self.index = 0

    @property
    def cards(self) -> list[MemoryCard]:
        return list(self.query(MemoryCard))

    @property
    def current(self) -> MemoryCard | None:
        item = self.highlighted_child
        return item if isinstance(item, MemoryCard) else None

    def action_pin(self) -> None:
        card = self.current
        if card is not None:
            self.post_message(PinRequested(card.turn.id, not card.turn.pinned))

    def action_forget(self) -> None:
        card = self.current
        if card is not None:
            self.post_message(ForgetRequested(card.turn.id))

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, MemoryCard):
            self.post_message(OpenMemory(event.item.turn.id, event.item.hit))
