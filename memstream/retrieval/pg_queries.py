"""The ranking statements of the database-resident index (retrieval/pg_index.py): BM25 over PostgreSQL full text and
exact dense search, each ranking a user's keys of several kinds in one statement."""

# Lexical ranking: "bm25" scores as the in-process BM25 does (Lucene idf, k1 1.2, b 0.75; retrieval/lexical.py) from
# PostgreSQL's own parse of the text (the tsvector: stemmed lexemes and their positions), with document frequencies
# and the average length taken over the user's keys of that kind; "ts_rank_cd" is PostgreSQL's cover density (no
# idf: a common word counts as much as a rare name). LoCoMo dev recall for both: reports/scale_out.md.
LEXICAL_RANK = "bm25"
BM25_K1 = 1.2
BM25_B = 0.75
RANK_NORMALIZATION = 1  # ts_rank_cd: divide by 1 + log(document length), so long round keys do not win by length
# One statement ranks the keys of several kinds, each kind on its own (a search asks for three or four lists).
# Documents: the user's keys of the kind holding any query lexeme; their tf from the tsvector positions of the query's
# lexemes only (setweight marks them, ts_filter keeps them: unnesting whole tsvectors cost half the query when a common
# word matches every key); df over those documents is the df over all of the user's keys (a key without the lexeme has
# df 0 for it); length = distinct lexemes (a tsvector keeps no token count; for a turn's few words they nearly agree).
# Arithmetic in float8: numeric (what count and avg give) was a fifth of the query. The user's keys are read through
# the (user_id, kind) btree first (MATERIALIZED): left to itself the planner ANDs in the GIN index, whose postings for a
# common word span every user (measured at 1M turns: 35 ms of a 40 ms query).
BM25_SQL = """
WITH mine AS MATERIALIZED (
    SELECT key_id, kind, turn_id, turn_ids, tsv FROM index_keys WHERE user_id = :u AND kind = ANY(CAST(:kinds AS smallint[]))
), stats AS (
    SELECT kind, count(*)::float8 AS n, greatest(avg(length(tsv)), 1)::float8 AS avgdl FROM mine GROUP BY kind
), terms AS (
    SELECT m.key_id, m.kind, m.turn_id, m.turn_ids, length(m.tsv)::float8 AS len, cardinality(t.positions)::float8 AS tf,
           count(*) OVER (PARTITION BY m.kind, t.lexeme)::float8 AS df
    FROM mine m, unnest(ts_filter(setweight(m.tsv, 'A', CAST(:lexemes AS text[])), '{{a}}')) t
    WHERE m.tsv @@ CAST(:tq AS tsquery)
), scored AS (
    SELECT d.kind, d.key_id, d.turn_ids, sum(ln(1 + (s.n - d.df + 0.5) / (d.df + 0.5))
                                           * d.tf * (:k1 + 1) / (d.tf + :k1 * (1 - :b + :b * d.len / s.avgdl))) AS score
    FROM terms d JOIN stats s USING (kind)
    WHERE {allowed}
    GROUP BY d.kind, d.key_id, d.turn_ids
)
SELECT kind, turn_ids, score FROM (
    SELECT kind, turn_ids, score, row_number() OVER (PARTITION BY kind ORDER BY score DESC, key_id) AS r FROM scored
) ranked WHERE r <= :depth ORDER BY kind, r
"""
# Exact dense search of a user's keys of several kinds in one statement: the btree on (user_id, kind), one inner
# product per key, the best `depth` of each kind (a per-kind statement each cost a round trip and a plan).
DENSE_EXACT_SQL = """
SELECT kind, turn_ids, -distance AS score FROM (
    SELECT kind, turn_ids, distance, row_number() OVER (PARTITION BY kind ORDER BY distance, key_id) AS r FROM (
        SELECT kind, key_id, turn_ids, embedding <#> CAST(:q AS vector) AS distance FROM index_keys
        WHERE user_id = :u AND kind = ANY(CAST(:kinds AS smallint[])) AND embedding IS NOT NULL {allowed}
    ) keyed
) ranked WHERE r <= :depth ORDER BY kind, r
"""
