"""clients/resource_server.py: local validation of RFC 9068 access tokens for product APIs.

Keys are generated here (joserfc); a fake issuer answers discovery and JWKS through
the injectable fetcher, and one test serves them over real HTTP to cover the default one.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from flask import Flask, g
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from clients import stepup
from clients.resource_server import (
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    JWKSCache,
    KeysUnavailable,
    MissingToken,
    ResourceServer,
    StepUpRequired,
)

ISSUER = "https://idp.example"
AUDIENCE = "https://time.example"
NOW = 1_700_000_000
AGREEMENT = {"agreement_id": "100042", "agreement_name": "Fjordblå Kaffebar ApS", "agreement_product": "e-conomic",
             "agreement_role": "superuser"}


class Clock:
    def __init__(self):
        self.now = float(NOW)

    def __call__(self):
        return self.now


class FakeIssuer:
    """Discovery + JWKS through the fetcher; ``rotate()`` publishes a new signing key."""

    def __init__(self):
        self.keys = [self.new_key()]
        self.fetches: list[str] = []
        self.down = False

    @staticmethod
    def new_key():
        return ECKey.generate_key("P-256", parameters={"kid": uuid.uuid4().hex[:12], "use": "sig", "alg": "ES256"},
                                  private=True)

    @property
    def key(self):
        return self.keys[-1]

    def rotate(self, keep_old=True):
        self.keys = ([*self.keys] if keep_old else []) + [self.new_key()]

    def jwks(self):
        return {"keys": [k.as_dict(private=False) for k in self.keys]}

    def fetch(self, url):
        self.fetches.append(url)
        if self.down:
            raise ValueError("connection refused")
        if url == ISSUER + "/.well-known/openid-configuration":
            return {"issuer": ISSUER, "jwks_uri": ISSUER + "/jwks"}
        assert url == ISSUER + "/jwks"
        return self.jwks()

    @property
    def jwks_fetches(self):
        return self.fetches.count(ISSUER + "/jwks")


def claims(**overrides):
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "person-1", "client_id": "mobile-app", "jti": uuid.uuid4().hex,
            "iat": NOW - 10, "exp": NOW + 3600, "scope": "openid agreement", "acr": stepup.ACR_PASSWORD,
            "auth_time": NOW - 60, **AGREEMENT}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key, payload=None, **header):
    head = {"alg": "ES256", "typ": "at+jwt", "kid": key.kid, **header}
    return jwt.encode({k: v for k, v in head.items() if v is not None}, payload or claims(), key)


def b64(data) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def idp():
    return FakeIssuer()


@pytest.fixture
def rs(idp, clock):
    return ResourceServer(ISSUER, AUDIENCE, fetch=idp.fetch, clock=clock, realm="time")


# --------------------------------------------------------------------------- valid tokens


def test_valid_token_gives_its_claims_and_keys_are_cached(rs, idp):
    token = sign(idp.key)
    assert rs.validate(token)["agreement_id"] == "100042"
    rs.validate(sign(idp.key))
    assert idp.jwks_fetches == 1  # discovery and JWKS once, then from the cache
    assert idp.fetches.count(ISSUER + "/.well-known/openid-configuration") == 1


def test_audience_list_and_long_typ_are_accepted(rs, idp):
    token = sign(idp.key, claims(aud=[ISSUER, AUDIENCE]), typ="application/at+jwt")
    assert rs.validate(token)["aud"] == [ISSUER, AUDIENCE]


# --------------------------------------------------------------------------- the token's claims


def test_expired_token_is_refused_after_the_leeway(rs, idp, clock):
    token = sign(idp.key, claims(exp=NOW - 20))
    rs.validate(token)  # 20 s late is within the 30 s leeway (clock skew)
    clock.now += 11
    with pytest.raises(InvalidToken, match="expired"):
        rs.validate(token)


def test_token_issued_in_the_future_is_refused(rs, idp):
    with pytest.raises(InvalidToken, match="not valid yet"):
        rs.validate(sign(idp.key, claims(iat=NOW + 120)))
    with pytest.raises(InvalidToken, match="not valid yet"):
        rs.validate(sign(idp.key, claims(nbf=NOW + 120)))


def test_wrong_audience_is_refused(rs, idp):
    for aud in (ISSUER, "https://other-api.example", [ISSUER, "https://other-api.example"], None):
        with pytest.raises(InvalidToken, match="not meant for this API"):
            rs.validate(sign(idp.key, claims(aud=aud)))


def test_wrong_issuer_is_refused(rs, idp):
    with pytest.raises(InvalidToken, match="another issuer"):
        rs.validate(sign(idp.key, claims(iss="https://evil.example")))


@pytest.mark.parametrize("missing", ["sub", "client_id", "jti", "exp", "iat"])
def test_rfc_9068_claims_are_required(rs, idp, missing):
    with pytest.raises(InvalidToken):
        rs.validate(sign(idp.key, claims(**{missing: None})))


def test_dpop_bound_token_is_not_a_bearer_token(rs, idp):
    with pytest.raises(InvalidToken, match="DPoP"):
        rs.validate(sign(idp.key, claims(cnf={"jkt": "abc"})))


def test_client_allow_list(idp, clock):
    rs = ResourceServer(ISSUER, AUDIENCE, fetch=idp.fetch, clock=clock, clients=["accounting-web"])
    assert rs.validate(sign(idp.key, claims(client_id="accounting-web")))
    with pytest.raises(InvalidToken, match="does not serve"):
        rs.validate(sign(idp.key, claims(client_id="mobile-app")))


# --------------------------------------------------------------------------- header, algorithm, signature


def test_alg_none_is_refused(rs, idp):
    token = f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': idp.key.kid})}.{b64(claims())}."
    with pytest.raises(InvalidToken, match="algorithm is not accepted"):
        rs.validate(token)


def test_hs256_signed_with_the_public_key_is_refused(rs, idp):
    """The classic confusion attack: the public key used as an HMAC secret."""
    from joserfc.jwk import OctKey

    public = json.dumps(idp.key.as_dict(private=False)).encode()
    token = jwt.encode({"alg": "HS256", "typ": "at+jwt", "kid": idp.key.kid}, claims(), OctKey.import_key(public))
    with pytest.raises(InvalidToken, match="algorithm is not accepted"):
        rs.validate(token)


def test_only_asymmetric_algorithms_can_be_configured(idp):
    for algorithms in (["HS256"], ["none"], ["ES256", "HS512"], []):
        with pytest.raises(ValueError):
            ResourceServer(ISSUER, AUDIENCE, algorithms=algorithms, fetch=idp.fetch)


def test_algorithm_outside_the_allow_list_is_refused(idp, clock):
    rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"}, private=True)
    idp.keys.append(rsa)
    rs = ResourceServer(ISSUER, AUDIENCE, algorithms=["ES256"], fetch=idp.fetch, clock=clock)
    with pytest.raises(InvalidToken, match="algorithm is not accepted"):
        rs.validate(sign(rsa, alg="RS256"))


def test_key_and_algorithm_must_match(rs, idp):
    ec = idp.key
    rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig", "alg": "RS256"}, private=True)
    idp.keys.append(rsa)
    assert rs.validate(sign(rsa, alg="RS256"))
    with pytest.raises(InvalidToken, match="does not match"):
        rs.validate(sign(rsa, alg="RS256", kid=ec.kid))  # an RS256 token naming the EC key


def test_id_token_is_not_an_access_token(rs, idp):
    for typ in ("JWT", None, "logout+jwt"):
        with pytest.raises(InvalidToken, match="at\\+jwt"):
            rs.validate(sign(idp.key, typ=typ))


def test_tampered_token_and_garbage_are_refused(rs, idp):
    header, _payload, signature = sign(idp.key).split(".")
    forged = b64(claims(sub="someone-else"))
    with pytest.raises(InvalidToken, match="signature"):
        rs.validate(f"{header}.{forged}.{signature}")
    for garbage in ("", "abc", "a.b.c", "a.b.c.d.e", "x" * 9000):
        with pytest.raises(InvalidToken):
            rs.validate(garbage)


def test_header_text_never_reaches_the_challenge(rs, idp):
    evil = {"alg": "x\r\nSet-Cookie: a=b", "typ": "at+jwt", "kid": "k"}
    token = b64(evil) + "." + b64(claims()) + ".c2ln"
    with pytest.raises(InvalidToken) as caught:
        rs.validate(token)
    assert "\r" not in caught.value.challenge() and "Set-Cookie" not in caught.value.challenge()
    assert InvalidToken("a\r\nb é").challenge() == 'Bearer error="invalid_token", error_description="a??b ?"'


def test_token_without_kid_is_refused(rs, idp):
    with pytest.raises(InvalidToken, match="kid"):
        rs.validate(sign(idp.key, kid=None))


# --------------------------------------------------------------------------- key rotation and the cache


def test_unknown_kid_refetches_the_jwks_once(rs, idp, clock):
    rs.validate(sign(idp.key))
    assert idp.jwks_fetches == 1
    idp.rotate()  # the IdP publishes a new key and starts signing with it
    clock.now += 1
    assert rs.validate(sign(idp.key, claims(iat=int(clock.now))))
    assert idp.jwks_fetches == 2

    # A kid that does not exist: refused, and no fetch again so soon (no hammering the IdP).
    stranger = FakeIssuer.new_key()
    for _ in range(5):
        with pytest.raises(InvalidToken, match="unknown key"):
            rs.validate(sign(stranger))
    assert idp.jwks_fetches == 2
    clock.now += 31
    with pytest.raises(InvalidToken, match="unknown key"):
        rs.validate(sign(stranger, claims(iat=int(clock.now))))
    assert idp.jwks_fetches == 3


def test_retired_key_stops_working_after_the_cache_ttl(rs, idp, clock):
    old = idp.key
    token = sign(old, claims(exp=NOW + 7200))
    rs.validate(token)
    idp.rotate(keep_old=False)
    clock.now += 299
    rs.validate(token)  # still cached
    clock.now += 2
    with pytest.raises(InvalidToken, match="unknown key"):
        rs.validate(token)


def test_stale_keys_are_served_while_the_issuer_is_down(rs, idp, clock):
    token = sign(idp.key, claims(exp=NOW + 7200))
    rs.validate(token)
    idp.down = True
    clock.now += 400
    assert rs.validate(token)
    fetches = len(idp.fetches)
    rs.validate(token)
    assert len(idp.fetches) == fetches  # no retry on every request after a failure


def test_no_keys_at_all_is_a_server_problem_not_a_bad_token(idp, clock):
    idp.down = True
    rs = ResourceServer(ISSUER, AUDIENCE, fetch=idp.fetch, clock=clock)
    with pytest.raises(KeysUnavailable):
        rs.validate(sign(idp.key))


def test_discovery_must_name_the_same_issuer(idp, clock):
    def lying(url):
        return {"issuer": "https://evil.example", "jwks_uri": "https://evil.example/jwks"}

    with pytest.raises(KeysUnavailable, match="evil"):
        ResourceServer(ISSUER, AUDIENCE, fetch=lying, clock=clock).validate(sign(idp.key))


def test_default_fetcher_over_real_http(idp):
    """Discovery and JWKS from a local HTTP server, through requests."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = (json.dumps({"issuer": issuer, "jwks_uri": issuer + "/jwks"}) if self.path.endswith(
                "openid-configuration") else json.dumps(idp.jwks())).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        rs = ResourceServer(issuer, AUDIENCE)
        import time

        now = int(time.time())
        assert rs.validate(sign(idp.key, claims(iss=issuer, iat=now, exp=now + 60)))["sub"] == "person-1"
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- what a route requires


def test_missing_scope_is_403_insufficient_scope(rs, idp):
    token_claims = rs.validate(sign(idp.key, claims(scope="openid")))
    with pytest.raises(InsufficientScope) as caught:
        rs.check(token_claims, scopes=["agreement"])
    body, status, headers = caught.value.response()
    assert status == 403
    assert dict(headers)["WWW-Authenticate"] == ('Bearer realm="time", error="insufficient_scope", '
                                                 'error_description="The access token lacks a scope this API '
                                                 'needs.", scope="agreement"')
    assert json.loads(body)["error"] == "insufficient_scope"


def test_agreement_claims_product_and_role(rs, idp):
    without = rs.validate(sign(idp.key, claims(agreement_id=None)))
    with pytest.raises(InsufficientScope, match="one agreement"):
        rs.check(without, agreement=True)
    token_claims = rs.validate(sign(idp.key))
    rs.check(token_claims, agreement=True, product="e-conomic", roles=["superuser", "user"])
    with pytest.raises(InsufficientScope, match="dinero"):
        rs.check(token_claims, agreement=True, product="dinero")
    with pytest.raises(InsufficientScope, match="role"):
        rs.check(token_claims, roles=["time_registrant"])


def test_insufficient_acr_gives_the_rfc_9470_challenge(rs, idp):
    token_claims = rs.validate(sign(idp.key))  # a password-only login
    with pytest.raises(StepUpRequired) as caught:
        rs.check(token_claims, acr=[stepup.ACR_MFA])
    body, status, headers = caught.value.response()
    assert status == 401
    challenge = stepup.parse_challenge(dict(headers)["WWW-Authenticate"])
    assert challenge["error"] == "insufficient_user_authentication"
    assert challenge["acr_values"] == [stepup.ACR_MFA]
    assert challenge["realm"] == "time"
    assert stepup.authorization_params(challenge) == {"acr_values": stepup.ACR_MFA}
    assert json.loads(body)["error"] == "insufficient_user_authentication"

    rs.check(rs.validate(sign(idp.key, claims(acr=stepup.ACR_MFA))), acr=[stepup.ACR_MFA])


def test_max_age_challenge(rs, idp, clock):
    token_claims = rs.validate(sign(idp.key, claims(auth_time=NOW - 600, acr=stepup.ACR_MFA)))
    rs.check(token_claims, acr=[stepup.ACR_MFA], max_age=900)
    with pytest.raises(StepUpRequired) as caught:
        rs.check(token_claims, max_age=300)
    assert stepup.parse_challenge(caught.value.challenge())["max_age"] == 300


def test_scope_is_checked_before_step_up(rs, idp):
    """Stepping up cannot add a scope, so a missing scope is the answer."""
    token_claims = rs.validate(sign(idp.key, claims(scope="openid")))
    with pytest.raises(InsufficientScope):
        rs.check(token_claims, scopes=["agreement"], acr=[stepup.ACR_MFA])


# --------------------------------------------------------------------------- Authorization header and Flask


def test_authorization_header(rs, idp):
    with pytest.raises(MissingToken) as caught:
        rs.authenticate(None)
    assert caught.value.challenge() == 'Bearer realm="time"'  # RFC 6750 §3.1: no error code
    with pytest.raises(MissingToken):
        rs.authenticate("Basic dXNlcjpwYXNz")
    with pytest.raises(InvalidRequest):
        rs.authenticate("Bearer two tokens")
    assert rs.authenticate("bearer " + sign(idp.key), agreement=True)["sub"] == "person-1"


def test_flask_decorator(idp, clock):
    rs = ResourceServer(ISSUER, AUDIENCE, fetch=idp.fetch, clock=clock)
    app = Flask(__name__)

    @app.post("/approve")
    @rs.require(agreement=True, acr=[stepup.ACR_MFA])
    def approve():
        return {"approved_by": g.access_token["sub"]}

    client = app.test_client()
    response = client.post("/approve")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"

    response = client.post("/approve", headers={"Authorization": "Bearer " + sign(idp.key, claims(aud="x"))})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.headers["Cache-Control"] == "no-store"

    response = client.post("/approve", headers={"Authorization": "Bearer " + sign(idp.key)})
    assert response.status_code == 401
    assert stepup.parse_challenge(response.headers["WWW-Authenticate"])["acr_values"] == [stepup.ACR_MFA]

    mfa = sign(idp.key, claims(acr=stepup.ACR_MFA))
    response = client.post("/approve", headers={"Authorization": "Bearer " + mfa})
    assert response.status_code == 200 and response.get_json() == {"approved_by": "person-1"}


def test_flask_decorator_answers_503_without_keys(idp, clock):
    idp.down = True
    rs = ResourceServer(ISSUER, AUDIENCE, fetch=idp.fetch, clock=clock)
    app = Flask(__name__)
    app.add_url_rule("/entries", "entries", rs.require()(lambda: "ok"))
    response = app.test_client().get("/entries", headers={"Authorization": "Bearer " + sign(idp.key)})
    assert response.status_code == 503 and response.headers["Retry-After"]


def test_jwks_cache_is_shareable(idp, clock):
    keys = JWKSCache(ISSUER, fetch=idp.fetch, clock=clock)
    one = ResourceServer(ISSUER, AUDIENCE, keys=keys, clock=clock)
    two = ResourceServer(ISSUER, "https://payments.example", keys=keys, clock=clock)
    one.validate(sign(idp.key))
    two.validate(sign(idp.key, claims(aud="https://payments.example")))
    assert idp.jwks_fetches == 1
