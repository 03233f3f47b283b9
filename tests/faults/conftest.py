"""Fixtures of the fault tests: the IdP served over real HTTP, people and RPs for it."""

from __future__ import annotations

import uuid

import pytest

from tests.faults.support import HttpRP, LiveServer
from tests.helpers.factories import PASSWORD


@pytest.fixture(scope="module")
def live(app, settings):
    """The IdP (same database and store as the session ``app``) on a threaded werkzeug server."""
    from idp.app import create_app

    server = LiveServer()
    server.app = create_app(settings.with_(issuer=server.base, cookie_secure=False))
    server.start(server.app)
    try:
        yield server
    finally:
        server.stop()
        server.app.extensions["idp"].db.dispose()


@pytest.fixture
def person(factory):
    """A fresh identity: (identity, e-mail, password)."""
    identity = factory.identity()
    return identity, identity.email, PASSWORD


@pytest.fixture
def http_rp(factory):
    client, secret = factory.client(redirect_uris=(f"https://rp-{uuid.uuid4().hex[:6]}.example/cb",))
    return HttpRP(client.client_id, secret, client.redirect_uris[0])
