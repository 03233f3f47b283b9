"""Simultaneous redemptions of one authorization code and simultaneous refreshes of one
refresh token, with real threads over real HTTP (a threaded server, one connection each),
lined up by a barrier.

Runs on the database of the pass: PostgreSQL when IDP_TEST_DATABASE_URL says so (CI's
second pass), SQLite otherwise. Both are meaningful: the code's single use rests on the
store's atomic ``consume`` (Redis or the database), the refresh token's on a conditional
UPDATE, and each backend must make exactly one caller win.
"""

from __future__ import annotations

import os
import time

import pyotp
import pytest
import requests
from sqlalchemy import func, select

from idp.audit.models import AuditEvent
from idp.grants.models import AccessToken, RefreshToken, TokenFamily
from tests.faults.support import HttpBrowser, jwt_claims, simultaneously

OFFLINE = "openid profile email offline_access"


def backend_label(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "sqlite"


def test_pass_backend_is_what_ci_asked_for(database_url):
    """CI's second pass sets IDP_TEST_DATABASE_URL to PostgreSQL: then these races must run there."""
    configured = os.environ.get("IDP_TEST_DATABASE_URL", "")
    if configured.startswith("postgresql"):
        assert backend_label(database_url) == "postgresql"


def outcome(response) -> str:
    """'200', 'invalid_grant', or what else came back (an exception, a 5xx)."""
    if isinstance(response, Exception):
        return f"exception {type(response).__name__}: {response}"
    if response.status_code == 200:
        return "200"
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} {response.text[:200]}"
    if response.status_code == 400 and body.get("error") == "invalid_grant":
        return "invalid_grant"
    return f"{response.status_code} {body}"


def family_of(db, access_token: str) -> TokenFamily:
    db.expire_all()
    jti = jwt_claims(access_token)["jti"]
    row = db.execute(select(AccessToken).where(AccessToken.jti == jti)).scalar_one()
    return db.get(TokenFamily, row.family_id)


def family_counts(db, family_id: str) -> dict:
    db.expire_all()
    access = db.scalar(select(func.count()).select_from(AccessToken).where(AccessToken.family_id == family_id))
    refresh = db.scalar(select(func.count()).select_from(RefreshToken).where(RefreshToken.family_id == family_id))
    live = db.scalar(select(func.count()).select_from(RefreshToken).where(
        RefreshToken.family_id == family_id, RefreshToken.rotated_at.is_(None)))
    return {"access": access, "refresh": refresh, "unrotated": live}


def same_rate_limit_window(live, rp, window: int = 60):
    """Spend the first request of the token endpoint's current rate-limit window for
    ``rp`` (so the race below is about the code, not the counter); waits for a fresh
    window if the current one is about to end."""
    if time.time() % window > window - 3:
        time.sleep(window - time.time() % window + 0.1)
    warm = requests.post(live.base + "/token", auth=rp.basic(), timeout=30,
                         data={"grant_type": "authorization_code", "code": "warm-up", "redirect_uri": rp.redirect_uri})
    assert warm.status_code == 400, warm.text


def assert_dead(live, rp, tokens: dict):
    """Neither the access token nor the refresh token of ``tokens`` works any more."""
    introspection = rp.introspect(live.base, tokens["access_token"])
    assert introspection.status_code == 200 and introspection.json()["active"] is False, introspection.text
    assert outcome(rp.refresh(live.base, tokens["refresh_token"])) == "invalid_grant"


@pytest.mark.parametrize("racers", [2, 8])
def test_simultaneous_code_redemptions_exactly_one_wins(live, http_rp, person, db, racers):
    _, email, password = person
    code, verifier = HttpBrowser([live.base]).sign_in(http_rp, email, password, scope=OFFLINE)
    same_rate_limit_window(live, http_rp)

    responses = simultaneously([lambda: http_rp.token(live.base, code, verifier)] * racers)

    outcomes = [outcome(r) for r in responses]
    assert outcomes.count("200") == 1, outcomes
    assert outcomes.count("invalid_grant") == racers - 1, outcomes
    winner = next(r for r in responses if not isinstance(r, Exception) and r.status_code == 200).json()

    # RFC 6749 §4.1.2: a code used more than once revokes what it issued, even when
    # the replay arrived while the first redemption was still being answered.
    family = family_of(db, winner["access_token"])
    assert family.revoked_at is not None, "a simultaneous replay left the first redemption's tokens alive"
    assert family.revoked_reason == "code_reuse"
    assert_dead(live, http_rp, winner)
    # One redemption's worth of rows: the losers wrote nothing.
    assert family_counts(db, family.id) == {"access": 1, "refresh": 1, "unrotated": 1}


def test_replay_while_the_first_redemption_is_in_flight_revokes_it(live, http_rp, person, db, monkeypatch):
    """The same race, made deterministic: the first redemption is held right after it
    consumed the code (before it wrote anything), the replay is answered meanwhile, then
    the first one finishes. What the first redemption issued must end up revoked."""
    import threading

    _, email, password = person
    code, verifier = HttpBrowser([live.base]).sign_in(http_rp, email, password, scope=OFFLINE)
    store = live.app.extensions["idp"].store
    original_consume = store.consume
    consumed, release = threading.Event(), threading.Event()

    def held_consume(kind, ident):
        result = original_consume(kind, ident)
        if kind == "code" and result is not None and result.first:
            consumed.set()
            release.wait(20)
        return result

    monkeypatch.setattr(store, "consume", held_consume)
    first = {}
    thread = threading.Thread(target=lambda: first.setdefault("response", http_rp.token(live.base, code, verifier)))
    thread.start()
    assert consumed.wait(20), "the first redemption never consumed the code"
    replay = http_rp.token(live.base, code, verifier)
    release.set()
    thread.join(30)

    assert outcome(replay) == "invalid_grant"
    assert outcome(first["response"]) in ("200", "invalid_grant")
    if first["response"].status_code == 200:
        tokens = first["response"].json()
        family = family_of(db, tokens["access_token"])
        assert family.revoked_at is not None, \
            "a replay answered while the first redemption was in flight left its tokens alive"
        assert_dead(live, http_rp, tokens)


@pytest.mark.parametrize("racers", [2, 8])
def test_simultaneous_refreshes_at_most_one_survives(live, http_rp, person, db, racers):
    _, email, password = person
    code, verifier = HttpBrowser([live.base]).sign_in(http_rp, email, password, scope=OFFLINE)
    first = http_rp.token(live.base, code, verifier)
    assert first.status_code == 200, first.text
    original = first.json()
    family_id = family_of(db, original["access_token"]).id

    responses = simultaneously([lambda: http_rp.refresh(live.base, original["refresh_token"])] * racers)

    outcomes = [outcome(r) for r in responses]
    assert outcomes.count("200") <= 1, outcomes
    assert outcomes.count("200") + outcomes.count("invalid_grant") == racers, outcomes
    winners = [r.json() for r in responses if not isinstance(r, Exception) and r.status_code == 200]

    # Nothing half-written: per family, one access and one refresh token per successful
    # response (the code's and the winner's), and at most one refresh token not yet rotated.
    counts = family_counts(db, family_id)
    assert counts["access"] == counts["refresh"] == 1 + len(winners), counts
    assert counts["unrotated"] <= 1, counts

    # The losers presented a token that had been used: reuse detection revokes the
    # family, so no new token of this family survives the race.
    db.expire_all()
    family = db.get(TokenFamily, family_id)
    assert family.revoked_at is not None and family.revoked_reason == "refresh_token_reuse"
    assert db.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.event == "token.reuse_detected", AuditEvent.client_id == http_rp.client_id)) == 1
    # The loser's (original) token cannot be used, nor can anything the winner got.
    assert outcome(http_rp.refresh(live.base, original["refresh_token"])) == "invalid_grant"
    for tokens in [original, *winners]:
        assert_dead(live, http_rp, tokens)
    assert family_counts(db, family_id) == counts, "a refused refresh wrote tokens"


def test_simultaneous_first_requests_of_a_rate_limit_window(live, factory):
    """The first requests of a window create the counter: several at once must all be
    counted and answered (here: invalid_grant for a made-up code), never a 500.
    Five rounds, each with a client of its own (so a counter of its own)."""
    from tests.faults.support import HttpRP

    for _round in range(5):
        client, secret = factory.client()
        rp = HttpRP(client.client_id, secret, client.redirect_uris[0])

        def bogus(rp=rp):
            return requests.post(live.base + "/token", auth=rp.basic(), timeout=30, data={
                "grant_type": "authorization_code", "code": "no-such-code", "redirect_uri": rp.redirect_uri})

        if time.time() % 60 > 57:
            time.sleep(60 - time.time() % 60 + 0.1)
        outcomes = [outcome(r) for r in simultaneously([bogus] * 8)]
        assert outcomes == ["invalid_grant"] * 8, outcomes


@pytest.mark.parametrize("round_", range(3))
def test_simultaneous_use_of_one_totp_code(live, app, db, http_rp, person, round_):
    """Two browsers at the second step of the same person submit the same TOTP code at
    once: one is signed in, the other told the code was used; nobody gets a 500.
    (Three rounds, each with a new person.)"""
    from tests.faults.support import csrf_token

    identity, email, password = person
    secret = pyotp.random_base32()
    app.extensions["idp"].totp.enrol(db, identity.id, secret)
    browsers = []
    for _ in range(2):
        browser = HttpBrowser([live.base])
        page = browser.get("/login")
        response = browser.post("/login", {"csrf_token": csrf_token(page.text), "email": email,
                                           "password": password, "action": "login"})
        assert response.status_code == 302 and "/login/second-step" in response.headers["Location"], response.text
        page = browser.get("/login/second-step")
        browsers.append((browser, csrf_token(page.text)))
    if time.time() % 30 > 27:  # the code must stay valid while both requests are answered
        time.sleep(30 - time.time() % 30 + 0.1)
    code = pyotp.TOTP(secret).now()

    responses = simultaneously([lambda b=b, t=t: b.post("/login/second-step", {"csrf_token": t, "code": code})
                                for b, t in browsers])
    statuses = sorted(r.status_code if not isinstance(r, Exception) else repr(r) for r in responses)
    assert statuses == [302, 400], [(getattr(r, "status_code", r), getattr(r, "text", "")[:200]) for r in responses]
    refused = next(r for r in responses if r.status_code == 400)
    assert "already been used" in refused.text


@pytest.mark.parametrize("round_", range(3))
def test_simultaneous_consents_of_one_person_to_one_client(live, http_rp, person, db, round_):
    """Two tabs (here: two browsers) of one person consent to the same client at once:
    both continue to the RP, one remembered grant exists, nobody gets a 500.
    (Three rounds, each with a new person and client: a race does not lose every time.)"""
    from idp.grants.models import Grant
    from tests.faults.support import csrf_token, path_of

    identity, email, password = person
    pages = []
    for _ in range(2):
        browser = HttpBrowser([live.base])
        response, _verifier = browser.authorize(http_rp, OFFLINE)
        login = path_of(response.headers["Location"])
        page = browser.get(login)
        response = browser.post(login, {"csrf_token": csrf_token(page.text), "email": email, "password": password,
                                        "action": "login"})
        while "/consent" not in response.headers.get("Location", ""):
            assert response.status_code == 302, (response.status_code, response.text[:300])
            response = browser.get(path_of(response.headers["Location"]))
        consent = path_of(response.headers["Location"])
        pages.append((browser, consent, csrf_token(browser.get(consent).text)))

    responses = simultaneously([lambda b=b, p=p, t=t: b.post(p, {"csrf_token": t, "action": "allow"})
                                for b, p, t in pages])
    statuses = [getattr(r, "status_code", repr(r)) for r in responses]
    assert statuses == [302, 302], [(s, getattr(r, "text", "")[:300]) for s, r in zip(statuses, responses)]
    db.expire_all()
    grants = db.execute(select(Grant).where(Grant.identity_id == identity.id,
                                            Grant.client_id == http_rp.client_id)).scalars().all()
    assert len(grants) == 1 and set(grants[0].scope.split()) == set(OFFLINE.split()), grants


def test_later_reuse_revokes_the_family(live, http_rp, person, db):
    """Sequential control for the race above: a clean rotation keeps the family; the
    first reuse of a rotated token revokes it, with everything in it."""
    _, email, password = person
    code, verifier = HttpBrowser([live.base]).sign_in(http_rp, email, password, scope=OFFLINE)
    original = http_rp.token(live.base, code, verifier).json()
    second = http_rp.refresh(live.base, original["refresh_token"])
    assert second.status_code == 200, second.text
    second = second.json()
    third = http_rp.refresh(live.base, second["refresh_token"])
    assert third.status_code == 200, third.text
    third = third.json()
    family_id = family_of(db, third["access_token"]).id
    assert family_counts(db, family_id) == {"access": 3, "refresh": 3, "unrotated": 1}

    assert outcome(http_rp.refresh(live.base, original["refresh_token"])) == "invalid_grant"
    assert db.get(TokenFamily, family_id).revoked_reason == "refresh_token_reuse"
    for tokens in (original, second, third):
        assert_dead(live, http_rp, tokens)


@pytest.mark.parametrize("racers", [8])
def test_simultaneous_revoke_and_refresh(live, http_rp, person, db, racers):
    """Revocation (RFC 7009) racing refreshes of the same token: whatever order the
    database picks, nothing of the family is usable afterwards."""
    import requests

    _, email, password = person
    code, verifier = HttpBrowser([live.base]).sign_in(http_rp, email, password, scope=OFFLINE)
    original = http_rp.token(live.base, code, verifier).json()

    def revoke():
        return requests.post(live.base + "/revoke", auth=http_rp.basic(), timeout=30,
                             data={"token": original["refresh_token"], "token_type_hint": "refresh_token"})

    responses = simultaneously([revoke] + [lambda: http_rp.refresh(live.base, original["refresh_token"])]
                               * (racers - 1))
    assert not isinstance(responses[0], Exception) and responses[0].status_code == 200, responses[0]
    outcomes = [outcome(r) for r in responses[1:]]
    assert outcomes.count("200") + outcomes.count("invalid_grant") == racers - 1, outcomes
    for tokens in [original] + [r.json() for r in responses[1:] if r.status_code == 200]:
        assert_dead(live, http_rp, tokens)
