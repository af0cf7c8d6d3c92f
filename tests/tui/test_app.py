"""Pilot tests of memstream chat: a real SQLite store and the real retriever/index, with a
scripted chat backend. Each test drives the app by keys, then checks the screen and the rows."""

from __future__ import annotations

from textual import events

from memstream.backends.scripted import ScriptedBackend
from memstream.config import BackendSettings, load_settings
from memstream.memory import open_memory
from memstream.memory.store import DatabaseUnavailableError
from memstream.tui.screens import BackendScreen, ConfirmScreen, ErrorScreen, HelpScreen, MemoryScreen, SearchScreen, SummaryScreen
from memstream.tui.widgets.chat_message import AssistantMessage, UserMessage
from memstream.tui.widgets.memory_list import MemoryList
from tests.tui.conftest import GatedBackend, send, seed, wait_for, wait_ready

CAT_ANSWER = "Your cat is called **Miso**, a grey cat who loves the windowsill."


def stored(settings):
    """The app's database opened beside it for its rows only (no model, no index)."""
    return open_memory(settings, index=False)


def rows(settings, user: str = "me", conversation: str | None = None):
    with stored(settings) as memory:
        return memory.list_turns(user, conversation)


def notifications(app, severity: str | None = None) -> list[str]:
    return [n.message for n in app._notifications if severity is None or n.severity == severity]


def static_text(widget) -> str:
    return str(widget.render())


async def test_reply_streams_and_inspector_shows_retrieved_memories(settings, make_app):
    seed(settings)
    backend = GatedBackend([CAT_ANSWER], pause_at=9)
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(pilot)
        await pilot.press(*"What is my cat called?")
        await pilot.press("enter")
        # Half-way: the first pieces are on screen while the backend is still "generating".
        await wait_for(pilot, lambda: backend.paused.is_set() and "Miso" in (app.query(AssistantMessage).last().text), what="partial reply")
        partial = app.query(AssistantMessage).last().text
        assert app.generating and partial.startswith("Your cat is") and partial != CAT_ANSWER
        backend.release()
        await wait_for(pilot, lambda: not app.generating, what="the end of the reply")
        await pilot.pause()

        assert app.query(AssistantMessage).last().text == CAT_ANSWER
        assert [m.text for m in app.query(UserMessage)] == ["What is my cat called?"]
        plan = static_text(app.inspector.query_one("#plan"))
        assert "memory: needed" in plan and "query: What is my cat called?" in plan
        cards = app.inspector.memories.cards
        assert cards, "the inspector lists the retrieved memories"
        top = cards[0]
        assert "grey cat called Miso" in top.turn.text or "Miso" in top.turn.text
        head = static_text(top.query_one(".head"))
        assert "2024-04-20" in head and "D1:" in head
        assert "fused" in static_text(top.query_one(".scores"))
        assert app.status.memories == 7 and app.status.state == "ready"

    stored = rows(settings, conversation="default")
    assert [(t.role, t.text) for t in stored] == [("user", "What is my cat called?"), ("assistant", CAT_ANSWER)]


async def test_empty_message_is_ignored(settings, make_app):
    backend = ScriptedBackend()
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_ready(pilot)
        await pilot.press("enter")
        await pilot.press("space", "space", "enter")
        await pilot.pause(0.2)
        assert not app.generating
        assert not app.query(UserMessage)
        assert app.composer.text == ""
    assert backend.calls == []
    assert rows(settings) == []


async def test_pasted_100kb_message_is_stored_whole_and_truncated_for_the_model(settings, make_app):
    backend = ScriptedBackend(replies=["That is a long text about memory."])
    app = make_app(backend)
    pasted = "\n".join(f"line {i}: remember the lighthouse keeper's notebook" for i in range(2000))
    assert len(pasted) >= 100_000
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(pilot)
        app.post_message(events.Paste(pasted))  # as the terminal driver does; the app hands it to the focused box
        await wait_for(pilot, lambda: len(app.composer.text) == len(pasted), what="the paste")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.generating and app.query(AssistantMessage), what="the reply")
        await pilot.pause()
        reply = app.query(AssistantMessage).last()
        notes = [static_text(n) for n in reply.query(".note")]
        assert notes and "note:" in notes[0]
        assert any("characters" in n for n in notifications(app, "warning"))
        shown = app.query(UserMessage).last()
        assert shown.text == pasted and "stored whole" in static_text(shown)
    user_turn = rows(settings)[0]
    assert user_turn.role == "user" and user_turn.text == pasted
    sent = backend.calls[0][-1]["content"]
    assert len(sent) < len(pasted)


async def test_backend_error_is_a_notification_and_the_app_keeps_working(settings, make_app):
    backend = ScriptedBackend(replies=["this reply breaks after three pieces"], fail_after=3)
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(pilot)
        await send(pilot, "hello there")
        errors = notifications(app, "error")
        assert errors and "backend failed" in errors[0]
        assert "(failed" in static_text(app.query(AssistantMessage).last().query_one(".state"))
        assert app.status.state == "error"

        backend.fail_after = None
        backend.enqueue("Working again.")
        await send(pilot, "are you back?")
        assert app.query(AssistantMessage).last().text == "Working again."
        assert app.status.state == "ready"
    texts = [t.text for t in rows(settings)]
    assert texts[0] == "hello there"  # the failed turn's question was kept
    assert texts[-2:] == ["are you back?", "Working again."]


async def _cancel_with(key: str, settings, make_app) -> list:
    """Cancel a streaming answer with `key`; checks the screen on the way and returns the stored rows."""
    backend = GatedBackend(["one two three four five six seven"], pause_at=4)
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(pilot)
        app.composer.insert("count for me")
        await pilot.press("enter")
        await wait_for(pilot, lambda: backend.paused.is_set() and app.query(AssistantMessage).last().text == "one two ", what="partial reply")
        await pilot.press(key)
        assert app.status.state == "stopping…"
        backend.release()  # the next piece arrives, the worker sees the cancel and closes the stream
        await wait_for(pilot, lambda: not app.generating, what="the cancel")
        await pilot.pause()
        message = app.query(AssistantMessage).last()
        assert message.text == "one two three"  # the piece that was in flight when Esc came is kept too
        assert static_text(message.query_one(".state")) == "(stopped)"
        assert app.status.state == "stopped"
        # The app answers again after a cancel.
        backend.gate.set()
        backend.enqueue("fine")
        await send(pilot, "again")
        assert app.query(AssistantMessage).last().text == "fine"
    return rows(settings)


async def test_escape_cancels_generation_and_keeps_what_was_said(settings, make_app):
    stored = await _cancel_with("escape", settings, make_app)
    assert (stored[1].role, stored[1].text, stored[1].metadata.get("cancelled")) == ("assistant", "one two three", True)


async def test_ctrl_c_cancels_generation(settings, make_app):
    stored = await _cancel_with("ctrl+c", settings, make_app)
    assert [(t.role, t.text) for t in stored][:2] == [("user", "count for me"), ("assistant", "one two three")]


async def test_search_modal_finds_memories_and_opens_one(settings, make_app):
    seed(settings)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(pilot)
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen), what="the search modal")
        await pilot.press(*"where does my sister live")
        await pilot.press("enter")
        results = app.screen.query_one(MemoryList)
        await wait_for(pilot, lambda: bool(results.cards), what="search results")
        assert "Ana lives in Lisbon" in results.cards[0].turn.text
        assert "result(s)" in static_text(app.screen.query_one("#search-status"))
        await pilot.press("enter")  # the results have focus: open the first one
        await wait_for(pilot, lambda: isinstance(app.screen, MemoryScreen), what="the memory screen")
        assert "Ana lives in Lisbon" in static_text(app.screen.query_one("#memory-text"))
        assert "D1:3" in static_text(app.screen.query_one("#memory-details"))
        await pilot.press("escape")
        assert isinstance(app.screen, SearchScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, SearchScreen)


async def test_pin_and_unpin_a_memory_from_the_inspector(settings, make_app):
    seed(settings)
    app = make_app(ScriptedBackend(replies=[CAT_ANSWER]))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(pilot)
        await send(pilot, "What is my cat called?")
        await pilot.press("ctrl+g")
        card = app.inspector.memories.current
        assert card is not None and app.focused is app.inspector.memories
        turn_id = card.turn.id
        await pilot.press("p")
        await pilot.pause()
        with stored(settings) as memory:
            assert memory.get_turn("me", turn_id).pinned
        assert "pinned" in static_text(card.query_one(".head")) and card.has_class("-pinned")
        await pilot.press("p")
        await pilot.pause()
        with stored(settings) as memory:
            assert not memory.get_turn("me", turn_id).pinned
        assert not card.has_class("-pinned")


async def test_forget_a_memory_removes_it_from_store_index_and_screen(settings, make_app):
    seed(settings)
    app = make_app(ScriptedBackend(replies=[CAT_ANSWER]))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(pilot)
        await send(pilot, "What is my cat called?")
        await pilot.press("ctrl+g")
        turn_id = app.inspector.memories.current.turn.id
        before = len(app.inspector.memories.cards)
        await pilot.press("d")
        await wait_for(pilot, lambda: len(app.inspector.memories.cards) == before - 1, what="the card to go")
        assert turn_id not in [c.turn.id for c in app.inspector.memories.cards]
        hits = app.agent.memory.search("me", "grey cat Miso windowsill", k=20).hits
        assert turn_id not in [h.turn.id for h in hits]
        assert any(f"#{turn_id}" in n for n in notifications(app))
    with stored(settings) as memory:
        assert memory.get_turn("me", turn_id) is None


async def test_forget_everything_asks_first(settings, make_app):
    seed(settings)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(pilot)
        await pilot.press("f8")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        assert "5 turns" in static_text(app.screen.query_one("#question"))
        await pilot.press("n")
        await pilot.pause()
        assert len(rows(settings)) == 5

        await pilot.press("f8")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: app.status.memories == 0, what="the forget")
        assert app.conversation_list.ids == ["default"]
        assert app.agent.retriever.indexed_turns("me") == 0
    assert rows(settings) == []


async def test_new_conversation_and_switching(settings, make_app):
    seed(settings)
    app = make_app(ScriptedBackend(replies=["Noted."]))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(pilot)
        assert app.conversation_list.ids == ["default", "trip"] or app.conversation_list.ids == ["trip", "default"]
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.conversation == "chat-20240508-140000"
        assert "chat-20240508-140000" in app.conversation_list.ids
        await send(pilot, "a new topic")
        assert [t.text for t in rows(settings, conversation="chat-20240508-140000")] == ["a new topic", "Noted."]

        # Switch to the old conversation with the keyboard: Ctrl+O, move to "trip", Enter.
        await pilot.press("ctrl+o")
        assert app.focused is app.conversation_list
        target = app.conversation_list.ids.index("trip")
        while app.conversation_list.highlighted != target:
            await pilot.press("down" if app.conversation_list.highlighted < target else "up")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.conversation == "trip", what="the switch")
        await pilot.pause()
        assert len(app.query(UserMessage)) == 4 and len(app.query(AssistantMessage)) == 1
        assert app.focused is app.composer


async def test_narrow_screen_hides_conversations_until_asked(settings, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_ready(pilot)
        sidebar = app.query_one("#sidebar")
        assert not sidebar.display or sidebar.region.width == 0
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert sidebar.region.width > 0
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert sidebar.region.width == 0


async def test_help_screen_lists_the_keys(settings, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_ready(pilot)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.keys_text()
        for expected in ("Search memory", "Ctrl+F", "Forget everything", "F8", "Quit", "Ctrl+Q", "pin / unpin"):
            assert expected in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        # "?" types into the message box, and opens help from anywhere else.
        await pilot.press("question_mark")
        assert app.composer.text == "?" and not isinstance(app.screen, HelpScreen)
        await pilot.press("ctrl+g", "question_mark")
        assert isinstance(app.screen, HelpScreen)


async def test_session_summary(settings, make_app):
    seed(settings)
    with stored(settings) as memory:
        session = memory.sessions("me", "trip")[0]
        memory.set_session_summary("me", session.id, "Talked about Miso the cat, Ana in Lisbon and a hike in Portugal.")
    app = make_app(conversation="trip")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(pilot)
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, SummaryScreen)
        markdown = app.screen.query_one("#summary").source
        assert "Ana in Lisbon" in markdown and f"Session {session.id}" in markdown


async def test_copy_last_answer(settings, make_app):
    app = make_app(ScriptedBackend(replies=["The **answer** to copy."]))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_ready(pilot)
        await pilot.press("ctrl+y")
        assert any("No answer" in n for n in notifications(app, "warning"))
        await send(pilot, "say something")
        await pilot.press("ctrl+y")
        assert app.clipboard == "The **answer** to copy."


async def test_change_backend_from_the_configured_ones(tmp_path, embedders, make_app):
    settings = load_settings(
        db_url=f"sqlite:///{tmp_path / 'other.db'}",
        **{"backend.kind": "scripted", "backends": {"echo": BackendSettings(kind="scripted", model="echo").model_dump()}},
    )
    first = ScriptedBackend(replies=["from the first backend"])
    app = make_app(first, app_settings=settings)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(pilot)
        await pilot.press("ctrl+b")
        assert isinstance(app.screen, BackendScreen)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: app.backend_name == "echo", what="the switch")
        assert app.agent.backend is not first
        await send(pilot, "ping")
        assert app.query(AssistantMessage).last().text == "OK: ping"  # the new scripted backend echoes
        assert first.calls == []


async def test_theme_switches_between_dark_and_light(settings, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_ready(pilot)
        assert app.theme == "memstream-dark"
        await pilot.press("ctrl+t")
        assert app.theme == "memstream-light"
        await pilot.press("ctrl+t")
        assert app.theme == "memstream-dark"


async def test_model_loading_shows_progress_and_keeps_the_ui_responsive(settings, make_app):
    import threading

    release = threading.Event()
    app = make_app()
    real_factory = app.agent_factory

    def slow_factory(app_settings):
        release.wait(60)
        return real_factory(app_settings)

    app.agent_factory = slow_factory
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.1)
        assert app.status.state == "loading model…" and not app.composer.disabled  # typing works while it loads
        assert app.query("#loading")
        await pilot.press("f1")  # the UI answers keys while the model loads
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        release.set()
        await wait_ready(pilot)
        assert app.status.state == "ready" and not app.query("#loading")


async def test_broken_database_url_shows_an_error_screen(tmp_path):
    from memstream.tui.app import MemstreamApp

    broken = load_settings(db_url=f"sqlite:///{tmp_path / 'missing-dir' / 'deeper' / 'chat.db'}")
    app = MemstreamApp(broken)  # the real startup path: the store fails before any model loads
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen) and bool(app.screen.query(".dialog-title")), what="the error screen")
        assert "Cannot open the memory database" in static_text(app.screen.query_one(".dialog-title"))
        assert "cannot open database" in static_text(app.screen.query_one("#error-detail"))
        await pilot.press("q")
    assert isinstance(app.startup_error, DatabaseUnavailableError)
    assert app.return_code == 0 or app.return_code is None
