"""A server worker SIGKILLed in the middle of token requests leaves no half-written state.

The IdP runs as in production, once under granian as the Dockerfile runs it (2 workers, 4 threads each,
``--respawn-failed-workers``) and once under ``gunicorn idp.wsgi:app`` with 2 sync workers, on a spare
port, on the pass's database (the run's throw-away PostgreSQL database, or the SQLite
file) and store. Threads redeem authorization codes and keep rotating the refresh tokens they get,
retrying a request whose connection broke (as a client would); meanwhile workers are
killed with SIGKILL, three times, 0.7 s apart (7 s under granian, whose master exits when a worker it has
just respawned dies again). A killed worker's transaction is never committed in part.

What "no half-written state" means here, checked in the database afterwards:

1. Every token response is all or nothing. A code redemption writes a family, one access
   token, one refresh token and one ``token.issued`` audit event; a refresh writes an access
   token, a refresh token, an audit event and marks the old refresh token rotated. So for
   every family: access tokens == refresh tokens == rotated refresh tokens + 1, and the
   client's ``token.issued`` events == its access tokens.
2. Every response that reached the client is durable: its access token (by ``jti``) and its
   refresh token (by keyed hash) exist, in the same family.
3. A family is revoked for reuse only where the client retried after a lost response (the
   lost request had committed, so the retry is a reuse); never otherwise.
4. The server keeps serving: it replaced the workers, /readyz is 200 and a complete
   sign-in over HTTP works.

A second test makes the kill deterministic: the test holds a lock the worker's transaction
needs (PostgreSQL: ``LOCK TABLE audit_events IN SHARE MODE``; SQLite: ``BEGIN IMMEDIATE``),
so the worker is stuck inside its transaction (on PostgreSQL after it has already written
the new family, or marked the old refresh token rotated), and kills the workers right then.

A killed code redemption may have spent its code without a response; the client then signs
in again (RFC 6749 §4.1.2: codes are single use). That is not half-written state.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests
from sqlalchemy import func, select

from bench.scaleout.launch import Backend, free_port, idp_environment
from idp.audit.models import AuditEvent
from idp.grants.models import AccessToken, RefreshToken, TokenFamily
from idp.security import hasher
from tests.faults.support import HttpBrowser, HttpRP, jwt_claims
from tests.helpers.factories import PASSWORD
from tests.helpers.oidc import RP

OFFLINE = "openid profile email offline_access"
CODES = 12
THREADS = 6
KILLS = 3


def server_environment(settings, database_url, redis_url, port: int) -> dict:
    return idp_environment(
        issuer=f"http://127.0.0.1:{port}", database_url=database_url, redis_url=redis_url,
        redis_prefix=settings.redis_prefix, keys_dir=settings.keys_dir, secret_key=settings.secret_key, env="test",
        extra={"IDP_ARGON2_MEMORY_KIB": settings.argon2_memory_kib, "IDP_ARGON2_TIME_COST": settings.argon2_time_cost,
               "IDP_RATE_LIMIT_FACTOR": settings.rate_limit_factor,
               "IDP_LOGIN_IP_LOCK_AFTER": settings.login_ip_lock_after})


@pytest.fixture(scope="module", params=Backend.SERVERS)
def server(request, app, settings, database_url, redis_url, tmp_path_factory):
    port = free_port()
    backend = Backend(server_environment(settings, database_url, redis_url, port), port=port, workers=2,
                      name="idp-kill", log_dir=tmp_path_factory.mktemp(request.param), server=request.param)
    backend.start()
    try:
        backend.wait_ready()
        backend.wait_workers()
        yield backend
    finally:
        backend.stop()


@dataclass
class Chain:
    """One code and the refresh tokens rotated from it, as the client saw them."""

    code: str
    verifier: str
    responses: list[dict] = field(default_factory=list)  # every 200 token response
    events: list[str] = field(default_factory=list)      # "200", "lost", "invalid_grant", ...


class Client:
    """The RP's back end under load: redeem, then rotate; retry once after a broken connection."""

    def __init__(self, base: str, rp: HttpRP):
        self.base = base
        self.rp = rp
        self.outcomes: Counter = Counter()
        self.unexpected: list[str] = []
        self.lock = threading.Lock()

    def _send(self, chain: Chain, call) -> dict | None:
        for _attempt in range(2):  # a lost response is retried once with the same credential
            try:
                response = call()
            except requests.RequestException as error:
                chain.events.append("lost")
                with self.lock:
                    self.outcomes["lost"] += 1
                if not isinstance(error, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
                    self.unexpected.append(repr(error))
                time.sleep(0.05)
                continue
            with self.lock:
                self.outcomes[response.status_code] += 1
            if response.status_code == 200:
                chain.events.append("200")
                chain.responses.append(response.json())
                return response.json()
            body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
            chain.events.append(body.get("error", str(response.status_code)))
            if response.status_code != 400 or body.get("error") != "invalid_grant":
                self.unexpected.append(f"{response.status_code} {response.text[:200]}")
            return None
        return None

    def run(self, chain: Chain, stop: threading.Event) -> None:
        """Redeem the code, then rotate its refresh token until ``stop`` (or until it stops working)."""
        tokens = self._send(chain, lambda: self.rp.token(self.base, chain.code, chain.verifier, timeout=60))
        while tokens is not None and not stop.is_set():
            current = tokens["refresh_token"]
            tokens = self._send(chain, lambda current=current: self.rp.refresh(self.base, current, timeout=60))


def codes_for(app, factory, rp_client, secret, count: int) -> list[tuple[str, str]]:
    """Authorization codes for one person, issued in-process on the same database and store."""
    identity = factory.identity()
    browser = app.test_client()
    rp = RP(browser, rp_client.client_id, secret, rp_client.redirect_uris[0])
    codes = []
    for _ in range(count):
        params = rp.sign_in(identity.email, scope=OFFLINE)
        codes.append((params["code"], rp.verifier))
    return codes


def test_killed_worker_leaves_no_half_written_state(server, app, factory, db):
    rp_client, secret = factory.client()
    rp = HttpRP(rp_client.client_id, secret, rp_client.redirect_uris[0])
    chains = [Chain(code, verifier) for code, verifier in codes_for(app, factory, rp_client, secret, CODES)]
    client = Client(server.base, rp)
    queue = list(chains)
    queue_lock = threading.Lock()
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            with queue_lock:
                if not queue:
                    return
                chain = queue.pop()
            client.run(chain, stop)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    killed = []
    try:
        for _ in range(KILLS):
            time.sleep(0.7)
            server.ready_to_kill()
            pids = server.worker_pids()
            if pids:
                victim = pids[len(killed) % len(pids)]
                server.kill_workers([victim])
                killed.append(victim)
        server.wait_workers()
        server.wait_ready()
        time.sleep(1.0)  # load on the replaced workers too
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)

    print(f"killed workers {killed}; client outcomes {dict(client.outcomes)}")
    assert len(killed) == KILLS, killed
    assert client.outcomes["lost"] >= 1, f"no request was in flight when a worker died: {dict(client.outcomes)}"
    assert not client.unexpected, (client.unexpected[:5], server.log_tail(6000))
    assert client.outcomes[200] >= 2 * CODES, dict(client.outcomes)

    # 1. all or nothing, per family and for the audit trail
    db.expire_all()
    families = db.execute(select(TokenFamily).where(TokenFamily.client_id == rp.client_id)).scalars().all()
    access = Counter(db.execute(select(AccessToken.family_id).where(AccessToken.client_id == rp.client_id)).scalars())
    refresh, rotated = Counter(), Counter()
    for family_id, rotated_at in db.execute(select(RefreshToken.family_id, RefreshToken.rotated_at).join(TokenFamily)
                                            .where(TokenFamily.client_id == rp.client_id)):
        refresh[family_id] += 1
        rotated[family_id] += rotated_at is not None
    broken = {f.id: (access[f.id], refresh[f.id], rotated[f.id]) for f in families
              if not access[f.id] == refresh[f.id] == rotated[f.id] + 1}
    assert not broken, f"families with half-written token responses (access, refresh, rotated): {broken}"
    issued_events = db.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.event == "token.issued", AuditEvent.client_id == rp.client_id))
    assert issued_events == sum(access.values()), (issued_events, sum(access.values()))

    # 2. every response the client received is durable and in one family
    by_jti = dict(db.execute(select(AccessToken.jti, AccessToken.family_id)
                             .where(AccessToken.client_id == rp.client_id)).all())
    for chain in chains:
        chain_families = set()
        for tokens in chain.responses:
            jti = jwt_claims(tokens["access_token"])["jti"]
            assert jti in by_jti, f"an access token the client received is not recorded ({chain.events})"
            row = db.get(RefreshToken, hasher().hash(tokens["refresh_token"]))
            assert row is not None and row.family_id == by_jti[jti], f"refresh token missing ({chain.events})"
            chain_families.add(by_jti[jti])
        assert len(chain_families) <= 1, f"one code's tokens ended up in several families: {chain.events}"

    # 3. reuse detection fired only where a lost response was retried
    revoked = {f.id: f.revoked_reason for f in families if f.revoked_at is not None}
    family_of_chain = {}
    for chain in chains:
        if chain.responses:
            family_of_chain[by_jti[jwt_claims(chain.responses[0]["access_token"])["jti"]]] = chain
    print(f"families {len(families)}, revoked {Counter(revoked.values())}, "
          f"access tokens {sum(access.values())}, lost responses in {sum('lost' in c.events for c in chains)} chains")
    unseen = []
    for family_id, reason in revoked.items():
        chain = family_of_chain.get(family_id)
        if chain is None:
            unseen.append(family_id)  # committed, but its response was lost: the retry was a code reuse
            continue
        assert "lost" in chain.events, f"family revoked ({reason}) without a lost response: {chain.events}"
    lost_before_any_response = sum(1 for c in chains if not c.responses and "lost" in c.events)
    assert len(unseen) <= lost_before_any_response, (unseen, [c.events for c in chains if not c.responses])

    # 4. the server keeps serving
    assert len(server.wait_workers()) == 2
    assert requests.get(server.base + "/readyz", timeout=10).status_code == 200
    person = factory.identity()
    code, verifier = HttpBrowser([server.base]).sign_in(rp, person.email, PASSWORD, scope=OFFLINE)
    response = rp.token(server.base, code, verifier)
    assert response.status_code == 200, response.text
    log = server.log_tail(20000)
    assert "Traceback" not in log.replace("WORKER TIMEOUT", ""), log[-3000:]


class HeldWrites:
    """The test's own transaction holding back the IdP's writes.

    PostgreSQL: a SHARE lock on audit_events, which every token response inserts into last
    in its transaction, so the worker blocks with its other writes already made. SQLite: the
    database's write lock (BEGIN IMMEDIATE): the worker blocks at its first write.
    """

    def __init__(self, database_url: str):
        from sqlalchemy import create_engine

        self.postgres = database_url.startswith("postgresql")
        self.engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
        self.connection = None

    def __enter__(self):
        from sqlalchemy import text

        self.connection = self.engine.connect()
        if self.postgres:
            self.connection.execute(text("BEGIN"))
            self.connection.execute(text("LOCK TABLE audit_events IN SHARE MODE"))
        else:
            self.connection.exec_driver_sql("BEGIN IMMEDIATE")
        return self

    def blocked_backend(self) -> dict | None:
        """PostgreSQL: the IdP backend waiting for our lock, and the tables it has written to."""
        from sqlalchemy import text

        # Inside our transaction PostgreSQL answers every pg_stat_activity query from the snapshot its first one
        # took: without clearing it, a backend that started or began waiting after the first poll is never seen.
        self.connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        row = self.connection.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
            "AND pid <> pg_backend_pid()")).first()
        if row is None:
            return None
        written = self.connection.execute(text(
            "SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE l.pid = :pid AND l.mode = 'RowExclusiveLock' AND l.granted AND c.relkind = 'r'"),
            {"pid": row.pid}).scalars().all()
        return {"pid": row.pid, "written": sorted(written)}

    def backend_gone(self, pid: int) -> bool:
        from sqlalchemy import text

        self.connection.execute(text("SELECT pg_stat_clear_snapshot()"))  # as in blocked_backend
        return self.connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                                       {"pid": pid}).scalar() == 0

    def release(self) -> None:
        if self.connection is not None:
            self.connection.exec_driver_sql("ROLLBACK")
            self.connection.close()
            self.connection = None

    def __exit__(self, *exc):
        self.release()
        self.engine.dispose()


def kill_inside_transaction(server, database_url, call) -> dict:
    """Send ``call`` in a thread while writes are held, SIGKILL the workers once it is stuck
    inside its transaction, then let the database go on. Returns what was observed."""
    import threading as _threading

    from tests.faults.support import wait_for

    seen = {}
    server.ready_to_kill()
    with HeldWrites(database_url) as held:
        result = {}
        thread = _threading.Thread(target=lambda: result.setdefault("response", _catch(call)))
        thread.start()
        if held.postgres:
            seen["backend"] = wait_for(held.blocked_backend, 20, interval=0.05, message="IdP transaction blocked")
        else:
            time.sleep(1.5)  # SQLite: the worker is waiting for the write lock (busy timeout 30 s)
        server.kill_workers(server.worker_pids())
        thread.join(30)
        seen["response"] = result.get("response")
        if held.postgres:
            # The orphaned backend notices its client is gone while it still waits for our lock
            # (client_connection_check_interval, idp/storage/db.py) and ends, rolling back: a token response
            # is one statement in autocommit, which would commit by itself if it ran on after the lock.
            wait_for(lambda: held.backend_gone(seen["backend"]["pid"]), 20,
                     message="the killed worker's backend ended while still blocked")
        held.release()
    # granian's workers each listen on the port: until a replacement has loaded the app, a connection is refused
    # (gunicorn's master keeps listening and queues it).
    server.wait_workers()
    server.wait_ready()
    return seen


def _catch(call):
    try:
        return call()
    except requests.RequestException as error:
        return error


def test_kill_inside_the_transaction_of_a_token_response(server, app, factory, db, database_url):
    rp_client, secret = factory.client()
    rp = HttpRP(rp_client.client_id, secret, rp_client.redirect_uris[0])
    (code, verifier), (code2, verifier2) = codes_for(app, factory, rp_client, secret, 2)

    # A code redemption killed after it wrote the family (PostgreSQL), before it committed.
    seen = kill_inside_transaction(server, database_url, lambda: rp.token(server.base, code, verifier))
    print(f"code redemption killed: {seen}")
    assert isinstance(seen["response"], requests.RequestException), seen["response"]
    if "backend" in seen:
        assert "token_families" in seen["backend"]["written"], seen["backend"]
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(TokenFamily).where(TokenFamily.client_id == rp.client_id)) == 0
    assert db.scalar(select(func.count()).select_from(AccessToken).where(AccessToken.client_id == rp.client_id)) == 0
    # Either the code was spent before the kill (its single use is recorded outside the
    # token transaction: Redis, or the store's own transaction) and the client signs in
    # again, or it was not (SQLite: the kill came while waiting for the write lock, before
    # the code was touched) and the retry redeems it normally.
    retry = rp.token(server.base, code, verifier)
    db.expire_all()
    families = db.scalar(select(func.count()).select_from(TokenFamily).where(TokenFamily.client_id == rp.client_id))
    if retry.status_code == 200:
        assert not seen.get("backend"), "the code survived a kill after its redemption had started writing"
        assert families == 1
    else:
        assert retry.status_code == 400 and retry.json()["error"] == "invalid_grant", retry.text
        assert families == 0
    issued_before = db.scalar(select(func.count()).select_from(AccessToken).where(AccessToken.client_id == rp.client_id))

    # A refresh killed after it marked the old refresh token rotated, before it committed.
    first = rp.token(server.base, code2, verifier2)
    assert first.status_code == 200, first.text
    tokens = first.json()
    seen = kill_inside_transaction(server, database_url, lambda: rp.refresh(server.base, tokens["refresh_token"]))
    print(f"refresh killed: {seen}")
    assert isinstance(seen["response"], requests.RequestException), seen["response"]
    if "backend" in seen:
        assert "refresh_tokens" in seen["backend"]["written"], seen["backend"]
    db.expire_all()
    old = db.get(RefreshToken, hasher().hash(tokens["refresh_token"]))
    assert old.rotated_at is None, "the old refresh token is marked rotated, but its successor was never stored"
    assert db.scalar(select(func.count()).select_from(AccessToken).where(AccessToken.client_id == rp.client_id)) \
        == issued_before + 1
    # So the client's retry is a normal rotation, not a reuse that revokes the family.
    retry = rp.refresh(server.base, tokens["refresh_token"])
    assert retry.status_code == 200, retry.text
    assert db.get(TokenFamily, old.family_id).revoked_at is None
    assert requests.get(server.base + "/readyz", timeout=10).status_code == 200
