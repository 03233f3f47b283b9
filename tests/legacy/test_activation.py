"""Switching to the new login with legacy credentials, and "add agreement" with them.

Each path through the real pages, with verification mail over real SMTP.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from idp.audit.models import AuditEvent
from idp.legacy_users import service as legacy_service
from idp.legacy_users.models import LegacyUser
from tests.helpers.factories import unique
from tests.helpers.oidc import csrf_token, path_of
from tests.legacy.conftest import (
    LEGACY_PASSWORD,
    NEW_PASSWORD,
    fresh,
    identity_by_email,
    link_to,
    log_in,
    mail_body,
    membership_of,
    page_form,
    prove,
    text,
)

WRONG = "The agreement number, username or password is not correct."
LOCKED = "Too many attempts. Wait 15 minutes and try again."
ALREADY = "This username has already moved to the new login."


def details(browser, email, password=NEW_PASSWORD, given_name="Kim", family_name="Larsen"):
    return page_form(browser, "/agreements/activate/details", email=email, password=password, given_name=given_name,
                     family_name=family_name)


def activate(browser, mailbox, agreement, legacy, email):
    """The whole activation: old credentials, new details, link from the mail, finish."""
    assert prove(browser, agreement, legacy.username).status_code == 302
    response = details(browser, email)
    assert response.status_code == 200 and "Check your e-mail" in text(response), text(response)[:600]
    path = link_to(mailbox.wait_for(email), "/agreements/activate/confirm/")
    response = page_form(browser, path)
    assert response.status_code == 200 and "You have switched to the new login" in text(response), text(response)[:500]
    return path


@pytest.mark.parametrize("scheme", ["md5_crypt", "sha512_crypt", "pbkdf2_sha256", "argon2", "bcrypt"])
def test_activate_verify_by_link_then_sign_in(browser, world, mailbox, db, scheme):
    if scheme == "bcrypt":
        pytest.importorskip("bcrypt", reason="bcrypt hashes need the bcrypt package")
    agreement = world.agreement()
    legacy = world.legacy(agreement, "Kim", role="superuser", email="shared@office.example", scheme=scheme)
    email = f"{unique('kim')}@example.com"
    b = browser()

    response = prove(b, agreement, "KIM ")  # usernames are case-insensitive, spaces trimmed
    assert response.status_code == 302 and path_of(response.location) == "/agreements/activate/details"
    page = b.get("/agreements/activate/details")
    assert 'value="shared@office.example"' in page.get_data(as_text=True)  # the old address, to be replaced

    response = details(b, email)
    assert response.status_code == 200 and email in text(response)
    message = mailbox.wait_for(email)
    assert message["Subject"] == "Confirm your e-mail address"
    assert agreement.name in mail_body(message)
    path = link_to(message, "/agreements/activate/confirm/")
    # Nothing durable yet: no identity until the link is followed.
    assert identity_by_email(db, email) is None
    assert fresh(db, LegacyUser, id=legacy.id)[0].activated_at is None

    # Opening the link only shows a button (mail scanners open links).
    assert b.get(path).status_code == 200
    assert b.get(path).status_code == 200
    response = page_form(b, path)
    assert response.status_code == 200 and "You have switched to the new login" in text(response)

    identity = identity_by_email(db, email)
    assert identity.email_verified and identity.given_name == "Kim" and identity.family_name == "Larsen"
    member = membership_of(db, identity.id, agreement.id)
    assert member is not None and member.role == "superuser"
    moved = fresh(db, LegacyUser, id=legacy.id)[0]
    assert moved.activated_at is not None and moved.identity_id == identity.id and moved.password_hash is None

    # The link worked once.
    assert b.get(path).status_code == 400
    # The new login works; the old credentials do not.
    assert path_of(log_in(browser(), email, NEW_PASSWORD).location) == "/account/"
    response = prove(browser(), agreement, "Kim")
    assert response.status_code == 409 and ALREADY in text(response)

    events = [e.event for e in db.execute(select(AuditEvent).where(AuditEvent.agreement_id == agreement.id)).scalars()]
    assert {"legacy_user.activation_started", "identity.created", "membership.added",
            "legacy_user.activated"} <= set(events)


def test_wrong_credentials_are_one_answer_and_audited(browser, world, db):
    agreement = world.agreement()
    legacy = world.legacy(agreement)
    b = browser()
    for number, username, password in [(agreement.number, legacy.username, "wrong"),
                                       (agreement.number, "nobody", LEGACY_PASSWORD),
                                       ("999999999999999", legacy.username, LEGACY_PASSWORD)]:
        response = page_form(b, "/agreements/activate", agreement_number=number, username=username, password=password)
        assert response.status_code == 401 and WRONG in text(response)
    response = page_form(b, "/agreements/activate", agreement_number="", username="", password="")
    assert response.status_code == 400
    failed = db.execute(select(AuditEvent).where(AuditEvent.event == "legacy_user.login_failed",
                                                 AuditEvent.agreement_id == agreement.id)).scalars().all()
    assert len(failed) == 1 and failed[0].reason == "invalid_credentials" and failed[0].ip.startswith("10.")


def test_ten_failures_lock_the_username_even_for_the_right_password(browser, world, app):
    agreement = world.agreement()
    legacy = world.legacy(agreement)
    for attempt in range(10):
        # A new IP each time: the username's own counter locks it.
        response = prove(browser(), agreement, legacy.username, password=f"guess-{attempt}")
        assert response.status_code == 401
    response = prove(browser(), agreement, legacy.username)
    assert response.status_code == 429 and LOCKED in text(response)
    # Another legacy user of the agreement is not affected.
    other = world.legacy(agreement)
    assert prove(browser(), agreement, other.username).status_code == 302


def test_failures_from_one_ip_lock_that_ip(browser, world, monkeypatch):
    monkeypatch.setattr(legacy_service, "MAX_IP_FAILURES", 12)  # 50 in production; fewer keeps this fast
    agreement = world.agreement()
    b = browser()
    for attempt in range(12):
        assert prove(b, agreement, f"nobody-{attempt}").status_code == 401
    legacy = world.legacy(agreement)
    assert prove(b, agreement, legacy.username).status_code == 429
    assert prove(browser(), agreement, legacy.username).status_code == 302


def test_activation_details_without_proof_or_after_it_expired(browser, world, app):
    b = browser()
    assert b.get("/agreements/activate/details").status_code == 400
    agreement = world.agreement()
    legacy = world.legacy(agreement)
    assert prove(b, agreement, legacy.username).status_code == 302
    with b.session_transaction() as session:
        session["legacy_proof"] = {**session["legacy_proof"], "expires_at": 0}
    assert b.get("/agreements/activate/details").status_code == 400


def test_new_password_must_meet_the_policy(browser, world, db):
    agreement = world.agreement()
    legacy = world.legacy(agreement)
    b = browser()
    prove(b, agreement, legacy.username)
    email = f"{unique('kim')}@example.com"
    response = details(b, email, password="short")
    assert response.status_code == 400 and "Use at least 15 characters" in text(response)
    response = details(b, email, password="passwordpassword")
    assert response.status_code == 400 and "too common" in text(response)
    response = details(b, "not-an-address", password=NEW_PASSWORD)
    assert response.status_code == 400 and "does not look like an e-mail address" in text(response)


def test_used_and_unknown_activation_links(browser, world, mailbox, db):
    agreement = world.agreement()
    legacy = world.legacy(agreement)
    b = browser()
    path = activate(b, mailbox, agreement, legacy, f"{unique('kim')}@example.com")
    assert b.get(path).status_code == 400
    assert "expired or was already used" in text(b.get("/agreements/activate/confirm/not-a-token"))


def test_two_pending_links_for_one_legacy_user_only_the_first_wins(browser, world, mailbox, db):
    agreement = world.agreement()
    legacy = world.legacy(agreement)
    first, second = f"{unique('a')}@example.com", f"{unique('b')}@example.com"
    paths = []
    for email in (first, second):
        b = browser()
        prove(b, agreement, legacy.username)
        assert details(b, email).status_code == 200
        paths.append((b, link_to(mailbox.wait_for(email), "/agreements/activate/confirm/")))
    assert page_form(*paths[0]).status_code == 200
    response = page_form(*paths[1])
    assert response.status_code == 409 and ALREADY in text(response)
    assert identity_by_email(db, second) is None  # nothing half-written


def test_an_address_with_a_login_is_refused_and_explained(browser, world, factory, mailbox, db):
    """Several people behind one e-mail: the second person cannot attach to the first's login."""
    agreement = world.agreement()
    first = world.legacy(agreement, email="shared@office.example")
    second = world.legacy(agreement, email="shared@office.example")
    email = f"{unique('shared')}@example.com"
    activate(browser(), mailbox, agreement, first, email)
    owner = identity_by_email(db, email)

    b = browser()
    prove(b, agreement, second.username)
    response = details(b, email)
    assert response.status_code == 409
    page = text(response)
    assert "already has a login" in page and "every person needs their own e-mail address" in page
    assert "ask a superuser" in page
    assert fresh(db, LegacyUser, id=second.id)[0].activated_at is None
    # Owner's memberships unchanged: still just the one from the first legacy user.
    assert membership_of(db, owner.id, agreement.id).role == "user"

    # Proving it is them (signing in) is what attaches it; the proof survives the sign-in.
    sign_in_link = next(part for part in response.get_data(as_text=True).split('"') if part.startswith("/login?next="))
    response = page_form(b, sign_in_link.replace("&amp;", "&"), email=email, password=NEW_PASSWORD, action="login")
    assert path_of(response.location) == "/agreements/activate/details"
    response = page_form(b, "/agreements/activate/details")
    assert response.status_code == 200 and "You already had access" in text(response)
    assert fresh(db, LegacyUser, id=second.id)[0].identity_id == owner.id


def test_add_agreement_with_legacy_credentials_when_signed_in(browser, world, factory, db):
    person = factory.identity()
    agreement = world.agreement()
    legacy = world.legacy(agreement, role="time_registrant")
    b = browser()
    log_in(b, person.email)
    page = b.get("/account/agreements")
    assert "Add agreement" in text(page)
    response = prove(b, agreement, legacy.username)
    page = b.get(path_of(response.location))
    assert page.status_code == 200 and person.email in text(page) and "Add to my Connect login" in text(page)
    response = b.post(path_of(response.location), data={"csrf_token": csrf_token(page.get_data(as_text=True))})
    assert response.status_code == 200 and "Agreement added" in text(response)
    assert membership_of(db, person.id, agreement.id).role == "time_registrant"
    assert fresh(db, LegacyUser, id=legacy.id)[0].password_hash is None
    listed = text(b.get("/account/agreements"))
    assert agreement.number in listed and "Time registrant" in listed


def test_existing_membership_keeps_its_role(browser, world, factory, db):
    person = factory.identity()
    agreement = world.agreement(superuser=person)
    legacy = world.legacy(agreement, role="user")
    b = browser()
    log_in(b, person.email)
    prove(b, agreement, legacy.username)
    response = page_form(b, "/agreements/activate/details")
    assert "You already had access" in text(response)
    assert membership_of(db, person.id, agreement.id).role == "superuser"


def test_malformed_stored_hash_never_verifies(browser, world, db):
    agreement = world.agreement()
    legacy = world.legacy(agreement)
    legacy.password_hash = "$6$rounds=1000$broken"
    db.commit()
    assert prove(browser(), agreement, legacy.username).status_code == 401
    assert legacy_service.hash_problem("$6$rounds=1000$broken") is not None
