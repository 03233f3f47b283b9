"""Dynamic Client Registration (RFC 7591, OIDC Registration 1.0) and management (RFC 7592).

Every registration path (initial access token, product-bound token, open
registration, software statements) and every error code of RFC 7591 §3.2.2
(invalid_redirect_uri, invalid_client_metadata, invalid_software_statement,
unapproved_software_statement) and RFC 7592 (401 invalid_token, invalid_request).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from urllib.parse import quote

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select

from idp.app import create_app
from idp.clients import service as clients
from idp.clients.models import Client
from idp.grants.models import TokenFamily
from tests.conftest import ISSUER
from tests.helpers.oidc import RP, query

REDIRECT = "https://rp.example/cb"


# -- helpers -------------------------------------------------------------------

def bearer(token):
    return {"Authorization": f"Bearer {token}"} if token else {}


def basic(client_id, secret):
    # RFC 6749 §2.3.1: both are form-urlencoded before base64 (a client id may hold ':').
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def web(**fields):
    return {"client_name": "Partner app", "redirect_uris": [REDIRECT], **fields}


def machine(**fields):
    return {"client_name": "Partner robot", "grant_types": ["client_credentials"], **fields}


def register(browser, body, token=None, headers=None):
    return browser.post("/register", json=body, headers={**bearer(token), **(headers or {})})


def assert_error(response, error, status=400):
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert body["error"] == error, body
    assert "client_id" not in body
    return body


def assert_invalid_token(response):
    assert_error(response, "invalid_token", status=401)
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Bearer") and 'error="invalid_token"' in challenge, response.headers
    return response


def issue_token(app, product_id=None, expires_in=3600):
    session = app.extensions["idp"].db.session_factory()
    try:
        row, token = clients.issue_initial_token(session, product_id=product_id, expires_in=expires_in,
                                                 description="tests")
        return row.id, token
    finally:
        session.close()


@pytest.fixture(scope="module")
def iat(app):
    """An initial access token for no product in particular (tokens are reusable)."""
    return issue_token(app)[1]


@pytest.fixture
def registered(client, iat):
    """A confidential web client registered dynamically: its registration response."""
    response = register(client, web(logo_uri="https://rp.example/logo.png", contacts=["ops@rp.example"]), iat)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def ec_key():
    return ECKey.generate_key("P-256", parameters={"kid": uuid.uuid4().hex[:8]})


@pytest.fixture(scope="module")
def open_app(app, settings):
    application = create_app(settings.with_(open_registration=True))
    application.config["TESTING"] = True
    yield application
    application.extensions["idp"].db.dispose()


@pytest.fixture(scope="module")
def issuer_key():
    return ec_key()


@pytest.fixture(scope="module")
def statement_app(app, settings, issuer_key):
    jwks = {"keys": [issuer_key.as_dict(private=False)]}
    application = create_app(settings.with_(software_statement_jwks=json.dumps(jwks)))
    application.config["TESTING"] = True
    yield application
    application.extensions["idp"].db.dispose()


def statement(key, **claims):
    claims = {"iss": "https://registry.partners.example", "iat": int(time.time()), **claims}
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


# -- the initial access token --------------------------------------------------

def test_missing_initial_access_token_is_401(client):
    assert_invalid_token(register(client, web()))


@pytest.mark.parametrize("header", ["Bearer not-a-real-token", "Basic dXNlcjpwYXNz", "Bearer "])
def test_invalid_initial_access_token_is_401(client, header):
    assert_invalid_token(register(client, web(), headers={"Authorization": header}))


def test_expired_initial_access_token_is_401(client, app):
    _, token = issue_token(app, expires_in=-5)
    assert_invalid_token(register(client, web(), token))


def test_revoked_initial_access_token_is_401(client, app, db):
    token_id, token = issue_token(app)
    assert register(client, web(), token).status_code == 201
    assert clients.revoke_initial_token(db, token_id)
    assert_invalid_token(register(client, web(), token))


def test_the_initial_access_token_is_not_a_registration_access_token(client, iat, registered):
    assert_invalid_token(client.get(f"/register/{registered['client_id']}", headers=bearer(iat)))


def test_open_registration_needs_no_token(open_app):
    browser = open_app.test_client()
    response = register(browser, web(client_name="Open app"))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["client_name"] == "Open app" and body["client_secret"] and body["registration_access_token"]
    # ... and the client it made can be managed like any other.
    assert browser.get(body["registration_client_uri"].removeprefix(ISSUER),
                       headers=bearer(body["registration_access_token"])).status_code == 200


def test_open_registration_still_refuses_a_revoked_token(open_app):
    # RFC 6750 §3.1: a presented token that is revoked is invalid_token (401);
    # it is not silently ignored (it may have been bound to a product).
    token_id, token = issue_token(open_app)
    session = open_app.extensions["idp"].db.session_factory()
    clients.revoke_initial_token(session, token_id)
    session.close()
    assert_invalid_token(register(open_app.test_client(), web(), token))


def test_without_open_registration_the_same_database_refuses(client):
    assert_invalid_token(register(client, web(client_name="Open app")))


# -- products ------------------------------------------------------------------

def test_product_bound_token_puts_the_client_in_its_product(client, app, db, factory):
    product = factory.product()
    _, token = issue_token(app, product_id=product.id)
    response = register(client, web(), token)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["product"] == product.id
    assert db.get(Client, response.get_json()["client_id"]).product_id == product.id
    # Naming the same product is fine ...
    assert register(client, web(product=product.id), token).status_code == 201
    # ... another is not.
    other = factory.product()
    assert_error(register(client, web(product=other.id), token), "invalid_client_metadata")


def test_unknown_product_is_invalid_client_metadata(client, iat):
    assert_error(register(client, web(product="no-such-product"), iat), "invalid_client_metadata")


def test_unbound_token_may_name_a_product(client, iat, db, factory):
    product = factory.product()
    response = register(client, web(product=product.id), iat)
    assert response.status_code == 201
    assert db.get(Client, response.get_json()["client_id"]).product_id == product.id


# -- redirect URIs (invalid_redirect_uri) ----------------------------------------

@pytest.mark.parametrize("uris, application_type", [
    (["http://rp.example/cb"], "web"),                      # web clients use https
    (["http://127.0.0.1/cb"], "web"),                       # loopback is for native apps only
    (["https://rp.example/cb#frag"], "web"),                # no fragments
    (["https://rp.example/cb#"], "web"),
    (["https://*.rp.example/cb"], "web"),                   # no wildcards
    (["https://rp.example/*"], "web"),
    (["/cb"], "web"),                                       # relative
    (["rp.example/cb"], "web"),
    ([REDIRECT, "https://rp.example/cb#x"], "web"),          # every one is checked
    ([], "web"),                                            # the code grant needs one
    (["http://localhost/cb"], "native"),                    # RFC 8252 §8.3: not localhost
    (["http://localhost:8080/cb"], "native"),
    (["http://rp.example/cb"], "native"),                   # http only on a loopback IP
    (["myapp://cb"], "native"),                             # RFC 8252 §7.1: reverse-domain schemes only
    (["myapp:/cb"], "native"),
    (["com.example.app:/cb#frag"], "native"),
])
def test_bad_redirect_uris_are_invalid_redirect_uri(client, iat, uris, application_type):
    body = web(redirect_uris=uris, application_type=application_type)
    if application_type == "native":
        body["token_endpoint_auth_method"] = "none"
    assert_error(register(client, body, iat), "invalid_redirect_uri")


@pytest.mark.parametrize("uris", [["com.example.app:/oauth2redirect"], ["com.example.app://cb"],
                                  ["http://127.0.0.1/cb"], ["http://[::1]:8080/cb"], ["https://app.example/cb"]])
def test_good_native_redirect_uris(client, iat, uris):
    response = register(client, web(redirect_uris=uris, application_type="native", token_endpoint_auth_method="none"),
                        iat)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["redirect_uris"] == uris


def test_native_loopback_redirect_works_on_any_port_at_authorize(client, iat, factory):
    # RFC 8252 §7.3: registered without a port, used with whatever port the app got.
    response = register(client, web(redirect_uris=["http://127.0.0.1/cb"], application_type="native",
                                    token_endpoint_auth_method="none",
                                    grant_types=["authorization_code", "refresh_token"]), iat)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert "client_secret" not in body and "client_secret_expires_at" not in body
    rp = RP(client, body["client_id"], None, "http://127.0.0.1:53123/cb")
    params = rp.sign_in(factory.identity().email, scope="openid")
    tokens = rp.token(params["code"])
    assert tokens.status_code == 200, tokens.get_json()
    # A different path is still refused.
    wrong = RP(client, body["client_id"], None, "http://127.0.0.1:53123/other")
    refused = wrong.authorize(scope="openid")
    assert refused.status_code == 400 or "error=" in (refused.location or "")
    assert not (refused.location or "").startswith("http://127.0.0.1")


# -- other metadata (invalid_client_metadata) -------------------------------------

PRIVATE_JWK = ECKey.generate_key("P-256").as_dict(private=True)
PUBLIC_JWK = ECKey.generate_key("P-256").as_dict(private=False)


@pytest.mark.parametrize("fields", [
    # grant and response types agree (RFC 7591 §2.1); no implicit or hybrid
    {"response_types": ["code"], "grant_types": ["client_credentials"]},
    {"response_types": [], "grant_types": ["authorization_code"]},
    {"response_types": ["token"], "grant_types": ["implicit"]},
    {"response_types": ["id_token"], "grant_types": ["implicit"]},
    {"response_types": ["code id_token"], "grant_types": ["authorization_code", "implicit"]},
    {"response_types": ["token"], "grant_types": ["authorization_code"]},
    {"grant_types": ["password"]},
    {"grant_types": []},
    {"grant_types": "authorization_code"},
    # authentication methods
    {"token_endpoint_auth_method": "tls_client_auth"},
    {"token_endpoint_auth_method": "client_secret_magic"},
    {"token_endpoint_auth_method": "private_key_jwt"},
    {"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [PRIVATE_JWK]}},
    {"jwks": {"keys": [PUBLIC_JWK]}, "jwks_uri": "https://rp.example/jwks"},
    {"jwks": {"keys": []}},
    {"jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "bad"}]}},
    # https everywhere
    {"logo_uri": "http://rp.example/logo.png"},
    {"policy_uri": "http://rp.example/policy"},
    {"tos_uri": "http://rp.example/tos"},
    {"jwks_uri": "http://rp.example/jwks"},
    {"backchannel_logout_uri": "http://rp.example/logout"},
    {"sector_identifier_uri": "http://rp.example/sector.json"},
    {"logo_uri": "https://rp.example/logo.png#x"},
    # OIDC Registration
    {"subject_type": "anonymous"},
    {"id_token_signed_response_alg": "none"},
    {"id_token_signed_response_alg": "HS256"},
    {"userinfo_signed_response_alg": "RS256"},
    {"id_token_encrypted_response_alg": "RSA-OAEP"},
    {"application_type": "desktop"},
    # scopes this IdP offers, nothing else
    {"scope": "openid admin"},
    {"scope": "openid payroll:write"},
    {"client_name": 42},
    {"contacts": "ops@rp.example"},
    {"backchannel_logout_session_required": "yes"},
])
def test_bad_metadata_is_invalid_client_metadata(client, iat, fields):
    body = assert_error(register(client, web(**fields), iat), "invalid_client_metadata")
    assert body.get("error_description")


def test_public_client_credentials_client_is_refused(client, iat):
    assert_error(register(client, machine(token_endpoint_auth_method="none"), iat), "invalid_client_metadata")


def test_body_must_be_a_json_object(client, iat):
    response = client.post("/register", data="not json", headers={**bearer(iat), "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["error"] in ("invalid_request", "invalid_client_metadata")
    response = client.post("/register", json=["a"], headers=bearer(iat))
    assert response.status_code == 400


def test_private_key_jwt_client_with_public_jwks_has_no_secret(client, iat, db):
    response = register(client, web(token_endpoint_auth_method="private_key_jwt", jwks={"keys": [PUBLIC_JWK]}), iat)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert "client_secret" not in body and "client_secret_expires_at" not in body
    assert body["jwks"] == {"keys": [PUBLIC_JWK]} and body["registration_access_token"]
    assert db.get(Client, body["client_id"]).client_secret_hash is None


def test_optional_metadata_is_accepted_and_echoed(client, iat):
    fields = {"policy_uri": "https://rp.example/policy", "tos_uri": "https://rp.example/tos",
              "client_uri": "https://rp.example/", "jwks_uri": "https://rp.example/jwks",
              "backchannel_logout_uri": "https://rp.example/bcl", "backchannel_logout_session_required": True,
              "post_logout_redirect_uris": ["https://rp.example/bye"], "subject_type": "pairwise",
              "sector_identifier_uri": "https://rp.example/sector.json", "id_token_signed_response_alg": "ES256",
              "scope": "openid email", "software_id": "partner-app", "software_version": "1.2"}
    response = register(client, web(**fields), iat)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    for name, value in fields.items():
        assert body[name] == value, name


# -- software statements (RFC 7591 §2.3) ------------------------------------------

def test_trusted_software_statement_claims_win(statement_app, issuer_key):
    browser = statement_app.test_client()
    _, token = issue_token(statement_app)
    signed = statement(issuer_key, client_name="Certified Name", software_id="certified-app",
                       logo_uri="https://partner.example/logo.png")
    response = register(browser, web(client_name="Body Name", software_statement=signed), token)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["client_name"] == "Certified Name"
    assert body["software_id"] == "certified-app" and body["logo_uri"] == "https://partner.example/logo.png"
    assert body["redirect_uris"] == [REDIRECT]  # from the body, which the statement does not mention
    assert "software_statement" not in body or body["software_statement"] == signed


def test_software_statement_claims_are_validated_too(statement_app, issuer_key):
    _, token = issue_token(statement_app)
    signed = statement(issuer_key, redirect_uris=["http://partner.example/cb"])
    assert_error(register(statement_app.test_client(), web(software_statement=signed), token), "invalid_redirect_uri")


def test_untrusted_software_statement(statement_app):
    _, token = issue_token(statement_app)
    signed = statement(ec_key(), client_name="Forged")
    assert_error(register(statement_app.test_client(), web(software_statement=signed), token),
                 "invalid_software_statement")


def test_unsigned_software_statement(statement_app):
    _, token = issue_token(statement_app)

    def b64(value):
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    unsigned = f"{b64({'alg': 'none'})}.{b64({'iss': 'https://registry.partners.example', 'client_name': 'X'})}."
    for value in (unsigned, "not-a-jwt", 42):
        assert_error(register(statement_app.test_client(), web(software_statement=value), token),
                     "invalid_software_statement")


def test_software_statement_without_issuer_or_expired(statement_app, issuer_key):
    _, token = issue_token(statement_app)
    no_issuer = jwt.encode({"alg": "ES256", "kid": issuer_key.kid}, {"client_name": "X"}, issuer_key)
    expired = statement(issuer_key, exp=int(time.time()) - 3600)
    for value in (no_issuer, expired):
        assert_error(register(statement_app.test_client(), web(software_statement=value), token),
                     "invalid_software_statement")


def test_software_statement_without_trusted_issuers_is_unapproved(client, iat, issuer_key):
    signed = statement(issuer_key, client_name="Certified Name")
    assert_error(register(client, web(software_statement=signed), iat), "unapproved_software_statement")


# -- the registration response (RFC 7591 §3.2.1) ------------------------------------

def test_registration_response(client, iat, db):
    before = int(time.time())
    response = register(client, web(client_name="Response app", logo_uri="https://rp.example/logo.png",
                                    contacts=["ops@rp.example"], post_logout_redirect_uris=["https://rp.example/bye"],
                                    grant_types=["authorization_code", "refresh_token"], scope="openid email"), iat)
    assert response.status_code == 201
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["client_id"] and len(body["client_secret"]) >= 43
    assert body["client_secret_expires_at"] == 0
    assert before - 5 <= body["client_id_issued_at"] <= int(time.time()) + 5
    assert len(body["registration_access_token"]) >= 43
    assert body["registration_client_uri"] == f"{ISSUER}/register/{body['client_id']}"
    assert body["client_name"] == "Response app"
    assert body["redirect_uris"] == [REDIRECT]
    assert body["post_logout_redirect_uris"] == ["https://rp.example/bye"]
    assert body["grant_types"] == ["authorization_code", "refresh_token"]
    assert body["response_types"] == ["code"]
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert body["logo_uri"] == "https://rp.example/logo.png" and body["contacts"] == ["ops@rp.example"]
    assert body["scope"] == "openid email"
    # Both secrets are stored only as keyed hashes.
    row = db.get(Client, body["client_id"])
    assert row.client_secret_hash and row.client_secret_hash != body["client_secret"]
    assert body["client_secret"] not in json.dumps(row.extra_metadata or {})
    assert row.registration_access_token_hash and row.registration_access_token_hash != body["registration_access_token"]
    assert row.check_client_secret(body["client_secret"])
    assert row.first_party is False


def test_registered_secret_works_at_the_token_endpoint(client, iat, db):
    response = register(client, machine(), iat)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["grant_types"] == ["client_credentials"] and body["redirect_uris"] == []
    assert body["response_types"] == []
    token = client.post("/token", data={"grant_type": "client_credentials"},
                        headers=basic(body["client_id"], body["client_secret"]))
    assert token.status_code == 200, token.get_json()
    assert token.get_json()["access_token"]
    wrong = client.post("/token", data={"grant_type": "client_credentials"}, headers=basic(body["client_id"], "nope"))
    assert wrong.status_code == 401


def test_registered_clients_are_never_first_party(client, iat, db, factory):
    response = register(client, web(first_party=True), iat)
    assert response.status_code == 201
    body = response.get_json()
    assert db.get(Client, body["client_id"]).first_party is False
    assert "first_party" not in body or body["first_party"] is False
    rp = RP(client, body["client_id"], body["client_secret"], REDIRECT)
    identity = factory.identity()
    response = rp.follow(rp.login(rp.follow(rp.authorize(scope="openid")), identity.email))
    assert response.status_code == 302 and "/consent" in response.location, response.location


def test_scope_not_registered_is_invalid_scope_at_authorize(client, iat):
    response = register(client, web(scope="openid email"), iat)
    body = response.get_json()
    rp = RP(client, body["client_id"], body["client_secret"], REDIRECT)
    result = rp.follow(rp.authorize(scope="openid profile", state="st-reg"))
    assert result.status_code == 302 and result.location.startswith(REDIRECT), result.location
    assert query(result.location)["error"] == "invalid_scope"
    assert query(result.location)["state"] == "st-reg"


# -- RFC 7592: read ----------------------------------------------------------------

def manage(browser, registered, method="GET", token=None, **kwargs):
    path = registered["registration_client_uri"].removeprefix(ISSUER)
    return browser.open(path, method=method, headers=bearer(token or registered["registration_access_token"]),
                        **kwargs)


def test_read_with_the_registration_access_token(client, registered):
    response = manage(client, registered)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert "client_secret" not in body
    assert body["client_id"] == registered["client_id"]
    assert body["registration_client_uri"] == registered["registration_client_uri"]
    for name in ("client_name", "redirect_uris", "grant_types", "response_types", "token_endpoint_auth_method",
                 "logo_uri", "contacts", "client_id_issued_at"):
        assert body[name] == registered[name], name


def test_read_with_a_wrong_token_or_for_an_unknown_client(client, iat):
    first = register(client, web(), iat).get_json()
    second = register(client, web(), iat).get_json()
    assert_invalid_token(manage(client, first, token="wrong-token"))
    assert_invalid_token(manage(client, first, token=second["registration_access_token"]))
    assert_invalid_token(client.get("/register/no-such-client", headers=bearer(first["registration_access_token"])))
    assert_invalid_token(client.get(f"/register/{first['client_id']}"))
    assert_invalid_token(client.get(f"/register/{first['client_id']}",
                                    headers=basic(first["client_id"], first["client_secret"])))


# -- RFC 7592: update ----------------------------------------------------------------

def put(browser, registered, body, token=None):
    return manage(browser, registered, "PUT", token=token, json=body)


def test_update_is_a_full_replacement(client, registered, db):
    body = {"client_id": registered["client_id"], "client_name": "Renamed",
            "redirect_uris": ["https://rp.example/new-cb"], "scope": "openid"}
    response = put(client, registered, body)
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    updated = response.get_json()
    assert updated["client_name"] == "Renamed" and updated["redirect_uris"] == ["https://rp.example/new-cb"]
    assert updated["scope"] == "openid"
    assert "logo_uri" not in updated and "contacts" not in updated  # omitted: removed
    assert "client_secret" not in updated
    again = manage(client, registered).get_json()
    assert again["client_name"] == "Renamed" and "logo_uri" not in again
    row = db.get(Client, registered["client_id"])
    db.refresh(row)
    assert row.redirect_uris == ["https://rp.example/new-cb"]
    # The secret and the registration access token are unchanged and still work.
    assert row.check_client_secret(registered["client_secret"])
    with_secret = {**body, "client_secret": registered["client_secret"], "client_name": "Renamed again"}
    response = put(client, registered, with_secret)
    assert response.status_code == 200 and response.get_json()["client_name"] == "Renamed again"


@pytest.mark.parametrize("field, value", [("registration_access_token", "x"),
                                          ("registration_client_uri", "https://idp.test/register/x"),
                                          ("client_secret_expires_at", 0), ("client_id_issued_at", 0)])
def test_update_with_server_fields_is_invalid_request(client, registered, field, value):
    body = {"client_id": registered["client_id"], "redirect_uris": [REDIRECT], field: value}
    assert_error(put(client, registered, body), "invalid_request")


def test_update_needs_its_own_client_id_and_secret(client, registered, iat):
    other = register(client, web(), iat).get_json()
    assert_error(put(client, registered, {"redirect_uris": [REDIRECT]}), "invalid_request")
    assert_error(put(client, registered, {"client_id": other["client_id"], "redirect_uris": [REDIRECT]}),
                 "invalid_request")
    assert_error(put(client, registered, {"client_id": registered["client_id"], "redirect_uris": [REDIRECT],
                                          "client_secret": other["client_secret"]}), "invalid_request")
    # Nothing changed.
    assert manage(client, registered).get_json()["logo_uri"] == registered["logo_uri"]


def test_update_with_a_wrong_token(client, registered, iat):
    other = register(client, web(), iat).get_json()
    body = {"client_id": registered["client_id"], "redirect_uris": [REDIRECT], "client_name": "Hijacked"}
    assert_invalid_token(put(client, registered, body, token=other["registration_access_token"]))
    assert_invalid_token(put(client, registered, body, token="nope"))
    assert manage(client, registered).get_json()["client_name"] == registered["client_name"]


def test_update_cannot_change_the_auth_method(client, registered):
    body = {"client_id": registered["client_id"], "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "client_secret_post"}
    assert_error(put(client, registered, body), "invalid_client_metadata")
    assert manage(client, registered).get_json()["token_endpoint_auth_method"] == "client_secret_basic"


@pytest.mark.parametrize("fields, error", [
    ({"redirect_uris": ["http://rp.example/cb"]}, "invalid_redirect_uri"),
    ({"redirect_uris": ["https://rp.example/cb#x"]}, "invalid_redirect_uri"),
    ({"redirect_uris": []}, "invalid_redirect_uri"),
    ({"redirect_uris": [REDIRECT], "scope": "openid admin"}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT], "response_types": ["token"]}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT], "logo_uri": "http://rp.example/logo.png"}, "invalid_client_metadata"),
])
def test_update_with_invalid_metadata(client, registered, fields, error):
    assert_error(put(client, registered, {"client_id": registered["client_id"], **fields}), error)
    assert manage(client, registered).get_json()["redirect_uris"] == [REDIRECT]


# -- RFC 7592: delete ----------------------------------------------------------------

def test_delete_removes_the_client_and_revokes_its_tokens(client, iat, db, factory):
    # A resource server may introspect access tokens meant for it (aud = its client id).
    resource_server, rs_secret = factory.client(client_id=f"https://rs-{uuid.uuid4().hex[:8]}.example")
    robot = register(client, machine(), iat).get_json()
    row = db.get(Client, robot["client_id"])
    row.extra_metadata = {**(row.extra_metadata or {}), "resources": [resource_server.client_id]}
    db.commit()
    issued = client.post("/token", data={"grant_type": "client_credentials", "resource": resource_server.client_id},
                         headers=basic(robot["client_id"], robot["client_secret"]))
    assert issued.status_code == 200, issued.get_json()
    access = issued.get_json()["access_token"]
    rs_auth = basic(resource_server.client_id, rs_secret)
    assert client.post("/introspect", data={"token": access}, headers=rs_auth).get_json()["active"] is True

    # A web client with a refresh token, too.
    app_body = register(client, web(grant_types=["authorization_code", "refresh_token"]), iat).get_json()
    rp = RP(client, app_body["client_id"], app_body["client_secret"], REDIRECT)
    tokens = rp.token(rp.sign_in(factory.identity().email, scope="openid offline_access")["code"]).get_json()
    assert tokens.get("refresh_token"), tokens

    for registered in (robot, app_body):
        response = manage(client, registered, "DELETE")
        assert response.status_code == 204
        assert response.get_data() == b""
        assert_invalid_token(manage(client, registered))
        assert_invalid_token(manage(client, registered, "DELETE"))

    assert client.post("/introspect", data={"token": access}, headers=rs_auth).get_json() == {"active": False}
    denied = client.post("/token", data={"grant_type": "client_credentials"},
                         headers=basic(robot["client_id"], robot["client_secret"]))
    assert denied.status_code == 401 and denied.get_json()["error"] == "invalid_client"
    refresh = rp.refresh(tokens["refresh_token"])
    assert refresh.status_code in (400, 401) and refresh.get_json()["error"] in ("invalid_client", "invalid_grant")
    db.expire_all()
    assert db.get(Client, robot["client_id"]) is None and db.get(Client, app_body["client_id"]) is None
    families = db.execute(select(TokenFamily).where(TokenFamily.client_id == app_body["client_id"])).scalars().all()
    assert all(f.revoked_at is not None for f in families)


def test_delete_with_a_wrong_token_deletes_nothing(client, registered, iat):
    other = register(client, web(), iat).get_json()
    assert_invalid_token(manage(client, registered, "DELETE", token=other["registration_access_token"]))
    assert manage(client, registered).status_code == 200
