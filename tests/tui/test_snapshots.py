"""Snapshot tests (pytest-textual-snapshot) of the main screen, the search modal and the help
screen at 80x24 and 120x40. Fixed clock, fresh database (fixed ids), fixed status numbers:
the same screen every run. Update with `pytest tests/tui --snapshot-update` and review the SVGs."""

from __future__ import annotations

import pytest

from memstream.backends.scripted import ScriptedBackend
from tests.tui.conftest import send, seed, wait_for, wait_ready
from tests.tui.test_app import CAT_ANSWER

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


async def settle(pilot) -> None:
    """Freeze what moves: the cursor blink and the per-answer speed (the time taken varies)."""
    app = pilot.app
    app.composer.cursor_blink = False
    app.status.show_turn_stats(42.0, 1.25)
    await pilot.pause()


async def answered(pilot) -> None:
    await wait_ready(pilot)
    await send(pilot, "What is my cat called?")
    await settle(pilot)


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(size, settings, make_app, snap_compare):
    seed(settings)
    app = make_app(ScriptedBackend(replies=[CAT_ANSWER]))
    assert snap_compare(app, terminal_size=size, run_before=answered)


@pytest.mark.parametrize("size", SIZES)
def test_search_modal(size, settings, make_app, snap_compare):
    seed(settings)

    async def searched(pilot) -> None:
        await wait_ready(pilot)
        await settle(pilot)
        await pilot.press("ctrl+f", *"where does my sister live", "enter")
        await wait_for(pilot, lambda: bool(pilot.app.screen.query("MemoryCard")), what="search results")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=size, run_before=searched)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(size, settings, make_app, snap_compare):
    async def help_open(pilot) -> None:
        await wait_ready(pilot)
        await settle(pilot)
        await pilot.press("f1")

    assert snap_compare(make_app(), terminal_size=size, run_before=help_open)
