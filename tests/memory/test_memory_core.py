"""The Memory object: writes acknowledged at once and keyword-searchable, vectors in the background, deletes
immediate, a crash before the vectors were embedded loses nothing, and front ends open memory only through it."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path

import pytest

from memstream.config import load_settings
from memstream.errors import BusyError, InvalidInputError
from memstream.memory import NewTurn, open_memory
from memstream.memory.model import NewSession
from memstream.retrieval import keys
from tests.conftest import encoded_rounds
from tests.small_embedder import HashingEmbedder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path):
    return load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path))


@contextlib.contextmanager
def busy_indexer(settings):
    """A memory whose background indexer is stuck embedding another user's keys (until `embedder.gate` is set), so
    what the test adds waits in the queue; `texts` collects every text embedded."""
    embedder = HashingEmbedder()
    embedder.gate = threading.Event()
    texts: list[str] = []
    embed = embedder.embed
    embedder.embed = lambda batch: texts.extend(batch) or embed(batch)
    with open_memory(settings, embedder) as memory:
        memory.add("bob", "other", [NewTurn("user", "a note that keeps the indexer busy")])
        deadline = time.monotonic() + 10
        while not memory.retriever.queue._in_flight and time.monotonic() < deadline:  # the indexer holds bob's keys
            time.sleep(0.01)
        yield memory, embedder, texts


def bounded(tmp_path, max_pending_keys: int, pending_wait_s: float):
    """One indexer thread: these tests hold it busy and check the order in which the queue hands out keys."""
    return load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path),
                         retrieval={"max_pending_keys": max_pending_keys, "pending_wait_s": pending_wait_s, "indexer_threads": 1})


def test_a_write_past_the_index_backlog_bound_fails_busy_and_stores_nothing(tmp_path):
    with busy_indexer(bounded(tmp_path, max_pending_keys=3, pending_wait_s=0.2)) as (memory, embedder, _):
        assert memory.retriever.pending() >= 3  # bob's turn, round and statement keys
        started = time.monotonic()
        with pytest.raises(BusyError, match=r"backlog of \d+ keys .*max_pending_keys 3.*nothing was stored") as caught:
            memory.add("alice", "chat", [NewTurn("user", "I moved to Lisbon.")])
        assert time.monotonic() - started >= 0.2  # it waited for room first
        assert caught.value.retry_after_s >= 1
        assert memory.store.count_turns() == 1 and not memory.store.has_user("alice")
        started = time.monotonic()
        with pytest.raises(InvalidInputError, match="role must be one of"):  # bad input: its own error at once
            memory.add("alice", "chat", [NewTurn("robot", "beep")])
        assert time.monotonic() - started < 0.2
        # A chat's reply completes work under way: it never waits on the bound.
        memory.add("bob", "other", [NewTurn("assistant", "Noted.")], continuing=True)
        embedder.gate.set()
        assert memory.add("alice", "chat", [NewTurn("user", "I moved to Lisbon.")])[0].text == "I moved to Lisbon."


def test_a_write_waiting_for_room_goes_ahead_once_the_indexer_catches_up(tmp_path):
    with busy_indexer(bounded(tmp_path, max_pending_keys=3, pending_wait_s=30)) as (memory, embedder, _):
        threading.Timer(0.3, embedder.gate.set).start()
        started = time.monotonic()
        stored = memory.add("alice", "chat", [NewTurn("user", "I moved to Lisbon.")])
        assert 0.25 <= time.monotonic() - started < 20 and stored[0].id
        assert memory.flush(30) and memory.search("alice", "lisbon", mode="dense").hits[0].turn.id == stored[0].id


def test_a_bulk_import_neither_counts_against_the_bound_nor_goes_before_writes(tmp_path):
    embedder = HashingEmbedder()
    embedder.gate = threading.Event()
    texts: list[str] = []
    embed = embedder.embed
    embedder.embed = lambda batch: texts.extend(batch) or embed(batch)
    with open_memory(bounded(tmp_path, max_pending_keys=3, pending_wait_s=0.2), embedder) as memory:
        memory.ingest("bulk", [NewSession("archive", [NewTurn("user", "first archived note")])])
        deadline = time.monotonic() + 10
        while not memory.retriever.queue._in_flight and time.monotonic() < deadline:  # the indexer holds the bulk keys
            time.sleep(0.01)
        memory.ingest("bulk", [NewSession("archive", [NewTurn("user", f"archived note {n}") for n in range(20)])])
        assert memory.retriever.pending() > 60 and memory.retriever.queue.from_writes == 0
        memory.add("alice", "chat", [NewTurn("user", "I moved to Lisbon.")])  # 60 bulk keys wait: no matter
        with pytest.raises(BusyError):  # alice's own 3 keys do count
            memory.add("carol", "chat", [NewTurn("user", "I moved to Porto.")])
        embedder.gate.set()
        assert memory.flush(30)
    # The write's turn and statement keys went before every key of the second import (its open round key, like the
    # import's, waits in the deferred line: its text changes with the next turn).
    lisbon = [i for i, t in enumerate(texts) if "Lisbon" in t and not t.startswith("[")]
    archived = [i for i, t in enumerate(texts) if re.search(r"archived note \d", t)]
    assert len(lisbon) == 2 and archived and max(lisbon) < min(archived)


def test_two_indexer_threads_never_let_an_older_text_of_a_key_land_last(tmp_path):
    """A round key re-queued (its next turn arrived) while its first text is being embedded on one thread: the newer
    text, embedded on the other thread and added first, stays; the older vector arriving after it is dropped."""
    embedder = HashingEmbedder()
    release = threading.Event()
    embed = embedder.embed

    def slow_first_round(batch):
        if any(text.startswith("[") and "\n" not in text for text in batch):  # the round key before the reply
            release.wait(30)
        return embed(batch)

    embedder.embed = slow_first_round
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path), retrieval={"indexer_threads": 2, "round_vectors": "encoded"})
    with open_memory(settings, embedder) as memory:
        queue = memory.retriever.queue
        said = memory.add("alice", "chat", [NewTurn("user", "I live in Porto.")])[0]
        deadline = time.monotonic() + 10
        while not any(job.kind == "round" for job in queue._in_flight.values()) and time.monotonic() < deadline:
            time.sleep(0.01)  # one thread holds the open round key's first text
        memory.add("alice", "chat", [NewTurn("assistant", "Porto is lovely.")], continuing=True)
        deadline = time.monotonic() + 10
        while memory.retriever.pending("alice") > 1 and time.monotonic() < deadline:
            time.sleep(0.01)  # the other thread embedded the reply's keys and the round's new text
        release.set()
        assert memory.flush(30)
        index = memory.retriever._users["alice"].dense["round"]
        newer = embed([keys.round_key_text(memory.store.list_turns("alice"), 0, 1)])[0]  # "...Porto.\nassistant: ..."
        ids, scores = index.search(newer, 2)
    assert ids[0] == keys.key_id(said.id, "round") and scores[0] > 0.999


def test_an_unbounded_backlog_never_makes_a_write_wait(tmp_path):
    with busy_indexer(bounded(tmp_path, max_pending_keys=0, pending_wait_s=0)) as (memory, embedder, _):
        for n in range(5):
            memory.add("alice", "chat", [NewTurn("user", f"note {n}")])
        assert memory.retriever.pending() >= 15
        embedder.gate.set()


def test_add_is_found_by_keyword_at_once_and_densely_once_embedded(settings):
    embedder = HashingEmbedder()
    embedder.gate = threading.Event()  # hold the background indexer: vectors stay pending
    with open_memory(settings, embedder) as memory:
        stored = memory.add("alice", "chat", [NewTurn("user", "My sister Clara moved to Lisbon.")])
        assert memory.stats("alice")["index"]["pending_keys"] > 0
        by_keyword = memory.search("alice", "Lisbon", mode="bm25")
        assert [h.turn.id for h in by_keyword.hits] == [stored[0].id]
        assert memory.search("alice", "Lisbon", mode="dense").hits == []  # not embedded yet
        assert memory.search("alice", "Lisbon").hits[0].turn.id == stored[0].id  # hybrid: via the lexical side
        embedder.gate.set()
        dense = memory.search("alice", "clara lisbon", mode="dense", wait_s=10)
        assert [h.turn.id for h in dense.hits] == [stored[0].id]
        assert memory.stats("alice")["index"]["pending_keys"] == 0


def test_delete_and_forget_reach_the_index_before_returning(settings):
    with open_memory(settings, HashingEmbedder()) as memory:
        kept, gone = memory.add("alice", "chat", [NewTurn("user", "the red bicycle"), NewTurn("user", "the red kite")])
        memory.add("bob", "chat", [NewTurn("user", "the red kite of bob")])
        memory.flush(10)
        assert memory.delete_turn("alice", gone.id)
        for mode in ("bm25", "dense", "memstream"):
            assert gone.id not in [h.turn.id for h in memory.search("alice", "red kite", mode=mode).hits]
        memory.forget_user("alice")
        assert not memory.has_user("alice")
        assert [h.turn.user_id for h in memory.search("bob", "red kite").hits] == ["bob"]


def test_an_add_indexes_what_other_writers_committed_before_it(settings, monkeypatch):
    """An add indexes its own turns without reading them back only when nothing else changed; a turn, a delete or a
    fact another writer committed in between is still caught up by that add."""
    with open_memory(settings, HashingEmbedder()) as mine, open_memory(settings, HashingEmbedder()) as other:
        mine.add("alice", "chat", [NewTurn("user", "first note about herons")])
        reads = []
        original = mine.store.iter_turns
        monkeypatch.setattr(mine.store, "iter_turns", lambda *a, **k: reads.append(1) or original(*a, **k))
        mine.add("alice", "chat", [NewTurn("user", "second note about herons")])
        assert reads == []  # only its own turn was new: indexed as returned, not read back
        theirs = other.add("alice", "chat", [NewTurn("user", "a note about otters from another process")])[0]
        mine.add("alice", "chat", [NewTurn("user", "third note about herons")])
        assert reads, "a gap in the ids sends the add through the full catch-up"
        assert [h.turn.id for h in mine.search("alice", "otters", mode="bm25").hits] == [theirs.id]
        heron = mine.search("alice", "herons", mode="bm25").hits[0].turn
        assert other.delete_turn("alice", heron.id)
        mine.add("alice", "chat", [NewTurn("user", "a note about swifts")])
        assert heron.id not in [h.turn.id for h in mine.search("alice", "herons", mode="bm25").hits]
        assert mine.refresh() == 0  # caught up: a search's catch-up reads nothing more



def test_writers_in_one_process_index_their_own_turns_in_any_order_without_reading_back(settings, monkeypatch):
    """Concurrent adds in one process commit in one order and reach the index in another: a writer whose turn lies
    above another's not yet indexed indexes its own without a full catch-up, the cursor waits for the gap to close,
    and a search meanwhile does not read back a turn its writer is about to index."""
    with open_memory(settings, HashingEmbedder()) as memory:
        memory.add("alice", "chat", [NewTurn("user", "first note about herons")])
        reads = []
        original = memory.store.iter_turns
        monkeypatch.setattr(memory.store, "iter_turns", lambda *a, **k: reads.append(1) or original(*a, **k))
        retriever = memory.retriever
        slow, fast = (memory.store.add_turns("alice", "chat", [NewTurn("user", text)]) for text in ("otters", "swifts"))
        before = retriever._cursor.turn
        with retriever._claims_lock:
            retriever._claimed.add(slow[0].id)  # the slow writer committed and waits for the retriever's lock
        retriever.sync(save=False, fresh=fast)  # the later turn reaches the index first
        assert retriever._cursor.turn == before and fast[0].id in retriever._ahead
        assert [h.turn.id for h in memory.search("alice", "swifts", mode="bm25").hits] == [fast[0].id]
        with retriever._claims_lock:
            retriever._claimed.discard(slow[0].id)
        retriever.sync(save=False, fresh=slow)
        assert reads == []  # nobody read the turns back
        assert retriever._cursor.turn == fast[0].id and not retriever._ahead  # the gap closed
        assert [h.turn.id for h in memory.search("alice", "otters", mode="bm25").hits] == [slow[0].id]
        # A turn in the gap that no writer here claims (another process's) is read back by the next catch-up.
        theirs = memory.store.add_turns("alice", "chat", [NewTurn("user", "kingfishers from elsewhere")])
        mine = memory.add("alice", "chat", [NewTurn("user", "a note about wrens")])
        assert reads and theirs[0].id < mine[0].id
        assert [h.turn.id for h in memory.search("alice", "kingfishers", mode="bm25").hits] == [theirs[0].id]

def test_a_round_key_refreshed_while_waiting_is_embedded_once(settings):
    """Under load a user turn's round key is re-queued when the reply arrives before the first text was embedded:
    only the newest text is embedded, and the pending count does not wait for the dropped one."""
    with busy_indexer(encoded_rounds(settings)) as (memory, embedder, texts):
        question = memory.add("alice", "chat", [NewTurn("user", "Where did the herons nest?")])[0]
        memory.add("alice", "chat", [NewTurn("assistant", "By the old mill pond.")])
        assert memory.stats("alice")["index"]["pending_keys"] == 6  # 3 keys per turn; the first round key was dropped
        embedder.gate.set()
        assert memory.flush(10)
        rounds = [t for t in texts if "herons" in t and t.startswith("[")]  # the question's and the reply's round keys
        assert rounds and all("old mill pond" in t for t in rounds)  # never the question's round without its reply
        hits = memory.search("alice", "herons nest mill pond", mode="dense").hits
        assert question.id in [h.turn.id for h in hits]



def test_open_rounds_wait_behind_other_keys_and_each_round_text_is_embedded_once(settings):
    """A live chat's newest round key changes with the next turn: it waits behind every other queued key, so on a
    busy indexer the reply supersedes it and each round text is embedded once; alone in the queue it goes at once."""
    from memstream.retrieval.dense_jobs import DenseJob, DenseQueue

    lock = threading.RLock()
    queue = DenseQueue(lock)
    index = object()
    job = lambda kind, item, text, deferred=False: DenseJob(index, "alice", kind, item, text, 1, deferred=deferred)  # noqa: E731
    with lock:  # the retriever's lock, which put's callers hold
        queue.put([job("turn", 1, "q"), job("round", 1, "q open", deferred=True)])
    assert [j.text for j in queue.take(10)] == ["q"]  # the open round waits while anything else is queued
    queue.done([])
    with lock:
        queue.put([job("turn", 2, "a"), job("round", 1, "q + a"), job("round", 2, "a open", deferred=True)])
    assert [j.text for j in queue.take(10)] == ["a", "q + a"]  # the reply superseded the question's open round
    assert [j.text for j in queue.take(10)] == ["a open"]  # nothing else waits: the open round goes

    with busy_indexer(encoded_rounds(settings)) as (memory, embedder, texts):
        for n in range(3):
            memory.add("alice", "chat", [NewTurn("user", f"question {n} about herons")])
            memory.add("alice", "chat", [NewTurn("assistant", f"answer {n} about the mill pond")])
        embedder.gate.set()
        assert memory.flush(10)
        rounds = [t for t in texts if "herons" in t and t.startswith("[")]
        assert len(rounds) == len(set(rounds)) == 6  # one text per turn's round key: no open round embedded and replaced
        assert any(t.endswith("answer 2 about the mill pond") for t in rounds)  # the last round, still open, went when the queue emptied
        # An idle indexer embeds an open round at once: a search right after a single question finds it densely.
        question = memory.add("carol", "chat", [NewTurn("user", "Where did the kingfishers nest?")])[0]
        assert memory.flush(10)
        assert question.id in [h.turn.id for h in memory.search("carol", "kingfishers nest", mode="dense").hits]


def test_a_crash_with_vectors_pending_loses_nothing(settings):
    """The index cache is saved while vectors wait; the process dies; the next open embeds them from the database."""
    embedder = HashingEmbedder()
    embedder.gate = threading.Event()
    memory = open_memory(settings, embedder)
    early = memory.add("alice", "chat", [NewTurn("user", "an early note about tulips")])
    embedder.gate.set()
    memory.flush(10)
    embedder.gate.clear()
    late = memory.add("alice", "chat", [NewTurn("user", "a late note about volcanoes")])
    memory.retriever.save()  # as a periodic save would, with `late` still pending
    memory.store.close()  # the process "dies": no drain, no final save
    embedder.gate.set()

    with open_memory(settings, HashingEmbedder()) as reopened:
        reopened.flush(10)
        hits = reopened.search("alice", "volcanoes", mode="dense").hits
        assert hits and hits[0].turn.id == late[0].id
        assert reopened.search("alice", "tulips", mode="dense").hits[0].turn.id == early[0].id


def test_an_embedder_failure_on_one_row_is_skipped_and_reported(settings):
    embedder = HashingEmbedder()
    embedder.fail_on = "UNEMBEDDABLE"
    with open_memory(settings, embedder) as memory:
        memory.add("alice", "chat", [NewTurn("user", "UNEMBEDDABLE text"), NewTurn("user", "a fine turn about otters")])
        memory.add("bob", "chat", [NewTurn("user", "bob likes otters")])
        memory.flush(10)
        index = memory.stats()["index"]
        assert index["skipped"] >= 1 and index["indexer_alive"]
        assert memory.search("alice", "otters", mode="dense").hits[0].turn.text == "a fine turn about otters"
        assert memory.search("bob", "otters", mode="dense").hits[0].turn.user_id == "bob"


def test_bulk_ingest_reports_progress_and_indexes_everything(settings):
    from memstream.memory.model import NewSession

    sessions = [NewSession("c", [NewTurn("user", f"turn {i} of session {s}") for i in range(50)]) for s in range(60)]
    seen = []
    with open_memory(settings, HashingEmbedder()) as memory:
        results = memory.ingest("alice", sessions, progress=seen.append)
        assert sum(len(ids) for _, ids in results) == 3000
        assert seen[-1] == 3000 and len(seen) >= 2  # batched commits, progress after each
        assert memory.flush(30)
        assert memory.retriever.indexed_turns("alice") == 3000


def test_only_the_memory_package_constructs_stores_and_retrievers():
    """Front ends hold a Memory; they never assemble its parts (checked on the source, outside memory/)."""
    pattern = re.compile(r"\b(MemoryStore|Retriever)\s*\(|\bbuild_retriever\s*\(")
    offenders = []
    for path in (REPO / "memstream").rglob("*.py"):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith("memstream/memory/") or relative == "memstream/retrieval/retriever.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line) and not line.lstrip().startswith(("#", "class ")):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []


def test_adds_and_searches_beyond_the_work_slots_wait_their_turn(tmp_path, monkeypatch):
    """retrieval.work_slots bounds how many adds and searches of one Memory run at once (threads past it wait)."""
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'm.db'}", home=str(tmp_path), retrieval={"work_slots": 2})
    with open_memory(settings, HashingEmbedder()) as memory:
        running, peak, lock = [0], [0], threading.Lock()
        original = memory.store.add_turns

        def slow_add(*args, **kwargs):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            try:
                return original(*args, **kwargs)
            finally:
                with lock:
                    running[0] -= 1

        monkeypatch.setattr(memory.store, "add_turns", slow_add)
        threads = [threading.Thread(target=memory.add, args=(f"u{i}", "c", [NewTurn("user", f"note {i}")])) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert peak[0] == 2 and memory.count_turns() == 6


def test_an_excluded_turn_neither_appears_nor_shifts_the_others_scores(tmp_path):
    # A chat searches with the question's own turn excluded: whether that turn is embedded yet must not change
    # the fused scores (or the order) of the rest.
    texts = ["Where does my grey cat sleep?", "My grey cat sleeps on the windowsill.", "The cat likes tuna."]
    scores = []
    for name in ("with", "without"):
        settings = load_settings(db_url=f"sqlite:///{tmp_path / name}.db", home=str(tmp_path / name))
        with open_memory(settings, HashingEmbedder()) as memory:
            # the question in a conversation of its own, so no round key of the others holds its words
            asked = memory.add("alice", "today", [NewTurn("user", texts[0])]) if name == "with" else []
            memory.add("alice", "chat", [NewTurn("user", text) for text in texts[1:]])
            assert memory.flush(30)
            exclude = [asked[0].id] if asked else []
            hits = memory.search("alice", texts[0], k=5, exclude=exclude).hits
            assert all(hit.turn.id not in exclude for hit in hits)
            scores.append([(hit.turn.text, round(hit.fused_score, 9)) for hit in hits])
    assert scores[0] == scores[1] and scores[0]


def test_an_excluded_id_that_is_not_a_turn_id_is_a_clear_error(settings):
    with open_memory(settings, HashingEmbedder()) as memory:
        memory.add("alice", "chat", [NewTurn("user", "My grey cat sleeps on the windowsill.")])
        for bad in (["3"], [0], [True]):
            with pytest.raises(InvalidInputError, match="excluded turn id"):
                memory.search("alice", "cat", exclude=bad)
