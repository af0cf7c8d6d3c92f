"""Write docs/screenshot.svg: the app after one answer, inspector filled (same fixed data as the tests).

Run from the repository root: python -m tests.tui.screenshot docs/screenshot.svg
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from memstream.agent.controller import MemoryAgent
from memstream.backends.scripted import ScriptedBackend
from memstream.config import load_settings
from memstream.memory import open_memory
from tests.tui.conftest import NOW, seed, send, wait_ready

ANSWER = (
    "Your sister **Ana** lives in **Lisbon**, where she works as a *marine biologist*.\n\n"
    "You told me on 20 April 2024, in the `trip` conversation, together with:\n\n"
    "- the hike on the **Rota Vicentina** trail\n"
    "- Miso, your grey cat"
)


async def capture(target: Path) -> None:
    from memstream.tui.app import MemstreamApp

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MEMSTREAM_HOME"] = str(Path(tmp) / "home")
        settings = load_settings(db_url=f"sqlite:///{Path(tmp) / 'chat.db'}", **{"backend.kind": "scripted"})
        seed(settings)
        backend = ScriptedBackend(replies=["Hi! What would you like to remember today?", ANSWER])

        def factory(app_settings):
            memory = open_memory(app_settings)
            memory.flush(120)  # the seeded history embedded, as in the tests: the same evidence every run
            return MemoryAgent(memory, backend, app_settings, enrich=False, owns_memory=True)

        app = MemstreamApp(settings, user="me", conversation="default", agent_factory=factory, clock=lambda: NOW)
        async with app.run_test(size=(130, 36)) as pilot:
            await wait_ready(pilot)
            await send(pilot, "Hi there")
            await send(pilot, "Where does my sister Ana live and what is her job?")
            app.composer.cursor_blink = False
            app.status.show_turn_stats(38.5, 1.42)
            await pilot.pause(0.3)
            app.save_screenshot(filename=target.name, path=str(target.parent))
            app.exit()


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot.svg").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(capture(out))
    print(f"wrote {out}")
