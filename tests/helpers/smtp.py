"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, collecting what it receives.

    with SmtpServer() as server:
        mailer = Mailer(MailSettings(host=server.host, port=server.port))
        mailer.send("ada@example.org", "Hello", "Open https://idp.test/verify?t=abc")
        message = server.wait_for("ada@example.org")
        assert links(message) == ["https://idp.test/verify?t=abc"]

Pass ``credentials={"user": "password"}`` to offer AUTH (without TLS, for tests
only); a login with anything else is refused.
"""

from __future__ import annotations

import email
import email.policy
import re
import socket
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

URL = re.compile(r"https?://[^\s<>\"'()\[\]]+")


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    #: The DATA exactly as it came over the wire.
    raw: bytes


def links(message: EmailMessage) -> list[str]:
    """The http(s) URLs in the message's plain-text part, in order."""
    part = message.get_body(preferencelist=("plain",))
    if part is None:
        return []
    return [url.rstrip(".,;:!?") for url in URL.findall(part.get_content())]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class SmtpServer:
    def __init__(self, host: str = "127.0.0.1", credentials: dict[str, str] | None = None):
        self.host = host
        self.port = 0
        self.credentials = credentials
        self.received: list[Received] = []
        self.logins: list[str] = []
        self._taken: set[int] = set()
        self._condition = threading.Condition()
        self._controller: Controller | None = None

    # -- aiosmtpd handler ---------------------------------------------------------

    async def handle_DATA(self, server, session, envelope) -> str:
        # SMTP DATA ends lines with CRLF; parse with local newlines so bodies compare to Python strings.
        content = envelope.content.replace(b"\r\n", b"\n")
        message = email.message_from_bytes(content, policy=email.policy.default)
        with self._condition:
            self.received.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), message, envelope.content))
            self._condition.notify_all()
        return "250 Message accepted for delivery"

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        ok = self.credentials.get(login) == password
        if ok:
            self.logins.append(login)
        # handled=False: aiosmtpd then answers 535 itself (its default, True, means "already answered").
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> Self:
        options = {}
        if self.credentials is not None:
            options = {"authenticator": self._authenticate, "auth_require_tls": False}
        last_error: OSError | None = None
        for _ in range(5):  # a probed free port can be taken before we bind it
            port = _free_port(self.host)
            controller = Controller(self, hostname=self.host, port=port, **options)
            try:
                controller.start()
            except OSError as exc:
                last_error = exc
                continue
            self._controller, self.port = controller, port
            return self
        raise RuntimeError(f"could not start the test SMTP server: {last_error}")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- reading ------------------------------------------------------------------

    def wait_for(self, to: str, timeout: float = 5) -> EmailMessage:
        """The next message (not yet returned) with ``to`` among its envelope recipients."""
        wanted = to.lower()
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                for index, item in enumerate(self.received):
                    if index not in self._taken and wanted in (r.lower() for r in item.rcpt_tos):
                        self._taken.add(index)
                        return item.message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [r for item in self.received for r in item.rcpt_tos]
                    raise AssertionError(f"no mail to {to} within {timeout}s; received for {seen}")
                self._condition.wait(remaining)

    links = staticmethod(links)
