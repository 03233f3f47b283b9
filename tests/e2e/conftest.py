"""Live servers and a headless Chromium for the browser journeys.

One IdP on http://127.0.0.1:<port> (same database as the session ``app``) and two
sample RPs on http://localhost:<port>: different hosts, so the browser keeps the
IdP's cookies apart from the RPs'. RP1 is third-party (asks for consent), RP2 is
first-party (no consent).
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from werkzeug.serving import make_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class LiveServer:
    """A WSGI app served by werkzeug in a daemon thread.

    The socket is bound first (port 0: the kernel picks a free port, no race),
    then the app is built for that port and attached.
    """

    def __init__(self, host: str):
        self.server = make_server(host, 0, None, threaded=True)
        self.port = self.server.server_port
        self.thread: threading.Thread | None = None

    def start(self, app) -> None:
        self.server.app = app
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(timeout=5)
        self.server.server_close()


@dataclass
class LiveRP:
    base_url: str
    client_id: str
    client_secret: str
    name: str
    first_party: bool

    @property
    def redirect_uri(self) -> str:
        return self.base_url + "/callback"


@pytest.fixture(scope="module")
def live_idp(app, settings):
    """The IdP served over real HTTP. Depends on ``app`` so migrations have run."""
    from idp.app import create_app

    server = LiveServer("127.0.0.1")
    live_settings = settings.with_(issuer=f"http://127.0.0.1:{server.port}", cookie_secure=False)
    live_app = create_app(live_settings)
    server.start(live_app)
    try:
        yield live_app
    finally:
        server.stop()
        live_app.extensions["idp"].db.dispose()


def _live_rp(live_idp, name: str, first_party: bool):
    from clients.web_rp import create_app as create_rp
    from idp.clients import service as clients

    server = LiveServer("127.0.0.1")
    base_url = f"http://localhost:{server.port}"
    client_id = f"e2e-{'first' if first_party else 'third'}-{uuid.uuid4().hex[:8]}"
    secret = "e2e-secret-" + uuid.uuid4().hex
    with live_idp.app_context():
        session = live_idp.extensions["idp"].db.session
        try:
            clients.create_client(session, client_name=name, redirect_uris=[base_url + "/callback"],
                                  client_id=client_id, client_secret=secret, first_party=first_party)
        finally:
            session.remove()
    rp_app = create_rp({"RP_ISSUER": live_idp.extensions["idp"].settings.issuer, "RP_CLIENT_ID": client_id, "RP_CLIENT_SECRET": secret,
                        "RP_BASE_URL": base_url, "RP_NAME": name})
    server.start(rp_app)
    return server, LiveRP(base_url, client_id, secret, name, first_party)


@pytest.fixture(scope="module")
def rp1(live_idp):
    """Third-party sample RP: the IdP asks for consent."""
    server, rp = _live_rp(live_idp, "Partner Books", first_party=False)
    yield rp
    server.stop()


@pytest.fixture(scope="module")
def rp2(live_idp):
    """First-party sample RP: no consent page."""
    server, rp = _live_rp(live_idp, "House Ledger", first_party=True)
    yield rp
    server.stop()


@pytest.fixture(scope="module")
def chromium():
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing; `apt-get install -y chromium` enables the browser tests"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: browser tests must run in CI)", pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium):
    """A fresh browser profile (no cookies) per test."""
    context = chromium.new_context(locale="en-US")
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def shot(request):
    """shot(page, "step") saves test-artifacts/<test>-<nn>-<step>.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    counter = iter(range(1, 100))

    def save(page, step: str) -> Path:
        path = ARTIFACTS / f"{request.node.name}-{next(counter):02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
