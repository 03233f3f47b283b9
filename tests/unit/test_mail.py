"""Outgoing mail: delivered over real SMTP (aiosmtpd), or written to the outbox."""

from __future__ import annotations

import email
import email.policy
import logging
import socket
import traceback

import pytest

from idp import mail
from idp.errors import DomainError
from idp.mail import Mailer, MailError, MailSettings
from idp.settings import Settings, from_env
from tests.helpers.smtp import SmtpServer, links

SUBJECT = "Bekræft din e-mailadresse"
LINK = "https://idp.test/verify-email?token=" + "Zx9_" * 20 + "&lang=da"
TEXT = f"Hej Åse,\n\nKlik på linket for at bekræfte din e-mailadresse:\n{LINK}\n\nHilsen Connect\n"
HTML = f'<p>Hej Åse,</p><p><a href="{LINK}">Bekræft din e-mailadresse</a></p>'
PASSWORD = "s3cret-Password-42"


def smtp_mailer(server: SmtpServer, **changes) -> Mailer:
    options = {"host": server.host, "port": server.port, "sender": "Connect log ind <no-reply@idp.test>"}
    return Mailer(MailSettings(**{**options, **changes}))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def test_sends_utf8_text_mail_over_smtp(smtp_server):
    smtp_mailer(smtp_server).send("aase@example.org", SUBJECT, TEXT)

    message = smtp_server.wait_for("aase@example.org")
    assert message["Subject"] == SUBJECT
    assert message["To"] == "aase@example.org"
    assert message["From"].addresses[0].addr_spec == "no-reply@idp.test"
    assert message["From"].addresses[0].display_name == "Connect log ind"
    assert message["Date"].datetime.tzinfo is not None
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith("@idp.test>")
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert message.get_content() == TEXT
    assert links(message) == [LINK]
    assert smtp_server.links(message) == [LINK]

    received = smtp_server.received[0]
    assert received.mail_from == "no-reply@idp.test"
    assert received.rcpt_tos == ("aase@example.org",)
    # 7-bit clean on the wire: RFC 2047 subject, quoted-printable body.
    received.raw.decode("ascii")
    assert b"Subject: =?utf-8?" in received.raw


def test_html_makes_multipart_alternative(smtp_server):
    smtp_mailer(smtp_server).send("aase@example.org", SUBJECT, TEXT, html=HTML)

    message = smtp_server.wait_for("aase@example.org")
    assert message.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]  # plainest first, as RFC 2046 asks
    assert message.get_body(preferencelist=("plain",)).get_content() == TEXT
    assert message.get_body(preferencelist=("html",)).get_content().strip() == HTML
    assert links(message) == [LINK]


def test_messages_are_told_apart_by_recipient(smtp_server):
    mailer = smtp_mailer(smtp_server)
    mailer.send("one@example.org", "first", "to one")
    mailer.send("two@example.org", "second", "to two")
    mailer.send("one@example.org", "third", "to one again")

    assert smtp_server.wait_for("two@example.org")["Subject"] == "second"
    assert smtp_server.wait_for("ONE@example.org")["Subject"] == "first"
    assert smtp_server.wait_for("one@example.org")["Subject"] == "third"
    with pytest.raises(AssertionError, match="no mail to one@example.org"):
        smtp_server.wait_for("one@example.org", timeout=0.2)


def test_logs_in_when_a_username_is_set():
    with SmtpServer(credentials={"mailer": PASSWORD}) as server:
        smtp_mailer(server, username="mailer", password=PASSWORD).send("aase@example.org", SUBJECT, TEXT)
        assert server.wait_for("aase@example.org")["Subject"] == SUBJECT
        assert server.logins == ["mailer"]


def test_rejected_login_raises_without_leaking_the_password():
    with SmtpServer(credentials={"mailer": "the-right-one"}) as server:
        with pytest.raises(MailError) as caught:
            smtp_mailer(server, username="mailer", password=PASSWORD).send("aase@example.org", SUBJECT, TEXT)
        assert server.received == []
    assert "SMTPAuthenticationError" in str(caught.value)
    assert PASSWORD not in "".join(traceback.format_exception(caught.value))


def test_non_ascii_password_raises_mail_error_without_leaking_it():
    password = "Pässword-æøå"
    with SmtpServer(credentials={"mailer": password}) as server, pytest.raises(MailError, match="ASCII") as caught:
        smtp_mailer(server, username="mailer", password=password).send("aase@example.org", SUBJECT, TEXT)
    assert password not in "".join(traceback.format_exception(caught.value))


def test_unreachable_smtp_raises_mail_error_without_leaking_the_password():
    port = closed_port()
    mailer = Mailer(MailSettings(host="127.0.0.1", port=port, username="mailer", password=PASSWORD, timeout=2))

    with pytest.raises(MailError) as caught:
        mailer.send("aase@example.org", SUBJECT, TEXT)

    error = caught.value
    assert isinstance(error, DomainError)
    assert (error.code, error.status) == ("mail_failed", 503)
    assert f"127.0.0.1:{port}" in str(error)
    assert PASSWORD not in "".join(traceback.format_exception(error))
    assert PASSWORD not in repr(mailer.settings)


def test_outbox_writes_a_private_parseable_eml_and_logs_no_body(tmp_path, caplog):
    outbox = tmp_path / "outbox"  # does not exist yet
    mailer = Mailer(MailSettings(outbox_dir=outbox))

    with caplog.at_level(logging.INFO, logger="idp.mail"):
        mailer.send("aase@example.org", SUBJECT, TEXT, html=HTML)

    (path,) = outbox.iterdir()
    assert path.suffix == ".eml"
    assert path.stat().st_mode & 0o777 == 0o600
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == SUBJECT
    assert message["To"] == "aase@example.org"
    assert message.get_content_type() == "multipart/alternative"
    assert links(message) == [LINK]
    # Readable as it lies: a developer can copy the link straight from the file.
    assert LINK.encode() in path.read_bytes()

    assert [r.getMessage() for r in caplog.records] == [f"mail to aase@example.org written to {path}"]
    assert caplog.records[0].levelno == logging.INFO
    assert "token=" not in caplog.text and "Åse" not in caplog.text


def test_outbox_file_names_do_not_collide(tmp_path):
    mailer = Mailer(MailSettings(outbox_dir=tmp_path))
    for _ in range(5):
        mailer.send("aase@example.org", SUBJECT, TEXT)
    assert len(list(tmp_path.glob("*.eml"))) == 5


def test_unwritable_outbox_raises_mail_error(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(MailError, match="outbox"):
        Mailer(MailSettings(outbox_dir=blocker / "outbox")).send("aase@example.org", SUBJECT, TEXT)


def test_no_transport_raises_mail_error():
    with pytest.raises(MailError, match="no mail transport"):
        Mailer(MailSettings()).send("aase@example.org", SUBJECT, TEXT)


def test_settings_from_env_and_from_settings(tmp_path):
    settings = from_env({
        "IDP_ENV": "test",
        "IDP_SECRET_KEY": "k" * 40,
        "IDP_SMTP_HOST": "smtp.example.org",
        "IDP_SMTP_PORT": "587",
        "IDP_SMTP_STARTTLS": "true",
        "IDP_SMTP_SSL": "no",
        "IDP_SMTP_USERNAME": "mailer",
        "IDP_SMTP_PASSWORD": PASSWORD,
        "IDP_MAIL_FROM": "Connect <login@example.org>",
        "IDP_OUTBOX_DIR": str(tmp_path / "box"),
    })
    assert PASSWORD not in repr(settings)

    mailer = mail.from_settings(settings)
    assert mailer.settings == MailSettings(
        host="smtp.example.org", port=587, starttls=True, ssl=False, username="mailer", password=PASSWORD,
        sender="Connect <login@example.org>", outbox_dir=tmp_path / "box",
    )

    defaults = mail.from_settings(Settings()).settings
    assert (defaults.host, defaults.port, defaults.starttls, defaults.ssl) == ("", 25, False, False)
    assert defaults.outbox_dir == Settings().outbox_dir
