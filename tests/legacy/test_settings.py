"""My settings: change e-mail (verified at the new address, notice to the old), sessions, apps, agreements."""

from __future__ import annotations

import time

from sqlalchemy import select

from idp.agreements.models import Membership
from idp.audit.models import AuditEvent
from idp.grants.models import Grant, TokenFamily
from tests.helpers.factories import PASSWORD, unique
from tests.helpers.oidc import make_rp, path_of
from tests.legacy.conftest import (
    fresh,
    identity_by_email,
    link_to,
    log_in,
    mail_body,
    page_form,
    post,
    text,
)

OFFLINE = "openid profile email offline_access"


def events(db, identity_id) -> list[str]:
    db.expire_all()
    return [e.event for e in db.execute(select(AuditEvent).where(AuditEvent.subject_id == identity_id)).scalars()]


def test_change_email_verified_at_the_new_address_and_old_address_notified(browser, factory, mailbox, db):
    person = factory.identity()
    old = person.email
    new = f"{unique('moved')}@example.com"
    b = browser()
    log_in(b, old)
    assert old in text(b.get("/account/settings"))

    response = page_form(b, "/account/settings/email", email=new, password="wrong password here")
    assert response.status_code == 400 and "current password is not correct" in text(response)
    response = page_form(b, "/account/settings/email", email=new, password=PASSWORD)
    assert response.status_code == 200 and "Check your e-mail" in text(response)
    message = mailbox.wait_for(new)
    assert old in mail_body(message)
    path = link_to(message, "/account/settings/email/confirm/")
    assert identity_by_email(db, old) is not None  # nothing changed yet

    other = browser()  # the link works in any browser: it proves the mailbox
    assert other.get(path).status_code == 200  # looking does not spend it
    response = page_form(other, path)
    assert response.status_code == 200 and new in text(response)
    notice = mailbox.wait_for(old)
    assert new in mail_body(notice) and notice["Subject"] == "Your e-mail address was changed"

    identity = identity_by_email(db, new)
    assert identity.id == person.id and identity.email_verified and identity_by_email(db, old) is None
    assert path_of(log_in(browser(), new).location) == "/account/"
    assert other.get(path).status_code == 400
    assert {"identity.email_change_requested", "identity.email_changed"} <= set(events(db, person.id))


def test_change_to_a_taken_address_looks_the_same_and_notifies_its_owner(browser, factory, mailbox, db):
    person, owner = factory.identity(), factory.identity()
    b = browser()
    log_in(b, person.email)
    response = page_form(b, "/account/settings/email", email=owner.email, password=PASSWORD)
    assert response.status_code == 200 and "Check your e-mail" in text(response)
    message = mailbox.wait_for(owner.email)
    assert "already has a Connect login" in mail_body(message) and "/confirm/" not in mail_body(message)
    assert identity_by_email(db, person.email).id == person.id
    response = page_form(b, "/account/settings/email", email="not an address", password=PASSWORD)
    assert response.status_code == 400


def test_sign_out_other_sessions(browser, factory, db):
    person = factory.identity()
    phone, laptop = browser(), browser()
    log_in(phone, person.email)
    time.sleep(1.02 - time.time() % 1)  # sessions end by whole seconds (see test_account_passwords)
    log_in(laptop, person.email)
    html = text(laptop.get("/account/settings"))
    assert "This browser" in html and html.count('class="other-session"') >= 1

    response = post(laptop, "/account/settings/sessions/end-others")
    assert response.status_code == 302
    assert laptop.get("/account/settings").status_code == 200  # still signed in, with a new session id
    assert phone.get("/account/settings").status_code == 302  # signed out
    assert 'class="other-session"' not in text(laptop.get("/account/settings"))
    assert "identity.sessions_ended" in events(db, person.id)


def test_connected_apps_and_revoking_one_kills_its_refresh_tokens(browser, factory, db):
    person = factory.identity()
    b = browser()
    rp = make_rp(b, factory)  # third party: asks consent, so a Grant exists
    tokens = rp.token(rp.sign_in(person.email, scope=OFFLINE)["code"]).get_json()
    db.expire_all()
    assert db.execute(select(Grant).where(Grant.identity_id == person.id, Grant.client_id == rp.client_id)).first()
    other_rp = make_rp(b, factory, first_party=True)
    other_tokens = other_rp.token(other_rp.sign_in(person.email, scope=OFFLINE)["code"]).get_json()
    assert tokens["refresh_token"] and other_tokens["refresh_token"]

    html = text(b.get("/account/settings"))
    assert f'data-client-id="{rp.client_id}"' in html and f'data-client-id="{other_rp.client_id}"' in html

    response = post(b, f"/account/settings/apps/{rp.client_id}/revoke")
    assert response.status_code == 302
    refused = rp.refresh(tokens["refresh_token"])
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    assert other_rp.refresh(other_tokens["refresh_token"]).status_code == 200  # the other app is untouched
    db.expire_all()
    assert db.execute(select(Grant).where(Grant.identity_id == person.id, Grant.client_id == rp.client_id)).first() is None
    assert all(f.revoked for f in fresh(db, TokenFamily, identity_id=person.id, client_id=rp.client_id))
    assert "grant.revoked" in events(db, person.id)
    assert post(b, f"/account/settings/apps/{rp.client_id}/revoke").status_code == 404


def test_agreements_with_roles_search_and_paging(browser, factory, world, db):
    person = factory.identity()
    first = world.agreement(superuser=person)
    second = world.agreement()
    db.add(Membership(identity_id=person.id, agreement_id=second.id, role="time_registrant"))
    db.commit()
    b = browser()
    log_in(b, person.email)
    html = text(b.get("/account/agreements"))
    assert first.number in html and second.number in html
    assert "Superuser" in html and "Time registrant" in html
    assert f"/agreements/{first.number}/" in html  # superusers get a Manage link
    assert second.number not in text(b.get(f"/account/agreements?q={first.number}"))
    html = text(b.get("/account/settings"))
    assert first.number in html and "Time registrant" in html


def test_paste_an_invitation_link(browser, factory):
    b = browser()
    log_in(b, factory.identity().email)
    response = post(b, "/account/agreements/invitation", invitation="https://idp.test/agreements/invitations/abc_DEF-1")
    assert response.status_code == 302 and path_of(response.location) == "/agreements/invitations/abc_DEF-1"
    response = post(b, "/account/agreements/invitation", invitation="<script>")
    assert response.status_code == 400 and "Paste the whole link" in text(response)


def test_settings_need_a_sign_in(browser):
    response = browser().get("/account/settings")
    assert response.status_code == 302 and "/login" in response.location
