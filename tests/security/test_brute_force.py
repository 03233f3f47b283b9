"""Brute force on the sign-in (issue 10, Security): passwords, TOTP and recovery codes.

NIST SP 800-63B §5.2.2: failed attempts are counted per account (the normalised
e-mail) and per client IP; from the 5th failure each attempt waits a growing
delay, the 10th locks the account for the rest of the 15-minute window, well
before 100. An unknown e-mail is throttled exactly like a known one, answers
with the same statuses and words, and costs one argon2 verification too (a spy
on the hasher, not a stopwatch). TOTP and recovery codes share one budget of 5
attempts per 5 minutes.

The delays are checked with a fake clock in idp.policies.throttle, so nothing
sleeps; each test uses a client IP of its own.
"""

from __future__ import annotations

import re

import pytest

from idp.identities import service as identities
from idp.identities import totp as totp_module
from idp.policies import throttle
from tests.helpers.factories import PASSWORD, unique
from tests.helpers.oidc import csrf_token, path_of
from tests.protocol.test_two_step import enrol_directly
from tests.security.conftest import page_error

WRONG = "Definitely-Not-The-Password-42"
WRONG_PASSWORD_TEXT = "The e-mail address or the password is not correct."
WAIT = re.compile(r"Wait (\d+) seconds")
LOCKED_TEXT = "paused for 15 minutes"


class Browser:
    """One browser at one IP, on the standalone /login form."""

    def __init__(self, app, ip: str):
        self.client = app.test_client()
        self.client.environ_base["REMOTE_ADDR"] = ip
        page = self.client.get("/login")
        assert page.status_code == 200
        self.csrf = csrf_token(page.get_data(as_text=True))

    def login(self, email: str, password: str = WRONG):
        return self.client.post("/login", data={"csrf_token": self.csrf, "email": email, "password": password,
                                                "action": "login"})

    def attempt(self, email: str, password: str = WRONG) -> tuple[int, str | None]:
        response = self.login(email, password)
        return response.status_code, page_error(response)


def attack(browser: Browser, email: str, clock) -> list[tuple[int, str | None]]:
    """Wrong passwords until locked, waiting out every delay the IdP asks for.

    Returns the whole transcript of (status, error text)."""
    transcript = []
    for _ in range(100):
        status, text = browser.attempt(email)
        transcript.append((status, text))
        if status == 429 and LOCKED_TEXT in (text or ""):
            return transcript
        if status == 429:
            clock.advance(int(WAIT.search(text).group(1)))
        else:
            assert (status, text) == (401, WRONG_PASSWORD_TEXT), (status, text)
    raise AssertionError(f"no lock after 100 attempts: {transcript[-5:]}")


def failures_and_delays(transcript) -> tuple[int, list[int]]:
    failures = sum(1 for status, _ in transcript if status == 401)
    delays = [int(WAIT.search(text).group(1)) for status, text in transcript
              if status == 429 and WAIT.search(text or "")]
    return failures, delays


@pytest.fixture
def throttle_clock(clock):
    return clock.patch(throttle)


def test_growing_delays_then_a_lock_well_before_100_failures(app, factory, fresh_ip, throttle_clock):
    identity = factory.identity()
    browser = Browser(app, fresh_ip)
    transcript = attack(browser, identity.email, throttle_clock)
    failures, delays = failures_and_delays(transcript)

    # The first failures are free: no 429 before the 4th one.
    assert [status for status, _ in transcript[:throttle.FREE_FAILURES]] == [401] * throttle.FREE_FAILURES
    assert transcript[throttle.FREE_FAILURES][0] == 429, "the 5th attempt must wait"
    # Each delay is longer than the one before, then the account locks.
    assert len(delays) >= 3, delays
    assert all(later > earlier for earlier, later in zip(delays, delays[1:])), delays
    assert failures <= 10, f"locked only after {failures} failures"

    # Locked: even the right password is refused, with when and what to do instead.
    locked = browser.login(identity.email, PASSWORD)
    assert locked.status_code == 429
    text = page_error(locked)
    assert LOCKED_TEXT in text and "reset your password" in text, text
    assert 'href="/account/password/forgot"' in locked.get_data(as_text=True), "the locked page offers no reset link"

    # The lock is per account, not per browser: the same address from another IP is locked too.
    elsewhere = Browser(app, fresh_ip.replace("10.", "11.", 1))
    assert elsewhere.login(identity.email, PASSWORD).status_code == 429
    # Another account is unaffected.
    other = factory.identity()
    assert elsewhere.login(other.email, PASSWORD).status_code == 302


def test_the_lock_ends_with_the_window(app, factory, fresh_ip, throttle_clock, runtime):
    identity = factory.identity()
    browser = Browser(app, fresh_ip)
    attack(browser, identity.email, throttle_clock)
    assert browser.login(identity.email, PASSWORD).status_code == 429
    # The window's end is the store's TTL; emulate it by dropping the counters the TTL would drop.
    account = identities.normalize_email(identity.email)
    runtime.store.delete("login_failures", account)
    runtime.store.delete("login_last_failure", account)
    assert browser.login(identity.email, PASSWORD).status_code == 302


def test_unknown_email_is_throttled_like_a_known_one_and_looks_the_same(app, factory, fresh_ip, throttle_clock):
    identity = factory.identity()
    start = throttle_clock.now
    known = attack(Browser(app, fresh_ip), identity.email, throttle_clock)
    throttle_clock.now = start  # the same clock for both runs: the same waits
    unknown = attack(Browser(app, fresh_ip.replace("10.", "12.", 1)), f"{unique('nobody')}@example.com",
                     throttle_clock)
    assert unknown == known


def test_unknown_email_and_wrong_password_answer_identically(app, factory, fresh_ip):
    identity = factory.identity()
    nobody = f"{unique('nobody')}@example.com"
    browser = Browser(app, fresh_ip)
    wrong = browser.login(identity.email)
    missing = browser.login(nobody)
    assert wrong.status_code == missing.status_code == 401

    def normalised(response, email):
        body = response.get_data(as_text=True).replace(email, "EMAIL")
        return re.sub(r'name="csrf_token" value="[^"]+"', "", body)

    assert normalised(wrong, identity.email) == normalised(missing, nobody)
    assert {k for k in wrong.headers.keys() if k not in ("X-Request-ID", "Content-Length")} == \
        {k for k in missing.headers.keys() if k not in ("X-Request-ID", "Content-Length")}


class SpyContext:
    """Wraps the passlib CryptContext of the PasswordHasher and records each hash it verifies against."""

    def __init__(self, context):
        self._context = context
        self.calls: list[tuple[str, str]] = []

    def verify(self, secret, stored, *args, **kwargs):
        self.calls.append(("verify", stored))
        return self._context.verify(secret, stored, *args, **kwargs)

    def verify_and_update(self, secret, stored, *args, **kwargs):
        self.calls.append(("verify_and_update", stored))
        return self._context.verify_and_update(secret, stored, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._context, name)


def _argon2_parameters(stored: str) -> str:
    # $argon2id$v=19$m=...,t=...,p=...$salt$hash
    parts = stored.split("$")
    assert parts[1] == "argon2id", stored
    return "$".join(parts[1:4])


def test_unknown_email_costs_one_full_hash_like_a_known_one(app, factory, runtime, db, fresh_ip, monkeypatch):
    identity = factory.identity()
    spy = SpyContext(runtime.passwords._context)
    monkeypatch.setattr(runtime.passwords, "_context", spy)
    browser = Browser(app, fresh_ip)

    assert browser.login(identity.email).status_code == 401
    known_calls, spy.calls = spy.calls, []
    assert browser.login(f"{unique('nobody')}@example.com").status_code == 401
    unknown_calls = spy.calls

    assert len(known_calls) == 1, known_calls
    assert len(unknown_calls) == 1, "an unknown e-mail must cost one argon2 verification, like a known one"
    db.refresh(identity)
    assert known_calls[0][1] == identity.password_hash
    assert unknown_calls[0][1] == runtime.passwords._dummy
    # The dummy hash has the very parameters of real ones: the same work.
    assert _argon2_parameters(unknown_calls[0][1]) == _argon2_parameters(identity.password_hash)


def test_per_ip_lock_across_many_accounts(limited_app, factory, fresh_ip):
    limit = limited_app.extensions["idp"].settings.login_ip_lock_after
    identity = factory.identity()
    browser = Browser(limited_app, fresh_ip)
    for n in range(limit):
        # A different address each time: no account reaches its own delay.
        status, text = browser.attempt(f"{unique('spray')}-{n}@example.com")
        assert status == 401, (n, status, text)
    status, text = browser.attempt(identity.email, PASSWORD)
    assert status == 429 and LOCKED_TEXT in text, (status, text)
    assert browser.attempt(f"{unique('spray')}@example.com")[0] == 429
    # Only that IP: the person signs in from elsewhere.
    assert Browser(limited_app, fresh_ip.replace("10.", "13.", 1)).login(identity.email, PASSWORD).status_code == 302


def test_a_success_resets_the_account_count(app, factory, fresh_ip, throttle_clock):
    identity = factory.identity()
    browser = Browser(app, fresh_ip)
    for _ in range(throttle.FREE_FAILURES):
        assert browser.attempt(identity.email)[0] == 401
    # Even the right password waits its turn...
    status, text = browser.attempt(identity.email, PASSWORD)
    assert status == 429 and WAIT.search(text), (status, text)
    throttle_clock.advance(int(WAIT.search(text).group(1)))
    # ...then signs in, and the count starts again from zero.
    response = browser.login(identity.email, PASSWORD)
    assert response.status_code == 302 and path_of(response.location) == "/account/", response.location
    fresh = Browser(app, fresh_ip)
    for n in range(throttle.FREE_FAILURES):
        assert fresh.attempt(identity.email) == (401, WRONG_PASSWORD_TEXT), n
    status, text = fresh.attempt(identity.email)
    assert status == 429 and int(WAIT.search(text).group(1)) <= 3, (status, text)  # the first delay again


def test_a_success_after_a_single_failure_resets_the_count_too(app, factory, fresh_ip, throttle_clock):
    identity = factory.identity()
    browser = Browser(app, fresh_ip)
    assert browser.attempt(identity.email)[0] == 401
    assert browser.login(identity.email, PASSWORD).status_code == 302
    fresh = Browser(app, fresh_ip)
    for n in range(throttle.FREE_FAILURES):
        assert fresh.attempt(identity.email) == (401, WRONG_PASSWORD_TEXT), n


def test_a_success_at_the_first_try_leaves_the_counters_alone(app, factory, fresh_ip, monkeypatch):
    # Nothing to clear: no write (on SQLite two commits, on Redis two round trips) on the common path.
    identity = factory.identity()
    browser = Browser(app, fresh_ip)
    store = app.extensions["idp"].store
    deleted, real_delete = [], store.delete
    monkeypatch.setattr(store, "delete", lambda kind, ident: (deleted.append(kind), real_delete(kind, ident))[1])
    response = browser.login(identity.email, PASSWORD)
    assert response.status_code == 302 and path_of(response.location) == "/account/", response.location
    assert not {throttle._FAILURES, throttle._LAST} & set(deleted), deleted


# -- second factor ------------------------------------------------------------------------------------------


def _second_step_browser(app, identity, ip):
    browser = Browser(app, ip)
    response = browser.login(identity.email, PASSWORD)
    assert response.status_code == 302 and path_of(response.location) == "/login/second-step", response.location
    page = browser.client.get("/login/second-step")
    assert page.status_code == 200
    return browser, csrf_token(page.get_data(as_text=True))


def _post_code(browser, csrf, **fields):
    return browser.client.post("/login/second-step", data={"csrf_token": csrf, **fields})


def test_totp_step_locks_after_five_wrong_codes(app, factory, runtime, db, fresh_ip):
    identity = factory.identity()
    phone, _codes = enrol_directly(runtime, db, identity)
    browser, csrf = _second_step_browser(app, identity, fresh_ip)
    for n in range(totp_module.MAX_ATTEMPTS):
        response = _post_code(browser, csrf, code=phone.wrong_code())
        assert response.status_code == 400, (n, response.status_code)
    locked = _post_code(browser, csrf, code=phone.code())
    assert locked.status_code == 429
    assert "Wait 5 minutes" in page_error(locked)
    assert browser.client.get("/account/").status_code == 302, "a locked step must not sign in"


def test_recovery_code_attempts_count_against_the_same_budget(app, factory, runtime, db, fresh_ip):
    identity = factory.identity()
    phone, codes = enrol_directly(runtime, db, identity)
    browser, csrf = _second_step_browser(app, identity, fresh_ip)
    for _ in range(3):
        assert _post_code(browser, csrf, code=phone.wrong_code()).status_code == 400
    for _ in range(2):
        assert _post_code(browser, csrf, recovery_code="aaaaa-bbbbb").status_code == 400
    locked = _post_code(browser, csrf, recovery_code=codes[0])
    assert locked.status_code == 429, locked.status_code
    assert browser.client.get("/account/").status_code == 302
    # The right recovery code was not spent by the refused attempt.
    assert totp_module.unused_recovery_codes(db, identity.id) == len(codes)


def test_recovery_codes_alone_are_throttled(app, factory, runtime, db, fresh_ip):
    identity = factory.identity()
    phone, codes = enrol_directly(runtime, db, identity)
    browser, csrf = _second_step_browser(app, identity, fresh_ip)
    for _ in range(totp_module.MAX_ATTEMPTS):
        assert _post_code(browser, csrf, recovery_code="zzzzz-zzzzz").status_code == 400
    assert _post_code(browser, csrf, code=phone.code()).status_code == 429
