"""memstream chat: the terminal app.

Layout: conversations (left), the chat with streamed markdown replies (centre), the memory
inspector (right: the plan and the memories retrieved for the current answer, with time,
source and scores), a status bar and the key footer.

Everything slow runs in thread workers so the screen never freezes: loading the store, the
embedder and the model (`load_agent`), answering (`generate`, which iterates the blocking
`MemoryAgent.stream`), forgetting and switching backends. Workers post the dataclass messages
of `memstream.tui.messages`; only handlers on the event loop touch widgets.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Callable

from textual import work
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, LoadingIndicator, Static
from textual.worker import Worker, get_current_worker

from memstream.agent.controller import AgentError, MemoryAgent, Reply
from memstream.backends.base import BackendError
from memstream.config import BackendSettings, ConfigError, Settings
from memstream.memory.core import Memory, open_memory
from memstream.memory.store import DatabaseUnavailableError, StoreError, check_id, utcnow
from memstream.retrieval.errors import RetrievalError
from memstream.tui.keymap import APP_BINDINGS, MAIN_ONLY, help_sections
from memstream.tui.messages import (
    AgentFailed,
    AgentReady,
    BackendFailed,
    BackendReady,
    ConversationSelected,
    EverythingForgotten,
    ForgetRequested,
    MemoryForgotten,
    OpenMemory,
    PinRequested,
    ReplyCancelled,
    ReplyFailed,
    ReplyFinished,
    ReplyPiece,
)
from memstream.tui.screens import BackendScreen, ConfirmScreen, ErrorScreen, HelpScreen, MemoryScreen, SearchScreen, SummaryScreen
from memstream.tui.themes import DARK, LIGHT, THEMES
from memstream.tui.widgets.chat_message import AssistantMessage
from memstream.tui.widgets.chat_view import HISTORY_TURNS, ChatView
from memstream.tui.widgets.composer import Composer
from memstream.tui.widgets.conversation_list import ConversationList
from memstream.tui.widgets.inspector import MemoryInspector
from memstream.tui.widgets.memory_list import MemoryCard
from memstream.tui.widgets.status_bar import StatusBar

DB_HINT = "Check --db or MEMSTREAM_DB_URL (e.g. sqlite:///path/to/memstream.db or postgresql+psycopg://user@host/db)."
START_HINT = "Check the backend settings (--backend, --model, --base-url) and `memstream models list`."
QUIT_WAIT_S = 30.0
"""On quit, how long to wait for a stopped answer to be stored before closing the store."""


def build_agent(settings: Settings) -> MemoryAgent:
    """The memory first, so a broken database URL fails in milliseconds, before the chat model loads; then the
    model loads in a background thread: the agent is ready as soon as the memory is, its first answer waits."""
    from memstream.backends.models import make_backend

    memory = open_memory(settings)
    try:
        backend = make_backend(settings.backend, settings.attention, background=True)
    except BaseException:
        memory.close()
        raise
    return MemoryAgent(memory, backend, settings, owns_memory=True)


def describe_backend(backend: BackendSettings) -> str:
    if backend.kind == "scripted":
        return "scripted"
    label = f"{backend.kind} · {backend.model}"
    return f"{label} @ {backend.base_url}" if backend.base_url else label


def backend_choices(settings: Settings) -> list[tuple[str, str]]:
    """'default' (settings.backend) then the named extra backends (settings.backends)."""
    return [("default", describe_backend(settings.backend))] + [(name, describe_backend(b)) for name, b in settings.backends.items()]


class MemstreamApp(App[None]):
    """The chat app. `agent_factory` builds the MemoryAgent in a worker (tests pass one with a
    scripted backend); `clock` gives each turn's time (tests fix it so screens are reproducible)."""

    CSS_PATH = "styles.tcss"
    TITLE = "memstream"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]

    BINDINGS = APP_BINDINGS

    def __init__(
        self,
        settings: Settings,
        user: str = "me",
        conversation: str = "default",
        *,
        agent_factory: Callable[[Settings], MemoryAgent] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.user = check_id("user id", user)
        self.conversation = check_id("conversation id", conversation)
        self.agent_factory = agent_factory or build_agent
        self.clock = clock or utcnow
        self.agent: MemoryAgent | None = None
        self.backend_name = "default"
        self.generating = False
        self.last_answer = ""
        self.startup_error: BaseException | None = None
        self._current_reply: AssistantMessage | None = None
        self._generation: Worker | None = None
        self._loaded: list[MemoryAgent] = []
        self._idle = threading.Event()
        self._idle.set()
        self._queued: str | None = None
        """A message sent while the agent was loading; on_agent_ready answers it."""

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="sidebar"):
                yield Static("Conversations", classes="pane-title")
                yield ConversationList(id="conversations")
            with Vertical(id="centre"):
                yield Static("", id="chat-title", classes="pane-title", markup=False)
                yield ChatView(id="chat")
                yield Composer(id="composer")
            yield MemoryInspector(id="inspector")
        yield StatusBar(id="status")
        yield Footer()

    @property
    def chat(self) -> ChatView:
        return self.query_one("#chat", ChatView)

    @property
    def composer(self) -> Composer:
        return self.query_one("#composer", Composer)

    @property
    def inspector(self) -> MemoryInspector:
        return self.query_one("#inspector", MemoryInspector)

    @property
    def status(self) -> StatusBar:
        return self.query_one("#status", StatusBar)

    @property
    def conversation_list(self) -> ConversationList:
        return self.query_one("#conversations", ConversationList)

    @property
    def store(self) -> Memory:
        assert self.agent is not None, "the agent is not loaded yet"
        return self.agent.memory

    async def on_mount(self) -> None:
        for theme in THEMES:
            self.register_theme(theme)
        self.theme = DARK.name
        self.query_one("#chat-title", Static).update(f"{self.user} · {self.conversation}")
        self.status.backend = describe_backend(self.settings.backend)
        self.status.attention = self.settings.attention.policy
        self.status.state = "loading model…"
        await self.chat.mount(Static("Loading the memory store, the embedder and the chat model… type away: "
                                     "your first message is answered once they have loaded.", id="loading-text"),
                              LoadingIndicator(id="loading"))
        self.composer.focus()  # usable at once; a message sent while loading waits for the agent (see _queued)
        self.load_agent()

    # -- startup ----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="load")
    def load_agent(self) -> None:
        try:
            agent = self.agent_factory(self.settings)
        except DatabaseUnavailableError as exc:
            self.startup_error = exc
            self.post_message(AgentFailed("Cannot open the memory database", str(exc), DB_HINT))
        except (StoreError, BackendError, RetrievalError, ConfigError, OSError) as exc:
            self.startup_error = exc
            self.post_message(AgentFailed("Cannot start memstream chat", f"{type(exc).__name__}: {exc}", START_HINT))
        else:
            self._loaded.append(agent)  # closed by shutdown() even if the app is gone before it is ready
            self.post_message(AgentReady(agent))

    async def on_agent_failed(self, message: AgentFailed) -> None:
        self.status.state = "error"
        await self.push_screen(ErrorScreen(message.title, message.detail, message.hint))

    async def on_agent_ready(self, message: AgentReady) -> None:
        self.agent = message.agent
        await self.chat.query("#loading, #loading-text").remove()
        self.status.state = "ready"
        self.status.backend = self._backend_label()
        composer = self.composer
        composer.disabled = False
        composer.focus()
        await self.open_conversation(self.conversation)
        if self._queued is not None:
            text, self._queued = self._queued, None
            await self._start_answer(text)

    def _backend_label(self) -> str:
        if self.backend_name == "default":
            return describe_backend(self.settings.backend)
        return describe_backend(self.settings.backends[self.backend_name])

    # -- conversations ------------------------------------------------------------------------

    async def open_conversation(self, conversation: str) -> None:
        self.conversation = conversation
        self.query_one("#chat-title", Static).update(f"{self.user} · {conversation}")
        turns = self.store.recent_turns(self.user, conversation, HISTORY_TURNS)
        await self.chat.show_history(turns, hint=f"Conversation {conversation!r}: say something. Memories from every conversation are searched.")
        answers = [t.text for t in turns if t.role == "assistant"]
        self.last_answer = answers[-1] if answers else ""
        await self.inspector.reset("Ask something: the plan and the memories used for the answer appear here.")
        self.refresh_conversations()
        self.refresh_memory_size()

    def refresh_conversations(self) -> None:
        self.conversation_list.show(self.store.conversations(self.user), self.conversation)

    def refresh_memory_size(self) -> None:
        self.status.memories = self.store.count_turns(self.user)

    def new_conversation_id(self) -> str:
        existing = {c.conversation_id for c in self.store.conversations(self.user)} | {self.conversation}
        base = f"chat-{self.clock():%Y%m%d-%H%M%S}"
        candidate, n = base, 2
        while candidate in existing:
            candidate, n = f"{base}-{n}", n + 1
        return candidate

    async def action_new_conversation(self) -> None:
        if not self._ready_and_idle():
            return
        await self.open_conversation(self.new_conversation_id())
        self.composer.focus()

    def action_conversations(self) -> None:
        if self.focused is self.conversation_list:
            self.screen.remove_class("-show-sidebar")
            self.composer.focus()
            return
        self.screen.add_class("-show-sidebar")
        self.conversation_list.focus()

    async def on_conversation_selected(self, message: ConversationSelected) -> None:
        if not self._ready_and_idle():
            return
        self.screen.remove_class("-show-sidebar")
        if message.conversation_id != self.conversation:
            await self.open_conversation(message.conversation_id)
        self.composer.focus()

    # -- answering ------------------------------------------------------------------------------

    async def on_composer_submitted(self, message: Composer.Submitted) -> None:
        text = message.text
        if not text.strip():
            message.composer.clear()  # an empty message is ignored
            return
        if self.agent is None:
            if self._queued is not None:
                self.notify("Still loading: your first message is answered first.", severity="warning")
                return
            message.composer.clear()
            self._queued = text  # answered by on_agent_ready
            await self.chat.add_user(text)
            return
        if self.generating:
            self.notify("Still answering: Esc stops the answer.", severity="warning")
            return
        message.composer.clear()
        await self._start_answer(text)

    async def _start_answer(self, text: str) -> None:
        await self.chat.add_user(text)
        self._current_reply = await self.chat.add_assistant(state="thinking…")
        await self.inspector.pending()
        self.generating = True
        self.status.state = "thinking…"
        self.refresh_bindings()
        self._generation = self.generate(text, self.conversation)

    @work(thread=True, exclusive=True, group="generate")
    def generate(self, text: str, conversation: str) -> None:
        """Iterate the agent's blocking stream; on cancel, close it (the agent keeps what was said)."""
        worker = get_current_worker()
        self._idle.clear()
        pieces: list[str] = []
        try:
            assert self.agent is not None
            stream = self.agent.stream(text, self.user, conversation, at=self.clock())
            for item in stream:
                if isinstance(item, Reply):
                    self.post_message(ReplyFinished(item))
                    return
                # Show every piece the agent produced: on cancel it stores all of them.
                pieces.append(item)
                self.post_message(ReplyPiece(item))
                if worker.is_cancelled:
                    stream.close()
                    self.post_message(ReplyCancelled("".join(pieces).strip()))
                    return
        except AgentError as exc:
            self.post_message(ReplyFailed(str(exc), "".join(pieces).strip()))
        except (BackendError, RetrievalError, StoreError, ValueError) as exc:
            # Refused (message too long) or failed before generation (planner, index, database).
            self.post_message(ReplyFailed(f"{type(exc).__name__}: {exc}", "".join(pieces).strip()))
        finally:
            self._idle.set()

    async def on_reply_piece(self, message: ReplyPiece) -> None:
        if self._current_reply is not None:
            if not self._current_reply.text:
                self._current_reply.set_state("")
            await self._current_reply.append(message.text)
            self.chat.scroll_end(animate=False)

    async def on_reply_finished(self, message: ReplyFinished) -> None:
        reply = message.reply
        state = "(nothing stored about this: said so instead of guessing)" if reply.abstained else ""
        if self._current_reply is not None:
            await self._current_reply.finish(reply.text, state, reply.notes)
        for note in reply.notes:
            self.notify(note, title="Note", severity="warning")
        await self.inspector.show(reply.plan, reply.memories)
        generate_s = reply.timings.get("generate")
        tokens_per_s = reply.completion_tokens / generate_s if generate_s and reply.completion_tokens else None
        self.status.show_turn_stats(tokens_per_s, reply.timings.get("total"))
        self._turn_done(reply.text, "ready")

    async def on_reply_cancelled(self, message: ReplyCancelled) -> None:
        if self._current_reply is not None:
            await self._current_reply.finish(message.text, "(stopped)")
        await self.inspector.reset("The answer was stopped; what was said so far is kept.")
        self._turn_done(message.text, "stopped")

    async def on_reply_failed(self, message: ReplyFailed) -> None:
        if self._current_reply is not None:
            await self._current_reply.finish(message.partial, "(failed: see the notification)")
        await self.inspector.reset("No answer: the backend failed.")
        self.notify(message.error, title="Backend error", severity="error", timeout=10)
        self._turn_done(message.partial, "error")

    def _turn_done(self, text: str, state: str) -> None:
        if text:
            self.last_answer = text
        self.generating = False
        self._current_reply = None
        self._generation = None
        self.status.state = state
        self.refresh_bindings()
        self.refresh_conversations()
        self.refresh_memory_size()

    def action_stop(self) -> None:
        if self._generation is None:
            return
        self._generation.cancel()
        self.status.state = "stopping…"
        if self._current_reply is not None:
            self._current_reply.set_state("stopping…")

    # -- memories ---------------------------------------------------------------------------------

    def action_search(self) -> None:
        # Searching while an answer is written is fine: the retriever locks around its index.
        if self.agent is None:
            self.notify("The model is still loading.", severity="warning")
        else:
            self.push_screen(SearchScreen(self.agent.memory, self.user, now=self.clock()))

    def action_memories(self) -> None:
        self.inspector.memories.focus()

    def on_open_memory(self, message: OpenMemory) -> None:
        turn = self.store.get_turn(self.user, message.turn_id)
        if turn is None:
            self.notify(f"Memory #{message.turn_id} no longer exists.", severity="warning")
            return
        self.push_screen(MemoryScreen(turn, message.hit))

    def on_pin_requested(self, message: PinRequested) -> None:
        if not self.store.set_pinned(self.user, message.turn_id, message.pinned):
            self.notify(f"Memory #{message.turn_id} no longer exists.", severity="warning")
            return
        for screen in self.screen_stack:
            for card in screen.query(MemoryCard):
                if card.turn.id == message.turn_id:
                    card.set_pinned(message.pinned)
            if isinstance(screen, MemoryScreen) and screen.turn.id == message.turn_id:
                screen.set_pinned(message.pinned)
        self.notify(f"{'Pinned' if message.pinned else 'Unpinned'} memory #{message.turn_id}.")

    def on_forget_requested(self, message: ForgetRequested) -> None:
        if self._ready_and_idle():
            self.forget_memory(message.turn_id)

    @work(thread=True, exclusive=True, group="memory")
    def forget_memory(self, turn_id: int) -> None:
        assert self.agent is not None
        self.agent.memory.delete_turn(self.user, turn_id)  # the index drops it too: it can never be retrieved again
        self.post_message(MemoryForgotten(turn_id))

    async def on_memory_forgotten(self, message: MemoryForgotten) -> None:
        for screen in self.screen_stack:
            for card in screen.query(MemoryCard):
                if card.turn.id == message.turn_id:
                    await card.remove()
        self.refresh_memory_size()
        self.refresh_conversations()
        self.notify(f"Forgot memory #{message.turn_id}.")

    def action_forget_everything(self) -> None:
        if not self._ready_and_idle():
            return
        stats = self.store.stats(self.user)
        question = (
            f"Delete every memory of user {self.user!r}: {stats['turns']} turns in {stats['conversations']} "
            "conversation(s), their sessions and facts. This cannot be undone."
        )

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.forget_everything()
            else:
                self.notify("Nothing was deleted.")

        self.push_screen(ConfirmScreen(question, "Forget everything"), confirmed)

    @work(thread=True, exclusive=True, group="memory")
    def forget_everything(self) -> None:
        assert self.agent is not None
        counts = self.agent.memory.forget_user(self.user)
        self.post_message(EverythingForgotten(counts))

    async def on_everything_forgotten(self, message: EverythingForgotten) -> None:
        await self.open_conversation(self.conversation)
        self.last_answer = ""
        self.notify(f"Forgot everything about {self.user}: {message.counts.get('turns', 0)} turns.")

    # -- the rest ---------------------------------------------------------------------------------

    def action_summary(self) -> None:
        if self.agent is None:
            self.notify("The model is still loading.", severity="warning")
            return
        sessions = self.store.sessions(self.user, self.conversation)
        if not sessions:
            body = "This conversation has no sessions yet: say something first."
        else:
            parts = []
            for session in reversed(sessions):
                started = f" · started {session.started_at:%Y-%m-%d %H:%M}" if session.started_at else ""
                summary = session.summary or "_No summary yet: summaries are written in the background as the conversation grows._"
                parts.append(f"### Session {session.id}{started}\n\n{summary}")
            body = "\n\n".join(parts)
        self.push_screen(SummaryScreen(f"Sessions of {self.conversation}", body))

    def action_copy_answer(self) -> None:
        if not self.last_answer:
            self.notify("No answer to copy yet.", severity="warning")
            return
        self.copy_to_clipboard(self.last_answer)
        self.notify(f"Copied the last answer ({len(self.last_answer)} characters).")

    def action_backend(self) -> None:
        if not self._ready_and_idle():
            return

        def chosen(name: str | None) -> None:
            if name and name != self.backend_name:
                self.status.state = f"loading {name}…"
                self.switch_backend(name)

        self.push_screen(BackendScreen(backend_choices(self.settings), self.backend_name), chosen)

    @work(thread=True, exclusive=True, group="backend")
    def switch_backend(self, name: str) -> None:
        from memstream.backends.models import make_backend

        backend_settings = self.settings.backend if name == "default" else self.settings.backends[name]
        try:
            backend = make_backend(backend_settings, self.settings.attention)
        except BackendError as exc:
            self.post_message(BackendFailed(name, str(exc)))
        else:
            self.post_message(BackendReady(name, backend))

    def on_backend_ready(self, message: BackendReady) -> None:
        assert self.agent is not None
        self.agent.backend = message.backend
        self.backend_name = message.name
        self.status.backend = self._backend_label()
        self.status.show_turn_stats(None, None)
        self.status.state = "ready"
        self.notify(f"Now answering with {message.name}: {self.status.backend}.")

    def on_backend_failed(self, message: BackendFailed) -> None:
        self.status.state = "ready"
        self.notify(f"Cannot switch to {message.name}: {message.error}", title="Backend error", severity="error", timeout=10)

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT.name if self.theme == DARK.name else DARK.name

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_sections(self.BINDINGS, self.get_key_display)))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MAIN_ONLY and len(self.screen_stack) > 1:
            return False
        if action == "stop":
            return self.generating
        return True

    def _ready_and_idle(self) -> bool:
        if self.agent is None:
            self.notify("The model is still loading.", severity="warning")
            return False
        if self.generating:
            self.notify("Still answering: Esc stops the answer first.", severity="warning")
            return False
        return True

    # -- shutdown ---------------------------------------------------------------------------------

    async def action_quit(self) -> None:
        if self._generation is not None:
            self._generation.cancel()  # the worker closes the stream; the agent stores what was said
        self.exit()

    def shutdown(self, wait_s: float = QUIT_WAIT_S) -> None:
        """After `run()`: wait for a stopped answer to be stored, then close the agents and stores."""
        if self._generation is not None:
            self._generation.cancel()
        self._idle.wait(wait_s)
        for agent in self._loaded:
            agent.close()
            agent.memory.close()  # drains the indexer and saves the index cache, so the next start does not re-embed


def run_app(settings: Settings, user: str = "me", conversation: str = "default") -> None:
    """Run the terminal app until the user quits (Ctrl+Q). A startup failure the user must fix
    (broken database URL, missing model) is shown on an error screen, then re-raised so the
    command exits with its one-line message."""
    app = MemstreamApp(settings, user=user, conversation=conversation)
    try:
        app.run()
    finally:
        app.shutdown()
    if app.startup_error is not None:
        raise app.startup_error
