"""Short-lived state: authorization codes, interactions, browser sessions, replay caches.

One interface (put / get / consume / delete, each with a time to live) over
Redis in production and the SQL database in the embedded default, so the
protocol code never knows which it talks to. ``consume`` is atomic on both:
exactly one caller gets a value back as "fresh"; every later caller sees it as
"already consumed" until it expires (RFC 6749 §4.1.2 asks us to notice a
second use of a code, not just to refuse it).

Every key is built by ``key()``: ``<kind>:<id>``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Callable, Protocol

from sqlalchemy import Boolean, Integer, String, Text, bindparam, case, cast, delete, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column

from .db import Base, Database, UTCDateTime, utcnow
from .direct import DirectStatement


def key(kind: str, ident: str) -> str:
    return f"{kind}:{ident}"


@dataclass(frozen=True)
class Consumed:
    """What ``consume`` returns: the stored value and whether this call was the first."""

    value: dict
    first: bool


class EphemeralStore(Protocol):
    def put(self, kind: str, ident: str, value: dict, ttl: int) -> None: ...
    def get(self, kind: str, ident: str) -> dict | None: ...
    def consume(self, kind: str, ident: str) -> Consumed | None: ...
    def delete(self, kind: str, ident: str) -> None: ...
    #: ``put`` under ``ident`` and ``delete`` of ``old_ident``, together (a session's new id at sign-in).
    def replace(self, kind: str, old_ident: str, ident: str, value: dict, ttl: int) -> None: ...
    def incr(self, kind: str, ident: str, ttl: int, amount: int = 1) -> int: ...
    def count(self, kind: str, ident: str) -> int: ...
    #: ``count`` of each (kind, ident), in one round trip where the store has round trips.
    def counts(self, *entries: tuple[str, str]) -> list[int]: ...
    def ping(self) -> bool: ...


class EphemeralEntry(Base):
    """The database fallback's one table."""

    __tablename__ = "ephemeral_entries"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    consumed: Mapped[bool] = mapped_column(Boolean, default=False)


class SQLStore:
    """Database-backed store for a laptop without Redis. Uses its own short
    transactions so it never commits (or rolls back) a service's unit of work.

    Every operation is one or two Core statements built once and run directly (idp/storage/direct.py):
    browser sessions, interactions and codes go through here on every page of a sign-in, and SQLAlchemy's
    execution machinery costs more than the SQL."""

    def __init__(self, database: Database, held: Callable[[], bool] = lambda: False):
        """``held``: whether the caller's scope ends in ``Database.remove`` (the app passes Flask's
        ``has_app_context``), so the store may use the connection the thread holds (``Database.own_transaction``)."""
        self._engine = database.engine
        self._database = database
        self._held = held
        table = EphemeralEntry.__table__
        insert = sqlite_insert if database.engine.dialect.name == "sqlite" else postgresql_insert
        entry_key = bindparam("entry_key", type_=String())
        now = bindparam("now", type_=UTCDateTime())
        # put: an upsert, so two first writes of one key cannot race to INSERT.
        upsert = insert(table).values(key=entry_key, value=bindparam("value", type_=Text()),
                                      expires_at=bindparam("expires_at", type_=UTCDateTime()), consumed=False)
        self._put = DirectStatement(upsert.on_conflict_do_update(index_elements=[table.c.key], set_={
            "value": upsert.excluded.value, "expires_at": upsert.excluded.expires_at, "consumed": False}))
        self._get = DirectStatement(select(table.c.value, table.c.consumed)
                                    .where(table.c.key == entry_key, table.c.expires_at > now))
        # consume: the conditional UPDATE is the atomic step: only one transaction can flip consumed
        # from false to true; the SELECT then reads the value for the first caller and every later one.
        self._flip = DirectStatement(update(table).where(table.c.key == entry_key, table.c.consumed.is_(False),
                                                         table.c.expires_at > now).values(consumed=True)
                                     .returning(table.c.value))
        self._delete = DirectStatement(delete(table).where(table.c.key == entry_key))
        self._incr = _incr_statement(database.engine.dialect.name)

    def put(self, kind, ident, value, ttl):
        with self._database.own_transaction(self._held()) as connection:
            self._put.execute(connection, _entry(kind, ident, value, ttl))

    def get(self, kind, ident):
        with self._database.own_reads(self._held()) as connection:
            row = self._get.first(connection, {"entry_key": key(kind, ident), "now": utcnow()})
        if row is None or row["consumed"]:
            return None
        return json.loads(row["value"])

    def consume(self, kind, ident):
        binds = {"entry_key": key(kind, ident), "now": utcnow()}
        # The flip returns the value to the one caller that flipped it. A caller that finds it flipped already
        # reads it in a statement of its own: the entry cannot become fresh again in between (put never
        # reuses a consumed key: codes and the like are random).
        with self._database.own_transaction(self._held()) as connection:
            row = self._flip.first(connection, binds)
        if row is not None:
            return Consumed(json.loads(row["value"]), first=True)
        with self._database.own_reads(self._held()) as connection:
            row = self._get.first(connection, binds)
        if row is None:
            return None
        return Consumed(json.loads(row["value"]), first=False)

    def delete(self, kind, ident):
        with self._database.own_transaction(self._held()) as connection:
            self._delete.execute(connection, {"entry_key": key(kind, ident)})

    def replace(self, kind, old_ident, ident, value, ttl):
        # One transaction, one commit (on SQLite the commit is most of a write's cost).
        with self._database.own_transaction(self._held()) as connection:
            self._delete.execute(connection, {"entry_key": key(kind, old_ident)})
            self._put.execute(connection, _entry(kind, ident, value, ttl))

    def incr(self, kind, ident, ttl, amount=1):
        now = utcnow()
        with self._database.own_transaction(self._held()) as connection:
            return int(connection.execute(self._incr, {
                "counter_key": key(kind, ident), "now": now, "amount": amount,
                "new_expires_at": now + dt.timedelta(seconds=ttl)}).scalar_one())

    def count(self, kind, ident):
        with self._database.own_reads(self._held()) as connection:
            row = self._get.first(connection, {"entry_key": key(kind, ident), "now": utcnow()})
        return int(row["value"]) if row is not None else 0

    def counts(self, *entries):
        # On SQLite a read is no round trip; production runs this store on Redis (DESIGN.md), not here.
        return [self.count(kind, ident) for kind, ident in entries]

    def purge_expired(self) -> int:
        with self._engine.begin() as connection:
            return connection.execute(delete(EphemeralEntry.__table__)
                                      .where(EphemeralEntry.__table__.c.expires_at <= utcnow())).rowcount

    def ping(self):
        return True


def _entry(kind: str, ident: str, value: dict, ttl: int) -> dict:
    """The binds of ``SQLStore``'s upsert of one entry."""
    return {"entry_key": key(kind, ident), "value": json.dumps(value),
            "expires_at": utcnow() + dt.timedelta(seconds=ttl)}


def _incr_statement(dialect: str):
    """One upsert for ``incr``: counters sit on hot paths (a rate limit on every token request), and
    INSERT ... ON CONFLICT DO UPDATE is atomic on SQLite and PostgreSQL without a read first. The SET
    expressions see the old row, so an expired counter starts again at 1. Built once, executed with binds."""
    table = EphemeralEntry.__table__
    amount = bindparam("amount", type_=Integer())
    insert = (sqlite_insert if dialect == "sqlite" else postgresql_insert)(table).values(
        key=bindparam("counter_key", type_=String()), value=cast(amount, Text),
        expires_at=bindparam("new_expires_at", type_=UTCDateTime()), consumed=False)
    expired = table.c.expires_at <= bindparam("now", type_=UTCDateTime())
    return insert.on_conflict_do_update(index_elements=[table.c.key], set_={
        "value": case((expired, insert.excluded.value), else_=cast(cast(table.c.value, Integer) + amount, Text)),
        "expires_at": case((expired, insert.excluded.expires_at), else_=table.c.expires_at),
        "consumed": case((expired, False), else_=table.c.consumed),
    }).returning(table.c.value)


#: How a consumed value begins: the JSON object with ``"__consumed__": true`` as its first member.
_TOMBSTONE = '{"__consumed__": true'

#: Reads a value and swaps in its tombstone in one round trip (a code's redemption is on every sign-in's path;
#: GET and then SET ... GET took two). A script runs atomically, so of two racing callers only one is told it
#: was first. The tombstone is the stored JSON with the marker spliced in as text rather than re-encoded by
#: cjson, which would turn an empty list into an object and round large numbers; the check decodes, so a
#: tombstone with the marker anywhere (as ``json.dumps`` wrote them before) counts as consumed too.
_CONSUME = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local ok, value = pcall(cjson.decode, raw)
if ok and type(value) == 'table' and value['__consumed__'] then return {raw, 0} end
local rest = string.sub(raw, 2)
if rest ~= '}' then rest = ', ' .. rest end
redis.call('SET', KEYS[1], ARGV[1] .. rest, 'KEEPTTL')
return {raw, 1}
"""


class RedisStore:
    def __init__(self, url: str, prefix: str):
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix
        # EVALSHA, loading the script again if the server forgot it (a restart, SCRIPT FLUSH).
        self._consume = self._redis.register_script(_CONSUME)

    def _k(self, kind, ident):
        return self._prefix + key(kind, ident)

    def put(self, kind, ident, value, ttl):
        self._redis.set(self._k(kind, ident), json.dumps(value), ex=ttl)

    def get(self, kind, ident):
        raw = self._redis.get(self._k(kind, ident))
        if raw is None:
            return None
        value = json.loads(raw)
        return None if value.get("__consumed__") else value

    def consume(self, kind, ident):
        found = self._consume(keys=[self._k(kind, ident)], args=[_TOMBSTONE])
        if found is None:
            return None
        raw, first = found
        value = json.loads(raw)
        value.pop("__consumed__", None)
        return Consumed(value, first=bool(first))

    def delete(self, kind, ident):
        self._redis.delete(self._k(kind, ident))

    def replace(self, kind, old_ident, ident, value, ttl):
        pipe = self._redis.pipeline()  # MULTI ... EXEC: one round trip, both or neither
        pipe.delete(self._k(kind, old_ident))
        pipe.set(self._k(kind, ident), json.dumps(value), ex=ttl)
        pipe.execute()

    def incr(self, kind, ident, ttl, amount=1):
        k = self._k(kind, ident)
        pipe = self._redis.pipeline()
        pipe.incr(k, amount)
        pipe.expire(k, ttl, nx=True)
        count, _ = pipe.execute()
        return int(count)

    def count(self, kind, ident):
        raw = self._redis.get(self._k(kind, ident))
        return int(raw) if raw is not None else 0

    def counts(self, *entries):
        return [int(raw) if raw is not None else 0
                for raw in self._redis.mget([self._k(kind, ident) for kind, ident in entries])]

    def ping(self):
        return bool(self._redis.ping())


def make_store(database: Database, redis_url: str, prefix: str,
               held: Callable[[], bool] = lambda: False) -> EphemeralStore:
    if redis_url:
        return RedisStore(redis_url, prefix)
    return SQLStore(database, held)
