"""Invitations: sent over real SMTP, accepted once, by existing and new people; resend and revoke."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from idp.agreements.models import Membership
from idp.invitations.models import Invitation
from idp.mail import Mailer, MailSettings
from tests.helpers.factories import PASSWORD, unique
from tests.helpers.oidc import csrf_token, path_of
from tests.legacy.conftest import (
    NEW_PASSWORD,
    fresh,
    identity_by_email,
    link_to,
    log_in,
    mail_body,
    membership_of,
    page_form,
    post,
    text,
)

USED = "This invitation has already been used"
EXPIRED = "This invitation has expired"
WITHDRAWN = "This invitation was withdrawn"


def admin_page(agreement) -> str:
    return f"/agreements/{agreement.number}/"


def invite(b, agreement, email, role="user", **extra):
    return post(b, f"/agreements/{agreement.number}/invitations", csrf_from=admin_page(agreement), email=email,
                role=role, **extra)


def superuser_browser(browser, factory, world):
    boss = factory.identity()
    agreement = world.agreement(superuser=boss)
    b = browser()
    log_in(b, boss.email)
    return b, boss, agreement


def invitation_link(mailbox, email) -> str:
    return link_to(mailbox.wait_for(email), "/agreements/invitations/")


def test_existing_identity_accepts_after_signing_in(browser, factory, world, mailbox, db):
    b, _boss, agreement = superuser_browser(browser, factory, world)
    colleague = factory.identity()
    response = invite(b, agreement, colleague.email.upper(), role="user")
    assert response.status_code == 302 and "done=invited" in response.location
    message = mailbox.wait_for(colleague.email.upper())
    assert agreement.name in message["Subject"] and "expires in 7 days" in mail_body(message)
    path = link_to(message, "/agreements/invitations/")
    assert colleague.email.upper() in text(b.get(admin_page(agreement)))  # listed as pending

    other = browser()
    page = other.get(path)
    assert page.status_code == 200 and "already has a Connect login" in text(page)
    sign_in = page_form(other, f"/login?next={path}", email=colleague.email, password=PASSWORD, action="login")
    assert path_of(sign_in.location) == path
    response = page_form(other, path)
    assert response.status_code == 200 and f"Welcome to {agreement.name}" in text(response)
    assert membership_of(db, colleague.id, agreement.id).role == "user"

    # Used once: the second time says so, and nothing changes.
    response = other.get(path)
    assert response.status_code == 410 and USED in text(response)
    row = fresh(db, Invitation, agreement_id=agreement.id)[0]
    assert row.status == "accepted" and row.accepted_by == colleague.id


def test_new_person_creates_a_verified_identity_and_lands_in_the_agreement(browser, factory, world, mailbox, db):
    b, _boss, agreement = superuser_browser(browser, factory, world)
    email = f"{unique('new')}@example.com"
    invite(b, agreement, email, role="superuser")
    path = invitation_link(mailbox, email)

    newcomer = browser()
    response = page_form(newcomer, path, given_name="Nina", family_name="Holm", password="short")
    assert response.status_code == 400 and "Use at least 15 characters" in text(response)
    assert identity_by_email(db, email) is None
    response = page_form(newcomer, path, given_name="Nina", family_name="Holm", password=NEW_PASSWORD)
    assert response.status_code == 200 and f"Welcome to {agreement.name}" in text(response)
    identity = identity_by_email(db, email)
    assert identity.email_verified and identity.name == "Nina Holm"
    assert membership_of(db, identity.id, agreement.id).role == "superuser"
    # Signed in straight away, and with the chosen password elsewhere too.
    assert newcomer.get("/account/").status_code == 200
    assert path_of(log_in(browser(), email, NEW_PASSWORD).location) == "/account/"
    # A second try at the same link, even as a new person, is refused.
    response = browser().post(path, data={})
    assert response.status_code in (400, 410)
    assert browser().get(path).status_code == 410


def test_expired_invitation(browser, factory, world, mailbox, db):
    b, _boss, agreement = superuser_browser(browser, factory, world)
    email = f"{unique('late')}@example.com"
    invite(b, agreement, email)
    path = invitation_link(mailbox, email)
    row = fresh(db, Invitation, agreement_id=agreement.id)[0]
    row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    db.commit()
    response = browser().get(path)
    assert response.status_code == 410 and EXPIRED in text(response)
    assert "expired" in text(b.get(admin_page(agreement)))


def test_resend_replaces_the_link_and_revoke_withdraws_it(browser, factory, world, mailbox, db):
    b, _boss, agreement = superuser_browser(browser, factory, world)
    email = f"{unique('again')}@example.com"
    invite(b, agreement, email)
    first = invitation_link(mailbox, email)
    row = fresh(db, Invitation, agreement_id=agreement.id)[0]

    response = post(b, f"/agreements/{agreement.number}/invitations/{row.id}/resend", csrf_from=admin_page(agreement))
    assert response.status_code == 302
    second = invitation_link(mailbox, email)
    assert first != second
    assert browser().get(first).status_code == 410
    assert browser().get(second).status_code == 200
    assert fresh(db, Invitation, agreement_id=agreement.id)[0].sent_count == 2

    response = post(b, f"/agreements/{agreement.number}/invitations/{row.id}/revoke", csrf_from=admin_page(agreement))
    assert response.status_code == 302
    response = browser().get(second)
    assert response.status_code == 410 and WITHDRAWN in text(response)
    # Revoking twice, or resending a revoked one: refused.
    assert post(b, f"/agreements/{agreement.number}/invitations/{row.id}/revoke",
                csrf_from=admin_page(agreement)).status_code == 409
    assert post(b, f"/agreements/{agreement.number}/invitations/{row.id}/resend",
                csrf_from=admin_page(agreement)).status_code == 409


def test_time_registrant_invitation_insists_on_their_own_address(browser, factory, world, mailbox, db):
    b, boss, agreement = superuser_browser(browser, factory, world)
    agreement.time_registrants_mobile_only = True
    db.commit()
    email = f"{unique('timer')}@example.com"

    # First the box with the registrant's details; nothing sent yet.
    response = invite(b, agreement, email, role="time_registrant")
    assert response.status_code == 200
    page = text(response)
    assert "registrant's own e-mail address" in page and email in page and "mobile time registration app" in page
    assert fresh(db, Invitation, agreement_id=agreement.id) == []
    # Not ticked: asked again.
    response = invite(b, agreement, email, role="time_registrant", step="confirm")
    assert response.status_code == 400 and "Confirm that this is the registrant's own" in text(response)
    # The superuser's own address: refused even when ticked.
    response = invite(b, agreement, boss.email, role="time_registrant", step="confirm", own_email="yes")
    assert response.status_code == 400 and "That is your own e-mail address" in text(response)
    assert fresh(db, Invitation, agreement_id=agreement.id) == []

    response = invite(b, agreement, email, role="time_registrant", step="confirm", own_email="yes")
    assert response.status_code == 302
    message = mailbox.wait_for(email)
    assert "mobile app" in mail_body(message)
    assert fresh(db, Invitation, agreement_id=agreement.id)[0].role == "time_registrant"


def test_bad_invitations_are_refused(browser, factory, world, mailbox, db):
    b, _boss, agreement = superuser_browser(browser, factory, world)
    member = factory.identity()
    world.db.add(Membership(identity_id=member.id, agreement_id=agreement.id, role="user"))
    world.db.commit()
    assert invite(b, agreement, "not an address").status_code == 400
    assert invite(b, agreement, f"{unique('x')}@example.com", role="owner").status_code == 400
    response = invite(b, agreement, member.email)
    assert response.status_code == 409 and "already a member" in text(response)
    assert fresh(db, Invitation, agreement_id=agreement.id) == []
    assert browser().get("/agreements/invitations/no-such-token").status_code == 410


def test_a_failed_mail_leaves_no_invitation(browser, factory, world, runtime, monkeypatch, db):
    b, _boss, agreement = superuser_browser(browser, factory, world)
    monkeypatch.setattr(runtime, "mailer", Mailer(MailSettings(host="127.0.0.1", port=1, timeout=1)))
    response = invite(b, agreement, f"{unique('x')}@example.com")
    assert response.status_code == 503 and "could not send the invitation" in text(response)
    assert fresh(db, Invitation, agreement_id=agreement.id) == []


def test_accepting_the_same_link_in_two_browsers_gives_one_membership(browser, factory, world, mailbox, db):
    b, _boss, agreement = superuser_browser(browser, factory, world)
    first, second = factory.identity(), factory.identity()
    invite(b, agreement, first.email)
    path = invitation_link(mailbox, first.email)
    pages = []
    for person in (first, second):
        other = browser()
        log_in(other, person.email)
        pages.append((other, other.get(path)))
    results = [other.post(path, data={"csrf_token": csrf_token(page.get_data(as_text=True))}) for other, page in pages]
    assert [r.status_code for r in results] == [200, 410]
    assert membership_of(db, first.id, agreement.id) is not None
    assert membership_of(db, second.id, agreement.id) is None
    assert len(db.execute(select(Invitation).where(Invitation.agreement_id == agreement.id)).scalars().all()) == 1
