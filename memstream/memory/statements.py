"""The store's statements on the hot paths (every add, search and chat), built once: building a SQLAlchemy statement
per call cost a third of a search's hit fetch and most of the catch-up check (memory/store.py uses them)."""

from __future__ import annotations

import functools

from sqlalchemy import Integer, Select, bindparam, func, insert, select

from memstream.memory import schema

TURN_COLUMNS = [column for column in schema.turns.c if column.name != "embedding"]
"""A turn row without its vector: 1.5 KB a row that only index builds read (iter_turns), copied out of every other
read for nothing (a search's hits, a chat's recent turns and neighbours)."""
TURNS_BY_ID = select(*TURN_COLUMNS).where(schema.turns.c.user_id == bindparam("user_id"),
                                          schema.turns.c.id.in_(bindparam("ids", expanding=True)))
"""A search's hits, by id (chunks of at most 900 ids)."""
MAX_IDS = select(
    select(func.coalesce(func.max(schema.turns.c.id), 0)).scalar_subquery(),
    select(func.coalesce(func.max(schema.facts.c.id), 0)).scalar_subquery(),
    select(func.coalesce(func.max(schema.deletions.c.seq), 0)).scalar_subquery(),
)
"""Highest turn id, fact id and deletion seq: every search and every add reads it (the index's catch-up check)."""
LATEST_SESSION = select(func.max(schema.sessions.c.id)).where(
    schema.sessions.c.user_id == bindparam("user_id"), schema.sessions.c.conversation_id == bindparam("conversation_id"))
"""The session a conversation's next turn goes to."""

# The one read of every add: which session, and the position its newest turn has. One index probe for the position,
# not a count over a session that may hold a whole life's conversation; one statement, not two, because an add reads
# it under the store's writer lock, where each statement lets the GIL go and must wait to get it back.
_LAST_POSITION = (select(schema.turns.c.position)
                  .where(schema.turns.c.session_id == schema.sessions.c.id, schema.turns.c.user_id == bindparam("user_id"))
                  .order_by(schema.turns.c.id.desc()).limit(1).scalar_subquery())
LATEST_SESSION_POSITION = select(schema.sessions.c.id, _LAST_POSITION).where(
    schema.sessions.c.id == LATEST_SESSION.scalar_subquery())
"""(session id, its newest turn's position or None) of a conversation's latest session; no row when it has none."""
SESSION_POSITION = select(schema.sessions.c.id, _LAST_POSITION).where(
    schema.sessions.c.id == bindparam("session_id"), schema.sessions.c.user_id == bindparam("user_id"))
"""(session id, its newest turn's position or None) of a named session of the user; no row when it is not theirs."""
INSERT_TURNS = insert(schema.turns).returning(schema.turns.c.id, sort_by_parameter_order=True)
"""Turn rows in, their ids out in the rows' order."""


# -- memoised shapes of the filtered reads ---------------------------------------------------
# list_turns and get_facts take optional filters; building a `select` per call (and its cache key) was about half of a
# read's Python (a session-context read: ~300 of ~700 us). Each combination of filters present is one statement with
# bound parameters, built once; the values go in as parameters. 2^9 and 2^5 combinations at most.


@functools.lru_cache(maxsize=None)
def turns_where(present: frozenset[str], newest_first: bool) -> Select:
    """A user's turns in id order (`newest_first`: reversed), filtered by the bound parameters named in `present`:
    user_id (always), conversation_id, session_id, after_id, before_id, since, until, limit, offset."""
    turns = schema.turns.c
    filters = {"conversation_id": turns.conversation_id == bindparam("conversation_id"),
               "session_id": turns.session_id == bindparam("session_id"),
               "after_id": turns.id > bindparam("after_id"),
               "before_id": turns.id < bindparam("before_id"),
               "since": turns.event_time >= bindparam("since", type_=turns.event_time.type),
               "until": turns.event_time < bindparam("until", type_=turns.event_time.type)}
    statement = select(*TURN_COLUMNS).where(turns.user_id == bindparam("user_id"), *(filters[name] for name in filters if name in present))
    statement = statement.order_by(turns.id.desc() if newest_first else turns.id.asc())
    if "limit" in present:
        statement = statement.limit(bindparam("limit", type_=Integer))
    if "offset" in present:
        statement = statement.offset(bindparam("offset", type_=Integer))
    return statement


@functools.lru_cache(maxsize=None)
def facts_where(present: frozenset[str], current_only: bool) -> Select:
    """A user's facts in id order, filtered by the bound parameters named in `present`: user_id (always), ids,
    subject, subjects, after_id; `current_only`: those not closed."""
    facts = schema.facts.c
    filters = {"ids": facts.id.in_(bindparam("ids", expanding=True)),
               "subject": facts.subject == bindparam("subject"),
               "subjects": facts.subject.in_(bindparam("subjects", expanding=True)),
               "after_id": facts.id > bindparam("after_id")}
    statement = select(schema.facts).where(facts.user_id == bindparam("user_id"), *(filters[name] for name in filters if name in present))
    if current_only:
        statement = statement.where(facts.valid_to.is_(None))
    return statement.order_by(facts.id)


EMBEDDINGS_PER_STATEMENT = 400
"""Vectors stored by one statement (two bound parameters each, well under SQLite's 32,766)."""


@functools.lru_cache(maxsize=64)
def set_vectors_sql(table: str, rows: int, mark: str) -> str:
    """UPDATE ... FROM a VALUES list of (id, vector) pairs, then the model name: `rows` pairs, `mark` the driver's
    placeholder (driver SQL: a VALUES list built as a SQLAlchemy construct was compiled again on every call). The
    VALUES is named in a WITH (SQLite takes no column names after a subquery's alias)."""
    pairs = ", ".join([f"({mark}, {mark})"] * rows)
    return (f"WITH given(item_id, blob) AS (VALUES {pairs}) "
            f"UPDATE {table} SET embedding = given.blob, embedding_model = {mark} FROM given WHERE {table}.id = given.item_id")
