"""The memory inspector: for the current answer, the plan (was memory needed, the query, the
time window, why) and the memories that were retrieved, with time, source and scores."""

from __future__ import annotations

from typing import Any, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from memstream.tui.widgets.memory_list import TIME_FORMAT, MemoryList


def plan_text(plan: Any, count: int) -> Text:
    if plan is None:
        return Text("no plan for this answer", style="italic")
    text = Text()
    text.append("memory: ", style="bold")
    text.append("needed" if plan.needs_memory else "not needed")
    if plan.needs_memory:
        text.append(f" · {count} retrieved")
    text.append("\nquery: ", style="bold")
    text.append(plan.query)
    window = plan.time_window
    if window is not None:
        text.append("\ntime: ", style="bold")
        expression = getattr(window, "expression", "") or ""
        text.append(f"{window.start:{TIME_FORMAT}} → {window.end:{TIME_FORMAT}}" + (f" ({expression})" if expression else ""))
    if plan.reasons:
        text.append("\nwhy: ", style="bold")
        text.append("; ".join(plan.reasons))
    return text


class MemoryInspector(Vertical):
    DEFAULT_CSS = """
    MemoryInspector > #plan {
        padding: 0 1;
        margin-bottom: 1;
        color: $text;
    }
    MemoryInspector > .title {
        text-style: bold;
        color: $primary;
        padding: 0 1;
    }
    """

    def compose(self) -> ComposeResult:
        yield Static("Memory inspector", classes="pane-title")
        yield Static("Plan", classes="title")
        yield Static("Ask something: the plan and the memories used for the answer appear here.", id="plan", markup=False)
        yield Static("Memories", classes="title")
        yield MemoryList(id="memories")

    @property
    def memories(self) -> MemoryList:
        return self.query_one(MemoryList)

    def set_plan_text(self, text: str | Text) -> None:
        self.query_one("#plan", Static).update(text if isinstance(text, Text) else Text(text))

    async def pending(self) -> None:
        self.set_plan_text("planning and retrieving…")
        await self.memories.clear()

    async def show(self, plan: Any, hits: Sequence[Any]) -> None:
        self.set_plan_text(plan_text(plan, len(hits)))
        await self.memories.show(hits)

    async def reset(self, message: str) -> None:
        self.set_plan_text(message)
        await self.memories.clear()
