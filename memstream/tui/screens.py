"""The app's screens besides the main one: help, memory search, one memory, confirmation,
session summary, backend choice, and the startup error screen."""

from __future__ import annotations

from typing import Any, Sequence

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Input, Markdown, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from memstream.memory.store import StoreError, UnknownUserError
from memstream.retrieval.errors import RetrievalError
from memstream.tui.messages import ForgetRequested, PinRequested, SearchResults
from memstream.tui.widgets.memory_list import TIME_FORMAT, MemoryList, header_line, score_line

SEARCH_RESULTS = 20


class HelpScreen(ModalScreen[None]):
    """Every key, grouped by where it works."""

    BINDINGS = [Binding("escape,q,f1,question_mark", "dismiss", "Close")]

    def __init__(self, sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        key_width = max(len(key) for _, keys in self.sections for key, _ in keys) + 2
        with Vertical(classes="dialog"):
            yield Static("memstream chat: keys", classes="dialog-title")
            with VerticalScroll(id="help-table"):
                for title, keys in self.sections:
                    yield Static(title, classes="help-section", markup=False)
                    for key, description in keys:
                        with Horizontal(classes="help-row"):
                            yield Static(key, classes="help-key", markup=False).set_styles(f"width: {key_width};")
                            yield Static(description, classes="help-description", markup=False)
            yield Static("Esc closes this screen.", classes="hint")

    def keys_text(self) -> str:
        """What the screen lists, as plain lines (for tests and docs)."""
        lines = []
        for row in self.query(".help-row"):
            key, description = (str(w.render()) for w in row.query(Static))
            lines.append(f"{key}  {description}")
        return "\n".join(lines)


class SearchScreen(ModalScreen[None]):
    """Search the user's whole memory (hybrid, time-aware); Enter on a result opens it."""

    BINDINGS = [Binding("escape", "dismiss", "Close")]

    def __init__(self, memory: Any, user: str, now: Any, query: str = "") -> None:
        super().__init__()
        self.memory = memory
        self.user = user
        self.now = now
        self.initial_query = query

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Search memory", classes="dialog-title")
            yield Input(self.initial_query, placeholder="what to look for, e.g. 'the trip in May'", id="search-input")
            yield Static("Type a query and press Enter.", id="search-status", classes="hint", markup=False)
            yield MemoryList(id="search-results")
            yield Static("Enter open · p pin · d forget · Tab to the results · Esc close", classes="hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted, "#search-input")
    def _submitted(self, event: Input.Submitted) -> None:
        query = event.value.strip()
        if not query:
            return
        self.query_one("#search-status", Static).update(f"searching for {query!r}…")
        self.search(query)

    @work(thread=True, exclusive=True, group="search")
    def search(self, query: str) -> None:
        try:
            result = self.memory.search(self.user, query, k=SEARCH_RESULTS, now=self.now)
        except UnknownUserError:
            self.post_message(SearchResults(query, [], None, error="Nothing is stored for this user yet."))
            return
        except (RetrievalError, StoreError) as exc:
            self.post_message(SearchResults(query, [], None, error=f"Search failed: {exc}"))
            return
        if not get_current_worker().is_cancelled:
            self.post_message(SearchResults(query, list(result.hits), result.time_window))

    async def on_search_results(self, message: SearchResults) -> None:
        if message.error:
            self.query_one("#search-status", Static).update(message.error)
            await self.query_one(MemoryList).clear()
            return
        status = f"{len(message.hits)} result(s) for {message.query!r}"
        window = message.time_window
        if window is not None:
            status += f" · time {window.start:{TIME_FORMAT}} → {window.end:{TIME_FORMAT}}"
        self.query_one("#search-status", Static).update(status)
        results = self.query_one(MemoryList)
        await results.show(message.hits)
        if message.hits:
            results.focus()


class MemoryScreen(ModalScreen[None]):
    """One memory in full: text, when, where from, scores; pin or forget it here."""

    BINDINGS = [
        Binding("escape,q", "dismiss", "Close"),
        Binding("p", "pin", "Pin/unpin"),
        Binding("d,delete", "forget", "Forget"),
    ]

    def __init__(self, turn: Any, hit: Any = None) -> None:
        super().__init__()
        self.turn = turn
        self.hit = hit

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Memory #{self.turn.id}", classes="dialog-title")
            yield Static(self._details(), id="memory-details", markup=False)
            with VerticalScroll(id="memory-body"):
                yield Static(Text(self.turn.text), id="memory-text")
            yield Static("p pin/unpin · d forget · Esc close", classes="hint")

    def _details(self) -> str:
        lines = [header_line(self.turn, self.hit)]
        session = f"session {self.turn.session_id}" if self.turn.session_id is not None else "no session"
        lines.append(f"{session} · stored {self.turn.ingested_at:{TIME_FORMAT}} · {'pinned' if self.turn.pinned else 'not pinned'}")
        scores = score_line(self.hit)
        if scores:
            lines.append(scores)
        return "\n".join(lines)

    def set_pinned(self, pinned: bool) -> None:
        self.turn.pinned = pinned
        self.query_one("#memory-details", Static).update(self._details())

    def action_pin(self) -> None:
        self.post_message(PinRequested(self.turn.id, not self.turn.pinned))

    def action_forget(self) -> None:
        self.post_message(ForgetRequested(self.turn.id))
        self.dismiss()


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; dismisses with True only on an explicit yes."""

    BINDINGS = [Binding("escape,n", "no", "No"), Binding("y", "yes", "Yes")]

    def __init__(self, question: str, yes_label: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes_label = yes_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog small"):
            yield Static("Are you sure?", classes="dialog-title")
            yield Static(self.question, id="question", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Cancel (n)", id="no")
                yield Button(f"{self.yes_label} (y)", id="yes", variant="error")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)


class SummaryScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, title: str, markdown: str) -> None:
        super().__init__()
        self.title_text = title
        self.markdown = markdown

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="dialog-title", markup=False)
            with VerticalScroll():
                yield Markdown(self.markdown, id="summary")
            yield Static("Esc closes.", classes="hint")


class BackendScreen(ModalScreen["str | None"]):
    """Pick one of the configured backends (settings `backend` and `backends.<name>`)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, choices: Sequence[tuple[str, str]], current: str) -> None:
        super().__init__()
        self.choices = choices
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog small"):
            yield Static("Backend / model", classes="dialog-title")
            options = []
            for name, label in self.choices:
                marker = " (in use)" if name == self.current else ""
                options.append(Option(Text(f"{name}{marker}\n", style="bold").append(label, style="dim"), id=name))
            yield OptionList(*options, id="backends")
            yield Static("More backends: add [backends.<name>] sections to memstream.toml. Enter picks, Esc cancels.", classes="hint", markup=False)

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ErrorScreen(Screen[None]):
    """Startup failed for a reason the user must fix: say what and how, then quit on a key."""

    BINDINGS = [Binding("q,escape,enter", "app.quit", "Quit")]

    def __init__(self, title: str, detail: str, hint: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.detail = detail
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog small"):
            yield Static(self.title_text, classes="dialog-title", markup=False)
            yield Static(self.detail, id="error-detail", markup=False)
            if self.hint:
                yield Static("\n" + self.hint, id="error-hint", markup=False)
            yield Static("\nPress q to quit.", classes="hint")
