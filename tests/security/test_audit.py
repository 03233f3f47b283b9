"""Audit events (issue 10, Security): every security-relevant action writes its event,
with who (actor), whom (subject), which client and the request's IP, and never a
secret; ``idp audit export`` prints JSON lines that parse and filter.

One journey (module fixture) does everything a person, an RP and an operator
would, from a client IP and user agent of its own; each test then checks the
events of one kind. The secret scan reads every AuditEvent row of the run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest
from sqlalchemy import select

from idp.audit.models import AuditEvent
from idp.policies import throttle
from tests.helpers.factories import PASSWORD, Factory, unique
from tests.helpers.oidc import RP, csrf_token, path_of
from tests.protocol.test_two_step import enrol_directly
from tests.security.conftest import new_ip

USER_AGENT = "audit-journey/1.0"
WRONG_PASSWORD = "Wrong-Otter-Basket-" + unique("pw")[-6:]
NEW_PASSWORD = "Quiet-Falcon-Meadow-" + unique("pw")[-6:]
PORTAL_SECRET = re.compile(r'id="client-secret"[^>]*value="([^"]+)"')
PORTAL_CLIENT_ID = re.compile(r'<code id="client-id">([^<]+)</code>')


@dataclass
class Journey:
    ip: str
    person: object = None          # signs in, changes password, consents, gets tokens, registers a client
    locked: object = None          # fails until locked
    enrolled: object = None        # second factor: a wrong then a right code
    recovering: object = None      # second factor: a recovery code
    rp: RP | None = None
    portal_client_id: str = ""
    secrets: list[str] = field(default_factory=list)


def _browser(app, ip):
    browser = app.test_client()
    browser.environ_base.update({"REMOTE_ADDR": ip, "HTTP_USER_AGENT": USER_AGENT})
    return browser


def _post_form(browser, path, **fields):
    page = browser.get(path)
    assert page.status_code == 200, (path, page.status_code, page.headers.get("Location"))
    return browser.post(path, data={"csrf_token": csrf_token(page.get_data(as_text=True)), **fields})


def _login(browser, email, password):
    return _post_form(browser, "/login", email=email, password=password, action="login")


@pytest.fixture(scope="module")
def journey(app) -> Journey:
    session = app.extensions["idp"].db.session_factory()
    runtime = app.extensions["idp"]
    factory = Factory(app, session)
    j = Journey(ip=new_ip())
    j.secrets += [PASSWORD, WRONG_PASSWORD, NEW_PASSWORD]

    # Password: a failure, then a lock (LOCK_AFTER lowered so no delay is met on the way).
    j.person = factory.identity()
    browser = _browser(app, j.ip)
    assert _login(browser, j.person.email, WRONG_PASSWORD).status_code == 401
    j.locked = factory.identity()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(throttle, "LOCK_AFTER", 3)
        for _ in range(3):
            assert _login(_browser(app, j.ip), j.locked.email, WRONG_PASSWORD).status_code == 401
        assert _login(_browser(app, j.ip), j.locked.email, PASSWORD).status_code == 429

    # Success, then a password change.
    assert _login(browser, j.person.email, PASSWORD).status_code == 302
    changed = _post_form(browser, "/account/password", current_password=PASSWORD, password=NEW_PASSWORD)
    assert changed.status_code == 200, changed.get_data(as_text=True)[:500]

    # Second factor: a wrong code, a right code; a recovery code.
    j.enrolled = factory.identity()
    phone, codes = enrol_directly(runtime, session, j.enrolled)
    two_step = _browser(app, j.ip)
    assert path_of(_login(two_step, j.enrolled.email, PASSWORD).location) == "/login/second-step"
    assert _post_form(two_step, "/login/second-step", code=phone.wrong_code()).status_code == 400
    right = phone.code()
    assert _post_form(two_step, "/login/second-step", code=right).status_code == 302
    j.secrets += [right, phone.secret, *codes]
    j.recovering = factory.identity()
    _phone, recovery = enrol_directly(runtime, session, j.recovering)
    rescue = _browser(app, j.ip)
    assert path_of(_login(rescue, j.recovering.email, PASSWORD).location) == "/login/second-step"
    assert _post_form(rescue, "/login/second-step", recovery_code=recovery[0]).status_code == 302
    j.secrets += recovery

    # Consent, tokens, a replayed code, a revoked refresh token.
    client, secret = factory.client()
    j.rp = rp = RP(browser, client.client_id, secret, client.redirect_uris[0])
    j.secrets.append(secret)
    params = rp.sign_in(j.person.email, NEW_PASSWORD, scope="openid profile email offline_access")
    first = rp.token(params["code"])
    assert first.status_code == 200, first.get_json()
    replay = rp.token(params["code"])
    assert replay.status_code == 400, replay.get_json()
    params2 = rp.sign_in(j.person.email, NEW_PASSWORD, scope="openid profile email offline_access")
    second = rp.token(params2["code"]).get_json()
    revoked = browser.post("/revoke", data={"token": second["refresh_token"], "token_type_hint": "refresh_token"},
                           headers={"Authorization": _basic(rp)})
    assert revoked.status_code == 200, revoked.get_data(as_text=True)
    for body in (first.get_json(), second):
        j.secrets += [body["access_token"], body["refresh_token"], body["id_token"]]
    j.secrets += [params["code"], params2["code"], rp.verifier]

    # A client registered in the developer portal, then disabled by an operator.
    page = browser.get("/developer/apps/new")
    created = browser.post("/developer/apps/new", data={
        "csrf_token": csrf_token(page.get_data(as_text=True)), "kind": "web", "client_name": unique("Audited app"),
        "redirect_uris": "https://audited.example/cb", "post_logout_redirect_uris": ""})
    assert created.status_code == 201, created.get_data(as_text=True)[:500]
    body = created.get_data(as_text=True)
    j.portal_client_id = PORTAL_CLIENT_ID.search(body).group(1)
    j.secrets.append(PORTAL_SECRET.search(body).group(1))
    result = app.test_cli_runner().invoke(args=["clients", "disable", j.portal_client_id])
    assert result.exit_code == 0, result.output

    session.close()
    return j


def _basic(rp: RP) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{rp.client_id}:{rp.client_secret}".encode()).decode()


@pytest.fixture
def events(db):
    """events(name, **where) -> the rows of that event matching the columns, oldest first."""

    def find(name, **where):
        db.expire_all()
        statement = select(AuditEvent).where(AuditEvent.event == name).order_by(AuditEvent.id)
        for column, value in where.items():
            statement = statement.where(getattr(AuditEvent, column) == value)
        return list(db.execute(statement).scalars())

    return find


def _one(rows, what):
    assert rows, f"no {what} event was written"
    return rows[-1]


def _from_journey(row, journey):
    problems = []
    if row.ip != journey.ip:
        problems.append(f"ip={row.ip!r}, expected {journey.ip}")
    if row.user_agent != USER_AGENT:
        problems.append(f"user_agent={row.user_agent!r}")
    return problems


def test_login_success_and_failure(journey, events):
    ok = _one(events("identity.login_succeeded", subject_id=journey.person.id), "login_succeeded")
    assert ok.actor == journey.person.id and not _from_journey(ok, journey), ok.as_dict()
    failed = [r for r in events("identity.login_failed") if r.ip == journey.ip and
              r.details.get("email") == journey.person.email_normalized]
    row = _one(failed, "login_failed")
    assert row.reason == "invalid_credentials" and not _from_journey(row, journey), row.as_dict()
    # The person concerned is known: `idp audit list --subject` must find the failure.
    assert row.subject_id == journey.person.id, f"a failed sign-in of a known identity has no subject: {row.as_dict()}"


def test_lock(journey, events):
    rows = [r for r in events("identity.locked") if r.ip == journey.ip]
    row = _one(rows, "identity.locked")
    assert not _from_journey(row, journey), row.as_dict()
    assert row.subject_id == journey.locked.id, f"a lock of a known identity has no subject: {row.as_dict()}"


def test_second_factor_verified_failed_and_recovery(journey, events):
    failed = _one(events("second_factor.failed", subject_id=journey.enrolled.id), "second_factor.failed")
    assert failed.reason == "wrong_code" and not _from_journey(failed, journey), failed.as_dict()
    verified = _one(events("second_factor.verified", subject_id=journey.enrolled.id), "second_factor.verified")
    assert verified.actor == journey.enrolled.id and not _from_journey(verified, journey), verified.as_dict()
    used = _one(events("second_factor.recovery_code_used", subject_id=journey.recovering.id), "recovery_code_used")
    assert not _from_journey(used, journey), used.as_dict()
    assert _one(events("identity.login_succeeded", subject_id=journey.enrolled.id), "mfa login").details["amr"] == \
        ["pwd", "otp", "mfa"]


def test_password_changed(journey, events):
    row = _one(events("identity.password_changed", subject_id=journey.person.id), "password_changed")
    assert not _from_journey(row, journey), row.as_dict()
    assert row.actor == journey.person.id, row.as_dict()


def test_grant_given(journey, events):
    row = _one(events("grant.given", subject_id=journey.person.id, client_id=journey.rp.client_id), "grant.given")
    assert row.actor == journey.person.id
    assert not _from_journey(row, journey), f"grant.given lacks the request's origin: {row.as_dict()}"


def test_tokens_issued_reused_and_revoked(journey, events):
    issued = events("token.issued", client_id=journey.rp.client_id)
    assert len(issued) == 2, [r.as_dict() for r in issued]
    for row in issued:
        assert row.subject_id == journey.person.id and row.actor == f"client:{journey.rp.client_id}"
        assert row.reason == "authorization_code" and not _from_journey(row, journey), row.as_dict()
    reuse = _one(events("token.reuse_detected", client_id=journey.rp.client_id), "token.reuse_detected")
    assert reuse.subject_id == journey.person.id and reuse.reason == "code_reuse", reuse.as_dict()
    assert not _from_journey(reuse, journey), reuse.as_dict()
    revoked = _one(events("token.revoked", client_id=journey.rp.client_id), "token.revoked")
    assert revoked.subject_id == journey.person.id and revoked.reason == "revoked_by_client", revoked.as_dict()
    assert not _from_journey(revoked, journey), revoked.as_dict()


def test_client_registered_and_disabled(journey, events):
    registered = _one(events("client.registered", client_id=journey.portal_client_id), "client.registered")
    assert registered.actor == journey.person.id, registered.as_dict()
    assert not _from_journey(registered, journey), f"client.registered lacks the request's origin: " \
                                                   f"{registered.as_dict()}"
    disabled = _one(events("client.disabled", client_id=journey.portal_client_id), "client.disabled")
    assert disabled.actor == "operator", f"an operator's CLI action must say so: {disabled.as_dict()}"


def test_no_event_carries_a_secret(journey, db):
    db.expire_all()
    rows = [json.dumps(r.as_dict()) for r in db.execute(select(AuditEvent)).scalars()]
    assert len(rows) >= 15
    secrets = [s for s in journey.secrets if s and len(s) >= 6]
    leaks = [(secret[:12] + "...", row[:200]) for row in rows for secret in secrets if _carries(row, secret)]
    assert not leaks, leaks


def _carries(row: str, secret: str) -> bool:
    """Whether ``row`` holds ``secret``. A short one (a six-digit TOTP code) only as a word of its own: as part
    of a random hex id ("...596499533c04..." holds "649953") it is a coincidence, seen once in CI."""
    if len(secret) >= 12:
        return secret in row or secret.lower() in row.lower()
    return re.search(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])", row, re.IGNORECASE) is not None


def test_cli_export_prints_json_lines_that_filter(journey, app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["audit", "export", "--subject", journey.person.id])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert lines and all(line["subject"] == journey.person.id for line in lines)
    assert [line["id"] for line in lines] == sorted(line["id"] for line in lines), "export is oldest first"
    names = {line["event"] for line in lines}
    assert {"identity.login_succeeded", "identity.password_changed", "grant.given", "token.issued",
            "token.reuse_detected", "token.revoked"} <= names, names
    assert {"id", "occurred_at", "event", "actor", "subject", "client_id", "ip", "user_agent", "reason",
            "details"} <= set(lines[0])

    result = runner.invoke(args=["audit", "export", "--event", "token.issued", "--subject", journey.person.id])
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert len(lines) == 2 and {line["event"] for line in lines} == {"token.issued"}

    listed = runner.invoke(args=["audit", "list", "--event", "client.disabled", "--limit", "5"])
    assert listed.exit_code == 0 and journey.portal_client_id in listed.output

    bad = runner.invoke(args=["audit", "export", "--since", "yesterday-ish"])
    assert bad.exit_code != 0 and "ISO" in bad.output
