"""One contract for every ephemeral backend: the database fallback always, Redis when configured.

With CI=true the Redis backend is tested in both passes, and a missing Redis
fails the run instead of skipping; on a laptop without Redis it skips.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest

from idp.storage.ephemeral import RedisStore, SQLStore


@pytest.fixture(params=["sql", "sql-held", "redis"])
def store(request, app, redis_url):
    if request.param == "sql":
        return SQLStore(app.extensions["idp"].db)
    if request.param == "sql-held":
        # As the app runs it: on the connection the thread holds (the test's thread; the threads the concurrency
        # tests start end without Database.remove, so they take connections of their own, as outside a request).
        database = app.extensions["idp"].db
        request.addfinalizer(database.remove)
        return SQLStore(database, held=lambda: threading.current_thread() is threading.main_thread())
    backend = RedisStore(_redis_or_skip(redis_url), f"contract-{uuid.uuid4().hex[:6]}:")
    backend.ping()
    return backend


def _redis_or_skip(redis_url: str) -> str:
    # CI always has Redis: there a missing server fails these tests.
    url = redis_url or ("redis://127.0.0.1:6379/0" if os.environ.get("CI") == "true" else "")
    if not url:
        pytest.skip("no Redis: set IDP_TEST_REDIS_URL=redis://127.0.0.1:6379/0 to test the Redis backend")
    return url


def ident():
    return uuid.uuid4().hex


def test_put_get_delete(store):
    key = ident()
    assert store.get("thing", key) is None
    store.put("thing", key, {"a": 1, "b": [1, 2]}, 60)
    assert store.get("thing", key) == {"a": 1, "b": [1, 2]}
    store.delete("thing", key)
    assert store.get("thing", key) is None


def test_replace_puts_the_new_and_deletes_the_old(store):
    old, new = ident(), ident()
    store.put("session", old, {"who": "before"}, 60)
    store.replace("session", old, new, {"who": "after", "n": [1]}, 60)
    assert store.get("session", old) is None
    assert store.get("session", new) == {"who": "after", "n": [1]}
    store.replace("session", ident(), old, {"who": "again"}, 1)  # an old id already gone is no error
    assert store.get("session", old) == {"who": "again"}
    time.sleep(1.2)
    assert store.get("session", old) is None  # the new entry's own time to live


def test_counts_reads_each_counter(store):
    counted, empty = ident(), ident()
    store.incr("login_failures", counted, 60, amount=3)
    store.incr("login_ip_failures", counted, 60)
    assert store.counts(("login_failures", counted), ("login_ip_failures", counted), ("login_failures", empty)) \
        == [3, 1, 0]


def test_kinds_do_not_collide(store):
    key = ident()
    store.put("code", key, {"kind": "code"}, 60)
    store.put("session", key, {"kind": "session"}, 60)
    assert store.get("code", key) == {"kind": "code"}
    assert store.get("session", key) == {"kind": "session"}


def test_expiry(store):
    key = ident()
    store.put("thing", key, {"a": 1}, 1)
    time.sleep(1.2)
    assert store.get("thing", key) is None
    assert store.consume("thing", key) is None


def test_consume_once_then_tombstone(store):
    key = ident()
    store.put("code", key, {"family_id": "f1"}, 60)
    first = store.consume("code", key)
    assert first.first is True and first.value == {"family_id": "f1"}
    again = store.consume("code", key)
    assert again.first is False and again.value == {"family_id": "f1"}
    # A consumed value is gone for plain reads.
    assert store.get("code", key) is None


def test_consume_unknown(store):
    assert store.consume("code", ident()) is None


def test_concurrent_consume_has_exactly_one_winner(store):
    key = ident()
    store.put("code", key, {"n": 1}, 60)
    results, barrier = [], threading.Barrier(8)

    def worker():
        barrier.wait()
        results.append(store.consume("code", key))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(1 for r in results if r is not None and r.first) == 1
    assert all(r is not None for r in results)


def test_incr_counts_within_window(store):
    key = ident()
    assert [store.incr("attempts", key, 60) for _ in range(3)] == [1, 2, 3]


def test_incr_by_an_amount_reserves_a_block(store):
    # Rate limits reserve counts in blocks: the returned total tells the caller which counts are its own.
    key = ident()
    assert store.incr("attempts", key, 60, amount=12) == 12
    assert store.incr("attempts", key, 60) == 13
    assert store.incr("attempts", key, 60, amount=12) == 25
    assert store.count("attempts", key) == 25


def test_incr_starts_again_after_its_window(store):
    key = ident()
    assert store.incr("attempts", key, 1) == 1
    assert store.incr("attempts", key, 1) == 2
    time.sleep(1.2)
    # The window is over: counting starts again (a lock-out ends), whether or not the old entry was purged.
    assert store.incr("attempts", key, 60) == 1
    assert store.incr("attempts", key, 60) == 2


def test_a_block_after_the_window_starts_the_count_again(store):
    key = ident()
    assert store.incr("attempts", key, 1, amount=7) == 7
    time.sleep(1.2)
    assert store.incr("attempts", key, 60, amount=7) == 7


def test_concurrent_incr_hands_out_every_count_once(store):
    key, results = ident(), []
    lock = threading.Lock()

    def worker():
        for _ in range(20):
            value = store.incr("attempts", key, 60)
            with lock:
                results.append(value)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A lost update would hand one count to two requests and let the 121st attempt through as the 120th.
    assert sorted(results) == list(range(1, 121))


@pytest.mark.parametrize("value", [{}, {"grant": "g", "scopes": [], "claims": {}, "n": 12345678901234567890,
                                        "f": 0.1, "text": "\u00e6\u00f8\u00e5 \"quoted\" {brace}"}])
def test_the_tombstone_keeps_the_value_exactly(store, value):
    # A replayed code's value names what to revoke; the tombstone must give back what was stored, empty lists,
    # big numbers, floats and escapes included.
    key = ident()
    store.put("code", key, value, 60)
    first = store.consume("code", key)
    assert first.first is True and first.value == value
    again = store.consume("code", key)
    assert again.first is False and again.value == value
    assert store.get("code", key) is None


def test_a_tombstone_written_before_the_script_still_counts_as_consumed(redis_url):
    # Processes of the previous release wrote the marker last (json.dumps of the value plus the marker); during
    # a rolling deploy a code they consumed must stay consumed for the new ones.
    store, key = RedisStore(_redis_or_skip(redis_url), f"contract-{uuid.uuid4().hex[:6]}:"), ident()
    store._redis.set(store._k("code", key), json.dumps({"grant": "g", "__consumed__": True}), ex=60)
    found = store.consume("code", key)
    assert found.first is False and found.value == {"grant": "g"}


def test_the_redis_store_parses_replies_with_hiredis(redis_url):
    # A dependency of the package (redis[hiredis]): each command's reply parsed in C rather than Python, about a
    # fifth of redis-py's CPU per command (bench/README.md). Without it redis-py falls back silently.
    backend = RedisStore(_redis_or_skip(redis_url), f"contract-{uuid.uuid4().hex[:6]}:")
    backend.ping()
    connection = backend._redis.connection_pool.get_connection()
    try:
        assert type(connection._parser).__name__ == "_HiredisParser"
    finally:
        backend._redis.connection_pool.release(connection)
