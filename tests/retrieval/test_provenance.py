"""Provenance: a statement outranks the assistant reply that restates it; nothing is dropped."""

from __future__ import annotations

from dataclasses import dataclass

from memstream.retrieval.provenance import prefer_own_statements, restates


@dataclass
class _Turn:
    role: str
    text: str


@dataclass
class _Hit:
    turn: _Turn
    fused_score: float
    rank: int = 0


def test_the_restated_statement_moves_above_the_reply():
    reply = _Hit(_Turn("assistant", "Mochi is a Japanese cat named Mochi."), 0.0830)
    other = _Hit(_Turn("user", "I like green tea."), 0.0829)
    statement = _Hit(_Turn("user", "My cat is called Mochi and I adopted her last May."), 0.0829)
    ranked = prefer_own_statements([reply, other, statement])
    assert [h.turn.text for h in ranked] == [statement.turn.text, reply.turn.text, other.turn.text]
    assert [h.rank for h in ranked] == [1, 2, 3]


def test_a_reply_with_its_own_content_keeps_its_place():
    reply = _Hit(_Turn("assistant", "Green tea has less caffeine than coffee, about a third."), 0.05)
    statement = _Hit(_Turn("user", "I drink green tea every morning."), 0.04)
    assert not restates(reply.turn.text, statement.turn.text)
    assert prefer_own_statements([reply, statement]) == [reply, statement]


def test_several_replies_and_no_assistant_at_all():
    a1 = _Hit(_Turn("assistant", "You ran the charity race for mental health."), 0.05)
    a2 = _Hit(_Turn("assistant", "The charity race helped mental health."), 0.04)
    said = _Hit(_Turn("user", "I ran a charity race for mental health last week."), 0.03)
    assert prefer_own_statements([a1, a2, said])[0] is said
    plain = [_Hit(_Turn("user", "x"), 0.2), _Hit(_Turn("user", "y"), 0.1)]
    assert prefer_own_statements(plain) == plain


def test_real_search_puts_the_users_statement_first(make_memory, monkeypatch):
    """The chat-app report: without provenance the model's own restatement of what the user said ranks first (it
    echoes the question's words)."""
    from datetime import datetime, timedelta

    from memstream.memory.model import NewTurn

    said = datetime(2026, 12, 1, 15)
    memory = make_memory()
    memory.add("me", "first", [
        NewTurn("user", "My cat is called Mochi and I adopted her last May.", "user", said),
        NewTurn("assistant", "The name of your cat is Mochi, and you adopted her last May.", "assistant", said + timedelta(seconds=1)),
    ])
    assert memory.flush(60)
    retriever = memory.retriever
    question = "What is the name of my cat, and when did I adopt her?"
    import memstream.retrieval.fusion as fusion_module

    with monkeypatch.context() as patch:
        patch.setattr(fusion_module, "prefer_own_statements", list)  # the fused scores alone, as before
        plain = retriever.search("me", question, k=5, now=said + timedelta(days=2), mode="memstream")
    assert [h.turn.role for h in plain.hits] == ["assistant", "user"]  # the reply first
    ranked = retriever.search("me", question, k=5, now=said + timedelta(days=2), mode="memstream")
    assert [h.turn.role for h in ranked.hits] == ["user", "assistant"]  # the reply stays searchable, below its source
    assert [h.rank for h in ranked.hits] == [1, 2]
