"""Client authentication with JWT assertions (RFC 7523 §2.2, OIDC Core §9):
private_key_jwt (jwks or jwks_uri) and client_secret_jwt, at /token, /revoke
and /introspect. Names follow the conformance suite's
ensure-client-assertion-* modules."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from idp.clients import service as clients
from idp.clients.models import Client
from tests.helpers.factories import unique
from tests.helpers.oidc import RP
from tests.protocol.test_par import complete

ISSUER = "https://idp.test"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RSA_KEY = RSAKey.generate_key(2048, parameters={"kid": "rp-rsa-1"})
EC_KEY = ECKey.generate_key("P-256", parameters={"kid": "rp-ec-1"})
OTHER_RSA_KEY = RSAKey.generate_key(2048, parameters={"kid": "rp-rsa-1"})
SCOPE = "openid profile email offline_access"


def public_jwks(*keys) -> dict:
    return {"keys": [k.as_dict(private=False) for k in keys]}


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving the RP's current key set."""

    def __init__(self, jwks: dict):
        self.jwks = jwks
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.hits += 1
                body = json.dumps(outer.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/jwks.json"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def new_client(db, runtime, method, metadata=None, grant_types=("authorization_code", "refresh_token",
                                                                   "client_credentials")):
    row, secret = clients.create_client(
        db, client_name=unique("Client"), redirect_uris=["https://rp.example/cb"], client_id=unique("client"),
        scope=SCOPE, token_endpoint_auth_method=method, grant_types=list(grant_types), metadata=metadata,
        cipher=runtime.cipher)
    return row.client_id, secret


def assertion(client_id, key, alg="RS256", *, aud=ISSUER + "/token", iss=None, sub=None, exp_in=60, jti=None,
              kid=True, drop=(), **extra) -> str:
    now = int(time.time())
    claims = {"iss": iss or client_id, "sub": sub or client_id, "aud": aud, "jti": jti or secrets.token_urlsafe(12),
              "iat": now, "exp": now + exp_in, **extra}
    claims = {k: v for k, v in claims.items() if k not in drop}
    header = {"alg": alg}
    if kid and getattr(key, "kid", None):
        header["kid"] = key.kid
    return jose_jwt.encode(header, claims, key, algorithms=[alg])


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned_assertion(client_id) -> str:
    claims = {"iss": client_id, "sub": client_id, "aud": ISSUER, "jti": secrets.token_urlsafe(8),
              "exp": int(time.time()) + 60}
    return f"{b64({'alg': 'none'})}.{b64(claims)}."


def post(browser, path, client_id, client_assertion, with_client_id=True, **data):
    form = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": client_assertion, **data}
    if with_client_id:
        form["client_id"] = client_id
    return browser.post(path, data=form)


def cc(browser, client_id, client_assertion, **kw):
    return post(browser, "/token", client_id, client_assertion, grant_type="client_credentials", scope="profile", **kw)


def assert_ok(response):
    assert response.status_code == 200, (response.status_code, response.get_data(as_text=True))
    return response.get_json()


def assert_invalid_client(response):
    assert response.status_code == 401, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert body["error"] == "invalid_client", body
    assert "access_token" not in body and "active" not in body


@pytest.fixture
def rsa_client(db, runtime):
    return new_client(db, runtime, "private_key_jwt", {"jwks": public_jwks(RSA_KEY)})[0]


# -- private_key_jwt with registered jwks -----------------------------------------

def test_ensure_client_assertion_with_iss_aud_succeeds_rs256(client, rsa_client):
    body = assert_ok(cc(client, rsa_client, assertion(rsa_client, RSA_KEY)))
    assert body["token_type"].lower() == "bearer"


def test_ensure_client_assertion_es256(client, db, runtime):
    client_id, _ = new_client(db, runtime, "private_key_jwt", {"jwks": public_jwks(EC_KEY)})
    assert_ok(cc(client, client_id, assertion(client_id, EC_KEY, "ES256")))


@pytest.mark.parametrize("aud", [ISSUER, ISSUER + "/token", [ISSUER + "/token", "https://other.example"]])
def test_client_assertion_audiences(client, rsa_client, aud):
    assert_ok(cc(client, rsa_client, assertion(rsa_client, RSA_KEY, aud=aud)))


def test_client_assertion_without_client_id_parameter(client, rsa_client):
    assert_ok(cc(client, rsa_client, assertion(rsa_client, RSA_KEY), with_client_id=False))


def test_private_key_jwt_in_the_code_flow(client, factory, rsa_client):
    identity = factory.identity()
    rp = RP(client, rsa_client, None, "https://rp.example/cb")
    response = complete(rp, rp.authorize(state="pkj", nonce="pkj-n"), identity.email)
    code = response.location.split("code=")[1].split("&")[0]
    token = post(client, "/token", rsa_client, assertion(rsa_client, RSA_KEY), grant_type="authorization_code",
                 code=code, redirect_uri=rp.redirect_uri, code_verifier=rp.verifier)
    body = assert_ok(token)
    assert rp.verify_id_token(body["id_token"], nonce="pkj-n")["sub"] == identity.id


def test_ensure_client_assertion_jti_is_single_use(client, rsa_client):
    signed = assertion(rsa_client, RSA_KEY)
    assert_ok(cc(client, rsa_client, signed))
    assert_invalid_client(cc(client, rsa_client, signed))
    # Same jti in a fresh assertion: still a replay.
    jti = secrets.token_urlsafe(8)
    assert_ok(cc(client, rsa_client, assertion(rsa_client, RSA_KEY, jti=jti)))
    assert_invalid_client(cc(client, rsa_client, assertion(rsa_client, RSA_KEY, jti=jti)))


def _bad_assertions(client_id):
    return {
        "wrong_aud": lambda: assertion(client_id, RSA_KEY, aud="https://rp.example"),
        "aud_of_other_issuer": lambda: assertion(client_id, RSA_KEY, aud="https://idp.test.evil.example/token"),
        "exp_too_far_in_the_future": lambda: assertion(client_id, RSA_KEY, exp_in=301 + 60),
        "expired": lambda: assertion(client_id, RSA_KEY, exp_in=-120),
        "no_exp": lambda: assertion(client_id, RSA_KEY, drop=("exp",)),
        "no_jti": lambda: assertion(client_id, RSA_KEY, drop=("jti",)),
        "iss_differs_from_sub": lambda: assertion(client_id, RSA_KEY, iss="someone-else"),
        "wrong_key": lambda: assertion(client_id, OTHER_RSA_KEY),
        "unknown_kid": lambda: assertion(client_id, RSAKey.generate_key(2048, parameters={"kid": "nope"})),
        "alg_none": lambda: unsigned_assertion(client_id),
        "hs256_with_public_key_as_secret": lambda: assertion(
            client_id, OctKey.import_key(json.dumps(RSA_KEY.as_dict(private=False)).encode()), "HS256", kid=False),
        "garbage": lambda: "not-a-jwt",
    }


@pytest.mark.parametrize("case", sorted(_bad_assertions("x")))
def test_invalid_client_assertion_at_token(client, rsa_client, case):
    assert_invalid_client(cc(client, rsa_client, _bad_assertions(rsa_client)[case]()))


def test_exp_at_the_limit_is_accepted(client, rsa_client):
    assert_ok(cc(client, rsa_client, assertion(rsa_client, RSA_KEY, exp_in=290)))


def test_assertion_for_another_client_id_parameter(client, db, runtime, rsa_client):
    other, _ = new_client(db, runtime, "private_key_jwt", {"jwks": public_jwks(EC_KEY)})
    response = post(client, "/token", other, assertion(rsa_client, RSA_KEY), grant_type="client_credentials")
    assert response.status_code in (400, 401) and "access_token" not in response.get_json()
    assert response.get_json()["error"] in ("invalid_client", "invalid_request")


def test_private_key_jwt_client_cannot_use_a_secret(client, rsa_client):
    response = client.post("/token", data={"grant_type": "client_credentials", "client_id": rsa_client,
                                           "client_secret": "guess"})
    assert_invalid_client(response)


# -- private_key_jwt with jwks_uri ---------------------------------------------------

def test_private_key_jwt_with_jwks_uri_and_rotation(client, db, runtime):
    with JwksServer(public_jwks(RSA_KEY)) as server:
        client_id, _ = new_client(db, runtime, "private_key_jwt", {"jwks_uri": server.uri})
        assert_ok(cc(client, client_id, assertion(client_id, RSA_KEY)))
        assert server.hits == 1
        assert_ok(cc(client, client_id, assertion(client_id, RSA_KEY)))
        assert server.hits == 1  # cached

        # The RP rotates: a new key with a new kid; the IdP fetches again on the miss.
        new_key = ECKey.generate_key("P-256", parameters={"kid": "rotated-ec"})
        server.jwks = public_jwks(new_key)
        assert_ok(cc(client, client_id, assertion(client_id, new_key, "ES256")))
        assert server.hits == 2
        # The retired key is gone from the RP's set, so it no longer authenticates.
        assert_invalid_client(cc(client, client_id, assertion(client_id, RSA_KEY)))


def test_jwks_uri_wrong_key_same_kid(client, db, runtime):
    with JwksServer(public_jwks(RSA_KEY)) as server:
        client_id, _ = new_client(db, runtime, "private_key_jwt", {"jwks_uri": server.uri})
        assert_invalid_client(cc(client, client_id, assertion(client_id, OTHER_RSA_KEY)))


def test_jwks_uri_unreachable(client, db, runtime):
    with JwksServer(public_jwks(RSA_KEY)) as server:
        uri = server.uri
    client_id, _ = new_client(db, runtime, "private_key_jwt", {"jwks_uri": uri})
    assert_invalid_client(cc(client, client_id, assertion(client_id, RSA_KEY)))


# -- client_secret_jwt -----------------------------------------------------------------

@pytest.fixture
def hmac_client(db, runtime):
    return new_client(db, runtime, "client_secret_jwt")


def test_client_secret_jwt_hs256(client, hmac_client):
    client_id, secret = hmac_client
    assert secret
    assert_ok(cc(client, client_id, assertion(client_id, OctKey.import_key(secret.encode()), "HS256")))


@pytest.mark.parametrize("case", ["wrong_secret", "replayed", "wrong_aud", "expired", "too_long", "alg_none"])
def test_client_secret_jwt_invalid(client, hmac_client, case):
    client_id, secret = hmac_client
    key = OctKey.import_key(secret.encode())
    if case == "replayed":
        signed = assertion(client_id, key, "HS256")
        assert_ok(cc(client, client_id, signed))
    else:
        signed = {
            "wrong_secret": lambda: assertion(client_id, OctKey.import_key(b"x" * 43), "HS256"),
            "wrong_aud": lambda: assertion(client_id, key, "HS256", aud="https://elsewhere.example"),
            "expired": lambda: assertion(client_id, key, "HS256", exp_in=-120),
            "too_long": lambda: assertion(client_id, key, "HS256", exp_in=3600),
            "alg_none": lambda: unsigned_assertion(client_id),
        }[case]()
    assert_invalid_client(cc(client, client_id, signed))


def test_client_secret_jwt_client_may_not_use_basic(client, hmac_client):
    client_id, secret = hmac_client
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    response = client.post("/token", data={"grant_type": "client_credentials"},
                           headers={"Authorization": f"Basic {basic}"})
    assert_invalid_client(response)


def test_client_secret_basic_client_cannot_use_client_secret_jwt(client, factory, db):
    row, secret = factory.client()
    db_row = db.get(Client, row.client_id)
    db_row.grant_types = ["client_credentials"]
    db.commit()
    response = cc(client, row.client_id, assertion(row.client_id, OctKey.import_key(secret.encode()), "HS256"))
    assert_invalid_client(response)


# -- the same at /revoke and /introspect ---------------------------------------------------

def _machine_token(browser, client_id):
    return assert_ok(cc(browser, client_id, assertion(client_id, RSA_KEY)))["access_token"]


@pytest.mark.parametrize("path", ["/revoke", "/introspect"])
def test_client_assertion_at_revocation_and_introspection(client, rsa_client, path):
    token = _machine_token(client, rsa_client)
    aud = ISSUER + path
    response = post(client, path, rsa_client, assertion(rsa_client, RSA_KEY, aud=aud), token=token)
    assert response.status_code == 200, response.get_data(as_text=True)
    if path == "/introspect":
        assert response.get_json()["active"] is True
    # With the issuer as audience too.
    response = post(client, "/introspect", rsa_client, assertion(rsa_client, RSA_KEY, aud=ISSUER), token=token)
    assert response.get_json()["active"] is (path == "/introspect")


@pytest.mark.parametrize("path", ["/revoke", "/introspect"])
@pytest.mark.parametrize("case", ["replayed", "wrong_aud", "too_long", "expired", "iss_differs_from_sub",
                                  "wrong_key", "alg_none"])
def test_invalid_client_assertion_at_revocation_and_introspection(client, hmac_client, path, case):
    """The assertion checks do not depend on the endpoint (a client_secret_jwt client here)."""
    client_id, secret = hmac_client
    key = OctKey.import_key(secret.encode())
    token = assert_ok(cc(client, client_id, assertion(client_id, key, "HS256")))["access_token"]
    if case == "replayed":
        signed = assertion(client_id, key, "HS256", aud=ISSUER + path)
        assert post(client, path, client_id, signed, token="unknown").status_code == 200
    else:
        signed = {
            "wrong_aud": lambda: assertion(client_id, key, "HS256", aud=ISSUER + "/userinfo"),
            "too_long": lambda: assertion(client_id, key, "HS256", exp_in=301 + 60),
            "expired": lambda: assertion(client_id, key, "HS256", exp_in=-120),
            "iss_differs_from_sub": lambda: assertion(client_id, key, "HS256", iss="someone-else"),
            "wrong_key": lambda: assertion(client_id, OctKey.import_key(b"z" * 43), "HS256"),
            "alg_none": lambda: unsigned_assertion(client_id),
        }[case]()
    assert_invalid_client(post(client, path, client_id, signed, token=token))
    # The token was neither revoked nor described.
    check = post(client, "/introspect", client_id, assertion(client_id, key, "HS256"), token=token)
    assert check.get_json()["active"] is True


def test_client_secret_jwt_at_introspection(client, hmac_client):
    client_id, secret = hmac_client
    key = OctKey.import_key(secret.encode())
    token = assert_ok(cc(client, client_id, assertion(client_id, key, "HS256")))["access_token"]
    response = post(client, "/introspect", client_id, assertion(client_id, key, "HS256", aud=ISSUER + "/introspect"),
                    token=token)
    assert response.get_json()["active"] is True
    assert_invalid_client(post(client, "/introspect", client_id,
                               assertion(client_id, OctKey.import_key(b"y" * 43), "HS256"), token=token))
