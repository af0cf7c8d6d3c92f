"""`MemstreamStore`: LangGraph's long-term memory store (`BaseStore`) over a memstream `Memory`.

Mapping (the namespace decides both; nothing else can):
- memstream user: one label of the namespace (`user_label`, default the first), or a fixed `user`;
- memstream conversation: the whole namespace, as `langgraph:` + its labels joined by `/`
  (each label %-escaped), so one namespace is one conversation and prefixes stay prefixes;
- an item is one turn, alone in its own session: its text is what gets searched (the `index` fields' text, or every string
  in the value), its metadata holds the namespace, key, value and creation time.

`put` on an existing key replaces the item (the old turn is deleted from every index, the
creation time kept); `search` with a query goes through memstream's hybrid retriever (dense +
BM25, fused) and reports the fused score; `filter` compares values like LangGraph's own stores
($eq, $ne, $gt, $gte, $lt, $lte). Sync and async share one core: `abatch` runs `batch` in a
worker thread. TTLs are not supported (`supports_ttl = False`).

Looking an item up reads its namespace's turns: fine for the tens to thousands of items per
namespace that agent memories hold; a store of millions of items per namespace wants a key index.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, Iterable
from urllib.parse import quote, unquote

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)
from langgraph.store.base.embed import get_text_at_path

from memstream.memory import Memory
from memstream.memory.model import NewTurn, Turn

PREFIX = "langgraph:"
META = "langgraph"
SEARCH_WAIT_S = 2.0
"""A semantic search waits up to this long for the user's pending embeddings (items put just before)."""
MAX_CANDIDATES = 1000


def conversation_for(namespace: tuple[str, ...]) -> str:
    return PREFIX + "/".join(quote(label, safe="") for label in namespace)


def namespace_of(conversation: str) -> tuple[str, ...] | None:
    if not conversation.startswith(PREFIX):
        return None
    return tuple(unquote(label) for label in conversation[len(PREFIX):].split("/"))


def item_text(value: dict[str, Any], fields: list[str] | None) -> str:
    """What memstream indexes for an item: the text at `fields` (LangGraph's path syntax), or every string in it."""
    if fields is not None and fields != ["$"]:
        pieces = [text for field in fields for text in get_text_at_path(value, field)]
    else:
        pieces = list(_strings(value))
    return "\n".join(p for p in pieces if p.strip())


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def matches_filter(value: dict[str, Any], conditions: dict[str, Any] | None) -> bool:
    return not conditions or all(_compare(value.get(key), wanted) for key, wanted in conditions.items())


def _compare(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_operator(actual, op, operand) for op, operand in wanted.items())
        return isinstance(actual, dict) and all(_compare(actual.get(k), v) for k, v in wanted.items())
    return actual == wanted


def _operator(actual: Any, op: str, operand: Any) -> bool:
    if op == "$eq":
        return actual == operand
    if op == "$ne":
        return actual != operand
    if op not in ("$gt", "$gte", "$lt", "$lte"):
        raise ValueError(f"unsupported filter operator {op!r} (use $eq, $ne, $gt, $gte, $lt, $lte)")
    if actual is None or isinstance(actual, (dict, list, bool)):
        return False
    try:
        a, b = float(actual), float(operand)
    except (TypeError, ValueError):
        return False
    return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]


def namespace_matches(namespace: tuple[str, ...], condition: MatchCondition) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    labels = namespace[: len(path)] if condition.match_type == "prefix" else namespace[len(namespace) - len(path):]
    return all(p == "*" or p == label for p, label in zip(path, labels))


def _item(turn: Turn, score: float | None = None, search: bool = False) -> Item:
    meta = turn.metadata[META]
    created = datetime.fromisoformat(meta["created_at"])
    updated = turn.ingested_at.replace(tzinfo=timezone.utc) if turn.ingested_at.tzinfo is None else turn.ingested_at
    namespace = tuple(meta["namespace"])
    if search:
        return SearchItem(namespace, meta["key"], meta["value"], created, updated, score)
    return Item(value=meta["value"], key=meta["key"], namespace=namespace, created_at=created, updated_at=updated)


class MemstreamStore(BaseStore):
    """A LangGraph store whose items live in memstream (durable, per user, hybrid-searchable).

        memory = open_memory(load_settings())
        store = MemstreamStore(memory)                       # namespace ("alice", "memories") -> user alice
        graph = builder.compile(store=store)

    `user`: put every namespace under this memstream user; otherwise `user_label` picks the label of the
    namespace that names the user. `index_fields`: the value paths whose text is searched (default: all text).
    """

    supports_ttl = False

    def __init__(self, memory: Memory, *, user: str | None = None, user_label: int = 0, index_fields: list[str] | None = None):
        if user_label < 0:
            raise ValueError(f"user_label must be >= 0, got {user_label}")
        self.memory = memory
        self.user = user
        self.user_label = user_label
        self.index_fields = index_fields

    # -- users and namespaces --------------------------------------------------------

    def _user_of(self, namespace: tuple[str, ...]) -> str:
        if self.user is not None:
            return self.user
        if len(namespace) <= self.user_label:
            raise ValueError(f"namespace {namespace} has no label {self.user_label} to name the memstream user (user_label)")
        return namespace[self.user_label]

    def _users_under(self, prefix: tuple[str, ...]) -> list[str]:
        """The memstream users whose items can lie under a namespace prefix."""
        if self.user is not None:
            return [self.user] if self.memory.has_user(self.user) else []
        if len(prefix) > self.user_label:
            user = prefix[self.user_label]
            return [user] if self.memory.has_user(user) else []
        return self.memory.users()

    def _namespaces(self, user: str) -> list[tuple[str, ...]]:
        found = (namespace_of(c.conversation_id) for c in self.memory.conversations(user))
        return [ns for ns in found if ns is not None and self._owns(user, ns)]

    def _owns(self, user: str, namespace: tuple[str, ...]) -> bool:
        """Another mapping (a fixed user, another user_label) may have written this user's rows: skip those."""
        return self.user is not None or (len(namespace) > self.user_label and namespace[self.user_label] == user)

    def _current(self, user: str, namespace: tuple[str, ...]) -> dict[str, Turn]:
        """key -> the turn holding its current value (the newest, should two writers have raced)."""
        current: dict[str, Turn] = {}
        for turn in self.memory.list_turns(user, conversation_for(namespace)):
            meta = turn.metadata.get(META)
            if isinstance(meta, dict) and tuple(meta.get("namespace", ())) == namespace:
                previous = current.get(meta["key"])
                if previous is None or turn.id > previous.id:
                    current[meta["key"]] = turn
        return current

    # -- operations ----------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        results: list[Result] = []
        for op in ops:
            if isinstance(op, GetOp):
                results.append(self._get(op))
            elif isinstance(op, SearchOp):
                results.append(self._search(op))
            elif isinstance(op, PutOp):
                self._put(op)
                results.append(None)
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op))
            else:
                raise ValueError(f"unknown store operation {type(op).__name__}")
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    def _get(self, op: GetOp) -> Item | None:
        user = self._user_of(op.namespace)
        if not self.memory.has_user(user):
            return None
        turn = self._current(user, tuple(op.namespace)).get(op.key)
        return _item(turn) if turn is not None else None

    def _put(self, op: PutOp) -> None:
        namespace = tuple(op.namespace)
        user = self._user_of(namespace)
        existing = self._current(user, namespace).get(op.key) if self.memory.has_user(user) else None
        if op.value is None:
            if existing is not None:
                self._delete_key(user, namespace, op.key)
            return
        value = dict(op.value)
        now = datetime.now(timezone.utc)
        created = existing.metadata[META]["created_at"] if existing is not None else now.isoformat()
        fields = None if op.index is None else op.index
        indexed = fields is not False
        text = item_text(value, self.index_fields if fields is None else fields) if indexed else ""
        meta = {"namespace": list(namespace), "key": op.key, "value": value, "created_at": created, "indexed": bool(indexed and text)}
        # Each item is its own session: items are independent, so memstream's round keys (a turn with its
        # neighbours in the session) must not join one item's text to the next's.
        conversation = conversation_for(namespace)
        session = self.memory.new_session(user, conversation, started_at=now)
        # A turn needs text; an item with nothing to search is stored under its key and never returned by a query.
        self.memory.add(user, conversation, [NewTurn("user", text or op.key, event_time=now, metadata={META: meta})], session_id=session)
        if existing is not None:
            self._delete_key(user, namespace, op.key, keep_newest=True)

    def _delete_key(self, user: str, namespace: tuple[str, ...], key: str, keep_newest: bool = False) -> None:
        turns = [t for t in self.memory.list_turns(user, conversation_for(namespace))
                 if isinstance(t.metadata.get(META), dict) and t.metadata[META].get("key") == key]
        turns.sort(key=lambda t: t.id)
        for turn in turns[:-1] if keep_newest else turns:
            self.memory.delete_turn(user, turn.id)

    def _search(self, op: SearchOp) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        if op.limit < 0 or op.offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got limit={op.limit}, offset={op.offset}")
        if op.query:
            scored = self._semantic(prefix, op)
        else:
            scored = []
            for user in self._users_under(prefix):
                for namespace in self._namespaces(user):
                    if namespace[: len(prefix)] == prefix:
                        scored += [(None, t) for t in self._current(user, namespace).values()
                                   if matches_filter(t.metadata[META]["value"], op.filter)]
            scored.sort(key=lambda pair: pair[1].id, reverse=True)  # most recently written first
        return [_item(turn, score, search=True) for score, turn in scored[op.offset: op.offset + op.limit]]

    def _semantic(self, prefix: tuple[str, ...], op: SearchOp) -> list[tuple[float | None, Turn]]:
        wanted = op.offset + op.limit
        k = min(MAX_CANDIDATES, max(4 * wanted, 20))
        scored: list[tuple[float | None, Turn]] = []
        for user in self._users_under(prefix):
            namespaces = [ns for ns in self._namespaces(user) if ns[: len(prefix)] == prefix]
            if not namespaces:
                continue
            only = conversation_for(namespaces[0]) if len(namespaces) == 1 else None
            result = self.memory.search(user, op.query, k, conversation=only, wait_s=SEARCH_WAIT_S)
            current = {(tuple(ns), key): turn.id for ns in namespaces for key, turn in self._current(user, ns).items()}
            for hit in result.hits:
                meta = hit.turn.metadata.get(META)
                if not isinstance(meta, dict) or not meta.get("indexed"):
                    continue
                namespace = tuple(meta["namespace"])
                if namespace[: len(prefix)] != prefix or current.get((namespace, meta["key"])) != hit.turn.id:
                    continue  # outside the prefix, or a replaced value
                if matches_filter(meta["value"], op.filter):
                    scored.append((hit.fused_score, hit.turn))
        scored.sort(key=lambda pair: pair[0] or 0.0, reverse=True)
        return scored

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        prefix: tuple[str, ...] = ()
        for condition in op.match_conditions or ():
            if condition.match_type == "prefix" and "*" not in condition.path:
                prefix = tuple(condition.path)
        namespaces = {ns for user in self._users_under(prefix) for ns in self._namespaces(user)
                      if all(namespace_matches(ns, c) for c in op.match_conditions or ())}
        if op.max_depth is not None:
            namespaces = {ns[: op.max_depth] for ns in namespaces}
        return sorted(namespaces)[op.offset: op.offset + op.limit]
