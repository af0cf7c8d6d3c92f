"""Fixtures for the terminal app: a real Memory on a SQLite file in a temp dir (the real indexes,
with the session's one MiniLM from the root conftest), and a scripted chat backend; times are fixed
so screens are reproducible."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta
from typing import Callable

import pytest

from memstream.agent.controller import MemoryAgent
from memstream.backends.scripted import ScriptedBackend
from memstream.config import Settings, load_settings
from memstream.memory import open_memory
from memstream.memory.model import NewSession, NewTurn

NOW = datetime(2024, 5, 8, 14, 0)
SEEN = datetime(2024, 4, 20, 9, 30)

SEED_TURNS = [
    ("user", "me", "I adopted a grey cat called Miso last spring; she loves the windowsill."),
    ("assistant", "assistant", "Miso is a lovely name for a cat!"),
    ("user", "me", "My sister Ana lives in Lisbon and works as a marine biologist."),
    ("user", "me", "We hiked the Rota Vicentina trail in Portugal in April."),
    ("user", "me", "I'm learning to bake sourdough bread on Sundays."),
]


@pytest.fixture
def settings(tmp_path) -> Settings:
    # kind "scripted": the status bar names the backend the tests really use. The app tests watch replies stream
    # from the backend, so no answer is read straight from memory (agent.chat_extract_kinds, tested in tests/agent).
    return load_settings(db_url=f"sqlite:///{tmp_path / 'chat.db'}", **{"backend.kind": "scripted", "agent.chat_extract_kinds": []})


def seed(settings: Settings, user: str = "me", conversation: str = "trip") -> None:
    """A small past conversation to remember, with fixed times and source ids."""
    turns = [
        NewTurn(role, text, speaker, SEEN + timedelta(minutes=i), {"source_id": f"D1:{i + 1}"})
        for i, (role, speaker, text) in enumerate(SEED_TURNS)
    ]
    with open_memory(settings, index=False) as memory:  # written before the app starts: it indexes them on open
        memory.ingest(user, [NewSession(conversation, turns, started_at=SEEN)])


@pytest.fixture
def make_app(settings, make_memory) -> Callable:
    """make_app(backend, **app_kwargs) -> a MemstreamApp whose agent uses a real Memory."""
    from memstream.tui.app import MemstreamApp

    built: list[MemoryAgent] = []

    def factory_for(backend):
        def factory(app_settings: Settings) -> MemoryAgent:
            memory = make_memory(app_settings)
            # The app is "ready" once the seeded history is embedded too, so a first question is answered
            # from the same evidence on every run (a real start answers at once, by keyword until then).
            assert memory.flush(120), "the seeded history was not embedded in time"
            agent = MemoryAgent(memory, backend, app_settings, enrich=False)
            built.append(agent)
            return agent

        return factory

    def make(backend=None, user: str = "me", conversation: str = "default", app_settings: Settings | None = None, **kwargs):
        backend = backend if backend is not None else ScriptedBackend()
        kwargs.setdefault("clock", lambda: NOW)
        return MemstreamApp(app_settings or settings, user=user, conversation=conversation, agent_factory=factory_for(backend), **kwargs)

    yield make
    for agent in built:
        agent.close()
        agent.memory.close()


async def wait_for(pilot, predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Let the app run until `predicate()` holds (workers run in threads; their messages arrive later)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.02)


async def wait_ready(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.agent is not None and not pilot.app.composer.disabled, what="the agent to load")
    await pilot.pause()


async def send(pilot, text: str) -> None:
    """Type a message into the composer and press Enter, then wait for the answer to finish."""
    app = pilot.app
    app.composer.focus()
    app.composer.insert(text)
    await pilot.press("enter")
    await wait_for(pilot, lambda: not app.generating, what="the answer")
    await pilot.pause()


class GatedBackend(ScriptedBackend):
    """A scripted backend that stops before piece `pause_at` until the test calls `release()`,
    so a test can look at a half-written answer or cancel it at a known point."""

    def __init__(self, replies, pause_at: int):
        super().__init__(replies=replies)
        self.pause_at = pause_at
        self.gate = threading.Event()
        self.paused = threading.Event()

    def release(self) -> None:
        self.gate.set()

    def stream(self, messages, **opts):
        for i, piece in enumerate(super().stream(messages, **opts)):
            if i == self.pause_at:
                self.paused.set()
                if not self.gate.wait(60):
                    raise TimeoutError("the test never released the gated backend")
            yield piece
