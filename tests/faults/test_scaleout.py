"""Scale-out: two IdP processes behind nginx on loopback, sharing the database, Redis and keys.

The deployment is bench/scaleout (launch.py + nginx.conf.template): two
``gunicorn idp.wsgi:app`` processes (2 sync workers each) on spare ports, nginx
round-robin in front, one issuer (nginx's address). They share the pass's database,
one Redis key prefix (the pass's Redis, or a redis-server of our own when the pass has
none) and a copy of the test keys directory (rotated here, so other tests keep theirs).

Proven here: a login started on one process completes on the other; the replay caches
(authorization codes, TOTP codes) and the request rate limits are shared; a key rotated
with ``idp keys rotate`` is served by both within ``keys_reload_interval`` (asked to be 2 s
through IDP_KEYS_RELOAD_INTERVAL; the default 10 s where that variable is not read); per-IP
sign-in limits see the client's address that nginx forwards, not nginx's.

Needs nginx (Debian: ``apt-get install -y nginx``): skipped on a laptop without it,
a failure in CI.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pyotp
import pytest
import requests

from bench.scaleout.launch import ScaleOut, nginx_binary
from idp.settings import Settings, from_env
from tests.faults.support import (
    HttpBrowser,
    HttpRP,
    RedisServer,
    csrf_token,
    delete_redis_prefix,
    jwt_header,
    simultaneously,
    unavailable,
    wait_for,
)
from tests.helpers.factories import PASSWORD

OFFLINE = "openid profile email offline_access"
#: Token endpoint: 600 requests a minute per client times this = 12 (see policies/rate_limits.py).
RATE_LIMIT_FACTOR = 0.02
TOKEN_LIMIT = int(600 * RATE_LIMIT_FACTOR)
#: Failed sign-ins from one client IP before that IP is paused (only the last test fails sign-ins).
IP_LOCK_AFTER = 5
#: Asked for through IDP_KEYS_RELOAD_INTERVAL; a version of the IdP without that variable
#: keeps its default (10 s), and RELOAD_INTERVAL says which one the deployment really has.
WANTED_RELOAD_INTERVAL = 2


def reload_interval_of(environment: dict) -> int:
    with tempfile.TemporaryDirectory() as keys_dir:
        return from_env({"IDP_ENV": "test", "IDP_SECRET_KEY": "s" * 40, "IDP_KEYS_DIR": keys_dir,
                         "IDP_KEYS_RELOAD_INTERVAL": environment.get("IDP_KEYS_RELOAD_INTERVAL", "")
                         or str(Settings().keys_reload_interval)}).keys_reload_interval


@pytest.fixture(scope="module")
def deployment(app, settings, database_url, redis_url, tmp_path_factory):
    if nginx_binary() is None:
        unavailable("nginx is not installed (apt-get install -y nginx)")
    own_redis = None
    if not redis_url:
        own_redis = RedisServer().start()
        redis_url = own_redis.url
    prefix = f"scaleout-{uuid.uuid4().hex[:8]}:"
    keys_dir = Path(tempfile.mkdtemp(prefix="idp-scaleout-keys-"))
    shutil.copytree(settings.keys_dir, keys_dir, dirs_exist_ok=True)
    scaleout = ScaleOut(
        database_url=database_url, redis_url=redis_url, redis_prefix=prefix,
        keys_dir=keys_dir, secret_key=settings.secret_key, backends=2, workers=2, env="test",
        log_dir=tmp_path_factory.mktemp("scaleout"),
        extra_env={"IDP_ARGON2_MEMORY_KIB": settings.argon2_memory_kib,
                   "IDP_ARGON2_TIME_COST": settings.argon2_time_cost,
                   "IDP_RATE_LIMIT_FACTOR": RATE_LIMIT_FACTOR, "IDP_LOGIN_IP_LOCK_AFTER": IP_LOCK_AFTER,
                   "IDP_KEYS_RELOAD_INTERVAL": WANTED_RELOAD_INTERVAL})
    try:
        scaleout.start()
        yield scaleout
    finally:
        scaleout.stop()
        shutil.rmtree(keys_dir, ignore_errors=True)
        delete_redis_prefix(redis_url, prefix)
        if own_redis is not None:
            own_redis.cleanup()


@pytest.fixture
def rp(factory):
    client, secret = factory.client(redirect_uris=(f"https://rp-{uuid.uuid4().hex[:6]}.example/cb",))
    return HttpRP(client.client_id, secret, client.redirect_uris[0])


@pytest.fixture
def backends(deployment):
    a, b = deployment.backends
    return a.base, b.base


def upstreams(browser: HttpBrowser) -> set[str]:
    return {step.upstream for step in browser.trace if step.upstream}


def test_round_robin_sign_in_through_nginx(deployment, rp, factory):
    person = factory.identity()
    browser = HttpBrowser([deployment.base])
    code, verifier = browser.sign_in(rp, person.email, PASSWORD, scope=OFFLINE)
    response = rp.token(deployment.base, code, verifier)
    assert response.status_code == 200, response.text
    # nginx spread the steps of one login over both processes.
    expected = {f"127.0.0.1:{b.port}" for b in deployment.backends}
    assert upstreams(browser) == expected, [(s.path, s.upstream) for s in browser.trace]
    assert response.json()["id_token"]


def test_login_started_on_one_process_completes_on_the_other(deployment, backends, rp, factory):
    person = factory.identity()
    browser = HttpBrowser(list(backends))  # every request to the next process in turn
    code, verifier = browser.sign_in(rp, person.email, PASSWORD, scope=OFFLINE)
    trace = [(s.base, s.method, s.path, s.status) for s in browser.trace]
    assert len(trace) >= 5, trace
    for earlier, later in zip(browser.trace, browser.trace[1:]):
        assert earlier.base != later.base, trace
    # Authorization started on A, the login form was served by one and posted to the other.
    assert trace[0][0] == backends[0] and trace[0][2] == "/authorize"
    login_steps = [s for s in browser.trace if s.path.endswith("/login")]
    assert {s.base for s in login_steps} == set(backends), trace
    # The code is redeemed at the process that did not issue it.
    issuer_of_code = browser.trace[-1].base
    other = backends[1] if issuer_of_code == backends[0] else backends[0]
    response = rp.token(other, code, verifier)
    assert response.status_code == 200, response.text


def test_code_replay_is_refused_by_the_other_process(deployment, backends, rp, factory):
    a, b = backends
    person = factory.identity()
    code, verifier = HttpBrowser([a]).sign_in(rp, person.email, PASSWORD, scope=OFFLINE)
    first = rp.token(a, code, verifier)
    assert first.status_code == 200, first.text
    tokens = first.json()
    replay = rp.token(b, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant", replay.text
    # The replay through B revoked what A issued, as seen by both.
    for base in (a, b):
        assert rp.introspect(base, tokens["access_token"]).json()["active"] is False
    assert rp.refresh(a, tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_simultaneous_redemptions_across_processes(deployment, backends, rp, factory):
    a, b = backends
    person = factory.identity()
    code, verifier = HttpBrowser([a]).sign_in(rp, person.email, PASSWORD, scope=OFFLINE)
    calls = [lambda base=base: rp.token(base, code, verifier) for base in (a, b) * 4]
    responses = simultaneously(calls)
    statuses = sorted(getattr(r, "status_code", repr(r)) for r in responses)
    assert statuses == [200] + [400] * 7, [(getattr(r, "status_code", r), getattr(r, "text", "")[:100])
                                           for r in responses]
    assert all(r.json()["error"] == "invalid_grant" for r in responses if r.status_code == 400)


def test_totp_code_replay_is_refused_by_the_other_process(deployment, backends, factory, app, db):
    a, b = backends
    person = factory.identity()
    secret = pyotp.random_base32()
    app.extensions["idp"].totp.enrol(db, person.id, secret)
    totp = pyotp.TOTP(secret)

    def to_second_step(base) -> tuple[HttpBrowser, str]:
        browser = HttpBrowser([base])
        page = browser.get("/login")
        response = browser.post("/login", {"csrf_token": csrf_token(page.text), "email": person.email,
                                           "password": PASSWORD, "action": "login"})
        assert response.status_code == 302 and "/login/second-step" in response.headers["Location"], response.text
        return browser, csrf_token(browser.get("/login/second-step").text)

    on_a, token_a = to_second_step(a)
    on_b, token_b = to_second_step(b)
    if time.time() % 30 > 25:  # keep the code inside its window for both submissions
        time.sleep(30 - time.time() % 30 + 0.1)
    code = totp.now()
    accepted = on_a.post("/login/second-step", {"csrf_token": token_a, "code": code})
    assert accepted.status_code == 302, accepted.text[:300]
    replayed = on_b.post("/login/second-step", {"csrf_token": token_b, "code": code})
    assert replayed.status_code == 400 and "already been used" in replayed.text, replayed.text[:300]


def test_rate_limits_are_shared(deployment, backends, rp):
    a, b = backends

    def bogus(base):
        return requests.post(base + "/token", auth=rp.basic(), timeout=30, data={
            "grant_type": "authorization_code", "code": "no-such-code", "redirect_uri": rp.redirect_uri})

    if time.time() % 60 > 50:  # all of it inside one fixed window
        time.sleep(60 - time.time() % 60 + 0.1)
    statuses = [bogus(a if i % 2 == 0 else b).status_code for i in range(TOKEN_LIMIT)]
    assert statuses == [400] * TOKEN_LIMIT, statuses
    # Each process has seen only half of the limit, yet both refuse now.
    for base in (a, b):
        limited = bogus(base)
        assert limited.status_code == 429, (base, limited.status_code, limited.text)
        assert limited.headers["Retry-After"].isdigit()


def test_rotated_key_is_served_by_both_within_the_reload_interval(deployment, backends, rp, factory):
    a, b = backends
    keys_dir = Path(deployment.environment["IDP_KEYS_DIR"])

    def key_files() -> dict[str, dict]:
        return {p.stem: json.loads(p.read_text()) for p in keys_dir.glob("*.json")}

    def kids(state: str) -> dict[str, str]:
        return {data["jwk"]["alg"]: kid for kid, data in key_files().items() if data["state"] == state}

    def signing_kids(base) -> dict[str, str]:
        """kid of an ID token (RS256) and of an access token (ES256) issued by ``base``."""
        person = factory.identity()
        code, verifier = HttpBrowser([base]).sign_in(rp, person.email, PASSWORD, scope=OFFLINE)
        response = rp.token(base, code, verifier)
        assert response.status_code == 200, response.text
        tokens = response.json()
        return {"RS256": jwt_header(tokens["id_token"])["kid"], "ES256": jwt_header(tokens["access_token"])["kid"]}

    active_before, next_before = kids("active"), kids("next")
    for base in (a, b):
        assert signing_kids(base) == active_before
        published = {k["kid"] for k in requests.get(base + "/jwks", timeout=10).json()["keys"]}
        # A next key is published before it ever signs.
        assert set(next_before.values()) <= published

    interval = reload_interval_of(deployment.environment)
    result = deployment.idp_cli("keys", "rotate")
    assert kids("active") == next_before, result.stdout
    new_next = set(kids("next").values())
    # The clock starts when the rotation hit the directory, not when the CLI process started.
    rotated_at = max(p.stat().st_mtime for p in keys_dir.glob("*.json"))

    def all_serve_new_keys() -> bool:
        for base in (a, b):
            for _ in range(4):  # several requests: each worker of a process reloads on its own
                published = {k["kid"] for k in requests.get(base + "/jwks", timeout=10).json()["keys"]}
                if not new_next <= published:
                    return False
        return True

    wait_for(all_serve_new_keys, interval + 10, interval=0.5, message="both processes publish the new keys")
    elapsed = time.time() - rotated_at
    assert elapsed <= interval + 5, f"took {elapsed:.1f}s (reload interval {interval}s)"
    for base in (a, b):
        assert signing_kids(base) == next_before, base
        published = {k["kid"] for k in requests.get(base + "/jwks", timeout=10).json()["keys"]}
        # The retired keys stay published until tokens they signed have expired.
        assert set(active_before.values()) <= published


class SourceAddress(requests.adapters.HTTPAdapter):
    """Connect from a chosen loopback address (all of 127.0.0.0/8 is local on Linux)."""

    def __init__(self, address: str, **kwargs):
        self.address = address
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def browser_from(address: str, base: str) -> HttpBrowser:
    session = requests.Session()
    session.mount("http://", SourceAddress(address))
    return HttpBrowser([base], http=session)


def test_per_ip_sign_in_limits_see_the_client_not_the_proxy(deployment, factory):
    """Behind nginx every connection to the IdP comes from nginx. The per-IP sign-in lock
    (and the per-IP rate limits, and the IP in audit events) must use the client's address
    that nginx forwards in X-Forwarded-For, or one attacker pauses sign-in for everyone.
    Runs last in this module: without that, it locks out 127.0.0.1 for 15 minutes."""
    attacker = browser_from("127.0.0.2", deployment.base)
    statuses = []
    for i in range(IP_LOCK_AFTER + 1):
        page = attacker.get("/login")
        response = attacker.post("/login", {"csrf_token": csrf_token(page.text), "action": "login",
                                            "email": f"nobody-{i}-{uuid.uuid4().hex[:6]}@example.com",
                                            "password": "Wrong-Password-Guess-123"})
        statuses.append(response.status_code)
    assert statuses == [401] * IP_LOCK_AFTER + [429], statuses  # the attacker's address is paused

    person = factory.identity()
    bystander = browser_from("127.0.0.3", deployment.base)
    page = bystander.get("/login")
    response = bystander.post("/login", {"csrf_token": csrf_token(page.text), "action": "login",
                                         "email": person.email, "password": PASSWORD})
    assert response.status_code == 302, (
        f"{response.status_code}: a sign-in from another address was refused after one client's failures "
        "behind the proxy (the IdP counts nginx's address, not X-Forwarded-For)")
