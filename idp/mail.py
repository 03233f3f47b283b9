"""Outgoing mail: build an RFC 5322 message and hand it to SMTP or a local outbox.

With an SMTP host configured, mail goes out through ``smtplib`` (implicit TLS,
STARTTLS or plain, with optional login). Without one -- a developer's laptop, a
test run -- each message is written as an ``.eml`` file into the outbox
directory, readable by its owner only, and a log line says where.

Mail bodies carry single-use links (verification, password reset), so they are
never logged; only the recipient and where the message went.

This module knows nothing about Flask or the request: callers pass the text.
"""

from __future__ import annotations

import logging
import os
import secrets
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path

from idp.errors import DomainError

log = logging.getLogger(__name__)


class MailError(DomainError):
    """The message could not be delivered (SMTP or file system failure)."""

    code = "mail_failed"
    status = 503


@dataclass(frozen=True)
class MailSettings:
    #: Empty: no SMTP; messages are written into ``outbox_dir`` instead.
    host: str = ""
    port: int = 25
    #: Upgrade a plain connection with STARTTLS (usually port 587).
    starttls: bool = False
    #: Implicit TLS from the first byte (usually port 465); wins over ``starttls``.
    ssl: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    sender: str = "Connect login <no-reply@localhost>"
    outbox_dir: Path | None = None
    #: Seconds for connecting and for each SMTP command.
    timeout: float = 10


class Mailer:
    def __init__(self, settings: MailSettings):
        self.settings = settings

    def send(self, to: str, subject: str, text: str, html: str | None = None) -> None:
        """Deliver one message to one recipient; raise MailError when it cannot."""
        if self.settings.host:
            # Quoted-printable survives any relay (no 8BITMIME needed); clients decode it.
            message = self._build(to, subject, text, html, cte="quoted-printable")
            self._send_smtp(message, to)
        elif self.settings.outbox_dir is not None:
            # Raw UTF-8 in the outbox, so a developer can read and copy links from the file.
            message = self._build(to, subject, text, html, cte="8bit")
            self._write_outbox(message, to)
        else:
            raise MailError("no mail transport configured: set an SMTP host or an outbox directory")

    # -- building ---------------------------------------------------------------

    def _build(self, to: str, subject: str, text: str, html: str | None, *, cte: str) -> EmailMessage:
        sender = self.settings.sender
        domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
        message = EmailMessage()
        message["From"] = sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = format_datetime(datetime.now(UTC))
        # An explicit domain: make_msgid's default does a (possibly slow) FQDN lookup.
        message["Message-ID"] = make_msgid(domain=domain)
        message.set_content(text, subtype="plain", charset="utf-8", cte=cte)
        if html is not None:
            message.add_alternative(html, subtype="html", charset="utf-8", cte=cte)
        return message

    # -- delivering -------------------------------------------------------------

    def _send_smtp(self, message: EmailMessage, to: str) -> None:
        s = self.settings
        try:
            if s.ssl:
                smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            with smtp:
                if s.starttls and not s.ssl:
                    smtp.starttls(context=ssl.create_default_context())
                if s.username:
                    try:
                        smtp.login(s.username, s.password)
                    except UnicodeEncodeError:
                        # smtplib encodes credentials as ASCII; the error object holds them.
                        raise MailError(f"could not log in to {s.host}:{s.port}: "
                                        "smtplib accepts only ASCII usernames and passwords") from None
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            # ``from None``: the message below is the whole story, already scrubbed.
            raise MailError(f"could not send mail via {s.host}:{s.port}: {self._describe(exc)}") from None
        log.info("mail to %s sent via %s:%s", to, s.host, s.port)

    def _write_outbox(self, message: EmailMessage, to: str) -> None:
        directory = self.settings.outbox_dir
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = directory / f"{stamp}-{secrets.token_hex(4)}.eml"
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(message.as_bytes())
        except OSError as exc:
            raise MailError(f"could not write mail to the outbox {directory}: {self._describe(exc)}") from None
        log.info("mail to %s written to %s", to, path)

    def _describe(self, exc: BaseException) -> str:
        """The exception's type and text with any credential blanked out."""
        detail = str(exc)
        for secret in (self.settings.password, self.settings.username):
            if secret:
                detail = detail.replace(secret, "***")
        return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def from_settings(settings) -> Mailer:
    """A Mailer from the application's ``idp.settings.Settings``."""
    return Mailer(
        MailSettings(
            host=settings.smtp_host,
            port=settings.smtp_port,
            starttls=settings.smtp_starttls,
            ssl=settings.smtp_ssl,
            username=settings.smtp_username,
            password=settings.smtp_password,
            sender=settings.mail_from,
            outbox_dir=settings.outbox_dir,
        )
    )
