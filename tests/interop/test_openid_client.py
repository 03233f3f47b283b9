"""Interoperability with independent, certified client code: openid-client.

The IdP runs over real HTTP (werkzeug in a thread, same database as the session
``app``); ``tests/interop/node/driver.mjs`` drives it with openid-client (panva,
certified for the Basic, FAPI 1.0 and FAPI 2.0 RP profiles) through discovery,
authorization code + PKCE (the login and consent pages over plain HTTP),
refresh with rotation, UserInfo, introspection, revocation, client_credentials,
private_key_jwt and DPoP (plus DPoP nonces, against a second live IdP on the same
database that requires them). The driver prints one JSON line per step; this
test checks every step succeeded, then a few values across steps.

Needs Node.js 20+ and ``cd tests/interop/node && npm ci``: skipped without
them, except with CI=true, where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from joserfc.jwk import RSAKey

from idp.clients import service as clients
from tests.e2e.conftest import LiveServer
from tests.helpers.factories import PASSWORD, unique

NODE_DIR = Path(__file__).resolve().parent / "node"
DRIVER = NODE_DIR / "driver.mjs"
INSTALL_HINT = "cd tests/interop/node && npm ci"
REDIRECT_URI = "https://rp.interop.example/callback"  # never contacted: the driver reads Location
SCOPE = "openid profile email offline_access"
STEPS = ["discovery", "code_flow", "userinfo", "introspection", "revocation", "refresh", "refresh_reuse",
         "client_credentials", "private_key_jwt", "dpop", "dpop_client_credentials",
         "dpop_nonce"]


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary; skips (fails with CI=true) without Node.js 20+ or the npm package."""
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "Node.js 20+ is not installed"
    else:
        version = subprocess.run([node, "--version"], check=False, capture_output=True, text=True).stdout.strip()
        if int(version.lstrip("v").split(".")[0] or 0) < 20:
            problem = f"Node.js 20+ is required, found {version}"
        elif not (NODE_DIR / "node_modules" / "openid-client" / "package.json").exists():
            problem = "the openid-client package is not installed"
    if problem:
        message = f"{problem}; `{INSTALL_HINT}` enables the openid-client interop test"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: the interop test must run in CI)", pytrace=False)
        pytest.skip(message)
    return node


@contextmanager
def serve(settings, **changes):
    """The IdP on http://127.0.0.1:<port>, in a thread, on the session's database."""
    from idp.app import create_app

    server = LiveServer("127.0.0.1")
    live_app = create_app(settings.with_(issuer=f"http://127.0.0.1:{server.port}", cookie_secure=False, **changes))
    server.start(live_app)
    try:
        yield live_app
    finally:
        server.stop()
        live_app.extensions["idp"].db.dispose()


@pytest.fixture(scope="module")
def live_idp(node, app, settings):
    """Depends on ``app`` so migrations have run."""
    with serve(settings) as live_app:
        yield live_app


@pytest.fixture(scope="module")
def live_idp_dpop_nonce(node, app, settings):
    """A second IdP on the same database that requires DPoP nonces (RFC 9449 §8) at its token endpoint."""
    with serve(settings, dpop_require_nonce=True) as live_app:
        yield live_app


@pytest.fixture
def setup(live_idp, live_idp_dpop_nonce, db, factory):
    """The person and the two clients, in the live IdP's database; the driver's config."""
    email = f"{unique('interop')}@example.com"
    factory.identity(email=email)
    confidential, secret = clients.create_client(
        db, client_name="Interop confidential RP", redirect_uris=[REDIRECT_URI], client_id=unique("interop-basic"),
        scope=SCOPE, token_endpoint_auth_method="client_secret_basic",
        grant_types=["authorization_code", "refresh_token", "client_credentials"])
    key = RSAKey.generate_key(2048, parameters={"kid": f"interop-{uuid.uuid4().hex[:8]}", "alg": "RS256"})
    machine, _ = clients.create_client(
        db, client_name="Interop private_key_jwt client", redirect_uris=[], client_id=unique("interop-pkjwt"),
        token_endpoint_auth_method="private_key_jwt", grant_types=["client_credentials"],
        metadata={"jwks": {"keys": [key.as_dict(private=False)]}})
    return {
        "issuer": live_idp.extensions["idp"].settings.issuer,
        "dpop_nonce_issuer": live_idp_dpop_nonce.extensions["idp"].settings.issuer,
        "confidential": {"client_id": confidential.client_id, "client_secret": secret,
                         "redirect_uri": REDIRECT_URI, "scope": SCOPE},
        "private_key_jwt": {"client_id": machine.client_id, "jwk": key.as_dict(private=True)},
        "person": {"email": email, "password": PASSWORD},
    }


def run_driver(node: str, config: dict) -> dict[str, dict]:
    completed = subprocess.run([node, str(DRIVER)], check=False, input=json.dumps(config), capture_output=True,
                               text=True, timeout=60, cwd=NODE_DIR)
    results = {}
    for line in completed.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            print(line)  # shown by pytest when the test fails
            results[record["step"]] = record
    assert "done" in results, (f"driver exited {completed.returncode} without finishing\n"
                               f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}")
    return results


def test_openid_client_drives_the_idp(node, setup):
    results = run_driver(node, setup)

    failures = {name: results.get(name, {"missing": True}) for name in STEPS if not results.get(name, {}).get("ok")}
    assert not failures, "openid-client steps failed:\n" + "\n".join(
        f"  {name}: {json.dumps(record)}" for name, record in failures.items())

    discovery, code, userinfo = results["discovery"], results["code_flow"], results["userinfo"]
    assert discovery["issuer"] == setup["issuer"]
    assert discovery["supports_pkce"] is True

    # Code flow: both pages over HTTP, the ID token validated by openid-client (JWKS, nonce, iss in the response).
    assert code["pages"] == ["login", "consent"]
    assert code["callback_iss"] == setup["issuer"]
    assert code["token_type"].lower() == "bearer" and code["has_refresh_token"]
    audience = code["id_token"]["aud"]
    assert setup["confidential"]["client_id"] in (audience if isinstance(audience, list) else [audience])
    sub = code["id_token"]["sub"]
    assert userinfo["sub"] == sub and userinfo["email"] == setup["person"]["email"]

    introspection = results["introspection"]
    assert introspection["access"]["active"] is True and introspection["access"]["sub"] == sub
    assert introspection["access"]["client_id"] == setup["confidential"]["client_id"]
    assert introspection["refresh"]["active"] is True
    assert introspection["unknown_active"] is False

    revocation = results["revocation"]
    assert revocation["active_after"] is False
    assert revocation["userinfo_after"]["status"] == 401, revocation["userinfo_after"]

    refresh, reuse = results["refresh"], results["refresh_reuse"]
    assert refresh["rotated"] and refresh["new_access_token"] and refresh["userinfo_sub"] == sub
    assert refresh["id_token_sub"] in (None, sub)
    assert reuse["old_refresh_error"]["error"] == "invalid_grant", reuse
    assert reuse["successor_active_after_reuse"] is False  # RFC 9700 §4.14.2: the family is revoked

    cc = results["client_credentials"]
    assert cc["active"] is True and cc["client_id"] == setup["confidential"]["client_id"]
    assert not cc["has_refresh_token"]

    pk = results["private_key_jwt"]
    assert pk["active"] is True and pk["client_id"] == setup["private_key_jwt"]["client_id"]
    assert pk["active_for_other_client"] is False  # RFC 7662: foreign tokens are reported inactive
    assert pk["active_after_revocation"] is False

    dpop = results["dpop"]
    assert dpop["pages"] == []  # the IdP session and the consent are reused
    assert dpop["token_type"].lower() == "dpop" and dpop["refresh_token_type"].lower() == "dpop"
    assert dpop["introspection"] == {"active": True, "token_type": "DPoP", "cnf_jkt": dpop["jkt"]}
    assert dpop["refresh_cnf_jkt"] == dpop["jkt"]
    assert dpop["userinfo_sub"] == dpop["id_token_sub"] == dpop["userinfo_after_refresh_sub"] == sub
    assert dpop["bearer_use"]["status"] == 401 and dpop["wrong_key_use"]["status"] == 401
    assert dpop["refresh_token_active_after_revocation"] is False
    assert dpop["refresh_after_revocation"]["error"] == "invalid_grant"

    dcc = results["dpop_client_credentials"]
    assert dcc["token_type"].lower() == "dpop"
    assert dcc["introspection"] == {"active": True, "token_type": "DPoP", "cnf_jkt": dcc["jkt"]}

    # RFC 9449 §8: the IdP asks for a nonce, openid-client retries with it.
    nonce = results["dpop_nonce"]
    assert nonce["token_requests"][0] == {"status": 400, "error": "use_dpop_nonce", "dpop_nonce_header": True}
    assert nonce["token_requests"][-1]["status"] == 200
    assert nonce["token_type"].lower() == "dpop"
    assert nonce["introspection"] == {"active": True, "token_type": "DPoP", "cnf_jkt": nonce["jkt"]}
