"""The in-process client cache (idp/clients/cache.py): a change made anywhere takes effect at once.

Both backends: PostgreSQL (LISTEN/NOTIFY) and the SQLite file (a stamp file next to the database). The
changes go through the same services as the portal and the CLI; "another process" is a second app on the
same database, as a second worker or `idp clients disable` would be."""

from __future__ import annotations

import time

import pytest

from idp.app import create_app
from idp.clients import service as clients
from idp.clients.cache import ClientCache
from idp.clients.models import Client


def _wait_active(cache: ClientCache, session):
    cache.get(session, "nobody")  # starts the listener (PostgreSQL)
    deadline = time.monotonic() + 10
    while not cache.active and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cache.active, "the cache never became active"


def _token(client, rp):
    """The token endpoint's verdict on the client alone: 400 invalid_grant for a bogus refresh token from an
    authenticated client, 401 invalid_client when the client is refused."""
    client_id, secret = rp
    return client.post("/token", data={"grant_type": "refresh_token", "refresh_token": "not-a-token"},
                       auth=(client_id, secret))


def _rp(factory):
    client, secret = factory.client()
    return client.client_id, secret


@pytest.fixture
def other_process(settings):
    """A second app on the same database: another worker, or the CLI."""
    other = create_app(settings)
    yield other
    other.extensions["idp"].clients.stop()
    other.extensions["idp"].db.dispose()


def test_disable_in_another_process_takes_effect_at_once(app, client, runtime, factory, other_process,
                                                          database_url):
    rp = _rp(factory)
    with app.app_context():
        _wait_active(runtime.clients, runtime.db.session)
    # Served from memory from now on. PostgreSQL: the notification of the client's creation may reach the
    # listener during the first look-up, which then does not keep what it read; the next one does.
    deadline = time.monotonic() + 5
    while rp[0] not in runtime.clients._entries and time.monotonic() < deadline:
        assert _token(client, rp).status_code == 400
    assert rp[0] in runtime.clients._entries

    with other_process.app_context():
        session = other_process.extensions["idp"].db.session
        clients.disable(session, clients.find(session, rp[0]))

    if database_url.startswith("postgresql"):
        # The notification arrives on the listener's connection a moment after the commit.
        deadline = time.monotonic() + 5
        while rp[0] in runtime.clients._entries and time.monotonic() < deadline:
            time.sleep(0.005)
    # SQLite: the very next look-up sees the stamp the other process set when it committed.
    response = _token(client, rp)
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"


def test_a_rotated_secret_in_another_process_is_refused(app, client, runtime, factory, other_process,
                                                        database_url):
    rp = _rp(factory)
    with app.app_context():
        _wait_active(runtime.clients, runtime.db.session)
    assert _token(client, rp).status_code == 400
    with other_process.app_context():
        session = other_process.extensions["idp"].db.session
        new_secret = clients.rotate_secret(session, clients.find(session, rp[0]), overlap_seconds=0)
    if database_url.startswith("postgresql"):
        deadline = time.monotonic() + 5
        while rp[0] in runtime.clients._entries and time.monotonic() < deadline:
            time.sleep(0.005)
    assert _token(client, rp).status_code == 401  # the old secret, no overlap
    assert _token(client, (rp[0], new_secret)).status_code == 400


def test_change_in_this_process_is_seen_by_the_next_request(app, client, runtime, factory, db):
    rp = _rp(factory)
    with app.app_context():
        _wait_active(runtime.clients, runtime.db.session)
    assert _token(client, rp).status_code == 400
    # No waiting: the committing process drops its own entry right after COMMIT.
    clients.disable(db, clients.find(db, rp[0]))
    assert _token(client, rp).status_code == 401


def test_a_rolled_back_change_is_never_served(app, runtime, factory, db):
    rp = _rp(factory)
    with app.app_context():
        _wait_active(runtime.clients, runtime.db.session)
        original = runtime.clients.get(runtime.db.session, rp[0]).client_name
    found = clients.find(db, rp[0])
    found.client_name = "never committed"
    db.flush()
    db.rollback()
    time.sleep(0.2)
    with app.app_context():
        assert runtime.clients.get(runtime.db.session, rp[0]).client_name == original


def test_nothing_is_cached_while_the_listener_is_down(app, client, runtime, factory, db, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("the SQLite pass: SQLite has no listener; its stamp file is read on every look-up")
    rp = _rp(factory)
    cache = runtime.clients
    with app.app_context():
        _wait_active(cache, runtime.db.session)
        cache._set_listening(False)  # as when its connection drops
        try:
            assert _token(client, rp).status_code == 400
            assert rp[0] not in cache._entries
            # A change nobody could announce is still seen: the look-up went to the database.
            clients.disable(db, clients.find(db, rp[0]))
            assert _token(client, rp).status_code == 401
        finally:
            cache._set_listening(True)


def test_a_request_that_read_the_client_before_the_change_does_not_cache_the_old_one(
        app, runtime, factory, other_process, database_url):
    rp = _rp(factory)
    cache = runtime.clients
    request_session = runtime.db.session_factory()  # a request's session, which read the client earlier
    try:
        with app.app_context():
            _wait_active(cache, runtime.db.session)
        # The request has already read the client and still holds it, so its identity map keeps that view.
        earlier_view = request_session.get(Client, rp[0])
        assert not earlier_view.disabled
        with other_process.app_context():
            session = other_process.extensions["idp"].db.session
            clients.disable(session, clients.find(session, rp[0]))
        if database_url.startswith("postgresql"):
            deadline = time.monotonic() + 5
            while rp[0] in cache._entries and time.monotonic() < deadline:
                time.sleep(0.005)
        # What the cache keeps for everyone is read fresh, not taken from this request's older view.
        assert cache.get(request_session, rp[0]).disabled
        assert not earlier_view.disabled  # (the request's own view is its business)
        with app.app_context():
            assert cache.get(runtime.db.session, rp[0]).disabled
    finally:
        request_session.close()
