"""Fuzz targets shared by tests/reliability/test_fuzz.py (bounded) and benchmarks/reliability.py
(more examples, case counts into reports/reliability.json).

Each target is a check function plus a hypothesis strategy plus the exception types the entry
point documents for bad input. `run_target` drives hypothesis: any other exception, or an allowed
one with an empty message, fails the run (hypothesis shrinks it and prints the smallest case).
"""

from __future__ import annotations

import copy
import functools
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
LOCOMO_DEV = DATA_DIR / "locomo" / "locomo10_dev.json"
LONGMEMEVAL_SAMPLE = DATA_DIR / "longmemeval" / "longmemeval_sample.json"


@dataclass
class Counts:
    """Generated cases for one target: how many ran, how many ended in a documented clear error."""

    cases: int = 0
    clear_errors: int = 0
    errors_by_type: dict[str, int] = field(default_factory=dict)


def run_target(
    check: Callable[[Any], None],
    strategy: st.SearchStrategy,
    allowed: tuple[type[BaseException], ...],
    max_examples: int,
) -> Counts:
    """Run `check` on `max_examples` generated values; documented errors are counted, others propagate."""
    counts = Counts()

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def prop(value: Any) -> None:
        counts.cases += 1
        try:
            check(value)
        except allowed as exc:
            # A documented error must say what is wrong: a non-empty first line.
            assert str(exc).strip(), f"{type(exc).__name__} raised with an empty message"
            counts.clear_errors += 1
            name = type(exc).__name__
            counts.errors_by_type[name] = counts.errors_by_type.get(name, 0) + 1

    prop()
    return counts


# -- generic values ------------------------------------------------------------------------

# Text that reaches every awkward corner: controls, NUL, combining marks, astral planes, RTL.
any_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | any_text
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=20,
)


@functools.lru_cache(maxsize=None)
def _load_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _load(path: Path) -> Any:
    return json.loads(_load_text(path))


def locomo_seed() -> list[dict]:
    """One real LoCoMo sample cut to its first two sessions (mutations stay small and fast)."""
    return copy.deepcopy(_locomo_seed())


@functools.lru_cache(maxsize=1)
def _locomo_seed() -> list[dict]:
    sample = _load(LOCOMO_DEV)[0]
    conversation = sample["conversation"]
    for key in list(conversation):
        if key.startswith("session_") and key.split("_")[1].isdigit() and int(key.split("_")[1]) > 2:
            del conversation[key]
    conversation["session_1"] = conversation["session_1"][:4]
    conversation["session_2"] = conversation["session_2"][:4]
    return [{"sample_id": sample["sample_id"], "conversation": conversation}]


def longmemeval_seed() -> list[dict]:
    question = copy.deepcopy(_load(LONGMEMEVAL_SAMPLE)[0])
    question["haystack_sessions"] = [s[:3] for s in question["haystack_sessions"]]
    return [question]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location inside a JSON value (dict keys and list indexes)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, prefix + (index,))
    return found


def _apply(value: Any, path: tuple, action: str, replacement: Any) -> Any:
    if not path:
        return replacement if action == "replace" else value
    parent = value
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = replacement
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(last, copy.deepcopy(parent[last]))
    return value


@st.composite
def mutated(draw: st.DrawFn, seed: Callable[[], Any]) -> Any:
    """A real sample with 1-4 random edits: a field deleted, replaced by random JSON, or duplicated."""
    value = seed()
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(value)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["delete", "replace", "duplicate"] if path else ["replace"]))
        replacement = draw(json_values | st.sampled_from(["", "1:56 pm on 8 May, 2023", "2023/05/20 (Sat) 02:21", "31 February, 2023", "user", "assistant"]))
        value = _apply(value, path, action, replacement)
    return value


# -- importers -------------------------------------------------------------------------------


def check_parsed(sessions: list, memory) -> None:
    """What an importer returns must be storable as is (no second, later failure in the store)."""
    from memstream.memory.model import NewSession

    for session in sessions:
        assert isinstance(session, NewSession)
        assert all(isinstance(t.text, str) for t in session.turns)
    if memory is not None and sessions:
        memory.ingest("fuzz", sessions, atomic=True)


def importer_target(fmt: str, memory: Any = None) -> tuple[Callable[[Any], None], st.SearchStrategy, tuple]:
    """`memory`: where what parses is stored (an open Memory; rows only is enough), or None to parse only."""
    from memstream.memory import importers

    if fmt == "locomo":
        strategy = json_values | mutated(locomo_seed)

        def check(value: Any) -> None:
            check_parsed(importers.parse_locomo(value, source="fuzz.json"), memory)

    elif fmt == "longmemeval":
        strategy = json_values | mutated(longmemeval_seed)

        def check(value: Any) -> None:
            check_parsed(importers.parse_longmemeval(value, source="fuzz.json"), memory)

    else:
        record = st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "system"]) | any_text, "content": any_text | json_values},
            optional={"time": json_values | st.sampled_from(["2023-05-08T14:00", "8 May 2023", "yesterday", "99999-01-01"]), "conversation": json_values, "speaker": json_values},
        )
        line = st.builds(json.dumps, record) | st.builds(json.dumps, json_values) | any_text
        strategy = st.lists(line, max_size=8)

        def check(value: Any) -> None:
            check_parsed(importers.parse_jsonl(value, source="fuzz.jsonl"), memory)

    return check, strategy, (importers.ImportFormatError,)


# -- time parsing ----------------------------------------------------------------------------

TIME_WORDS = [
    "yesterday", "today", "last", "this", "past", "previous", "week", "weekend", "month", "year", "ago", "days", "weeks",
    "months", "years", "since", "before", "after", "in", "during", "on", "of", "may", "march", "dec", "sept", "monday",
    "a", "two", "a couple of", "several", "my", "trip", "the", "2023", "1999", "0000", "9999", "99999", "31", "8th",
    "2023-05-08", "02/30/2023", "2023/13/40", ",", "?", "\x00", "\u202e",
]
numbers = st.sampled_from(["0", "0000", "1", "9999", "99999", "2023"]) | st.integers(0, 10**8).map(str)
# Shaped like the expressions the parser looks for, with numbers at and past datetime's range.
shaped_phrases = st.tuples(
    st.sampled_from(["since", "before", "after", "in", "during", "last", "of", "", "what happened"]),
    st.sampled_from(["may", "dec", "january", "a", "two", "several"]) | numbers,
    st.sampled_from(["days ago", "weeks ago", "months ago", "years ago", ""]) | numbers,
).map(" ".join)
time_phrases = shaped_phrases | st.lists(st.sampled_from(TIME_WORDS) | numbers, max_size=8).map(" ".join)
question_dates = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))


def time_window_target() -> tuple[Callable[[Any], None], st.SearchStrategy, tuple]:
    from memstream.retrieval.timeparse import TimeWindow, extract_time_window

    def check(value: tuple[str, datetime]) -> None:
        text, now = value
        window = extract_time_window(text, now)
        assert window is None or (isinstance(window, TimeWindow) and window.start < window.end), window

    return check, st.tuples(time_phrases | any_text, question_dates), ()


def parse_datetime_target() -> tuple[Callable[[Any], None], st.SearchStrategy, tuple]:
    from memstream.retrieval.timeparse import parse_datetime

    def check(text: str) -> None:
        parsed = parse_datetime(text)
        assert parsed is None or (isinstance(parsed, datetime) and parsed.tzinfo is None)

    iso_like = st.datetimes().map(lambda d: d.isoformat()) | st.sampled_from(["2023-05-08 14:00", "1:56 pm on 8 May, 2023", "+99999-01-01"])
    return check, time_phrases | any_text | iso_like, ()


# -- config ----------------------------------------------------------------------------------

SETTING_KEYS = [
    "db_url", "home", "embedder.batch_size", "retrieval.time_mode", "retrieval.candidates", "backend.kind", "backend.timeout_s",
    "agent.top_k", "agent.max_message_chars", "server.port", "server.api_keys", "server.host", "attention.policy", "nonsense",
]
ENV_NAMES = [
    "MEMSTREAM_DB_URL", "MEMSTREAM_AGENT__TOP_K", "MEMSTREAM_SERVER__PORT", "MEMSTREAM_SERVER__API_KEYS", "MEMSTREAM_BACKEND__KIND",
    "MEMSTREAM_RETRIEVAL__TIME_WEIGHT", "MEMSTREAM_AGENT", "MEMSTREAM_BACKENDS", "MEMSTREAM_EMBEDDER__DEVICE", "MEMSTREAM_ATTENTION__SINKS",
]
# Environment variables cannot hold NUL; everything else goes.
env_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)
toml_scalars = st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | env_text


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value).replace("inf", "inf")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # a JSON string is a valid TOML basic string


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    """Random documents: well-formed TOML over real and unknown keys, or random text."""
    if draw(st.booleans()):
        return draw(env_text)
    lines = []
    for key in draw(st.lists(st.sampled_from(SETTING_KEYS), max_size=5, unique=True)):
        section, _, name = key.rpartition(".")
        value = draw(toml_scalars | st.lists(toml_scalars, max_size=3))
        lines.append((section, f"{name} = {_toml_value(value)}"))
    out = [line for section, line in lines if not section]
    for section in sorted({s for s, _ in lines if s}):
        out.append(f"[{section}]")
        out += [line for s, line in lines if s == section]
    return "\n".join(out) + "\n"


def config_target(workdir: Path) -> tuple[Callable[[Any], None], st.SearchStrategy, tuple]:
    """load_settings() with a random memstream.toml in `workdir` and random MEMSTREAM_* variables."""
    from memstream.config import ConfigError, Settings, load_settings

    def check(value: tuple[str, dict[str, str]]) -> None:
        document, env = value
        config = workdir / "memstream.toml"
        config.write_text(document, encoding="utf-8")
        saved = {name: os.environ.get(name) for name in env}
        os.environ["MEMSTREAM_CONFIG"] = str(config)
        os.environ.update(env)
        try:
            assert isinstance(load_settings(), Settings)
        finally:
            os.environ.pop("MEMSTREAM_CONFIG", None)
            for name, old in saved.items():
                if old is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = old

    strategy = st.tuples(toml_documents(), st.dictionaries(st.sampled_from(ENV_NAMES), env_text | st.sampled_from(['{"k": "t"}', "[1]", "12", "-1"]), max_size=3))
    return check, strategy, (ConfigError,)


# -- CLI -------------------------------------------------------------------------------------

CLI_WORDS = ["alice", "bob", "auto", "locomo", "jsonl", "longmemeval", "2023-06-01", "last May", "0", "-1", "5", "1001", "--json", "--", "-k"]
cli_text = st.sampled_from(CLI_WORDS) | any_text


@st.composite
def cli_invocations(draw: st.DrawFn, db_url: str, sample_file: str) -> list[str]:
    command = draw(st.sampled_from(["search", "ingest", "list", "stats", "export"]))
    user = ["--user", draw(cli_text)]
    if command == "search":
        args = ["memory", "search", draw(cli_text), *user, "-k", draw(cli_text | st.integers(-5, 2000).map(str))]
        if draw(st.booleans()):
            args += ["--at", draw(cli_text | time_phrases)]
    elif command == "ingest":
        args = ["ingest", draw(st.sampled_from([sample_file, "missing.json"]) | cli_text), *user, "--format", draw(cli_text)]
    else:
        args = ["memory", command, *user]
    if draw(st.booleans()):
        args.append("--json")
    return args + ["--db", db_url]


def cli_target(db_url: str, sample_file: str) -> tuple[Callable[[Any], None], st.SearchStrategy, tuple]:
    """Every invocation exits 0 (done) or 2 (one-line error / usage error); never a traceback."""
    from typer.testing import CliRunner

    from memstream.cli import app

    runner = CliRunner()

    def check(args: list[str]) -> None:
        result = runner.invoke(app, args, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"{args!r} crashed: {type(result.exception).__name__}: {result.exception}") from result.exception
        assert result.exit_code in (0, 2), (args, result.exit_code, result.output)
        if result.exit_code == 2:
            assert "Error" in result.output, (args, result.output)

    return check, cli_invocations(db_url, sample_file), ()


# -- MemoryAgent.chat ------------------------------------------------------------------------

# Short on purpose: each case embeds its text; huge messages have their own test.
chat_text = any_text | st.sampled_from(["", " ", "\x00", "\x00\x00hello\x00", "what did I say last May?", "\u202eevil", "\r\n\t", "é" * 300])


def chat_target(agent) -> tuple[Callable[[Any], None], st.SearchStrategy, tuple]:
    """agent.chat with hostile text, user and conversation ids: a Reply, or ValueError naming the problem."""

    def check(value: tuple[str, str, str]) -> None:
        text, user, conversation = value
        before = agent.memory.count_turns(user) if _valid_id(user) else 0
        try:
            reply = agent.chat(text, user=user, conversation=conversation)
        except ValueError:
            # Rejected input writes nothing.
            assert not _valid_id(user) or agent.memory.count_turns(user) == before
            raise
        stored = agent.memory.get_turn(user, reply.user_turn_id)
        assert stored is not None and stored.text == text.replace("\x00", "")
        assert isinstance(reply.text, str)

    ids = st.sampled_from(["alice", "bob", "c-1"]) | any_text
    return check, st.tuples(chat_text, ids, ids), (ValueError,)


def _valid_id(value: str) -> bool:
    from memstream.memory.store import check_id

    try:
        check_id("id", value)
    except ValueError:
        return False
    return True
