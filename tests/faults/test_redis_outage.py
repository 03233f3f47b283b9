"""Redis stopped under a running IdP, then started again on the same port.

A redis-server of our own on a spare port (the shared one is never touched), an app on
the test database with ``redis_url`` pointing at it, and browsers and RPs with state in
that Redis: a signed-in session, a pending login form, a person between the password
and the TOTP step, an unredeemed code and a redeemed one.

While Redis is down, everything that needs it answers 503 with Retry-After: never a 500,
never a fallback that skips a check (a code redeemed twice, a TOTP code accepted twice, a
session treated as signed out). ``/readyz`` says 503. When Redis is back the IdP recovers
by itself, without a restart:

* after a clean restart (``SHUTDOWN SAVE``, the data comes back) every piece of state
  works again: the session, the pending form, the unredeemed code, and the replay checks
  (the redeemed code and the used TOTP code are still refused);
* after a crash (SIGKILL, the data is lost) people sign in again: no 500s, no stale
  state trusted.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pyotp
import pytest

from tests.faults.support import (
    OFFLINE,
    Findings,
    RedisServer,
    authorize_path,
    csrf_token,
    introspect_active,
    path_of,
    query_of,
    token,
    wait_for,
)
from tests.helpers.factories import PASSWORD
from tests.helpers.oidc import RP


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def outage_app(settings, redis_server):
    """The IdP on our own Redis. Request rate limits off, so a /token request gets as far
    as the code's single-use check (the limiter would otherwise answer 503 first)."""
    from idp.app import create_app

    app = create_app(settings.with_(redis_url=redis_server.url, redis_prefix=f"outage-{uuid.uuid4().hex[:6]}:",
                                    rate_limit_factor=0, authorization_code_ttl=300))
    app.config["TESTING"] = True
    yield app
    app.extensions["idp"].db.dispose()


@pytest.fixture
def limited_app(outage_app, settings):
    """The same deployment with the request rate limits on (their counters live in Redis)."""
    from idp.app import create_app

    app = create_app(outage_app.extensions["idp"].settings.with_(rate_limit_factor=settings.rate_limit_factor))
    app.config["TESTING"] = True
    yield app
    app.extensions["idp"].db.dispose()


def password_to_second_step(browser, rp: RP, email: str) -> str:
    """Authorize, post the password: returns the second step's CSRF token."""
    response = rp.follow(rp.authorize(scope=OFFLINE))
    response = rp.login(response, email)
    assert response.status_code == 302 and path_of(response.location) == "/login/second-step", response.location
    page = browser.get("/login/second-step")
    assert page.status_code == 200
    return csrf_token(page.get_data(as_text=True))


class BackgroundLoad:
    """Threads sending requests that need Redis for as long as the scenario runs, so
    Redis goes away (and comes back) mid-load; every answer's status is counted."""

    def __init__(self, app, limited_app, rp: RP, emails: list[str]):
        self.statuses: Counter = Counter()
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._guarded, args=(app, limited_app, rp, email), daemon=True)
                         for email in emails]

    def _guarded(self, *args):
        try:
            self._run(*args)
        except Exception as error:  # noqa: BLE001 - a crashed load thread is a finding
            with self._lock:
                self.bad.append(f"load thread crashed: {error!r}")

    def _run(self, app, limited_app, rp, email):
        browser = app.test_client()
        me = RP(browser, rp.client_id, rp.client_secret, rp.redirect_uri)
        me.sign_in(email, scope=OFFLINE)
        machine = limited_app.test_client()
        requests_ = [lambda: browser.get(authorize_path(me, {})),
                     lambda: app.test_client().get(authorize_path(me, {})),
                     lambda: RP(machine, rp.client_id, rp.client_secret, rp.redirect_uri)
                     .token("no-such-code", verifier="x" * 43)]
        i = 0
        while not self._stop.is_set():
            response = requests_[i % len(requests_)]()
            i += 1
            with self._lock:
                self.statuses[response.status_code] += 1
                body = response.get_data(as_text=True)
                if response.status_code not in (302, 400, 503) or "Traceback" in body:
                    self.bad.append(f"{response.status_code} {body[:200]!r}")
                elif response.status_code == 503 and not response.headers.get("Retry-After"):
                    self.bad.append("503 without Retry-After")
            time.sleep(0.01)

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def test_redis_outage_and_recovery(outage_app, limited_app, redis_server, factory, db):
    found = Findings()
    runtime = outage_app.extensions["idp"]
    machine = outage_app.test_client()            # the RP's back end: no cookies
    person = factory.identity()
    second = factory.identity()                   # has an authenticator
    secret = pyotp.random_base32()
    runtime.totp.enrol(db, second.id, secret)
    totp = pyotp.TOTP(secret)
    client, client_secret = factory.client()
    redirect_uri = client.redirect_uris[0]

    # -- Redis up: state of every kind in it ------------------------------------------
    b1 = outage_app.test_client()
    rp1 = RP(b1, client.client_id, client_secret, redirect_uri)
    code_redeemed = rp1.sign_in(person.email, scope=OFFLINE)["code"]
    redeemed = token(machine, rp1, code_redeemed, rp1.verifier)
    assert redeemed.status_code == 200, redeemed.get_data(as_text=True)
    redeemed_tokens = redeemed.get_json()
    held = {}
    response = b1.get(authorize_path(rp1, held))   # signed in, consent remembered: a code at once
    assert response.status_code == 302 and response.location.startswith(redirect_uri), response.location
    code_pending = query_of(response.location)["code"]

    b2 = outage_app.test_client()                 # a login form on screen
    rp2 = RP(b2, client.client_id, client_secret, redirect_uri)
    response = rp2.follow(rp2.authorize(scope=OFFLINE))
    login_path = path_of(response.location)
    login_csrf = csrf_token(b2.get(login_path).get_data(as_text=True))

    b3 = outage_app.test_client()                 # between the password and the TOTP step
    rp3 = RP(b3, client.client_id, client_secret, redirect_uri)
    step_csrf = password_to_second_step(b3, rp3, second.email)

    step = int(time.time() // 30)
    used_code, fresh_code = totp.at(step * 30), totp.at((step + 1) * 30)
    b4 = outage_app.test_client()                 # another browser uses the current code
    rp4 = RP(b4, client.client_id, client_secret, redirect_uri)
    csrf4 = password_to_second_step(b4, rp4, second.email)
    response = b4.post("/login/second-step", data={"csrf_token": csrf4, "code": used_code})
    assert response.status_code == 302, response.get_data(as_text=True)[:300]

    assert machine.get("/readyz").status_code == 200
    load = BackgroundLoad(outage_app, limited_app, RP(None, client.client_id, client_secret, redirect_uri),
                          [factory.identity().email for _ in range(3)]).__enter__()
    wait_for(lambda: sum(load.statuses.values()) >= 6, 30, message="background load running")

    # -- Redis stopped (clean shutdown, data saved) ----------------------------------------
    redis_server.shutdown(save=True)

    ready = machine.get("/readyz")
    found.expect(ready.status_code == 503, f"readyz while Redis is down: {ready.status_code}")
    found.expect((ready.get_json() or {}).get("checks", {}).get("store", "").startswith("error"),
                 f"readyz does not name the store: {ready.get_json()}")
    found.expect(machine.get("/healthz").status_code == 200, "healthz (liveness) must not depend on Redis")

    found.unavailable(b1.get(authorize_path(rp1, {})), "/authorize with a session cookie")
    found.unavailable(outage_app.test_client().get(authorize_path(rp1, {})), "/authorize without a session")
    found.unavailable(token(machine, rp1, code_pending, held["verifier"]), "/token with an unredeemed code", True)
    found.unavailable(token(machine, rp1, code_redeemed, rp1.verifier), "/token replaying a redeemed code", True)
    found.unavailable(RP(limited_app.test_client(), client.client_id, client_secret, redirect_uri)
                      .token("any-code", verifier="x" * 43), "/token with rate limits on", True)
    found.unavailable(b2.post(login_path, data={"csrf_token": login_csrf, "email": person.email,
                                                "password": PASSWORD, "action": "login"}), "login form POST")
    found.unavailable(b3.post("/login/second-step", data={"csrf_token": step_csrf, "code": used_code}),
                      "second step with an already used TOTP code")
    found.unavailable(b3.post("/login/second-step", data={"csrf_token": step_csrf, "code": fresh_code}),
                      "second step with a fresh TOTP code")
    # What needs only the database or the keys may keep working, but never with a 500.
    found.not_500(machine.get("/userinfo", headers={"Authorization": f"Bearer {redeemed_tokens['access_token']}"}),
                  "/userinfo")
    found.not_500(machine.get("/jwks"), "/jwks", allowed=(200,))
    found.not_500(machine.get("/.well-known/openid-configuration"), "discovery", allowed=(200,))

    # -- Redis started again on the same port: recovery without a restart of the IdP ----
    redis_server.start()
    wait_for(lambda: machine.get("/readyz").status_code == 200, 15, message="readyz 200 after Redis came back")

    response = b1.get(authorize_path(rp1, held_again := {}))
    if found.expect(response.status_code == 302 and response.location.startswith(redirect_uri),
                    f"the session did not survive a clean Redis restart: {response.status_code} "
                    f"{response.headers.get('Location')}"):
        found.expect(token(machine, rp1, query_of(response.location)["code"], held_again["verifier"]).status_code
                     == 200, "a code issued after recovery is not redeemable")
    response = token(machine, rp1, code_pending, held["verifier"])
    found.expect(response.status_code == 200,
                 f"the code that could not be redeemed during the outage: {response.status_code} "
                 f"{response.get_data(as_text=True)[:200]}")
    response = token(machine, rp1, code_redeemed, rp1.verifier)
    found.expect(response.status_code == 400 and response.get_json()["error"] == "invalid_grant",
                 f"replay of the redeemed code after recovery: {response.status_code}")
    found.expect(not introspect_active(machine, rp1, redeemed_tokens["access_token"]),
                 "the replayed code's tokens are still active")
    response = b2.post(login_path, data={"csrf_token": login_csrf, "email": person.email, "password": PASSWORD,
                                         "action": "login"})
    found.expect(response.status_code == 302, f"the login form from before the outage: {response.status_code}")
    response = b3.post("/login/second-step", data={"csrf_token": step_csrf, "code": used_code})
    found.expect(response.status_code == 400 and "already been used" in response.get_data(as_text=True),
                 f"the used TOTP code after recovery: {response.status_code}")
    response = b3.post("/login/second-step", data={"csrf_token": step_csrf, "code": fresh_code})
    found.expect(response.status_code == 302, f"a fresh TOTP code after recovery: {response.status_code}")

    # -- a crash: SIGKILL, the data is lost; then started empty ---------------------------
    redis_server.shutdown(save=False)
    found.unavailable(b1.get(authorize_path(rp1, {})), "/authorize with a session cookie (crashed Redis)")
    redis_server.start()
    wait_for(lambda: machine.get("/readyz").status_code == 200, 15, message="readyz 200 after the crash")
    response = b1.get(authorize_path(rp1, {}))
    found.expect(response.status_code == 302 and "/login" in response.location,
                 f"a lost session must lead to the login page: {response.status_code} {response.headers.get('Location')}")
    response = token(machine, rp1, code_redeemed, rp1.verifier)
    found.expect(response.status_code == 400, f"a code from before the crash: {response.status_code}")
    fresh = RP(outage_app.test_client(), client.client_id, client_secret, redirect_uri)
    code = fresh.sign_in(person.email, scope=OFFLINE)["code"]
    found.expect(token(machine, fresh, code, fresh.verifier).status_code == 200, "sign-in after the crash")

    load.__exit__()
    found.expect(not load.bad, f"background load got: {load.bad[:5]}")
    found.expect(load.statuses[503] > 0 and load.statuses[302] > 0,
                 f"the background load did not see both the outage and the recovery: {dict(load.statuses)}")

    assert not found, "\n".join(found)
