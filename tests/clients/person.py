"""A person in a browser without JavaScript (requests): follows redirects and fills in the IdP's pages.

Enough for the sample clients' tests; the real-browser journey is tests/e2e/test_journey.py.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from tests.helpers.factories import PASSWORD

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
AGREEMENT_BUTTON = re.compile(r'name="agreement" value="([^"]+)" class="agreement"')


def csrf(html: str) -> str:
    match = CSRF.search(html)
    assert match, "page has no CSRF token"
    return match.group(1)


class Person:
    def __init__(self, idp: str, email: str, *, password: str = PASSWORD, agreement: str | None = None):
        self.idp, self.email, self.password, self.agreement = idp, email, password, agreement
        self.http = requests.Session()
        self.pages: list[str] = []  # IdP pages the person saw (paths)
        self.error: BaseException | None = None

    def visit(self, url: str, *, stop_at: str | None = None) -> requests.Response:
        """Go to ``url`` and through the IdP's pages. Stops at the first page outside the
        IdP, or once a redirect to ``stop_at`` has been delivered (GET)."""
        response = self.http.get(url, allow_redirects=False, timeout=10)
        for _ in range(30):
            if response.is_redirect:
                location = urljoin(response.url, response.headers["Location"])
                if stop_at and location.startswith(stop_at):
                    return self.http.get(location, allow_redirects=False, timeout=10)
                response = self.http.get(location, allow_redirects=False, timeout=10)
                continue
            if not response.url.startswith(self.idp):
                return response
            response = self.act(response)
        raise AssertionError("too many redirects")

    def act(self, page: requests.Response) -> requests.Response:
        path = urlsplit(page.url).path
        self.pages.append(path)
        assert page.status_code == 200, (page.status_code, page.url, page.text[:500])
        form = {"csrf_token": csrf(page.text)}
        if path.endswith("/login"):
            form.update(email=self.email, password=self.password, action="login")
        elif path.endswith("/consent"):
            form.update(action="allow")
        elif path.endswith("/agreement"):
            listed = AGREEMENT_BUTTON.findall(page.text)
            form.update(agreement=self.agreement if self.agreement in listed else listed[0])
        else:
            raise AssertionError(f"unexpected page {page.url}")
        return self.http.post(page.url, data=form, allow_redirects=False, timeout=10)

    def browser(self, url: str) -> threading.Thread:
        """What a native app's ``open_browser`` does: the flow in the background, ending at
        the loopback redirect URI the authorization request names."""
        redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]

        def run():
            try:
                self.visit(url, stop_at=redirect_uri)
            except BaseException as error:  # noqa: BLE001 - reported by the test
                self.error = error

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread
