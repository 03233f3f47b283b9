"""What one token response writes (idp/oidc/tokens.py ``persist``), on the backend under test.

Revocation, reuse detection and the audit trail read these rows: the family with its absolute end, the
access token by ``jti`` with the token's own ``exp``, the refresh token's keyed hash with the family's end,
and the ``token.issued`` event, all in the grant's transaction. On PostgreSQL they are written by one
statement (data-modifying CTEs), so these tests also prove that the foreign keys between rows of one
statement hold and that nothing is left when the statement fails.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from sqlalchemy import event, select

from idp.audit.models import AuditEvent
from idp.clients.models import Client
from idp.grants.models import AccessToken, RefreshToken, TokenFamily
from idp.oidc import tokens
from idp.security import hasher
from tests.helpers.oidc import make_rp

OFFLINE = "openid profile email offline_access"


def claims_of(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture
def statements(app):
    """Statements sent to the database while the test runs."""
    seen: list[str] = []
    database = app.extensions["idp"].db
    engines = {database.engine, database.autocommit_engine}

    def before(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)
    yield seen
    for engine in engines:
        event.remove(engine, "before_cursor_execute", before)


def test_a_code_exchange_writes_family_tokens_and_event(app, client, factory, db, statements):
    person = factory.identity()
    rp = make_rp(client, factory)
    code = rp.sign_in(person.email, scope=OFFLINE)["code"]
    statements.clear()
    response = rp.token(code)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    claims = claims_of(body["access_token"])

    access = db.get(AccessToken, claims["jti"])
    assert access is not None and access.client_id == rp.client_id and access.identity_id == person.id
    assert access.expires_at == dt.datetime.fromtimestamp(claims["exp"], dt.timezone.utc)
    family = db.get(TokenFamily, access.family_id)
    assert family.client_id == rp.client_id and family.identity_id == person.id and family.revoked_at is None
    assert family.amr == ["pwd"] and family.scope == body["scope"]
    refresh = db.get(RefreshToken, hasher().hash(body["refresh_token"]))
    assert refresh.family_id == family.id and refresh.expires_at == family.expires_at and refresh.rotated_at is None
    issued = db.execute(select(AuditEvent).where(AuditEvent.event == "token.issued",
                                                 AuditEvent.client_id == rp.client_id)).scalars().all()
    assert len(issued) == 1 and issued[0].subject_id == person.id
    assert issued[0].reason == "authorization_code" and issued[0].details == {"with_refresh": True}

    if app.extensions["idp"].db.engine.dialect.name == "postgresql":
        token_inserts = [s for s in statements if s.lstrip().upper().startswith(("INSERT", "WITH"))
                         and "access_tokens" in s]
        assert len(token_inserts) == 1, token_inserts
        for table in ("token_families", "refresh_tokens", "audit_events"):
            assert table in token_inserts[0]


@pytest.fixture
def machine(factory, db):
    """A confidential client allowed the client_credentials grant."""
    client, secret = factory.client()
    db.get(Client, client.client_id).grant_types = ["client_credentials"]
    db.commit()
    return client, secret


def test_client_credentials_writes_the_token_and_its_event(client, machine, db):
    machine, secret = machine
    response = client.post("/token", data={"grant_type": "client_credentials"}, auth=(machine.client_id, secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    claims = claims_of(response.get_json()["access_token"])
    access = db.get(AccessToken, claims["jti"])
    assert access is not None and access.family_id is None and access.identity_id is None
    issued = db.execute(select(AuditEvent).where(AuditEvent.event == "token.issued",
                                                 AuditEvent.client_id == machine.client_id)).scalars().all()
    assert [e.actor for e in issued] == [f"client:{machine.client_id}"]
    assert issued[0].details == {"with_refresh": False}


def test_a_failed_write_leaves_no_token_and_no_event(client, machine, db, monkeypatch):
    machine, secret = machine
    real_row = tokens.audit.row

    def row_with_an_impossible_event_time(*args, **kwargs):
        values = real_row(*args, **kwargs)
        values["occurred_at"] = None  # NOT NULL: the database refuses the event
        return values

    monkeypatch.setattr(tokens.audit, "row", row_with_an_impossible_event_time)
    response = client.post("/token", data={"grant_type": "client_credentials"}, auth=(machine.client_id, secret))
    assert response.status_code == 500
    assert response.get_json()["error"] == "server_error"
    assert db.execute(select(AccessToken).where(AccessToken.client_id == machine.client_id)).first() is None
    assert db.execute(select(AuditEvent).where(AuditEvent.client_id == machine.client_id)).first() is None


def test_userinfo_reads_the_token_record_once(client, factory, statements):
    """The resource protector's revocation check hands UserInfo whose token it is; no second read."""
    person = factory.identity()
    rp = make_rp(client, factory)
    access_token = rp.token(rp.sign_in(person.email)["code"]).get_json()["access_token"]
    statements.clear()
    response = client.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 200 and response.get_json()["email"] == person.email
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "FROM access_tokens" in s]
    assert len(reads) == 1, reads
