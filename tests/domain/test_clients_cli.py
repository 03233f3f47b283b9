"""``idp clients ...`` end to end, through Flask's CLI runner against the test database.

Each command is checked by its effect where it matters: at /token, /introspect
and /register, not only in the rows it writes.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re

import pytest

from idp.clients.models import Client, InitialAccessToken
from tests.helpers.oidc import make_rp

OFFLINE = "openid profile email offline_access"


def run(app, *args, input=None):
    return app.test_cli_runner().invoke(args=["clients", *args], input=input)


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def refused(result, *words):
    """A clean command-line error: non-zero exit, a message, no traceback."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    for word in words:
        assert word.lower() in result.output.lower(), result.output
    return result


def first_json(result):
    return json.loads(result.output.splitlines()[0])


def basic(client_id, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def client_credentials(browser, client_id, secret):
    return browser.post("/token", data={"grant_type": "client_credentials"}, headers=basic(client_id, secret))


def fresh(db, client_id):
    db.expire_all()
    return db.get(Client, client_id)


@pytest.fixture
def machine(factory, db):
    """A confidential client that may use client_credentials; (client_id, secret)."""
    client, secret = factory.client(first_party=True)
    client.grant_types = [*client.grant_types, "client_credentials"]
    db.commit()
    return client.client_id, secret


# -- create / show / list --------------------------------------------------------------

def test_create_with_every_option_and_show(app, db, factory):
    product = factory.product()
    result = ok(run(app, "create", "--name", "Time app", "--redirect-uri", "http://127.0.0.1/cb",
                    "--redirect-uri", "com.example.time:/cb", "--post-logout-redirect-uri", "http://127.0.0.1/bye",
                    "--product", product.id, "--public", "--native", "--first-party", "--mobile-app",
                    "--client-id", f"time-{product.id}", "--scope", "openid email offline_access"))
    printed = first_json(result)
    assert printed == {"client_id": f"time-{product.id}", "client_secret": None}

    shown = json.loads(ok(run(app, "show", printed["client_id"])).output)
    assert shown["client_id"] == printed["client_id"] and shown["client_name"] == "Time app"
    assert shown["redirect_uris"] == ["http://127.0.0.1/cb", "com.example.time:/cb"]
    assert shown["post_logout_redirect_uris"] == ["http://127.0.0.1/bye"]
    assert shown["product"] == product.id and shown["scope"] == "openid email offline_access"
    assert shown["application_type"] == "native" and shown["token_endpoint_auth_method"] == "none"
    assert shown["first_party"] is True and shown["mobile_app"] is True and shown["disabled"] is False
    assert "client_secret" not in shown
    assert printed["client_id"] in ok(run(app, "list")).output


def test_create_confidential_defaults(app, db):
    result = ok(run(app, "create", "--name", "Web app", "--redirect-uri", "https://web.example/cb"))
    printed = first_json(result)
    assert len(printed["client_secret"]) >= 43
    shown = json.loads(ok(run(app, "show", printed["client_id"])).output)
    assert shown["application_type"] == "web" and shown["token_endpoint_auth_method"] == "client_secret_basic"
    assert shown["first_party"] is False and shown["product"] is None
    row = db.get(Client, printed["client_id"])
    assert row.client_secret_hash != printed["client_secret"] and row.check_client_secret(printed["client_secret"])
    listed = ok(run(app, "list")).output
    line = next(line for line in listed.splitlines() if line.startswith(printed["client_id"]))
    assert "auth=client_secret_basic" in line and "https://web.example/cb" in line and "DISABLED" not in line


@pytest.mark.parametrize("args, word", [
    (["--redirect-uri", "https://cli.example/cb#x"], "fragment"),
    (["--redirect-uri", "https://*.cli.example/cb"], "wildcard"),
    (["--redirect-uri", "http://cli.example/cb"], "https"),
    (["--redirect-uri", "/relative"], "absolute"),
    (["--redirect-uri", "https://cli.example/cb", "--scope", "openid admin"], "scope"),
    (["--redirect-uri", "https://cli.example/cb", "--product", "no-such-product"], "no-such-product"),
])
def test_create_validates_like_registration(app, db, args, word):
    # clients.metadata is "one validator for every way a client is made ... and the admin CLI".
    before = {c.client_id for c in db.query(Client)}
    refused(run(app, "create", "--name", "Bad", *args), word)
    db.expire_all()
    assert {c.client_id for c in db.query(Client)} == before


def test_create_refuses_a_taken_client_id(app, factory):
    existing, _ = factory.client()
    refused(run(app, "create", "--name", "Dup", "--redirect-uri", "https://cli.example/cb",
                "--client-id", existing.client_id), "exists")


def test_create_needs_name_and_a_redirect_uri_for_the_code_flow(app):
    assert run(app, "create", "--redirect-uri", "https://cli.example/cb").exit_code == 2
    refused(run(app, "create", "--name", "x", "--grant-type", "authorization_code"), "redirect_uris")


def test_create_without_redirect_uris_is_machine_to_machine(app, db):
    result = run(app, "create", "--name", "Nightly export")
    assert result.exit_code == 0, result.output
    client = db.get(Client, json.loads(result.output.splitlines()[0])["client_id"])
    assert client.grant_types == ["client_credentials"] and client.redirect_uris == []


def test_show_unknown_client(app):
    refused(run(app, "show", "no-such-client"), "no client")


# -- update ------------------------------------------------------------------------------

def test_update_every_flag(app, db, factory):
    client, _ = factory.client()
    product = factory.product()
    ok(run(app, "update", client.client_id, "--name", "Renamed", "--redirect-uri", "https://new.example/a",
           "--redirect-uri", "https://new.example/b", "--post-logout-redirect-uri", "https://new.example/bye",
           "--product", product.id, "--scope", "openid email", "--first-party", "--require-second-factor",
           "--mobile-app"))
    row = fresh(db, client.client_id)
    assert row.client_name == "Renamed"
    assert row.redirect_uris == ["https://new.example/a", "https://new.example/b"]
    assert row.post_logout_redirect_uris == ["https://new.example/bye"]
    assert (row.product_id, row.scope) == (product.id, "openid email")
    assert row.first_party and row.require_second_factor and row.mobile_app

    ok(run(app, "update", client.client_id, "--third-party", "--no-require-second-factor", "--not-mobile-app"))
    row = fresh(db, client.client_id)
    assert not row.first_party and not row.require_second_factor and not row.mobile_app
    assert row.client_name == "Renamed" and row.scope == "openid email"  # untouched without flags
    shown = json.loads(ok(run(app, "show", client.client_id)).output)
    assert shown["first_party"] is False and shown["client_name"] == "Renamed"


def test_first_party_flag_skips_consent(app, client, factory):
    rp = make_rp(client, factory)
    identity = factory.identity()
    response = rp.follow(rp.login(rp.follow(rp.authorize()), identity.email))
    assert "/consent" in response.location
    ok(run(app, "update", rp.client_id, "--first-party"))
    # Signed in already: now the code comes back without a consent page.
    assert "code" in rp.sign_in(identity.email, consent=False)


@pytest.mark.parametrize("args, word", [
    (["--redirect-uri", "http://cli.example/cb"], "https"),
    (["--redirect-uri", "https://cli.example/cb#frag"], "fragment"),
    (["--redirect-uri", "https://*.cli.example/cb"], "wildcard"),
    (["--post-logout-redirect-uri", "https://cli.example/bye#x"], "fragment"),
    (["--scope", "openid admin"], "scope"),
    (["--product", "no-such-product"], "no-such-product"),
])
def test_update_validation_errors_change_nothing(app, db, factory, args, word):
    client, _ = factory.client()
    refused(run(app, "update", client.client_id, "--name", "Should not stick", *args), word)
    row = fresh(db, client.client_id)
    assert row.client_name == client.client_name and row.redirect_uris == ["https://rp.example/cb"]
    assert row.scope == "openid profile email offline_access" and row.product_id is None


def test_update_unknown_client(app):
    refused(run(app, "update", "no-such-client", "--name", "x"), "no client")


# -- disable / enable ---------------------------------------------------------------------

def test_disable_revokes_tokens_and_enable_restores_access(app, client, db, factory, machine):
    client_id, secret = machine
    rp = make_rp(client, factory)
    rp.client_id, rp.client_secret = client_id, secret
    identity = factory.identity()
    refresh = rp.token(rp.sign_in(identity.email, scope=OFFLINE)["code"]).get_json()["refresh_token"]
    access = client_credentials(client, client_id, secret).get_json()["access_token"]
    assert client.post("/introspect", data={"token": access}, headers=basic(client_id, secret)).get_json()["active"]

    assert "revoked" in ok(run(app, "disable", client_id)).output
    assert fresh(db, client_id).disabled
    line = next(line for line in ok(run(app, "list")).output.splitlines() if line.startswith(client_id))
    assert line.endswith("DISABLED")
    assert json.loads(ok(run(app, "show", client_id)).output)["disabled"] is True
    denied = client_credentials(client, client_id, secret)
    assert denied.status_code == 401 and denied.get_json()["error"] == "invalid_client"

    ok(run(app, "enable", client_id))
    assert not fresh(db, client_id).disabled
    assert client_credentials(client, client_id, secret).status_code == 200
    # What was issued before the disable stays revoked.
    reused = rp.refresh(refresh)
    assert reused.status_code == 400 and reused.get_json()["error"] == "invalid_grant"
    assert client.post("/introspect", data={"token": access}, headers=basic(client_id, secret)).get_json() == {
        "active": False}


def test_disable_and_enable_unknown_client(app):
    refused(run(app, "disable", "no-such-client"), "no client")
    refused(run(app, "enable", "no-such-client"), "no client")


# -- delete -----------------------------------------------------------------------------

def test_delete_asks_and_with_yes_deletes(app, client, db, machine):
    client_id, secret = machine
    access = client_credentials(client, client_id, secret).get_json()["access_token"]
    aborted = run(app, "delete", client_id, input="n\n")
    assert aborted.exit_code != 0 and "Aborted" in aborted.output
    assert fresh(db, client_id) is not None

    assert f"deleted {client_id}" in ok(run(app, "delete", client_id, "--yes")).output
    assert fresh(db, client_id) is None
    assert client_id not in ok(run(app, "list")).output
    assert client_credentials(client, client_id, secret).status_code == 401
    from idp.grants.models import AccessToken
    from sqlalchemy import select

    rows = db.execute(select(AccessToken).where(AccessToken.client_id == client_id)).scalars().all()
    assert rows and all(r.revoked_at is not None for r in rows), access
    refused(run(app, "delete", client_id, "--yes"), "no client")


# -- rotate-secret ------------------------------------------------------------------------

def test_rotate_secret_with_overlap(app, client, machine):
    client_id, old = machine
    result = ok(run(app, "rotate-secret", client_id, "--overlap", "3600"))
    printed = first_json(result)
    assert printed["client_id"] == client_id and printed["old_secret_valid_for"] == 3600
    new = printed["client_secret"]
    assert new != old and len(new) >= 43
    assert client_credentials(client, client_id, new).status_code == 200
    assert client_credentials(client, client_id, old).status_code == 200  # during the overlap


def test_rotate_secret_default_overlap_is_the_setting(app, client, machine, settings):
    client_id, old = machine
    printed = first_json(ok(run(app, "rotate-secret", client_id)))
    assert printed["old_secret_valid_for"] == settings.secret_rotation_overlap
    assert client_credentials(client, client_id, old).status_code == 200
    assert client_credentials(client, client_id, printed["client_secret"]).status_code == 200


def test_rotate_secret_without_overlap_stops_the_old_one_at_once(app, client, machine):
    client_id, first = machine
    second = first_json(ok(run(app, "rotate-secret", client_id, "--overlap", "600")))["client_secret"]
    third = first_json(ok(run(app, "rotate-secret", client_id, "--overlap", "0")))["client_secret"]
    assert client_credentials(client, client_id, third).status_code == 200
    for stale in (first, second):
        response = client_credentials(client, client_id, stale)
        assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"


def test_rotate_secret_after_overlap_expired(app, client, db, machine):
    client_id, old = machine
    new = first_json(ok(run(app, "rotate-secret", client_id, "--overlap", "600")))["client_secret"]
    row = fresh(db, client_id)
    row.previous_secret_expires_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    db.commit()
    assert client_credentials(client, client_id, old).status_code == 401
    assert client_credentials(client, client_id, new).status_code == 200


def test_rotate_secret_refuses_public_and_unknown_clients(app, factory):
    public, _ = factory.client(public=True)
    refused(run(app, "rotate-secret", public.client_id), "no secret")
    refused(run(app, "rotate-secret", "no-such-client"), "no client")


# -- initial access tokens ----------------------------------------------------------------

def test_initial_token_issue_list_use_and_revoke(app, client, db, factory):
    product = factory.product()
    before = dt.datetime.now(dt.timezone.utc)
    result = ok(run(app, "initial-token", "--product", product.id, "--expires", "2h", "--description", "partner x"))
    printed = first_json(result)
    token, token_id = printed["initial_access_token"], printed["id"]
    assert printed["product"] == product.id and len(token) >= 43
    expires = dt.datetime.fromisoformat(printed["expires_at"])
    assert dt.timedelta(hours=2) - dt.timedelta(seconds=30) < expires - before < dt.timedelta(hours=2, seconds=30)
    row = db.get(InitialAccessToken, token_id)
    assert row.token_hash != token  # stored hashed

    listed = ok(run(app, "initial-tokens")).output
    line = next(line for line in listed.splitlines() if line.startswith(token_id))
    assert f"product={product.id}" in line and "active" in line and "partner x" in line
    assert token not in listed

    body = {"client_name": "Partner", "redirect_uris": ["https://partner.example/cb"]}
    registered = client.post("/register", json=body, headers={"Authorization": f"Bearer {token}"})
    assert registered.status_code == 201, registered.get_json()
    assert registered.get_json()["product"] == product.id

    assert f"revoked {token_id}" in ok(run(app, "revoke-initial-token", token_id)).output
    line = next(line for line in ok(run(app, "initial-tokens")).output.splitlines() if line.startswith(token_id))
    assert "revoked" in line
    again = client.post("/register", json=body, headers={"Authorization": f"Bearer {token}"})
    assert again.status_code == 401 and again.get_json()["error"] == "invalid_token"
    refused(run(app, "revoke-initial-token", token_id), token_id)
    refused(run(app, "revoke-initial-token", "no-such-token"), "no-such-token")


def test_initial_token_defaults(app):
    before = dt.datetime.now(dt.timezone.utc)
    printed = first_json(ok(run(app, "initial-token")))
    assert printed["product"] is None
    expires = dt.datetime.fromisoformat(printed["expires_at"])
    assert dt.timedelta(days=7) - dt.timedelta(minutes=1) < expires - before < dt.timedelta(days=7, minutes=1)
    assert first_json(ok(run(app, "initial-token", "--expires", "3600")))["expires_at"]
    assert first_json(ok(run(app, "initial-token", "--expires", "30m")))["expires_at"]


@pytest.mark.parametrize("expires", ["abc", "5x", "", "h", "1.5h", "-1h"])
def test_initial_token_bad_duration(app, db, expires):
    count = db.query(InitialAccessToken).count()
    result = run(app, "initial-token", "--expires", expires)
    assert result.exit_code == 2, result.output
    assert "30m" in result.output or "invalid" in result.output.lower()
    db.expire_all()
    assert db.query(InitialAccessToken).count() == count


def test_initial_token_unknown_product(app, db):
    count = db.query(InitialAccessToken).count()
    refused(run(app, "initial-token", "--product", "no-such-product"), "no-such-product")
    assert db.query(InitialAccessToken).count() == count


def test_generated_client_ids_are_safe_command_line_arguments(app, db):
    # A random base64url id starts with "-" one time in 32; the CLI would then read it as an option.
    for _ in range(40):
        printed = first_json(ok(run(app, "create", "--name", "Id check", "--redirect-uri", "https://id.example/cb")))
        assert re.fullmatch(r"[0-9a-f]{32}", printed["client_id"]), printed["client_id"]
        assert json.loads(ok(run(app, "show", printed["client_id"])).output)["client_id"] == printed["client_id"]
