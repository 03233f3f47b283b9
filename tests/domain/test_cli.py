"""The ``idp`` command, through Flask's CLI runner against the test database."""

from __future__ import annotations

import json

from idp.clients.models import Client
from idp.demo import DEMO_PASSWORD
from idp.identities import service as identities


def test_demo_seed_is_idempotent_and_logins_work(app, db, runtime):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["demo"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(args=["demo"])
    assert "created 0 products, 0 identities, 0 agreements, 0 clients" in second.output
    anna = identities.authenticate(db, runtime.passwords, "anna@example.com", DEMO_PASSWORD)
    assert anna.email_verified
    assert db.get(Client, "accounting-web").check_client_secret("accounting-demo-secret")


def test_clients_create_prints_the_secret_once_and_stores_a_hash(app, db):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["clients", "create", "--name", "CLI app", "--redirect-uri", "https://cli.example/cb",
                                 "--client-id", "cli-created-client"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output.splitlines()[0])
    client = db.get(Client, printed["client_id"])
    assert client.client_secret_hash != printed["client_secret"]
    assert client.check_client_secret(printed["client_secret"])
    assert len(printed["client_secret"]) >= 43  # 256 bits, base64url
    listed = runner.invoke(args=["clients", "list"])
    assert "cli-created-client" in listed.output


def test_clients_create_refuses_bad_metadata(app):
    result = app.test_cli_runner().invoke(args=["clients", "create", "--name", "x", "--redirect-uri",
                                                "https://cli.example/cb#fragment"])
    assert result.exit_code != 0
    assert "fragment" in result.output


def test_public_native_client(app, db):
    result = app.test_cli_runner().invoke(args=["clients", "create", "--name", "Mobile", "--redirect-uri",
                                                "http://127.0.0.1/cb", "--public", "--native"])
    printed = json.loads(result.output.splitlines()[0])
    client = db.get(Client, printed["client_id"])
    assert printed["client_secret"] is None
    assert client.token_endpoint_auth_method == "none" and client.application_type == "native"
    assert client.check_redirect_uri("http://127.0.0.1:53123/cb")  # RFC 8252 §7.3: any port


def test_keys_list_and_rotate(app, settings):
    runner = app.test_cli_runner()
    before = runner.invoke(args=["keys", "list"]).output
    rotated = runner.invoke(args=["keys", "rotate"])
    assert rotated.exit_code == 0
    assert rotated.output.count("retired") >= 2
    assert before != rotated.output


def test_db_current(app):
    from idp.storage.migrations import head_revision

    result = app.test_cli_runner().invoke(args=["db", "current"])
    assert f"current: {head_revision()}  head: {head_revision()}" in result.output
