"""Two-step verification (issue 4, TOTP part): enrolment, the second sign-in step,
recovery codes, replay, throttling, disable / re-enrol and the seed at rest.

Codes come from pyotp with real time steps. The IdP accepts a code once per
(identity, time step), so ``Authenticator`` hands out codes for steps this test
has not used yet: the current step, the next one, then the previous one (only
while it will still be in the ±1 window when the request arrives).
"""

from __future__ import annotations

import html
import re
import time
from urllib.parse import urlencode

import pyotp
import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import select

from idp.identities.models import RecoveryCode, SecondFactor
from idp.identities.totp import InvalidTotpError, Totp, TotpReplayError
from idp.storage.db import Database
from idp.storage.ephemeral import make_store
from tests.helpers.factories import PASSWORD
from tests.helpers.oidc import csrf_token, path_of

STEP = 30
SECRET_RE = re.compile(r'id="totp-secret"[^>]*>([^<]+)<')
RECOVERY_RE = re.compile(r"<li><code>([^<]+)</code></li>")
LOCKED_TEXT = "Too many attempts"


# -- helpers (also used by test_stepup.py and tests/e2e/test_browser_two_step.py) --

class Authenticator:
    """A phone app for one identity: codes for time steps not used yet in this test."""

    def __init__(self, secret: str, used: set[int] | None = None):
        self.secret = secret
        self.totp = pyotp.TOTP(secret)
        #: Shared between authenticators of one identity: the IdP's replay
        #: cache is keyed by (identity, step), not by seed.
        self.used = used if used is not None else set()

    def replaced(self, secret: str) -> "Authenticator":
        return Authenticator(secret, self.used)

    def at_step(self, step: int) -> str:
        return self.totp.at(step * STEP)

    def code(self, spaced: bool = False) -> str:
        now = time.time()
        current = int(now // STEP)
        candidates = [current, current + 1]
        if now % STEP < STEP - 5:  # the previous step is still in the window when the request lands
            candidates.append(current - 1)
        for step in candidates:
            if step not in self.used:
                self.used.add(step)
                code = self.at_step(step)
                return f"{code[:3]} {code[3:]}" if spaced else code
        time.sleep(STEP - now % STEP + 0.1)  # all three used: wait for a new step
        return self.code(spaced)

    def peek(self) -> str:
        """The current step's code without marking it used (for attempts that must fail before any code check)."""
        return self.at_step(int(time.time() // STEP))

    def wrong_code(self) -> str:
        """Six digits that match none of the steps in the window (nor two either side)."""
        current = int(time.time() // STEP)
        valid = {self.at_step(s) for s in range(current - 3, current + 4)}
        candidate = 0
        while f"{candidate:06d}" in valid:
            candidate += 1
        return f"{candidate:06d}"


def post_form(browser, path: str, **fields):
    page = browser.get(path)
    assert page.status_code == 200, (path, page.status_code, page.location)
    return browser.post(path, data={"csrf_token": csrf_token(page.get_data(as_text=True)), **fields})


def password_step(browser, email: str, password: str = PASSWORD, next_path: str | None = None):
    path = "/login" + ("?" + urlencode({"next": next_path}) if next_path else "")
    return post_form(browser, path, email=email, password=password, action="login")


def sign_in_password_only(browser, email: str):
    """A password-only session (the identity must have no authenticator yet)."""
    response = password_step(browser, email)
    assert response.status_code == 302 and path_of(response.location) == "/account/", response.location
    return response


def second_step(browser, code: str = "", recovery_code: str = ""):
    fields = {"recovery_code": recovery_code} if recovery_code else {"code": code}
    return post_form(browser, "/login/second-step", **fields)


def start_enrolment(browser, return_to: str | None = None) -> tuple[str, str]:
    """Open the enrolment page; returns (secret, page html)."""
    path = "/account/two-step/enrol" + (f"?return_to={return_to}" if return_to else "")
    page = browser.get(path)
    assert page.status_code == 200, (page.status_code, page.location)
    body = page.get_data(as_text=True)
    match = SECRET_RE.search(body)
    assert match, "enrolment page shows no secret"
    return html.unescape(match.group(1)).strip(), body


def confirm_enrolment(browser, code: str, return_to: str | None = None):
    path = "/account/two-step/enrol" + (f"?return_to={return_to}" if return_to else "")
    page = browser.get(path)
    return browser.post(path, data={"csrf_token": csrf_token(page.get_data(as_text=True)), "step": "confirm",
                                    "code": code})


def enrol_via_pages(browser, used: set[int] | None = None) -> tuple[Authenticator, list[str]]:
    """Signed in already: enrol through the account pages; returns the app and the recovery codes."""
    secret, _ = start_enrolment(browser)
    app = Authenticator(secret, used)
    response = confirm_enrolment(browser, app.code())
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    codes = RECOVERY_RE.findall(response.get_data(as_text=True))
    assert len(codes) == 10, codes
    return app, codes


def enrol_directly(runtime, db, identity) -> tuple[Authenticator, list[str]]:
    """Give the identity an authenticator through the service (no time step used)."""
    secret = pyotp.random_base32()
    codes = runtime.totp.enrol(db, identity.id, secret)
    return Authenticator(secret), codes


def enrolled(db, identity) -> bool:
    db.expire_all()
    return db.execute(select(SecondFactor).where(SecondFactor.identity_id == identity.id)).scalar_one_or_none() \
        is not None


def signed_in(browser) -> bool:
    response = browser.get("/account/")
    return response.status_code == 200


def recovery_rows(db, identity) -> list[RecoveryCode]:
    db.expire_all()
    return list(db.execute(select(RecoveryCode).where(RecoveryCode.identity_id == identity.id)).scalars())


# -- enrolment ----------------------------------------------------------------------

def test_account_page_offers_set_up_when_off(client, factory):
    identity = factory.identity()
    sign_in_password_only(client, identity.email)
    body = client.get("/account/").get_data(as_text=True)
    assert identity.email in body
    assert 'id="two-step-enrol"' in body
    assert 'href="/account/two-step/enrol"' in body


def test_account_pages_need_a_sign_in(client):
    for path in ("/account/", "/account/two-step/enrol", "/account/two-step/disable"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert path_of(response.location).startswith("/login?next="), response.location


def test_enrol_page_has_inline_svg_qr_and_secret_text(client, factory):
    identity = factory.identity()
    sign_in_password_only(client, identity.email)
    secret, body = start_enrolment(client)
    assert re.fullmatch(r"[A-Z2-7]{16,}", secret), secret
    qr = body[body.index('id="totp-qr"'):]
    qr = qr[:qr.index("</div>")]
    assert "<svg" in qr and "</svg>" in qr
    # Rendered here: no image fetched from anywhere, no external QR service.
    assert "<img" not in body
    assert not re.search(r'src="(https?:)?//', body), "the page loads something from another site"
    # The same secret is shown again on reload until it is confirmed.
    assert start_enrolment(client)[0] == secret


def test_enrolment_needs_a_valid_first_code(client, factory, db):
    identity = factory.identity()
    sign_in_password_only(client, identity.email)
    secret, _ = start_enrolment(client)
    app = Authenticator(secret)
    response = confirm_enrolment(client, app.wrong_code())
    assert response.status_code == 400
    assert 'id="totp-error"' in response.get_data(as_text=True)
    assert not enrolled(db, identity)
    response = confirm_enrolment(client, app.code())
    assert response.status_code == 200
    assert enrolled(db, identity)


def test_enrolment_shows_ten_recovery_codes_once_and_stores_them_hashed(client, factory, db):
    identity = factory.identity()
    sign_in_password_only(client, identity.email)
    _app, codes = enrol_via_pages(client)
    assert len(set(codes)) == 10

    rows = recovery_rows(db, identity)
    assert len(rows) == 10
    assert all(row.used_at is None for row in rows)
    stored = " ".join(row.code_hash for row in rows).lower()
    for code in codes:
        for form in (code, code.replace("-", ""), code.upper()):
            assert form.lower() not in stored, "a recovery code is stored in plaintext"

    # Shown once: the account page counts them but never shows them again.
    overview = client.get("/account/").get_data(as_text=True)
    assert "10 unused recovery codes" in overview
    again = client.get("/account/two-step/enrol").get_data(as_text=True)
    for page in (overview, again):
        assert not any(code in page for code in codes)


def test_enrolment_code_cannot_be_replayed_at_login(client, app, factory):
    identity = factory.identity()
    sign_in_password_only(client, identity.email)
    secret, _ = start_enrolment(client)
    code = pyotp.TOTP(secret).now()
    assert confirm_enrolment(client, code).status_code == 200

    other = app.test_client()
    assert path_of(password_step(other, identity.email).location) == "/login/second-step"
    response = second_step(other, code)
    assert response.status_code == 400
    assert "already been used" in response.get_data(as_text=True)
    assert not signed_in(other)


# -- signing in with two steps ------------------------------------------------------

def test_login_with_password_then_code(client, app, factory, runtime, db):
    identity = factory.identity()
    phone, _ = enrol_directly(runtime, db, identity)

    response = password_step(client, identity.email)
    assert response.status_code == 302
    assert path_of(response.location) == "/login/second-step"
    # Between the steps nobody is signed in.
    assert not signed_in(client)
    page = client.get("/login/second-step")
    assert page.status_code == 200
    assert 'autocomplete="one-time-code"' in page.get_data(as_text=True)

    response = second_step(client, phone.code())
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    assert path_of(response.location) == "/account/"
    assert signed_in(client)


def test_code_with_a_space_is_accepted(client, factory, runtime, db):
    identity = factory.identity()
    phone, _ = enrol_directly(runtime, db, identity)
    password_step(client, identity.email)
    code = phone.code(spaced=True)
    assert re.fullmatch(r"\d{3} \d{3}", code)
    response = second_step(client, code)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    assert signed_in(client)


def test_wrong_code_is_refused_and_the_step_can_be_retried(client, factory, runtime, db):
    identity = factory.identity()
    phone, _ = enrol_directly(runtime, db, identity)
    password_step(client, identity.email)
    response = second_step(client, phone.wrong_code())
    assert response.status_code == 400
    assert "not right" in response.get_data(as_text=True)
    assert not signed_in(client)
    response = second_step(client, phone.code())
    assert response.status_code == 302
    assert signed_in(client)


def test_wrong_password_never_reaches_the_second_step(client, factory, runtime, db):
    identity = factory.identity()
    enrol_directly(runtime, db, identity)
    response = password_step(client, identity.email, PASSWORD + "x")
    assert response.status_code == 401
    assert client.get("/login/second-step").status_code == 400


def test_second_step_without_password_step_is_refused(client):
    assert client.get("/login/second-step").status_code == 400
    page = client.get("/login")
    response = client.post("/login/second-step", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                                       "code": "123456"})
    assert response.status_code == 400
    assert not signed_in(client)


def test_window_is_one_step_either_side(runtime, factory):
    identity = factory.identity()
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    now = (int(time.time() // STEP) + 1000) * STEP + 10.0  # a step this test alone uses
    for offset in (-2, 2):
        with pytest.raises(InvalidTotpError):
            runtime.totp.check_code(secret, identity.id, totp.at(now + offset * STEP), now=now)
    for offset in (-1, 0, 1):
        runtime.totp.check_code(secret, identity.id, totp.at(now + offset * STEP), now=now)
    for bad in ("12345", "1234567", "abcdef", ""):
        with pytest.raises(InvalidTotpError):
            runtime.totp.check_code(secret, identity.id, bad, now=now)


def test_login_code_cannot_be_used_twice(app, factory, runtime, db):
    identity = factory.identity()
    phone, _ = enrol_directly(runtime, db, identity)
    code = phone.code()
    first, second = app.test_client(), app.test_client()
    password_step(first, identity.email)
    password_step(second, identity.email)
    assert second_step(first, code).status_code == 302
    response = second_step(second, code)
    assert response.status_code == 400
    assert "already been used" in response.get_data(as_text=True)
    assert not signed_in(second)


def test_replay_is_refused_by_a_second_process_sharing_the_store(runtime, settings, factory):
    """Two Totp instances over separate connections to the same backend (Redis when configured)."""
    identity = factory.identity()
    secret = pyotp.random_base32()
    code = pyotp.TOTP(secret).now()
    database = Database(settings.database_url)
    try:
        other = Totp(runtime.totp.cipher, make_store(database, settings.redis_url, settings.redis_prefix))
        runtime.totp.check_code(secret, identity.id, code)
        with pytest.raises(TotpReplayError):
            other.check_code(secret, identity.id, code)
        with pytest.raises(TotpReplayError):
            runtime.totp.check_code(secret, identity.id, code)
    finally:
        database.dispose()


def test_recovery_code_signs_in_once(app, factory, runtime, db):
    identity = factory.identity()
    _phone, codes = enrol_directly(runtime, db, identity)
    first = app.test_client()
    password_step(first, identity.email)
    response = second_step(first, recovery_code=codes[3])
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    assert signed_in(first)
    assert sum(row.used_at is not None for row in recovery_rows(db, identity)) == 1
    assert "9 unused recovery codes" in first.get("/account/").get_data(as_text=True)

    second = app.test_client()
    password_step(second, identity.email)
    response = second_step(second, recovery_code=codes[3])
    assert response.status_code == 400
    assert not signed_in(second)
    # Another, unused code still works.
    assert second_step(second, recovery_code=codes[4]).status_code == 302


def test_wrong_recovery_code_is_refused(client, factory, runtime, db):
    identity = factory.identity()
    _phone, codes = enrol_directly(runtime, db, identity)
    _other_phone, other_codes = enrol_directly(runtime, db, factory.identity())
    password_step(client, identity.email)
    assert second_step(client, recovery_code="abcde-fghjk").status_code == 400
    assert second_step(client, recovery_code=other_codes[0]).status_code == 400  # someone else's
    assert not signed_in(client)
    assert second_step(client, recovery_code=codes[0].upper()).status_code == 302  # case does not matter


# -- throttling ---------------------------------------------------------------------

def test_five_wrong_codes_lock_the_step_even_for_a_right_code(app, client, factory, runtime, db):
    identity = factory.identity()
    phone, codes = enrol_directly(runtime, db, identity)
    password_step(client, identity.email)
    for _ in range(5):
        response = second_step(client, phone.wrong_code())
        assert response.status_code == 400
    response = second_step(client, phone.code())
    assert response.status_code == 429
    body = response.get_data(as_text=True)
    assert LOCKED_TEXT in body and "5 minutes" in body
    assert not signed_in(client)
    # A recovery code is refused too while locked.
    assert second_step(client, recovery_code=codes[0]).status_code == 429

    # The lock is per identity, not per browser session ...
    fresh = app.test_client()
    password_step(fresh, identity.email)
    response = second_step(fresh, phone.code())
    assert response.status_code == 429
    assert not signed_in(fresh)

    # ... and other people are not affected.
    someone = factory.identity()
    their_phone, _ = enrol_directly(runtime, db, someone)
    third = app.test_client()
    password_step(third, someone.email)
    assert second_step(third, their_phone.code()).status_code == 302


def test_wrong_recovery_codes_count_towards_the_lock(client, factory, runtime, db):
    identity = factory.identity()
    phone, codes = enrol_directly(runtime, db, identity)
    password_step(client, identity.email)
    for i in range(5):
        bad = f"zzzzz-{i:05d}"
        assert second_step(client, recovery_code=bad).status_code == 400
    assert second_step(client, recovery_code=codes[0]).status_code == 429
    assert not signed_in(client)


# -- disable and re-enrol -------------------------------------------------------------

def test_disable_needs_password_and_a_current_code(client, factory, runtime, db):
    identity = factory.identity()
    sign_in_password_only(client, identity.email)
    phone, _codes = enrol_directly(runtime, db, identity)
    assert 'id="two-step-disable"' in client.get("/account/").get_data(as_text=True)

    page = client.get("/account/two-step/disable")
    assert page.status_code == 200
    assert 'id="password"' in page.get_data(as_text=True)
    # Wrong password, right code.
    response = post_form(client, "/account/two-step/disable", step="reauth", password=PASSWORD + "x",
                         code=phone.peek())
    assert response.status_code == 400
    assert enrolled(db, identity)
    # Right password, wrong code.
    response = post_form(client, "/account/two-step/disable", step="reauth", password=PASSWORD,
                         code=phone.wrong_code())
    assert response.status_code == 400
    assert enrolled(db, identity)
    # No code at all.
    response = post_form(client, "/account/two-step/disable", step="reauth", password=PASSWORD, code="")
    assert response.status_code == 400
    assert enrolled(db, identity)
    # Both right.
    response = post_form(client, "/account/two-step/disable", step="reauth", password=PASSWORD,
                         code=phone.code())
    assert response.status_code == 302
    assert not enrolled(db, identity)
    assert recovery_rows(db, identity) == []
    assert 'id="two-step-enrol"' in client.get("/account/").get_data(as_text=True)

    # Signing in is one step again.
    other = client.application.test_client()
    assert path_of(password_step(other, identity.email).location) == "/account/"


def test_re_enrol_needs_password_and_a_current_code(client, factory, runtime, db):
    identity = factory.identity()
    sign_in_password_only(client, identity.email)
    old_phone, old_codes = enrol_directly(runtime, db, identity)
    old_secret = old_phone.secret

    page = client.get("/account/two-step/enrol")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert 'id="totp-secret"' not in body and 'id="password"' in body
    # Posting a "confirm" without re-authenticating changes nothing.
    response = client.post("/account/two-step/enrol",
                           data={"csrf_token": csrf_token(body), "step": "confirm", "code": old_phone.peek()})
    assert 'id="totp-secret"' not in response.get_data(as_text=True)
    # A wrong password keeps the old authenticator.
    response = post_form(client, "/account/two-step/enrol", step="reauth", password=PASSWORD + "x",
                         code=old_phone.peek())
    assert response.status_code == 400
    assert 'id="totp-secret"' not in response.get_data(as_text=True)

    response = post_form(client, "/account/two-step/enrol", step="reauth", password=PASSWORD,
                         code=old_phone.code())
    assert response.status_code == 200
    new_secret = SECRET_RE.search(response.get_data(as_text=True)).group(1).strip()
    assert new_secret != old_secret
    new_phone = old_phone.replaced(new_secret)
    # The old app's code does not confirm the new one.
    assert confirm_enrolment(client, pyotp.TOTP(old_secret).at(time.time() - 3 * STEP)).status_code == 400

    response = confirm_enrolment(client, new_phone.code())
    assert response.status_code == 200
    new_codes = RECOVERY_RE.findall(response.get_data(as_text=True))
    assert len(new_codes) == 10 and not set(new_codes) & set(old_codes)
    factor = db.execute(select(SecondFactor).where(SecondFactor.identity_id == identity.id)).scalar_one()
    assert runtime.totp.cipher.decrypt(factor.secret_encrypted, identity.id) == new_secret

    # The old recovery codes are gone; the old seed no longer signs in.
    other = client.application.test_client()
    password_step(other, identity.email)
    assert second_step(other, recovery_code=old_codes[0]).status_code == 400
    response = second_step(other, pyotp.TOTP(old_secret).now())
    assert response.status_code == 400 and "not right" in response.get_data(as_text=True)
    assert second_step(other, recovery_code=new_codes[0]).status_code == 302


def test_enrolment_page_opened_before_another_enrolment_cannot_replace_it_without_reauth(app, factory, db):
    """A session that opened the set-up page while two-step was off must not be able to
    replace the authenticator set up since, without password + current code."""
    identity = factory.identity()
    stale = app.test_client()
    sign_in_password_only(stale, identity.email)
    stale_secret, _ = start_enrolment(stale)  # set-up page opened, not confirmed

    owner = app.test_client()
    sign_in_password_only(owner, identity.email)
    phone, _codes = enrol_via_pages(owner)

    # A code of the stale page's seed, for a time step the owner has not used.
    response = confirm_enrolment(stale, phone.replaced(stale_secret).code())
    assert RECOVERY_RE.findall(response.get_data(as_text=True)) == [], "recovery codes issued without reauth"
    db.expire_all()
    factor = db.execute(select(SecondFactor).where(SecondFactor.identity_id == identity.id)).scalar_one()
    assert app.extensions["idp"].totp.cipher.decrypt(factor.secret_encrypted, identity.id) == phone.secret, \
        "the authenticator was replaced without password + current code"


# -- the seed at rest ---------------------------------------------------------------

def test_seed_is_encrypted_and_bound_to_its_identity(client, factory, runtime, db):
    identity = factory.identity()
    sign_in_password_only(client, identity.email)
    phone, _ = enrol_via_pages(client)
    factor = db.execute(select(SecondFactor).where(SecondFactor.identity_id == identity.id)).scalar_one()
    stored = factor.secret_encrypted
    assert phone.secret not in stored
    assert phone.secret.lower() not in stored.lower()
    assert phone.secret.rstrip("=")[:16] not in stored
    assert runtime.totp.cipher.decrypt(stored, identity.id) == phone.secret
    other = factory.identity()
    with pytest.raises(InvalidTag):
        runtime.totp.cipher.decrypt(stored, other.id)

    # Copying the ciphertext onto someone else's row does not give them the seed.
    runtime.totp.enrol(db, other.id, pyotp.random_base32())
    row = db.execute(select(SecondFactor).where(SecondFactor.identity_id == other.id)).scalar_one()
    row.secret_encrypted = stored
    db.commit()
    with pytest.raises(InvalidTag):
        runtime.totp.verify(db, other.id, phone.totp.now())
