"""Fast start: the app takes input before the memory and the model are loaded, and answers what was typed
meanwhile once they are; the model itself may still be loading (BackgroundBackend) when the agent is ready."""

from __future__ import annotations

import threading

from memstream.agent.controller import MemoryAgent
from memstream.backends.background import BackgroundBackend
from memstream.backends.scripted import ScriptedBackend
from memstream.memory import open_memory
from memstream.tui.app import MemstreamApp
from memstream.tui.widgets.chat_message import UserMessage
from tests.small_embedder import HashingEmbedder
from tests.tui.conftest import NOW, wait_for


async def test_a_message_typed_while_loading_is_answered_once_the_model_is_ready(settings):
    memory_gate, model_gate = threading.Event(), threading.Event()
    backend = BackgroundBackend("slow-model", lambda: (model_gate.wait(60), ScriptedBackend(replies=["Hello from the model."]))[1])
    built: list[MemoryAgent] = []

    def factory(app_settings):
        memory_gate.wait(60)  # the memory (embedder, index) is still opening
        agent = MemoryAgent(open_memory(app_settings, HashingEmbedder()), backend, app_settings, enrich=False, owns_memory=True)
        built.append(agent)
        return agent

    app = MemstreamApp(settings, agent_factory=factory, clock=lambda: NOW)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.1)
            assert app.agent is None and not app.composer.disabled and app.focused is app.composer
            app.composer.insert("Are you there?")
            await pilot.press("enter")
            assert [m.text for m in app.query(UserMessage)] == ["Are you there?"] and app.composer.text == ""
            app.composer.insert("And another?")
            await pilot.press("enter")
            assert app.composer.text == "And another?"  # one waiting message at a time: the second stays typed

            memory_gate.set()  # memory ready, model not yet: the queued message is sent and waits for the model
            await wait_for(pilot, lambda: app.agent is not None and app.generating, what="the queued message to start")
            assert not backend.ready
            model_gate.set()
            await wait_for(pilot, lambda: not app.generating, what="the answer")
            await pilot.pause()
            assert app.last_answer == "Hello from the model."
            assert [m.text for m in app.query(UserMessage)] == ["Are you there?"]
        turns = built[0].memory.list_turns("me")
        assert [(t.role, t.text) for t in turns] == [("user", "Are you there?"), ("assistant", "Hello from the model.")]
    finally:
        memory_gate.set()
        model_gate.set()
