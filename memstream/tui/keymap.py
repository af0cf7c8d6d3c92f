"""The main screen's keys: its bindings, the actions that work only while no other screen is
on top, and the key tables the help screen shows."""

from __future__ import annotations

from typing import Callable, Sequence

from textual.binding import Binding, BindingType

APP_BINDINGS: list[BindingType] = [
    Binding("ctrl+q", "quit", "Quit", priority=True),
    Binding("escape", "stop", "Stop", priority=True),
    Binding("ctrl+c", "stop", "Stop", priority=True, show=False),
    Binding("ctrl+n", "new_conversation", "New chat", priority=True),
    Binding("ctrl+f", "search", "Search", priority=True),
    Binding("ctrl+g", "memories", "Memories", priority=True),
    Binding("ctrl+r", "summary", "Summary", priority=True),
    Binding("ctrl+y", "copy_answer", "Copy", priority=True),
    Binding("ctrl+b", "backend", "Backend", priority=True),
    Binding("ctrl+o", "conversations", "Chats", priority=True),
    Binding("f1", "help", "Help", priority=True),
    Binding("question_mark", "help", "Help", show=False),
    Binding("ctrl+t", "toggle_theme", "Light/dark", priority=True, show=False),
    Binding("f8", "forget_everything", "Forget all", priority=True, show=False),
]

# Actions that belong to the main screen: off while a modal or the error screen is on top, so
# their (priority) keys fall through to that screen.
MAIN_ONLY = {
    "stop", "new_conversation", "conversations", "search", "memories", "summary",
    "copy_answer", "backend", "toggle_theme", "forget_everything", "help",
}

MEMORY_KEYS = [("Enter", "open the memory"), ("p", "pin / unpin it"), ("d, Delete", "forget it (removed from the store and the index)")]
COMPOSER_KEYS = [("Enter", "send"), ("Ctrl+J", "new line"), ("Ctrl+C", "copy the selection (while no answer is being written)")]

# The footer's descriptions are one or two words; the help screen has room to say more.
HELP_DESCRIPTIONS = {
    "stop": "Stop the answer being written (Esc or Ctrl+C; what was said is kept)",
    "conversations": "Conversations: show the list and switch",
    "memories": "Memories: move to the inspector's list",
    "search": "Search memory",
    "summary": "Session summaries of this conversation",
    "copy_answer": "Copy the last answer",
    "backend": "Change backend / model",
    "toggle_theme": "Light / dark theme",
    "forget_everything": "Forget everything about this user (asks first)",
    "help": "This help (F1, or ? outside the message box)",
    "new_conversation": "New conversation",
    "quit": "Quit",
}


def help_sections(
    bindings: Sequence[BindingType], key_display: Callable[[Binding], str]
) -> list[tuple[str, Sequence[tuple[str, str]]]]:
    """The help screen's tables: the app's keys (`key_display` names a key the help cannot
    label itself), then the message box's and the memory lists' keys."""
    keys = [(binding.key_display or key_display(binding), binding.description) for binding in help_bindings(bindings)]
    return [("Anywhere", keys), ("Message box", COMPOSER_KEYS), ("Memories (inspector, search results)", MEMORY_KEYS)]


def help_bindings(bindings: Sequence[BindingType]) -> list[Binding]:
    """One binding per action (the first), with the help's longer description and every key it answers to."""
    seen, result = set(), []
    for binding in bindings:
        assert isinstance(binding, Binding)
        if binding.action in seen:
            continue
        seen.add(binding.action)
        result.append(binding)
    return [Binding(b.key, b.action, HELP_DESCRIPTIONS.get(b.action, b.description), key_display=key_label(b.key)) for b in result]


def key_label(keys: str) -> str:
    """'escape,question_mark' -> 'Esc, ?'; 'ctrl+q' -> 'Ctrl+Q'."""
    labels = []
    for key in keys.split(","):
        key = key.strip()
        named = {"question_mark": "?", "escape": "Esc"}
        labels.append(named.get(key, "+".join(part.capitalize() if len(part) > 1 else part.upper() for part in key.split("+"))))
    return ", ".join(labels)
