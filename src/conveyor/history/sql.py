"""The SQL of searches and lookups, built once for both backends. No I/O here.

A :class:`Dialect` says what differs: placeholders, table names, how a time is passed, how
text is searched and how the keyset condition is written. Everything else -- which filters
exist, how they combine, the order and the page size -- is in :func:`build_search`, so the
two backends cannot drift apart on what a query means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .query import Cursor, Page, SearchQuery, from_micros, to_micros
from .rows import JOB_COLUMNS, job_from_row

TextMode = Literal["trigram", "fulltext", "fts5", "like"]
"""trigram: PostgreSQL pg_trgm GIN indexes, ILIKE; fulltext: PostgreSQL tsvector GIN indexes
(whole words); fts5: SQLite FTS5 with the trigram tokenizer; like: SQLite without FTS5 (scan)."""

# The trigram tokenizer indexes runs of three characters: a shorter needle cannot use it.
FTS5_MIN_TEXT = 3


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards in ``text`` escaped by backslash."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def fts5_phrase(text: str) -> str:
    """``text`` as one FTS5 phrase over both indexed columns: matched as a substring."""
    return '{error_message arguments} : "' + text.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Dialect:
    backend: Literal["postgres", "sqlite"]
    jobs: str
    attempts: str
    text_mode: TextMode
    fts: str = ""
    """SQLite: the FTS5 table over jobs (rowid = jobs.seq)."""

    @property
    def placeholder(self) -> str:
        return "%s" if self.backend == "postgres" else "?"

    def time(self, value: datetime) -> Any:
        return value if self.backend == "postgres" else to_micros(value)

    def read_time(self) -> Callable[[Any], datetime]:
        if self.backend == "postgres":
            return _aware
        return from_micros


def _aware(value: Any) -> datetime:
    assert isinstance(value, datetime)
    return value


class _Params:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return self.dialect.placeholder


SELECT_JOB = ", ".join(f"j.{c}" for c in JOB_COLUMNS) + ", j.seq"


TEXT_PROBE_ROWS = 20_000
"""A text search first counts its matches through the text index, up to this many. Fewer: the
index goes first (its matches fetched and sorted by time: fast however old they are). As
many: the term is common, and walking the jobs newest first, testing each, finds a page
sooner than fetching every match would. Either way round is seconds at a million jobs when
picked wrongly, and the databases' own estimates of a substring's frequency are guesses."""

TextPlan = Literal["index", "order"]


def build_text_probe(d: Dialect, text: str) -> tuple[str, list[Any]] | None:
    """How many jobs the text matches, up to :data:`TEXT_PROBE_ROWS`, counted on the text
    index alone; None when the backend's text search has no probe (full-text, short terms)."""
    p = _Params(d)
    if d.text_mode == "trigram":
        inner = f"SELECT 1 FROM {d.jobs} j WHERE {_text_condition(d, p, text)}"
    elif d.text_mode == "fts5" and len(text) >= FTS5_MIN_TEXT:
        inner = f"SELECT rowid FROM {d.fts} WHERE {d.fts} MATCH {p(fts5_phrase(text))}"
    else:
        return None
    return f"SELECT count(*) FROM ({inner} LIMIT {TEXT_PROBE_ROWS}) m", p.values


def text_plan(probed: int) -> TextPlan:
    return "index" if probed < TEXT_PROBE_ROWS else "order"


def _text_condition(d: Dialect, p: _Params, text: str, plan: TextPlan = "index") -> str:
    if d.text_mode == "trigram":
        pattern = like_pattern(text)
        return f"(j.error_message ILIKE {p(pattern)} OR j.arguments ILIKE {p(pattern)})"
    if d.text_mode == "fulltext":
        # The expressions are those of the migration's indexes, or the indexes go unused.
        return (
            f"(to_tsvector('simple', coalesce(j.error_message, '')) @@ plainto_tsquery('simple', {p(text)})"
            f" OR to_tsvector('simple', coalesce(j.arguments, '')) @@ plainto_tsquery('simple', {p(text)}))"
        )
    if d.text_mode == "fts5" and len(text) >= FTS5_MIN_TEXT and plan == "index":
        return f"j.seq IN (SELECT rowid FROM {d.fts} WHERE {d.fts} MATCH {p(fts5_phrase(text))})"
    # LIKE is case-insensitive for ASCII, as the trigram index is; with the newest-first walk
    # (plan "order") it tests each job it passes.
    pattern = like_pattern(text)
    return f"(j.error_message LIKE {p(pattern)} ESCAPE '\\' OR j.arguments LIKE {p(pattern)} ESCAPE '\\')"


def _worker_condition(d: Dialect, p: _Params, worker: str) -> str:
    # The last attempt's worker is on the job row; earlier ones only in the attempts table.
    if d.backend == "postgres":
        ran_on = (
            "(j.queue, j.id, j.attempts, j.state, j.finished_at) IN"
            " (SELECT a.queue, a.job_id, a.job_attempts, a.job_state, a.job_finished_at"
            f" FROM {d.attempts} a WHERE a.worker = {p(worker)})"
        )
    else:
        ran_on = f"j.seq IN (SELECT a.job_seq FROM {d.attempts} a WHERE a.worker = {p(worker)})"
    return f"(j.worker = {p(worker)} OR {ran_on})"


def _keyset_condition(d: Dialect, p: _Params, position: Cursor) -> str:
    finished = d.time(from_micros(position.finished_at_us))
    if d.backend == "postgres":
        return f"(j.finished_at, j.seq) < ({p(finished)}, {p(position.seq)})"
    # SQLite ranges an index on the first column of this form; the row-value form it may not.
    f1, f2, s = p(finished), p(finished), p(position.seq)
    return f"j.finished_at <= {f1} AND (j.finished_at < {f2} OR j.seq < {s})"


def build_search(query: SearchQuery, d: Dialect, plan: TextPlan = "index") -> tuple[str, list[Any]]:
    """One page of ``query``, newest first, one row more than the limit (to know whether
    another page follows). Rows are :data:`JOB_COLUMNS` then ``seq``. ``plan``: how a text
    search goes (see :data:`TEXT_PROBE_ROWS`); on PostgreSQL the store sets it by planner
    settings around the same SQL."""
    p = _Params(d)
    where: list[str] = []
    for column, value in (
        ("id", query.id),
        ("queue", query.queue),
        ("task", query.task),
        ("group_key", query.group),
    ):
        if value is not None:
            where.append(f"j.{column} = {p(value)}")
    if query.states is not None:
        where.append(f"j.state IN ({', '.join(p(s.value) for s in sorted(query.states))})")
    if query.since is not None:
        where.append(f"j.finished_at >= {p(d.time(query.since))}")
    if query.until is not None:
        where.append(f"j.finished_at < {p(d.time(query.until))}")
    if query.worker is not None:
        where.append(_worker_condition(d, p, query.worker))
    if query.text is not None:
        where.append(_text_condition(d, p, query.text, plan))
    position = query.position()
    if position is not None:
        where.append(_keyset_condition(d, p, position))
    sql = f"SELECT {SELECT_JOB} FROM {d.jobs} j"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY j.finished_at DESC, j.seq DESC LIMIT {query.limit + 1}"
    return sql, p.values


def build_get(d: Dialect, queue: str, job_id: str) -> tuple[str, list[Any]]:
    """The latest record of one job (a job that ended twice has two)."""
    p = _Params(d)
    # SQLite: the unary + keeps its planner from walking the finish-time index backwards to
    # avoid a sort, filtering a million rows for one id (230 ms), instead of reading the
    # id's one or two rows and sorting those (0.2 ms).
    order = "+j.finished_at DESC, +j.seq DESC" if d.backend == "sqlite" else "j.finished_at DESC, j.seq DESC"
    sql = (
        f"SELECT {SELECT_JOB} FROM {d.jobs} j WHERE j.id = {p(job_id)} AND j.queue = {p(queue)}"
        f" ORDER BY {order} LIMIT 1"
    )
    return sql, p.values


def page_from_rows(query: SearchQuery, rows: list[Any], d: Dialect) -> Page:
    """The page for rows from :func:`build_search`: the extra row only says a next page exists."""
    read_time = d.read_time()
    items = [job_from_row(row, read_time) for row in rows[: query.limit]]
    next_cursor = None
    if len(rows) > query.limit:
        last = rows[query.limit - 1]
        position = Cursor(to_micros(read_time(last[FINISHED_AT])), int(last[SEQ]))
        next_cursor = query.encode_cursor(position)
    return Page(items, next_cursor)


FINISHED_AT = JOB_COLUMNS.index("finished_at")
SEQ = len(JOB_COLUMNS)
