"""MemoryAgent: one user turn, top to bottom.

    0. store the user's turn (it is durable before anything can fail)
    1. flash    the conversation's recent turns, always in context
    2. plan     does the turn need the archive? standalone query, time window
    3. retrieve hybrid search over the user's memory, minus what flash already shows
    4. compose  one prompt if the evidence fits its budget, else a chain of agents
    5. generate stream the reply from the backend
    6. remember commit the reply, catch the indexes up, queue enrichment (summaries, facts)

`stream()` is the core; `chat()`, `achat()` and `astream()` are thin wrappers around it, so sync
and async behave the same.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Callable, Iterator

from memstream.agent import prompts
from memstream.agent.attribution import attribution_params, check_attribution, named_people, strip_names
from memstream.agent.chain import ChainResult, manager_messages, run_workers
from memstream.agent.compose import build_messages, chunk_lines, date_answer, day, evidence_lines, memory_block, quote, truncate_for_model
from memstream.agent.enrich import EnrichJob, Enricher
from memstream.agent.event_time import event_date_answer
from memstream.agent.extract import extract_answer, trim_answer
from memstream.agent.planner import MAX_QUERY_CHARS, PAST_MARKERS, QUESTION, WHEN_QUESTION, Plan, plan_turn
from memstream.backends.base import BackendError, ChatBackend
from memstream.config import Settings, load_settings
from memstream.memory.core import Memory, open_memory
from memstream.memory.flash import flash_turns
from memstream.memory.model import NewTurn, Turn
from memstream.memory.validate import check_id, utcnow

SESSION_GAP = timedelta(hours=4)  # a live conversation starts a new session after this much silence
SYSTEM_RESERVE = 200  # tokens kept for the system prompt's fixed text


class AgentError(RuntimeError):
    """A turn could not be answered (the backend failed). The user's turn is already stored: `reply` has its id."""

    def __init__(self, message: str, reply: "Reply"):
        super().__init__(message)
        self.reply = reply


@dataclass
class TurnOptions:
    """Per-turn switches, mostly for benchmarks and ablations."""

    retrieval_mode: str = "memstream"  # memstream | hybrid | bm25 | dense | none
    plan: bool = True
    """False: always retrieve, with the message itself as the query and no time window (plain RAG)."""
    remember: bool = True
    """False: answer without storing the turn (benchmark questions must not become memories)."""
    short_answer: bool = False
    top_k: int | None = None
    max_tokens: int | None = None
    system: str | None = None
    on_retrieved: Callable[["Reply"], None] | None = None
    """Called after retrieval, before generation, with the Reply so far (plan, memories): a server sends them in headers."""


@dataclass
class Reply:
    text: str
    user: str
    conversation: str
    plan: Plan | None = None
    memories: list = field(default_factory=list)
    """Retrieval hits used as evidence (turn, scores, time, source)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    user_turn_id: int | None = None
    reply_turn_id: int | None = None
    chain: ChainResult | None = None
    abstained: bool = False
    cancelled: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    messages: list = field(default_factory=list)
    """The final prompt sent to the backend (for the inspector and tests)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "user": self.user,
            "conversation": self.conversation,
            "plan": self.plan.to_dict() if self.plan else None,
            "memories": [hit_to_dict(h) for h in self.memories],
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "user_turn_id": self.user_turn_id,
            "reply_turn_id": self.reply_turn_id,
            "chain_of_agents": {"notes": self.chain.notes} if self.chain else None,
            "abstained": self.abstained,
            "cancelled": self.cancelled,
            "error": self.error,
            "notes": self.notes,
        }


def hit_to_dict(hit) -> dict[str, Any]:
    if hasattr(hit, "to_dict"):
        return hit.to_dict()
    return {"turn_id": hit.turn.id, "text": hit.turn.text, "event_time": hit.turn.event_time.isoformat()}


def fact_lines(memory: Memory, user: str, hits: list) -> list[str]:
    """Facts drawn from the retrieved turns, with their validity, so the answer prefers the current one
    and can still say what held before (knowledge updates close facts, they never delete them).

    The index knows which facts each turn gave: only those facts and the rest of their subjects are read."""
    turn_ids = {h.turn.id for h in hits}
    if not turn_ids:
        return []
    known, indexed_through = memory.retriever.facts_of_turns(user, turn_ids)
    # The database is the truth: the known ids are re-read (deleted ones vanish), and facts the index has not seen yet are added.
    candidates = (memory.get_facts(user, ids=sorted(known)) if known else []) + memory.get_facts(user, after_id=indexed_through)
    subjects = {f.subject for f in candidates if turn_ids & set(f.source_turn_ids)}
    if not subjects:
        return []
    lines = []
    for fact in memory.get_facts(user, subjects=sorted(subjects)):
        if fact.valid_to is None:
            lines.append(f"[fact, current since {day(fact.valid_from)}] {quote(fact.text)}")
        else:
            lines.append(f"[fact, from {day(fact.valid_from)} until {day(fact.valid_to)}, replaced] {quote(fact.text)}")
    return lines


def read_own_answer(question: str, hits: list, people: list[str], kinds: list[str]):
    """The span answering `question` in the user's own top statements, when they agree on one: "I work at Acme" and
    a later "I started at Globex" disagree, and a knowledge update is the model's to weigh with the facts."""
    own = [h.turn.text for h in hits if h.turn.role == "user"][:3]
    spans = [found for found in (extract_answer(question, [text], people, kinds) for text in own) if found is not None]
    if not spans or len({s.text.lower() for s in spans}) > 1:
        return None
    return extract_answer(question, own, people, kinds)


_COMPOUND = re.compile(r"\b(?:and|or|also)\s+(?:when|where|who|what|how|which|why)\b", re.I)


def single_question(message: str) -> bool:
    """One question, not "What is my cat called, and when did I adopt her?" (a span would answer half of it)."""
    return message.count("?") <= 1 and not _COMPOUND.search(message)


def refers_to_personal_past(message: str) -> bool:
    return bool(PAST_MARKERS.search(message)) and bool(QUESTION.search(message))


class MemoryAgent:
    """Long-term memory for a chat backend: a `Memory` (open_memory) and a backend; tests pass small ones in."""

    def __init__(
        self,
        memory: Memory,
        backend: ChatBackend,
        settings: Settings | None = None,
        enricher: Enricher | None = None,
        enrich: bool | None = None,
        owns_memory: bool = False,
    ):
        self.settings = settings or memory.settings or load_settings()
        self.memory = memory
        self.backend = backend
        self.owns_memory = owns_memory
        enrich = self.settings.agent.enrich if enrich is None else enrich
        if enricher is None and enrich:
            enricher = Enricher(memory, backend=None)
        self.enricher = enricher

    @classmethod
    def from_settings(cls, settings: Settings | None = None, backend: ChatBackend | None = None) -> "MemoryAgent":
        from memstream.backends.models import make_backend

        settings = settings or load_settings()
        memory = open_memory(settings)
        try:
            backend = backend or make_backend(settings.backend, settings.attention)
        except BaseException:
            memory.close()
            raise
        return cls(memory, backend, settings, owns_memory=True)

    @property
    def store(self):
        """The memory's store, for reads (inspector, tests); writes go through `memory`."""
        return self.memory.store

    @property
    def retriever(self):
        return self.memory.retriever

    # -- public API -------------------------------------------------------------------

    def chat(self, text: str, user: str, conversation: str = "default", at: datetime | None = None, options: TurnOptions | None = None) -> Reply:
        reply = None
        for item in self.stream(text, user, conversation, at, options):
            if isinstance(item, Reply):
                reply = item
        assert reply is not None
        return reply

    def stream(
        self, text: str, user: str, conversation: str = "default", at: datetime | None = None, options: TurnOptions | None = None
    ) -> Iterator[str | Reply]:
        """Yield reply text pieces, then the Reply. Closing the generator early (cancel) keeps what was said."""
        options = options or TurnOptions()
        agent_settings = self.settings.agent
        check_id("user id", user)
        check_id("conversation id", conversation)
        if not isinstance(text, str) or not text.replace("\x00", "").strip():
            raise ValueError("message is empty: nothing to answer")
        if len(text) > agent_settings.max_message_chars:
            raise ValueError(f"message is {len(text)} characters; the limit is {agent_settings.max_message_chars} (agent.max_message_chars)")
        now = at or utcnow()
        reply = Reply(text="", user=user, conversation=conversation)
        started = time.perf_counter()
        count = self.backend.count_tokens

        # 1. flash (before the new turn is stored, so it does not appear twice)
        flash = flash_turns(self.memory, user, conversation, agent_settings.flash_tokens, count)
        # 0. the user's turn is durable before anything else can fail
        if options.remember:
            session_id = self._session_for(user, conversation, flash, now)
            stored = self.memory.add(user, conversation, [NewTurn("user", text, "user", now)], session_id=session_id)
            reply.user_turn_id = stored[0].id
        reply.timings["store"] = time.perf_counter() - started

        # 2. plan
        mark = time.perf_counter()
        if options.plan:
            plan = plan_turn(
                text, flash, now, self.backend, agent_settings.use_llm_planner, self.settings.retrieval.time_expansion and options.retrieval_mode == "memstream"
            )
        else:
            plan = Plan(needs_memory=options.retrieval_mode != "none", query=text.strip()[:MAX_QUERY_CHARS], source="none", reasons=["planning off"])
        if options.retrieval_mode == "none":
            plan.needs_memory = False
        reply.plan = plan
        reply.timings["plan"] = time.perf_counter() - mark

        # 3. retrieve
        mark = time.perf_counter()
        hits = []
        asked_about = None
        people: list[str] = []
        speakers: set[str] = set()
        if plan.needs_memory:
            if options.plan:
                # The people's own names match nearly every turn ("Thanks, Caroline!"): search without them.
                speakers = self.memory.speakers(user)
                people = named_people(plan.query, speakers)
                asked_about = people[0] if len(people) == 1 else None
                plan.query = strip_names(plan.query, people)
            hits, recent = self._retrieve(user, plan, now, options, flash={t.id for t in flash}, exclude={reply.user_turn_id})
            if not hits and recent:
                # Only this conversation's recent turns match: they are the evidence (and nothing is "not remembered").
                hits = recent
                reply.notes.append("evidence from this conversation's recent turns")
        reply.memories = hits
        reply.timings["retrieve"] = time.perf_counter() - mark
        if options.on_retrieved is not None:
            options.on_retrieved(reply)

        # 4. compose
        mark = time.perf_counter()
        max_reply = min(options.max_tokens or agent_settings.max_reply_tokens, agent_settings.max_reply_tokens * 4)
        window = self.backend.context_window
        message_budget = max(64, window - max_reply - agent_settings.evidence_tokens - agent_settings.flash_tokens - SYSTEM_RESERVE)
        message = truncate_for_model(text, message_budget, count)
        if message.note:
            reply.notes.append(message.note)
        system = (options.system or prompts.SYSTEM).format(today=day(now))
        abstain_text = None
        if plan.needs_memory and not hits and refers_to_personal_past(text):
            # Nothing remembered about a question on the user's own past: say so instead of letting the model invent.
            abstain_text = prompts.ABSTAIN_REPLY
        elif asked_about and agent_settings.attribution_check:
            wrong = check_attribution(asked_about, hits, attribution_params(agent_settings), plan.query, speakers)
            if wrong is not None:
                reply.notes.append(f"the evidence is {wrong.speaker}'s, not {wrong.asked_about}'s ({wrong.share:.0%} of it is about them)")
                abstain_text = prompts.MISATTRIBUTED_REPLY.format(asked_about=wrong.asked_about, speaker=wrong.speaker)
        direct_text = None
        if abstain_text is None and hits and options.short_answer and options.plan and WHEN_QUESTION.search(text):
            # A short answer to "when" is a date: the best memory's, resolved here (a small model picks a wrong one).
            direct_text = date_answer(hits[0].turn, event_date_answer(self.memory, user, hits[0].turn))
            reply.notes.append("answered with the date of the best memory")
        elif abstain_text is None and hits and options.short_answer and options.plan and agent_settings.extract_kinds:
            # A short answer read from the evidence (agent/extract.py); the model writes only when this finds nothing.
            found = extract_answer(
                text, [h.turn.text for h in hits], people, agent_settings.extract_kinds, [h.turn.speaker for h in hits], asked_about,
                agent_settings.extract_style, agent_settings.extract_min_shared,
            )
            if found is not None:
                direct_text = found.text
                reply.notes.append(f"extracted a {found.kind} answer from memory {found.rank}")
        elif abstain_text is None and hits and options.plan and agent_settings.chat_extract_kinds and single_question(text):
            # In chat, a where / name / count question answered by the user's own words is read, not generated: a small
            # local model given "I moved to Lisbon" still answers with a city of its own.
            found = read_own_answer(text, hits, people, agent_settings.chat_extract_kinds)
            if found is not None:
                direct_text = found.text[:1].upper() + found.text[1:] + "."
                reply.notes.append(f"answered with a {found.kind} read from the user's own words (memory {found.rank})")
        if abstain_text is not None or direct_text is not None:
            reply.abstained = abstain_text is not None
            reply.text = abstain_text or direct_text
            yield reply.text
            reply.timings["compose"] = time.perf_counter() - mark
            self._finish(reply, options, now, started)
            yield reply
            return
        # Only now, when the model will read them: an abstention or a date answer needs no evidence lines or facts.
        lines = evidence_lines([h.turn for h in hits]) + fact_lines(self.memory, user, hits)
        evidence_budget = max(64, min(agent_settings.evidence_tokens, window - max_reply - count(message.text) - SYSTEM_RESERVE - 64))
        evidence_tokens = sum(count(line) + 1 for line in lines)
        if lines and evidence_tokens > evidence_budget:
            # 4b. chain of agents: workers read the evidence in time order, the manager answers from the last note
            chunks = chunk_lines(lines, evidence_budget, count)
            try:
                reply.chain = run_workers(self.backend, message.text, chunks)
            except BackendError as exc:
                self._fail(reply, exc)
            reply.prompt_tokens += reply.chain.prompt_tokens
            reply.completion_tokens += reply.chain.completion_tokens
            messages = manager_messages(message.text, reply.chain.notes[-1])
            messages.insert(0, {"role": "system", "content": system})
        else:
            evidence = memory_block(lines) if plan.needs_memory else None
            flash_for_prompt = flash if options.plan else []
            messages = build_messages(system, flash_for_prompt, evidence, message.text, options.short_answer)
        # Whatever the budgets said, never send more than the window holds: drop flash turns, oldest first.
        while count(messages) + max_reply > window and len(messages) > 2:
            messages.pop(1)
        reply.messages = messages
        reply.prompt_tokens += count(messages)
        reply.timings["compose"] = time.perf_counter() - mark

        # 5. generate
        mark = time.perf_counter()
        pieces: list[str] = []
        finished = False
        try:
            for piece in self.backend.stream(messages, max_tokens=max_reply, temperature=0.0):
                pieces.append(piece)
                yield piece
            finished = True
        except BackendError as exc:
            reply.text = "".join(pieces)
            self._fail(reply, exc)
        finally:
            if not finished and not reply.error:
                # The consumer closed the stream (cancel): keep what was said.
                reply.cancelled = True
                reply.text = "".join(pieces)
                reply.timings["generate"] = time.perf_counter() - mark
                if reply.text.strip():
                    self._finish(reply, options, now, started)
        reply.text = "".join(pieces).strip()
        reply.completion_tokens += count(reply.text) if reply.text else 0
        reply.timings["generate"] = time.perf_counter() - mark
        if options.short_answer and options.plan and agent_settings.trim_short_answers != "off" and reply.text and not reply.error:
            # A short answer keeps its own words, not the question's restated (agent/extract.py); the stream showed it whole.
            # Grounded in the records' own words, as benchmarks/answer_loco.py scores it offline (dates are always kept).
            records = [h.turn.text for h in hits] if agent_settings.trim_short_answers == "evidence" else None
            trimmed = trim_answer(reply.text, text, records)
            if trimmed != reply.text:
                reply.notes.append("short answer trimmed of the question's words")
                reply.text = trimmed

        # 6. remember
        self._finish(reply, options, now, started)
        yield reply

    async def achat(self, text: str, user: str, conversation: str = "default", at: datetime | None = None, options: TurnOptions | None = None) -> Reply:
        return await asyncio.to_thread(self.chat, text, user, conversation, at, options)

    async def astream(
        self, text: str, user: str, conversation: str = "default", at: datetime | None = None, options: TurnOptions | None = None
    ) -> AsyncIterator[str | Reply]:
        """The same stream, produced in a worker thread so the event loop never blocks on the model."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def produce() -> None:
            try:
                for item in self.stream(text, user, conversation, at, options):
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except BaseException as exc:  # handed to the awaiting coroutine, which re-raises it
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        worker = loop.run_in_executor(None, produce)
        while True:
            item = await queue.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                await worker
                raise item
            yield item
        await worker

    def remember(self, user: str, conversation: str, turns: list[NewTurn], session_id: int | None = None,
                 also=None) -> list[Turn]:
        """Store turns without answering (replaying history); indexes and enrichment as for a live turn.
        `also`: see Memory.add."""
        stored = self.memory.add(user, conversation, turns, session_id=session_id, also=also)
        if self.enricher is not None and stored:
            self.enricher.submit(EnrichJob(user, conversation, [t.id for t in stored], stored[-1].session_id))
        return stored

    def close(self) -> None:
        """Drain enrichment; close the memory too when this agent opened it (from_settings)."""
        if self.enricher is not None:
            self.enricher.close()
        if self.owns_memory:
            self.memory.close()

    def __enter__(self) -> "MemoryAgent":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- steps ------------------------------------------------------------------------

    def _session_for(self, user: str, conversation: str, flash: list[Turn], now: datetime) -> int | None:
        last = flash[-1] if flash else (self.memory.recent_turns(user, conversation, 1) or [None])[-1]
        if last is None or now - last.event_time > SESSION_GAP:
            return self.memory.new_session(user, conversation, started_at=now)
        return last.session_id

    def _retrieve(self, user: str, plan: Plan, now: datetime, options: TurnOptions, flash: set, exclude: set) -> tuple[list, list]:
        """(hits outside the flash turns, hits among them): the prompt shows flash turns already, so they are
        evidence only when nothing else matches."""
        k = options.top_k or self.settings.agent.top_k
        # continuing: with the user's turn stored, this chat is under way and its search goes before new chats' writes.
        search = dict(k=k + len(flash), now=now, time_window=plan.time_window, mode=options.retrieval_mode,
                      exclude=sorted(i for i in exclude if i is not None), continuing=options.remember)
        hits, recent = self._split_hits(self.memory.search(user, plan.query, **search), flash)
        if not hits and not recent and self.memory.pending_turns(user) - exclude:
            # Nothing found while some of this user's turns (the one just before, say) are still being embedded:
            # wait for them, bounded, rather than answer "not remembered". Only the question's own: no wait.
            result = self.memory.search(user, plan.query, **search, wait_s=self.settings.agent.pending_wait_s)
            hits, recent = self._split_hits(result, flash)
        return hits[:k], recent[:k]

    def _split_hits(self, result, flash: set) -> tuple[list, list]:
        floor = self.settings.agent.min_score  # (the excluded turns never reach here: the search left them out)
        hits, recent = [], []
        for hit in result.hits:
            relevant = (hit.dense_score is not None and hit.dense_score >= floor) or (hit.lexical_score or 0) > 0 or floor <= 0
            if relevant:
                (recent if hit.turn.id in flash else hits).append(hit)
        return hits, [h for h in recent if h.turn.role != "assistant"]

    def _fail(self, reply: Reply, exc: BackendError) -> None:
        reply.error = f"backend failed: {exc}"
        raise AgentError(f"{reply.error} (your message is saved as turn {reply.user_turn_id})", reply) from exc

    def _finish(self, reply: Reply, options: TurnOptions, now: datetime, started: float) -> None:
        if options.remember and reply.text.strip() and reply.reply_turn_id is None:
            metadata = {"cancelled": True} if reply.cancelled else {}
            stored = self.memory.add(
                reply.user, reply.conversation, [NewTurn("assistant", reply.text, "assistant", now + timedelta(microseconds=1), metadata)],
                continuing=True,
            )
            reply.reply_turn_id = stored[0].id
            if self.enricher is not None:
                self.enricher.submit(EnrichJob(reply.user, reply.conversation, [reply.user_turn_id, reply.reply_turn_id], stored[0].session_id))
        reply.timings["total"] = time.perf_counter() - started
