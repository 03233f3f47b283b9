"""The IdP's browser session: server-side, rotated at login, safe cookie flags, logout."""

from __future__ import annotations

from tests.helpers.oidc import csrf_token, make_rp


def session_cookie(client):
    return client.get_cookie("idp_session")


def test_session_id_rotates_at_login(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    response = rp.follow(rp.authorize())
    before = session_cookie(client).value  # the anonymous session holding the pending request
    rp.login(response, identity.email)
    after = session_cookie(client).value
    assert before != after


def test_cookie_flags(client, factory):
    rp = make_rp(client, factory)
    response = rp.authorize()
    header = next(v for k, v in response.headers.items() if k == "Set-Cookie" and v.startswith("idp_session="))
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Secure" in header  # the test issuer is https


def test_cookie_holds_only_an_opaque_id(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    rp.sign_in(identity.email)
    value = session_cookie(client).value
    assert identity.id not in value and identity.email not in value
    assert len(value) >= 40


def test_forged_session_cookie_is_ignored(client, factory):
    rp = make_rp(client, factory)
    client.set_cookie("idp_session", "forged-session-id", domain="localhost")
    response = rp.follow(rp.authorize())
    assert "/login" in response.location


def test_logout_at_the_idp_ends_sso(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    rp.sign_in(identity.email)
    page = client.get("/logout")
    assert page.status_code == 200 and identity.email in page.get_data(as_text=True)
    done = client.post("/logout", data={"csrf_token": csrf_token(page.get_data(as_text=True))})
    assert done.status_code == 200
    # Signed out: the next authorization asks for the password again.
    response = rp.follow(rp.authorize())
    assert "/login" in response.location


def test_logout_requires_csrf_token(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    rp.sign_in(identity.email)
    assert client.post("/logout").status_code == 400
    rp2 = make_rp(client, factory, first_party=True)
    assert "code" in rp2.sign_in(identity.email)  # still signed in


def test_sso_across_two_clients_without_password(client, factory):
    identity = factory.identity()
    first, second = make_rp(client, factory), make_rp(client, factory)
    first.sign_in(identity.email)
    response = second.follow(second.authorize())
    # Straight to consent for the new client: no login page in between.
    assert "/consent" in response.location
    result = second.sign_in(identity.email)
    claims = second.verify_id_token(second.token(result["code"]).get_json()["id_token"])
    assert claims["sub"] == identity.id


def test_pages_deny_framing_and_set_csp(client, factory):
    rp = make_rp(client, factory)
    login_page = client.get(rp.follow(rp.authorize()).location.replace("https://idp.test", ""))
    assert login_page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in login_page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in login_page.headers["Content-Security-Policy"]
    assert login_page.headers["X-Content-Type-Options"] == "nosniff"


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "store": "ok"}
