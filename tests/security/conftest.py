"""Shared pieces for the security tests (issue 10).

The suite's app runs with rate_limit_factor=1000 and login_ip_lock_after=100000
(every test request comes from 127.0.0.1). Tests of the limits use
``limited_app``: the same database, store and keys, with the real factors.
Every test that counts something per IP gives its browser an address of its
own (``fresh_ip``), so no test sees another's counts.
"""

from __future__ import annotations

import html
import itertools
import re
import secrets
import time
from types import SimpleNamespace

import pytest

from idp.app import create_app

_ip_counter = itertools.count(1)
ERROR_TEXT = re.compile(r'<p class="error"[^>]*>(.*?)</p>', re.S)


def new_ip() -> str:
    """An address no other test (of this run) uses: 10.<random>.<counter>."""
    n = next(_ip_counter)
    return f"10.{secrets.randbelow(250) + 1}.{n // 250}.{n % 250 + 1}"


@pytest.fixture
def fresh_ip() -> str:
    return new_ip()


@pytest.fixture(scope="module")
def limited_app(settings):
    """The IdP with production limits: rate_limit_factor 1 and 50 failed sign-ins per IP."""
    application = create_app(settings.with_(rate_limit_factor=1.0, login_ip_lock_after=50))
    application.config["TESTING"] = True
    yield application
    application.extensions["idp"].db.dispose()


class Clock:
    """A controllable time.time() for one module (``patch(module)``)."""

    def __init__(self, monkeypatch):
        self.now = time.time()
        self._monkeypatch = monkeypatch

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def patch(self, module) -> "Clock":
        fake = SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
        fake.time = self.time
        self._monkeypatch.setattr(module, "time", fake)
        return self


@pytest.fixture
def clock(monkeypatch) -> Clock:
    return Clock(monkeypatch)


def page_error(response) -> str | None:
    """The error line of a form page (``<p class="error">``), unescaped, or None."""
    match = ERROR_TEXT.search(response.get_data(as_text=True))
    return html.unescape(match.group(1)).strip() if match else None
