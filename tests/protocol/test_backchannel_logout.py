"""OpenID Connect Back-Channel Logout 1.0 against real HTTP receivers.

Each RP's ``backchannel_logout_uri`` points at a werkzeug server on
127.0.0.1 that records what the OP POSTs. The logout tokens are verified with
PyJWT against the published JWKS (§2.4 claims, §2.6 validation an RP does).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict
from urllib.parse import urlencode

import jwt as pyjwt
from sqlalchemy import select
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from idp.clients.models import Client
from idp.grants.models import LogoutDelivery
from idp.oidc import logout as logout_module
from tests.conftest import ISSUER
from tests.helpers.oidc import make_rp

EVENT = "http://schemas.openid.net/event/backchannel-logout"


class Receiver:
    """Back-channel logout endpoints of RPs: records every POST, answers as planned."""

    def __init__(self, port: int = 0):
        self.lock = threading.Lock()
        self.hits: dict[str, list[dict]] = defaultdict(list)
        self.plan: dict[str, list[int]] = {}
        self.server = make_server("127.0.0.1", port, self._app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *statuses: int) -> None:
        """Answer the POSTs to ``path`` with these statuses in turn (then 200)."""
        self.plan[path] = list(statuses)

    def _app(self, environ, start_response):
        request = Request(environ)
        with self.lock:
            planned = self.plan.get(request.path) or []
            status = planned.pop(0) if planned else 200
            if request.method == "POST":
                self.hits[request.path].append({"form": request.form.to_dict(flat=False), "mimetype": request.mimetype,
                                                "status": status})
        return Response("", status=status)(environ, start_response)

    def posts(self, path: str) -> list[dict]:
        with self.lock:
            return list(self.hits[path])

    def wait_for(self, path: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            posts = self.posts(path)
            if len(posts) >= count:
                return posts
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.posts(path))} POSTs after {timeout}s, expected {count}")

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def register_backchannel(db, rp, uri: str, session_required: bool = True) -> None:
    row = db.get(Client, rp.client_id)
    row.extra_metadata = {"backchannel_logout_uri": uri, "backchannel_logout_session_required": session_required}
    db.commit()


def sign_in_and_redeem(rp, email) -> dict:
    """Sign in at ``rp`` and redeem the code; the ID token's claims (and its raw value)."""
    response = rp.token(rp.sign_in(email)["code"])
    assert response.status_code == 200, response.get_json()
    id_token = response.get_json()["id_token"]
    return {**rp.verify_id_token(id_token), "_raw": id_token}


def end_session(browser, **params):
    return browser.get("/logout?" + urlencode(params))


def deliveries(app, client_id: str) -> list[LogoutDelivery]:
    """Fresh rows (another session each time: the OP's threads write them)."""
    with app.extensions["idp"].db.session_factory() as session:
        rows = session.execute(select(LogoutDelivery).where(LogoutDelivery.client_id == client_id)).scalars().all()
        session.expunge_all()
        return rows


def wait_for_row(app, client_id: str, predicate, timeout: float = 8.0) -> LogoutDelivery:
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        rows = deliveries(app, client_id)
        if len(rows) == 1 and predicate(rows[0]):
            return rows[0]
        time.sleep(0.05)
    raise AssertionError(f"logout_deliveries for {client_id}: {[(r.attempts, r.delivered_at, r.last_error) for r in rows]}")


def verify_logout_token(browser, post: dict, client_id: str) -> tuple[dict, dict]:
    """§2.6 as an RP does it: signature via JWKS, iss, aud, iat/exp, events, no nonce."""
    assert post["mimetype"] == "application/x-www-form-urlencoded"
    assert list(post["form"]) == ["logout_token"] and len(post["form"]["logout_token"]) == 1
    token = post["form"]["logout_token"][0]
    header = pyjwt.get_unverified_header(token)
    jwks = browser.get("/jwks").get_json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = pyjwt.decode(token, pyjwt.PyJWK(key).key, algorithms=["RS256", "ES256"], audience=client_id,
                          issuer=ISSUER, options={"require": ["iss", "aud", "iat", "exp", "jti"]})
    return header, claims


def assert_valid_logout_token(header, claims, client_id, id_token_claims, identity):
    assert header["typ"] == "logout+jwt"
    assert header["alg"] == "RS256"  # the client's id_token_signed_response_alg
    assert claims["iss"] == ISSUER
    assert claims["aud"] in (client_id, [client_id])
    assert claims["sub"] == identity.id == id_token_claims["sub"]
    assert claims["sid"] == id_token_claims["sid"]
    assert claims["events"] == {EVENT: {}}
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert claims["exp"] > claims["iat"]
    assert abs(claims["iat"] - time.time()) < 60
    assert "nonce" not in claims


def test_logout_notifies_every_rp_of_the_session(client, factory, db, app):
    receiver = Receiver()
    try:
        identity = factory.identity()
        rp1, rp2 = make_rp(client, factory), make_rp(client, factory)
        register_backchannel(db, rp1, receiver.url("/rp1/backchannel"))
        register_backchannel(db, rp2, receiver.url("/rp2/backchannel"))
        id1 = sign_in_and_redeem(rp1, identity.email)
        id2 = sign_in_and_redeem(rp2, identity.email)  # single sign-on in the same browser
        assert id1["sid"] == id2["sid"]

        response = end_session(client, id_token_hint=id1["_raw"])
        assert response.status_code == 200

        tokens = {}
        for rp, id_claims, path in ((rp1, id1, "/rp1/backchannel"), (rp2, id2, "/rp2/backchannel")):
            (post,) = receiver.wait_for(path)
            header, claims = verify_logout_token(client, post, rp.client_id)
            assert_valid_logout_token(header, claims, rp.client_id, id_claims, identity)
            tokens[rp.client_id] = claims
            row = wait_for_row(app, rp.client_id, lambda r: r.delivered_at is not None)
            assert row.attempts == 1 and row.last_error is None
        assert tokens[rp1.client_id]["jti"] != tokens[rp2.client_id]["jti"]

        time.sleep(0.3)  # delivered once: nothing more arrives
        assert len(receiver.posts("/rp1/backchannel")) == 1
        assert len(receiver.posts("/rp2/backchannel")) == 1
    finally:
        receiver.stop()


def test_rp_answering_500_gets_the_token_on_a_retry(client, factory, db, app):
    receiver = Receiver()
    try:
        identity = factory.identity()
        rp = make_rp(client, factory)
        register_backchannel(db, rp, receiver.url("/flaky"))
        receiver.answer("/flaky", 500)
        id_claims = sign_in_and_redeem(rp, identity.email)

        assert end_session(client, id_token_hint=id_claims["_raw"]).status_code == 200

        first, second = receiver.wait_for("/flaky", count=2, timeout=6.0)
        assert (first["status"], second["status"]) == (500, 200)
        header, claims = verify_logout_token(client, second, rp.client_id)
        assert_valid_logout_token(header, claims, rp.client_id, id_claims, identity)
        row = wait_for_row(app, rp.client_id, lambda r: r.delivered_at is not None)
        assert row.attempts == 2
        assert row.last_error is None
    finally:
        receiver.stop()


def test_rp_that_is_down_stays_queued_until_logout_retry(client, factory, db, app):
    port = free_port()  # nothing listens here yet: the RP is down
    identity = factory.identity()
    rp = make_rp(client, factory)
    register_backchannel(db, rp, f"http://127.0.0.1:{port}/down")
    id_claims = sign_in_and_redeem(rp, identity.email)

    assert end_session(client, id_token_hint=id_claims["_raw"]).status_code == 200

    # Every background attempt fails; the token stays queued.
    attempts = len(logout_module.RETRY_DELAYS)
    row = wait_for_row(app, rp.client_id, lambda r: r.attempts >= attempts)
    time.sleep(0.2)
    row = wait_for_row(app, rp.client_id, lambda r: True)
    assert row.delivered_at is None and row.last_error
    assert row.attempts == attempts

    receiver = Receiver(port)  # the RP is back
    try:
        result = app.test_cli_runner().invoke(args=["logout", "retry"])
        assert result.exit_code == 0, result.output
        assert "delivered" in result.output

        (post,) = receiver.wait_for("/down", timeout=2.0)
        header, claims = verify_logout_token(client, post, rp.client_id)
        # The token was minted at logout; a retry delivers it while it is still valid.
        assert_valid_logout_token(header, claims, rp.client_id, id_claims, identity)
        row = wait_for_row(app, rp.client_id, lambda r: r.delivered_at is not None, timeout=2.0)
        assert row.attempts == attempts + 1

        # Delivered: a later run sends nothing again.
        app.test_cli_runner().invoke(args=["logout", "retry"])
        assert len(receiver.posts("/down")) == 1
    finally:
        receiver.stop()


def test_rp_without_tokens_in_this_session_is_not_notified(client, factory, db, app):
    receiver = Receiver()
    try:
        identity = factory.identity()
        rp1 = make_rp(client, factory)
        register_backchannel(db, rp1, receiver.url("/rp1"))
        # rp3 has the same person signed in, but in another browser (another OP session).
        other_browser = app.test_client()
        rp3 = make_rp(other_browser, factory)
        register_backchannel(db, rp3, receiver.url("/rp3"))
        # rp4 is a client the person never used at all.
        rp4 = make_rp(client, factory)
        register_backchannel(db, rp4, receiver.url("/rp4"))

        id1 = sign_in_and_redeem(rp1, identity.email)
        id3 = sign_in_and_redeem(rp3, identity.email)
        assert id1["sid"] != id3["sid"]

        assert end_session(client, id_token_hint=id1["_raw"]).status_code == 200

        receiver.wait_for("/rp1")
        assert wait_for_row(app, rp1.client_id, lambda r: r.delivered_at is not None).attempts == 1
        time.sleep(0.5)
        assert receiver.posts("/rp3") == [] and receiver.posts("/rp4") == []
        assert deliveries(app, rp3.client_id) == [] and deliveries(app, rp4.client_id) == []
        # The other browser's session is untouched.
        response = rp3.follow(rp3.authorize())
        assert response.status_code == 302 and response.location.startswith(rp3.redirect_uri)
    finally:
        receiver.stop()
