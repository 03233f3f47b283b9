"""PostgreSQL restarted under a running IdP.

A throw-away cluster of our own (initdb in a temp dir, a spare port; the shared server
is never touched), the schema upgraded, an app on it. Then ``pg_ctl stop -m fast`` while
requests are being served (fast mode: open transactions are aborted, connections cut):
everything that needs the database answers 503 with Retry-After, never a 500. Then the
cluster starts again and the IdP recovers by itself: the pool's pre-ping replaces the dead
connections, so the very first request after the restart already succeeds.

Needs the PostgreSQL server binaries (initdb, pg_ctl); as root the server runs as the
``postgres`` OS user via runuser. Without them the test skips on a laptop and fails in CI.
The short-lived store is the pass's Redis when IDP_TEST_REDIS_URL is set, otherwise the
database itself (then the sessions go down with PostgreSQL too).
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections import Counter

import pytest

from idp.storage import migrations
from tests.faults.support import (
    OFFLINE,
    Findings,
    PostgresCluster,
    authorize_path,
    delete_redis_prefix,
    introspect_active,
    query_of,
    token,
    wait_for,
)
from tests.helpers.factories import Factory
from tests.helpers.oidc import RP


@pytest.fixture(scope="module")
def cluster():
    cluster = PostgresCluster()
    try:
        cluster.init().start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="module")
def pg_app(cluster, settings):
    from idp.app import create_app

    migrations.upgrade(cluster.url)
    prefix = f"pgrestart-{uuid.uuid4().hex[:6]}:"
    app = create_app(settings.with_(database_url=cluster.url, redis_prefix=prefix, authorization_code_ttl=300))
    app.config["TESTING"] = True
    yield app
    app.extensions["idp"].db.dispose()
    delete_redis_prefix(settings.redis_url, prefix)


@pytest.fixture(scope="module")
def pg_factory(pg_app):
    session = pg_app.extensions["idp"].db.session_factory()
    yield Factory(pg_app, session)
    session.close()


class ReadLoad:
    """Threads calling database-backed endpoints (UserInfo, introspection, /authorize
    with a session) while PostgreSQL goes away and comes back; counts every status."""

    def __init__(self, app, rp: RP, access_token: str, browsers: list, threads: int = 3):
        self.statuses: Counter = Counter()
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(app, rp, access_token, browsers[i]), daemon=True)
                         for i in range(threads)]

    def _run(self, app, rp, access_token, browser):
        import base64

        machine = app.test_client()
        basic = base64.b64encode(f"{rp.client_id}:{rp.client_secret}".encode()).decode()
        calls = [lambda: machine.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"}),
                 lambda: machine.post("/introspect", data={"token": access_token},
                                      headers={"Authorization": f"Basic {basic}"}),
                 lambda: browser.get(authorize_path(RP(browser, rp.client_id, None, rp.redirect_uri), {}))]
        i = 0
        while not self._stop.is_set():
            try:
                response = calls[i % len(calls)]()
                status, body = response.status_code, response.get_data(as_text=True)
            except Exception as error:  # noqa: BLE001 - an exception escaping the app is a finding

                status, body = "exception", repr(error) + "\n" + "".join(
                    f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}\n"
                    for f in traceback.extract_tb(error.__traceback__))
            i += 1
            with self._lock:
                self.statuses[status] += 1
                if status not in (200, 302, 503) or "Traceback" in body:
                    self.bad.append(f"{status} {body[:3000]}")
            time.sleep(0.005)

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def test_postgres_restart(cluster, pg_app, pg_factory):
    found = Findings()
    machine = pg_app.test_client()
    person = pg_factory.identity()
    client, secret = pg_factory.client()
    redirect_uri = client.redirect_uris[0]

    browser = pg_app.test_client()
    rp = RP(browser, client.client_id, secret, redirect_uri)
    first = token(machine, rp, rp.sign_in(person.email, scope=OFFLINE)["code"], rp.verifier)
    assert first.status_code == 200, first.get_data(as_text=True)
    tokens = first.get_json()
    held = {}
    response = browser.get(authorize_path(rp, held))
    assert response.status_code == 302 and response.location.startswith(redirect_uri), response.location
    pending_code = query_of(response.location)["code"]
    load_browsers = []
    for _ in range(3):
        other = pg_app.test_client()
        RP(other, client.client_id, secret, redirect_uri).sign_in(person.email, scope=OFFLINE)
        load_browsers.append(other)
    assert machine.get("/readyz").status_code == 200

    with ReadLoad(pg_app, rp, tokens["access_token"], load_browsers) as load:
        wait_for(lambda: sum(load.statuses.values()) >= 6, 30, message="background load running")
        # -- fast shutdown: open transactions aborted, connections cut mid-load ----------
        cluster.stop("fast")

        ready = machine.get("/readyz")
        found.expect(ready.status_code == 503, f"readyz while PostgreSQL is down: {ready.status_code}")
        found.expect((ready.get_json() or {}).get("checks", {}).get("database", "").startswith("error"),
                     f"readyz does not name the database: {ready.get_json()}")
        found.expect(machine.get("/healthz").status_code == 200, "healthz (liveness) must not need the database")
        found.unavailable(token(machine, rp, pending_code, held["verifier"]), "/token with a code", True)
        found.unavailable(RP(machine, client.client_id, secret, redirect_uri).refresh(tokens["refresh_token"]),
                          "/token refresh", True)
        found.unavailable(machine.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}),
                          "/userinfo")
        found.unavailable(browser.get(authorize_path(rp, {})), "/authorize with a session")
        found.not_500(machine.get("/jwks"), "/jwks", allowed=(200,))
        found.not_500(machine.get("/.well-known/openid-configuration"), "discovery", allowed=(200,))
        time.sleep(1)  # a moment of load against a database that is not there

        # -- started again: the first request on each pooled connection must just work --
        cluster.start()
        response = token(machine, rp, pending_code, held["verifier"])
        found.expect(response.status_code == 200, f"first request after the restart (/token with the code that "
                                                   f"waited): {response.status_code} "
                                                   f"{response.get_data(as_text=True)[:200]}")
        response = RP(machine, client.client_id, secret, redirect_uri).refresh(tokens["refresh_token"])
        found.expect(response.status_code == 200, f"refresh after the restart: {response.status_code}")
        if response.status_code == 200:
            found.expect(introspect_active(machine, rp, response.get_json()["access_token"]),
                         "the refreshed access token is not active")
        response = browser.get(authorize_path(rp, {}))
        found.expect(response.status_code == 302 and response.location.startswith(redirect_uri),
                     f"/authorize with the session after the restart: {response.status_code}")
        found.expect(machine.get("/readyz").status_code == 200, "readyz after the restart")
        time.sleep(0.5)

    found.expect(not load.bad, f"background load got: {load.bad[:5]}")
    found.expect(load.statuses[503] > 0 and (load.statuses[200] + load.statuses[302]) > 0,
                 f"the background load did not see both the outage and the recovery: {dict(load.statuses)}")
    assert not found, "\n".join(found)


def test_connection_lost_after_the_request_did_its_work(cluster, pg_app, pg_factory):
    """The narrowest window of a restart, made deterministic: the server ends the IdP's
    connections after a request has done its database work and built its response, so
    only the end-of-request cleanup (rolling back the request's transaction) meets the dead
    connection. The person must still get the response (or a 503), not an exception that
    the WSGI server turns into a 500."""
    from sqlalchemy import create_engine, text

    machine = pg_app.test_client()
    person = pg_factory.identity()
    client, secret = pg_factory.client()
    rp = RP(pg_app.test_client(), client.client_id, secret, client.redirect_uris[0])
    tokens = token(machine, rp, rp.sign_in(person.email, scope=OFFLINE)["code"], rp.verifier).get_json()
    admin = create_engine(cluster.url, isolation_level="AUTOCOMMIT")
    armed = {"on": False}

    def cut_connections(response):
        if armed["on"]:
            with admin.connect() as connection:
                connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        return response

    # Runs after the view; added directly because the app has already served requests.
    pg_app.after_request_funcs.setdefault(None, []).insert(0, cut_connections)
    try:
        armed["on"] = True
        try:
            response = machine.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
            outcome = response.status_code
        except Exception as error:  # noqa: BLE001 - what a WSGI server would turn into a 500
            outcome = f"exception escaped the app: {error!r}"[:400]
        armed["on"] = False
        assert outcome in (200, 503), outcome
        # And the next request gets a fresh connection (pre-ping), without a 503.
        response = machine.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
    finally:
        pg_app.after_request_funcs[None].remove(cut_connections)
        admin.dispose()
