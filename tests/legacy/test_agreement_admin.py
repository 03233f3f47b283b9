"""Superuser pages: members, roles, removal at the next refresh, the last superuser, legacy e-mails,
two-step requirement, the agreement's audit trail, and 403 with nothing changed for everyone else."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from idp.agreements.models import Agreement, Membership
from idp.audit.models import AuditEvent
from idp.invitations.models import Invitation
from idp.legacy_users.models import LegacyUser
from tests.helpers.factories import unique
from tests.helpers.oidc import RP
from tests.legacy.conftest import fresh, log_in, membership_of, post, text
from tests.legacy.test_invitations import invite

LAST = "An agreement needs at least one superuser"


def page(agreement) -> str:
    return f"/agreements/{agreement.number}/"


def act(b, agreement, action: str, **fields):
    return post(b, page(agreement) + action, **fields)


def add_member(db, identity, agreement, role="user") -> Membership:
    member = Membership(identity_id=identity.id, agreement_id=agreement.id, role=role)
    db.add(member)
    db.commit()
    return member


@pytest.fixture
def team(browser, factory, world, db):
    boss, worker = factory.identity(), factory.identity()
    agreement = world.agreement(superuser=boss)
    worker_membership = add_member(db, worker, agreement)
    boss_membership = membership_of(db, boss.id, agreement.id)
    b = browser()
    log_in(b, boss.email)
    return {"b": b, "boss": boss, "worker": worker, "agreement": agreement, "worker_m": worker_membership,
            "boss_m": boss_membership}


def test_superuser_sees_members_legacy_users_and_invitations(team, world, db):
    b, agreement = team["b"], team["agreement"]
    world.legacy(agreement, "old-anna", email="office@example.com")
    response = b.get(page(agreement))
    assert response.status_code == 200
    html = text(response)
    assert team["worker"].email in html and team["boss"].email in html
    assert "old-anna" in html and "office@example.com" in html
    assert "Agreements you manage" in text(b.get("/agreements/")) and agreement.number in text(b.get("/agreements/"))


def test_change_role_and_remove_member_take_effect_at_the_next_refresh(team, factory, app, db):
    b, agreement, worker = team["b"], team["agreement"], team["worker"]
    agreement_row = db.get(Agreement, agreement.id)
    product_client, secret = factory.client(product=agreement_row.product_id, first_party=True,
                                       scope="openid profile email offline_access agreement")
    rp = RP(app.test_client(), product_client.client_id, secret, product_client.redirect_uris[0])
    params = rp.sign_in(worker.email, scope="openid offline_access agreement", agreement_hint=agreement.number)
    tokens = rp.token(params["code"]).get_json()
    assert tokens.get("refresh_token"), tokens

    response = act(b, agreement, f"members/{team['worker_m'].id}/role", role="time_registrant")
    assert response.status_code == 302
    assert membership_of(db, worker.id, agreement.id).role == "time_registrant"
    refreshed = rp.refresh(tokens["refresh_token"]).get_json()
    assert "access_token" in refreshed, refreshed

    response = act(b, agreement, f"members/{team['worker_m'].id}/remove")
    assert response.status_code == 302
    assert membership_of(db, worker.id, agreement.id) is None
    refused = rp.refresh(refreshed["refresh_token"])
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"

    events = {e.event for e in fresh(db, AuditEvent, agreement_id=agreement.id)}
    assert {"membership.role_changed", "membership.removed"} <= events


def test_the_last_superuser_can_be_neither_removed_nor_demoted(team, db):
    b, agreement = team["b"], team["agreement"]
    response = act(b, agreement, f"members/{team['boss_m'].id}/remove")
    assert response.status_code == 409 and LAST in text(response)
    response = act(b, agreement, f"members/{team['boss_m'].id}/role", role="user")
    assert response.status_code == 409 and LAST in text(response)
    assert membership_of(db, team["boss"].id, agreement.id).role == "superuser"

    # With a second superuser the first may step down.
    act(b, agreement, f"members/{team['worker_m'].id}/role", role="superuser")
    assert act(b, agreement, f"members/{team['boss_m'].id}/role", role="user").status_code == 302
    assert membership_of(db, team["boss"].id, agreement.id).role == "user"
    # ... and is no longer allowed in.
    assert b.get(page(agreement)).status_code == 403


def test_set_a_legacy_users_own_email(team, world, db):
    b, agreement = team["b"], team["agreement"]
    anna = world.legacy(agreement, email="office@example.com")
    bo = world.legacy(agreement, email="office@example.com")
    response = act(b, agreement, f"legacy/{anna.id}/email", email="anna@example.com")
    assert response.status_code == 302
    assert fresh(db, LegacyUser, id=anna.id)[0].email == "anna@example.com"
    # Not to an address another of the agreement's legacy users has.
    response = act(b, agreement, f"legacy/{bo.id}/email", email="ANNA@example.com")
    assert response.status_code == 409 and "Every person needs their own" in text(response)
    assert act(b, agreement, f"legacy/{bo.id}/email", email="not an address").status_code == 400
    assert fresh(db, LegacyUser, id=bo.id)[0].email == "office@example.com"
    assert any(e.event == "legacy_user.email_set" for e in fresh(db, AuditEvent, agreement_id=agreement.id))


def test_require_two_step_verification(team, db):
    b, agreement = team["b"], team["agreement"]
    assert act(b, agreement, "settings", require_second_factor="on").status_code == 302
    db.expire_all()
    assert db.get(Agreement, agreement.id).require_second_factor is True
    # Its own pages now ask for the second step too.
    response = b.get(page(agreement))
    assert response.status_code == 302 and "/stepup" in response.location
    events = [e for e in fresh(db, AuditEvent, agreement_id=agreement.id) if e.event == "agreement.settings_changed"]
    assert events and events[0].details == {"require_second_factor": True}


def test_superuser_sees_only_their_agreements_events(team, browser, factory, world, db):
    b, agreement = team["b"], team["agreement"]
    other_boss = factory.identity()
    other = world.agreement(superuser=other_boss)
    other_legacy = world.legacy(other, "secret-user-name")
    ob = browser()
    log_in(ob, other_boss.email)
    act(ob, other, f"legacy/{other_legacy.id}/email", email="elsewhere@example.com")
    act(b, agreement, f"members/{team['worker_m'].id}/role", role="superuser")

    html = text(b.get(page(agreement)))
    assert "membership.role_changed" in html and team["worker"].email in html
    assert "legacy_user.email_set" not in html and "secret-user-name" not in html


ACTIONS = [
    ("GET", ""),
    ("POST", "members/{member}/role"),
    ("POST", "members/{member}/remove"),
    ("POST", "settings"),
    ("POST", "legacy/{legacy}/email"),
    ("POST", "invitations"),
    ("POST", "invitations/{invitation}/resend"),
    ("POST", "invitations/{invitation}/revoke"),
]


@pytest.mark.parametrize("method,action", ACTIONS)
def test_a_non_superuser_gets_403_and_nothing_changes(team, world, mailbox, browser, db, method, action):
    agreement = team["agreement"]
    legacy = world.legacy(agreement)
    invite(team["b"], agreement, "pending@example.com")
    invitation = fresh(db, Invitation, agreement_id=agreement.id)[0]
    before = {
        "members": sorted((m.identity_id, m.role) for m in fresh(db, Membership, agreement_id=agreement.id)),
        "legacy": [(u.email, u.activated_at) for u in fresh(db, LegacyUser, agreement_id=agreement.id)],
        "invitations": [(i.status, i.token_hash) for i in fresh(db, Invitation, agreement_id=agreement.id)],
        "events": db.execute(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.agreement_id == agreement.id)).scalar_one(),
    }
    # A member (but not superuser) of the agreement, then a stranger.
    for who in (team["worker"], None):
        b = browser()
        log_in(b, (who or world.factory.identity(email=f"{unique('stranger')}@example.com")).email)
        path = page(agreement) + action.format(member=team["boss_m"].id, legacy=legacy.id, invitation=invitation.id)
        if method == "GET":
            response = b.get(path)
        else:
            response = act(b, agreement, path[len(page(agreement)):], role="user", email="x@example.com",
                           require_second_factor="on")
        assert response.status_code == 403, (path, response.status_code)
    after = {
        "members": sorted((m.identity_id, m.role) for m in fresh(db, Membership, agreement_id=agreement.id)),
        "legacy": [(u.email, u.activated_at) for u in fresh(db, LegacyUser, agreement_id=agreement.id)],
        "invitations": [(i.status, i.token_hash) for i in fresh(db, Invitation, agreement_id=agreement.id)],
        "events": db.execute(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.agreement_id == agreement.id)).scalar_one(),
    }
    assert after == before
    assert db.get(Agreement, agreement.id).require_second_factor is False


def test_another_agreements_ids_are_not_found(team, browser, factory, world, db):
    b, agreement = team["b"], team["agreement"]
    other = world.agreement(superuser=factory.identity())
    outsider = add_member(db, factory.identity(), other)
    legacy = world.legacy(other)
    assert act(b, agreement, f"members/{outsider.id}/remove").status_code == 404
    assert act(b, agreement, f"members/{outsider.id}/role", role="superuser").status_code == 404
    assert act(b, agreement, f"legacy/{legacy.id}/email", email="a@example.com").status_code == 404
    assert fresh(db, Membership, id=outsider.id)[0].role == "user"


def test_signed_out_people_are_sent_to_sign_in(browser, world):
    agreement = world.agreement()
    response = browser().get(page(agreement))
    assert response.status_code == 302 and "/login" in response.location
    # An unknown agreement number is the same 403 as someone else's agreement.
    b = browser()
    log_in(b, world.factory.identity().email)
    assert b.get("/agreements/000000000000000/").status_code == 403
