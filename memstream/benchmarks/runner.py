"""Run a benchmark: replay each history into its own user namespace, ask every question with every
system, append each prediction to `DIR/predictions.jsonl` as soon as it exists, then write the reports.

Invariants:
- predictions.jsonl is append-only; each line is flushed and fsynced, so a crash loses at most the
  questions in flight. `resume=True` skips every (question, system) already there; a torn last line
  (the crash happened mid-write) is ignored and that question is asked again.
- Histories live in `DIR/state/` (SQLite + index caches). A namespace counts as replayed only once it
  is listed in `DIR/state/replayed.txt`; a half-replayed one is forgotten and replayed again.
- A failing question (backend error) or judge is recorded on its prediction and counted in the report;
  the run goes on. Load problems (bad items in the data file) are counted too.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from memstream.agent.controller import AgentError, MemoryAgent
from memstream.agent.enrich import EnrichJob, enrich_turns
from memstream.backends.base import BackendError, ChatBackend
from memstream.benchmarks.judge import JudgeError, judge
from memstream.benchmarks.questions import BenchData, BenchQuestion, load_benchmark, select
from memstream.benchmarks.report import write_reports
from memstream.benchmarks.systems import HistoryLines, answer, check_systems, history_lines
from memstream.config import Settings, load_settings
from memstream.memory.core import open_memory

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
CONFIG = "config.json"
PROBLEMS = "problems.json"


class RunDirectoryError(ValueError):
    """The output directory holds another run's predictions and --resume was not given."""


@dataclass
class RunConfig:
    benchmark: str
    data: str
    systems: list[str] = field(default_factory=lambda: ["memstream", "full-context", "hybrid"])
    limit: int | None = None
    per_history: int | None = None
    """At most this many questions per conversation / haystack (a subset that covers every history)."""
    categories: list[str] | None = None
    top_k: int = 10
    max_answer_tokens: int = 32
    """Answers are short phrases; the cap keeps a rambling model from spending minutes per question."""
    concurrency: int = 1
    backend: str = ""
    judge: str | None = None
    facts: bool = True
    """Extract facts (heuristic, no model) from the replayed history: memstream's fact keys."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Reports are shared: record the dataset's file name, not where it sat on this machine.
        data["data"] = Path(self.data).name
        return data


@dataclass
class Parts:
    """What a run drives: one agent (store, retriever, backend) and an optional judge."""

    agent: MemoryAgent
    judge_backend: ChatBackend | None = None


def bench_settings(out_dir: Path, **overrides: Any) -> Settings:
    state = out_dir / "state"
    state.mkdir(parents=True, exist_ok=True)
    return load_settings(db_url=f"sqlite:///{state / 'memory.db'}", home=str(state), **{"agent.enrich": False}, **overrides)


def build_parts(settings: Settings, backend: ChatBackend | None = None, judge_backend: ChatBackend | None = None, embedders=None) -> Parts:
    """The real components: a memory under the run directory, the configured backend."""
    from memstream.backends.models import make_backend

    memory = open_memory(settings, embedders=embedders)
    try:
        backend = backend or make_backend(settings.backend, settings.attention)
    except BaseException:
        memory.close()
        raise
    return Parts(MemoryAgent(memory, backend, settings, enrich=False, owns_memory=True), judge_backend)


def read_predictions(path: Path) -> list[dict]:
    """Every complete record; a torn final line (crash mid-write) is dropped."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: line %d is incomplete (interrupted write); it will be redone", path, number)
    return records


class PredictionLog:
    """Append-only, one fsynced JSON line per prediction, safe to share between worker threads."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._repair()

    def _repair(self) -> None:
        # A torn last line would glue itself to the next record; cut the file back to its last newline.
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def replay(parts: Parts, data: BenchData, namespaces: Iterable[str], state_dir: Path, facts: bool) -> None:
    """Store each namespace's history (all or nothing), extract facts, and catch the index up."""
    memory = parts.agent.memory
    marker = state_dir / "replayed.txt"
    done = set(marker.read_text(encoding="utf-8").split()) if marker.exists() else set()
    for namespace in namespaces:
        if namespace in done:
            memory.flush()  # resumed: vectors the crash left unembedded are queued again; settle them before asking
            continue
        if memory.has_user(namespace):
            memory.forget_user(namespace)  # a replay interrupted half way: start it again
        results = memory.ingest(namespace, data.histories[namespace], atomic=True)
        if facts:
            for session_id, turn_ids in results:
                conversation = data.histories[namespace][0].conversation_id
                enrich_turns(memory, EnrichJob(namespace, conversation, turn_ids, None))
        with marker.open("a", encoding="utf-8") as handle:
            handle.write(namespace + "\n")
    # Every vector in before the first question (a benchmark measures the settled index), also on a resume,
    # where the histories are already stored and the reopened memory re-embeds what its saved cache lacks.
    memory.flush()


def _record(question: BenchQuestion, system: str) -> dict[str, Any]:
    return {
        "qid": question.qid,
        "system": system,
        "namespace": question.namespace,
        "category": question.category,
        "code": question.code,
        "question": question.question,
        "gold": question.gold,
        "asked_at": question.asked_at.isoformat(),
        "evidence": question.evidence,
        "evidence_sessions": question.evidence_sessions,
        "abstention": question.abstention,
    }


def ask_one(parts: Parts, system: str, question: BenchQuestion, history: Callable[[str], HistoryLines], config: RunConfig) -> dict[str, Any]:
    """One prediction record. Backend failures become an `error` on the record, never an exception."""
    record = _record(question, system)
    try:
        result = answer(parts.agent, system, question, history, config.top_k, config.max_answer_tokens)
    except (AgentError, BackendError) as exc:
        record.update(prediction="", raw="", error=str(exc), retrieved=[], context=[], prompt_tokens=0, completion_tokens=0, latency_s=0.0)
        return record
    record.update(
        prediction=result.prediction,
        raw=result.raw,
        error=None,
        retrieved=result.retrieved,
        context=result.context,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        latency_s=round(result.latency_s, 4),
    )
    if parts.judge_backend is not None:
        try:
            record["judge"] = judge(parts.judge_backend, question.question, question.gold, result.prediction, question.abstention)
        except JudgeError as exc:
            record["judge"] = None
            record["judge_error"] = str(exc)
    return record


class _History:
    """Full-context evidence lines per namespace, built on first use (thread-safe)."""

    def __init__(self, agent: MemoryAgent):
        self.agent = agent
        self.cache: dict[str, HistoryLines] = {}
        self.lock = threading.Lock()

    def __call__(self, namespace: str) -> HistoryLines:
        with self.lock:
            if namespace not in self.cache:
                self.cache[namespace] = history_lines(self.agent, namespace)
            return self.cache[namespace]


def run_benchmark(
    config: RunConfig,
    out_dir: str | Path,
    parts: Parts | None = None,
    resume: bool = False,
    progress: bool = True,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Run (or resume) a benchmark into `out_dir`; returns results.json's content."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.systems = check_systems(config.systems)
    predictions_path = out_dir / PREDICTIONS
    if predictions_path.exists() and predictions_path.stat().st_size and not resume:
        raise RunDirectoryError(f"{out_dir} already holds predictions; pass --resume to continue that run or choose another --out")
    data = load_benchmark(config.benchmark, config.data)
    for problem in data.problems:
        log.warning("%s", problem)
    categories = set(config.categories) if config.categories else None
    questions = select(data, config.limit, categories, config.per_history)
    (out_dir / CONFIG).write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
    (out_dir / PROBLEMS).write_text(json.dumps(data.problems, indent=2), encoding="utf-8")

    if parts is None:
        parts = build_parts(settings or bench_settings(out_dir))
    done = {(r["qid"], r["system"]) for r in read_predictions(predictions_path)}
    todo = [(q, s) for q in questions for s in config.systems if (q.qid, s) not in done]
    namespaces = list(dict.fromkeys(q.namespace for q, _ in todo))

    sink = PredictionLog(predictions_path)
    history = _History(parts.agent)
    with _progress(progress, len(todo), config.benchmark) as advance, ThreadPoolExecutor(max_workers=config.concurrency) as pool:
        for namespace in namespaces:
            # Replay each history just before its questions, so answers start arriving early.
            replay(parts, data, [namespace], out_dir / "state", config.facts)
            # System by system: consecutive prompts of one system share the most (full-context: the
            # whole history), which a local backend's prompt cache does not prefill again.
            tasks = sorted(((q, s) for q, s in todo if q.namespace == namespace), key=lambda task: config.systems.index(task[1]))
            if config.concurrency <= 1:
                for question, system in tasks:
                    sink.append(ask_one(parts, system, question, history, config))
                    advance()
                continue
            # Bounded concurrency for remote backends; each finished prediction is logged as it lands.
            futures = [pool.submit(ask_one, parts, s, q, history, config) for q, s in tasks]
            for future in futures:
                sink.append(future.result())
                advance()
    return write_reports(out_dir)


class _progress:
    """A rich progress bar with ETA (or nothing, for tests and pipes)."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.enabled = enabled
        self.total = total
        self.label = label
        self.bar = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
