"""Fixtures for the migration paths: legacy users, invitations, superuser pages, My settings.

Mail goes over real SMTP to aiosmtpd on 127.0.0.1 (tests/helpers/smtp.py). Each
browser gets its own client IP, so the per-IP lock-out of legacy sign-ins in one
test never locks another test out.
"""

from __future__ import annotations

import html
import itertools
import uuid

import pytest
from sqlalchemy import select

from idp.agreements.models import Agreement, Membership
from idp.identities import password_policy
from idp.identities.models import Identity
from idp.legacy_users.models import LegacyUser
from idp.legacy_users.service import legacy_context, normalize_username
from idp.mail import Mailer, MailSettings
from tests.conftest import ISSUER
from tests.helpers.factories import PASSWORD, unique
from tests.helpers.oidc import csrf_token, path_of
from tests.helpers.smtp import links

NEW_PASSWORD = "Granite-Otter-Lantern-58"
LEGACY_PASSWORD = "gammel-kode-1"
_ips = itertools.count(1)

#: Cheap parameters: the verifier reads them from the hash, as it will for real imports.
SCHEMES = {
    "md5_crypt": lambda: legacy_context.handler("md5_crypt"),
    "sha512_crypt": lambda: legacy_context.handler("sha512_crypt").using(rounds=1000),
    "pbkdf2_sha256": lambda: legacy_context.handler("pbkdf2_sha256").using(rounds=1000),
    "argon2": lambda: legacy_context.handler("argon2").using(memory_cost=1024, rounds=1, parallelism=1),
    "bcrypt": lambda: legacy_context.handler("bcrypt").using(rounds=4),
}


def legacy_hash(password: str = LEGACY_PASSWORD, scheme: str = "sha512_crypt") -> str:
    return SCHEMES[scheme]().hash(password)


@pytest.fixture(autouse=True, scope="module")
def _warm_policy():
    password_policy.warm_up()


@pytest.fixture
def mailbox(runtime, smtp_server, monkeypatch):
    """The app's mail goes to the real test SMTP server."""
    monkeypatch.setattr(runtime, "mailer", Mailer(MailSettings(host="127.0.0.1", port=smtp_server.port)))
    return smtp_server


@pytest.fixture
def browser(app):
    """browser() -> a fresh Flask test client (cookie jar) with a client IP of its own."""

    def make():
        n = next(_ips)
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = f"10.{uuid.uuid4().int % 200}.{n // 250 % 250}.{n % 250 + 1}"
        return client

    return make


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def page_form(browser, path, **fields):
    """GET a form page, then POST it with its CSRF token."""
    page = browser.get(path)
    assert page.status_code == 200, (path, page.status_code, page.location, text(page)[:300])
    return browser.post(path, data={"csrf_token": csrf_token(page.get_data(as_text=True)), **fields})


def post(browser, path, csrf_from="/account/settings", **fields):
    """POST with a CSRF token taken from another page of the same session."""
    page = browser.get(csrf_from)
    assert page.status_code == 200, (csrf_from, page.status_code, page.location)
    return browser.post(path, data={"csrf_token": csrf_token(page.get_data(as_text=True)), **fields})


def log_in(browser, email, password=PASSWORD):
    response = page_form(browser, "/login", email=email, password=password, action="login")
    assert response.status_code == 302, text(response)[:500]
    return response


def link_to(message, path_part: str) -> str:
    found = [url for url in links(message) if path_part in url]
    assert len(found) == 1, links(message)
    assert found[0].startswith(ISSUER + path_part), found[0]
    return path_of(found[0])


def mail_body(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def fresh(db, model, **where):
    db.expire_all()
    query = select(model)
    for key, value in where.items():
        query = query.where(getattr(model, key) == value)
    return db.execute(query).scalars().all()


def membership_of(db, identity_id, agreement_id) -> Membership | None:
    rows = fresh(db, Membership, identity_id=identity_id, agreement_id=agreement_id)
    return rows[0] if rows else None


def identity_by_email(db, email) -> Identity | None:
    rows = fresh(db, Identity, email_normalized=email.lower())
    return rows[0] if rows else None


class World:
    """Agreements with legacy users, made fresh for each test."""

    def __init__(self, factory, db):
        self.factory, self.db = factory, db
        self.product = factory.product()

    def agreement(self, superuser: Identity | None = None, **fields) -> Agreement:
        agreement = self.factory.agreement(self.product, superuser, role="superuser")
        for key, value in fields.items():
            setattr(agreement, key, value)
        self.db.commit()
        return agreement

    def legacy(self, agreement: Agreement, username: str | None = None, *, password: str = LEGACY_PASSWORD,
               role: str = "user", email: str | None = None, scheme: str = "sha512_crypt") -> LegacyUser:
        username = username or unique("kim")
        user = LegacyUser(agreement_id=agreement.id, username=username, username_normalized=normalize_username(username),
                          email=email, role=role, password_hash=legacy_hash(password, scheme))
        self.db.add(user)
        self.db.commit()
        return user


@pytest.fixture
def world(factory, db):
    return World(factory, db)


def prove(browser, agreement, username, password=LEGACY_PASSWORD):
    """Step one of activation / add agreement: the old credentials."""
    return page_form(browser, "/agreements/activate", agreement_number=agreement.number, username=username,
                     password=password)
