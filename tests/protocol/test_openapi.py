"""The OpenAPI 3.1 document (GET /api/openapi.json, issue 6).

It is a valid OpenAPI 3.1 document, every path and method it documents is a route
of the app, and schemathesis, driving the app in-process (WSGI) with cases
generated from it, finds no server error and no response that breaks it.

Random credentials would only ever reach the 401 branches, so most generated
cases are given real ones (chosen deterministically from the case itself):
an initial access token for POST /register, a freshly registered client and its
registration access token for /register/{client_id}, a confidential client's
HTTP Basic credentials and real tokens (its own access token, another client's
refresh token) for /token, /revoke and /introspect, and a person's access token with scope ``agreement`` for the
agreements API. Bounded: at most 25 examples per operation, derandomized, no deadline.
"""

from __future__ import annotations

import base64
import itertools
import zlib

import pytest
import schemathesis
from hypothesis import HealthCheck, settings as hypothesis_settings
from openapi_spec_validator import OpenAPIV31SpecValidator
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)
from werkzeug.exceptions import MethodNotAllowed, NotFound

from idp.api import openapi
from idp.clients import metadata as client_metadata
from idp.clients import service as clients
from idp.clients.models import Client
from tests.conftest import ISSUER
from tests.helpers.factories import Factory
from tests.protocol.test_agreements_authorize import add_agreement, agreement_rp, sign_in_with

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def document(app) -> dict:
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    OpenAPIV31SpecValidator(document).validate()
    assert document["servers"] == [{"url": ISSUER}]


def test_document_covers_the_json_apis(document):
    expected = {("/register", "post"), ("/register/{client_id}", "get"), ("/register/{client_id}", "put"),
                ("/register/{client_id}", "delete"), ("/api/v1/me/agreements", "get"), ("/token", "post"),
                ("/revoke", "post"), ("/introspect", "post"), ("/.well-known/openid-configuration", "get"),
                ("/.well-known/oauth-authorization-server", "get"), ("/jwks", "get"), ("/healthz", "get"),
                ("/readyz", "get")}
    documented = {(path, method) for path, item in document["paths"].items() for method in item if method in METHODS}
    assert expected <= documented


def test_every_documented_path_is_a_route(app, document):
    urls = app.url_map.bind("idp.test")
    for path, item in document["paths"].items():
        concrete = path.replace("{client_id}", "some-client")
        for method in (m for m in item if m in METHODS):
            try:
                endpoint, _args = urls.match(concrete, method=method.upper())
            except (NotFound, MethodNotAllowed) as error:
                pytest.fail(f"{method.upper()} {path} is documented but not routed: {error!r}")
            assert endpoint, path


def test_every_json_route_is_documented(app, document):
    """The JSON APIs in the url_map are all in the document (browser pages are not)."""
    documented = {path.replace("{client_id}", "<client_id>") for path in document["paths"]}
    json_apis = {"/register", "/register/<client_id>", "/api/v1/me/agreements", "/token", "/revoke", "/introspect",
                 "/jwks", "/.well-known/openid-configuration", "/.well-known/oauth-authorization-server",
                 "/healthz", "/readyz", "/api/openapi.json"}
    routed = {rule.rule for rule in app.url_map.iter_rules()}
    assert json_apis <= routed
    assert json_apis <= documented
    assert not {r for r in routed if r.startswith("/api/")} - documented


# -- schemathesis -------------------------------------------------------------------------

class Credentials:
    """Real credentials for the generated cases (see the module docstring)."""

    def __init__(self, app):
        self.app = app
        runtime = app.extensions["idp"]
        self.session = runtime.db.session_factory()
        factory = Factory(app, self.session)
        _row, self.initial_token = clients.issue_initial_token(self.session, product_id=None, expires_in=3600)
        # A confidential client allowed every grant, for /token, /revoke and /introspect.
        client, self.secret = factory.client(scope="openid profile email offline_access agreement")
        row = self.session.get(Client, client.client_id)
        row.grant_types = list(client_metadata.GRANT_TYPES)
        self.session.commit()
        self.client_id = client.client_id
        # A person's tokens with scope ``agreement``, from a real code flow.
        product, me = factory.product(), factory.identity()
        numbers = [add_agreement(self.session, product, me).number for _ in range(3)]
        rp = agreement_rp(app.test_client(), factory)
        code = sign_in_with(rp, me, numbers[0], agreement_hint=numbers[0])["code"]
        tokens = rp.token(code).get_json()
        self.agreement_token, self.refresh_token = tokens["access_token"], tokens["refresh_token"]
        # A token of the confidential client, for revocation and introspection.
        issued = app.test_client().post("/token", data={"grant_type": "client_credentials", "scope": "profile"},
                                        headers=self.basic())
        assert issued.status_code == 200, issued.get_json()
        self.client_token = issued.get_json()["access_token"]

    def basic(self) -> dict:
        raw = f"{self.client_id}:{self.secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def registered(self) -> tuple[str, str]:
        """A fresh dynamically registered client: (client_id, registration access token)."""
        metadata = client_metadata.validate({"redirect_uris": ["https://rp.example/cb"], "client_name": "Fuzzed"})
        client, _secret, token = clients.register(self.session, metadata, product_id=None,
                                                  cipher=self.app.extensions["idp"].cipher)
        return client.client_id, token

    def close(self):
        self.session.close()


@pytest.fixture(scope="module")
def credentials(app):
    creds = Credentials(app)
    yield creds
    creds.close()


# The document as served (test_served_document_is_the_module_document checks they are the same).
# Loaded at import, not through ``schemathesis.pytest.from_fixture``: its lazy loader
# sets the private ``request.node._nodeid``, which pytest 9.2 no longer has.
schema = schemathesis.openapi.from_dict(openapi.document(ISSUER))
schema.config.generation.update(max_examples=25, deterministic=True, database="none")


def test_served_document_is_the_module_document(document):
    assert document == openapi.document(ISSUER)


def _pick(case, salt: str) -> int:
    """A number 0..3 fixed by the case's content, so runs are reproducible."""
    return zlib.crc32((salt + repr((case.path_parameters, case.query, case.body))).encode()) % 4


def authorize(case, creds: Credentials) -> None:
    """Give most cases real credentials (one in four keeps what was generated)."""
    path, method = case.operation.path, case.method.upper()
    headers = dict(case.headers or {})
    real = _pick(case, "auth") != 0
    if path == "/register" and real:
        headers["Authorization"] = f"Bearer {creds.initial_token}"
    elif path == "/register/{client_id}" and real:
        client_id, token = creds.registered()
        case.path_parameters = {**(case.path_parameters or {}), "client_id": client_id}
        headers["Authorization"] = f"Bearer {token}"
        if method == "PUT" and isinstance(case.body, dict):
            case.body = {**case.body, "client_id": client_id}
            case.body.pop("client_secret", None)
    elif path == "/api/v1/me/agreements" and real:
        headers["Authorization"] = f"Bearer {creds.agreement_token}"
    elif path in ("/token", "/revoke", "/introspect"):
        if real and isinstance(case.body, dict):
            headers.update(creds.basic())
            case.body = {k: v for k, v in case.body.items()
                         if k not in ("client_id", "client_secret", "client_assertion", "client_assertion_type")}
            if path != "/token" and _pick(case, "token") != 0:
                case.body["token"] = creds.client_token if _pick(case, "which") else creds.refresh_token
    case.headers = headers


ADDRESSES = itertools.count(1)


@schema.parametrize()
@hypothesis_settings(max_examples=25, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case, app, credentials):
    authorize(case, credentials)
    # Registration is rate-limited per address: each case comes from an address of its own.
    address = f"2001:db8::{next(ADDRESSES):x}"
    case.call_and_validate(checks=CHECKS, app=app, environ_base={"REMOTE_ADDR": address})


# -- regressions schemathesis found (each was a 500) -----------------------------------------


def register(client, credentials, body, address):
    return client.post("/register", json=body, headers={"Authorization": f"Bearer {credentials.initial_token}"},
                       environ_base={"REMOTE_ADDR": address})


@pytest.mark.parametrize("body", [
    {"redirect_uris": ['http://app.example/"cb']},
    {"redirect_uris": ["http://app.example/\u00e6bler"]},
    {"redirect_uris": ["https://app.example/cb"], "grant_types": ["authorization_code", "f\u00f8rst"]},
    {"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "\u00e9"},
], ids=["quote", "non-ascii-uri", "non-ascii-grant", "non-ascii-method"])
def test_registration_errors_quoting_odd_characters_are_400(client, credentials, body):
    response = register(client, credentials, body, "2001:db8:1::1")
    assert response.status_code == 400, response.status_code
    assert response.get_json()["error"] in ("invalid_redirect_uri", "invalid_client_metadata")


@pytest.mark.parametrize("body", [
    {"redirect_uris": ["https://[app.example/cb"]},
    {"redirect_uris": ["https://app.example/cb"], "logo_uri": "https://[::1"},
], ids=["redirect_uri", "logo_uri"])
def test_unparseable_uris_are_400(client, credentials, body):
    response = register(client, credentials, body, "2001:db8:2::1")
    assert response.status_code == 400, response.status_code


def test_lone_surrogate_in_client_name_is_refused(client, credentials):
    raw = '{"redirect_uris": ["https://app.example/cb"], "client_name": "a\\ud800"}'  # JSON text, lone surrogate
    response = client.post("/register", data=raw, content_type="application/json",
                           environ_base={"REMOTE_ADDR": "2001:db8:3::1"}, headers={"Authorization": f"Bearer {credentials.initial_token}"})
    assert response.status_code < 500, response.status_code


def test_empty_product_means_none(client, credentials):
    response = register(client, credentials, {"redirect_uris": ["https://app.example/cb"], "product": ""},
                        "2001:db8:5::1")
    assert response.status_code in (201, 400), response.status_code




@pytest.mark.parametrize("where", ["client_name", "registration_path", "token_client_id"])
def test_nul_characters_are_not_a_500(client, credentials, where):
    if where == "client_name":
        response = register(client, credentials, {"redirect_uris": ["https://app.example/cb"],
                                                  "client_name": "a\x00b"}, "2001:db8:5::1")
    elif where == "registration_path":
        response = client.get("/register/a%00b", headers={"Authorization": "Bearer x"})
    else:
        response = client.post("/token", data={"grant_type": "client_credentials", "client_id": "a\x00b",
                                                "client_secret": "x"})
    assert response.status_code < 500, response.status_code
