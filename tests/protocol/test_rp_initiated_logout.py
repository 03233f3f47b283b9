"""OpenID Connect RP-Initiated Logout 1.0, one test per module of the conformance
suite's RP-Initiated Logout plan (see ../shared/CONFORMANCE.md), plus the rules
of §2-§4 the modules do not reach.

What the suite checks, in short: with a valid ``id_token_hint`` and a registered
``post_logout_redirect_uri`` the OP logs the person out and redirects there with
``state``; on anything invalid it never redirects (error page, or a confirmation
page when there is no hint), and "logged out" is observable as the next
authorization request showing the login page again.
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from urllib.parse import urlencode

import jwt as pyjwt
import pytest
from joserfc import jwt as josejwt
from joserfc.jwk import RSAKey

from idp.clients.models import Client
from tests.conftest import ISSUER
from tests.helpers.oidc import make_rp

PLRU = "https://rp.example/logged-out"
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


# -- helpers ---------------------------------------------------------------

def logout_rp(client, factory, db, post_logout_redirect_uris=(PLRU,), **client_kwargs):
    """A registered RP with post_logout_redirect_uris, talking through ``client`` (one browser)."""
    rp = make_rp(client, factory, **client_kwargs)
    row = db.get(Client, rp.client_id)
    row.post_logout_redirect_uris = list(post_logout_redirect_uris)
    db.commit()
    return rp


def signed_in(rp, factory, identity=None):
    """Sign a person in at ``rp`` and redeem the code; (identity, id_token)."""
    identity = identity or factory.identity()
    result = rp.sign_in(identity.email)
    response = rp.token(result["code"])
    assert response.status_code == 200, response.get_json()
    return identity, response.get_json()["id_token"]


def end_session(browser, **params):
    return browser.get("/logout?" + urlencode({k: v for k, v in params.items() if v is not None}))


def assert_still_signed_in(rp):
    """SSO still works: /authorize goes straight back to the RP with a code."""
    response = rp.follow(rp.authorize())
    assert response.status_code == 302 and response.location.startswith(rp.redirect_uri), (
        response.status_code, response.location)
    assert "code=" in response.location


def assert_signed_out(rp):
    """The OP session is gone: the next authorization request shows the login page."""
    response = rp.follow(rp.authorize())
    assert response.status_code == 302 and "/login" in response.location, (response.status_code, response.location)


def assert_no_redirect(response):
    assert response.status_code not in (301, 302, 303, 307, 308), (response.status_code, response.location)
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"


def assert_error_page(response):
    """§4: an error page of the OP, never a redirect."""
    assert_no_redirect(response)
    assert response.status_code == 400, response.status_code
    page = response.get_data(as_text=True)
    assert 'id="oauth-error"' in page
    assert 'id="logged-out"' not in page


def assert_logged_out_page(response):
    assert_no_redirect(response)
    assert response.status_code == 200
    assert 'id="logged-out"' in response.get_data(as_text=True)


def confirmation_form(response) -> dict:
    """The fields the confirmation page posts back (hidden inputs, CSRF token included)."""
    assert_no_redirect(response)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'id="logout-confirm"' in page, page[:800]
    return {name: html.unescape(value) for name, value in HIDDEN.findall(page)}


def tamper_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    middle = len(signature) // 2
    replacement = "A" if signature[middle] != "A" else "B"
    return ".".join([header, payload, signature[:middle] + replacement + signature[middle + 1:]])


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# -- the conformance modules -------------------------------------------------

def test_oidcc_rp_initiated_logout(client, factory, db):
    rp = logout_rp(client, factory, db)
    _identity, id_token = signed_in(rp, factory)

    response = end_session(client, id_token_hint=id_token, post_logout_redirect_uri=PLRU, state="st-123")

    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    assert response.location == PLRU + "?state=st-123"
    assert_signed_out(rp)


def test_oidcc_rp_initiated_logout_bad_post_logout_redirect_uri(client, factory, db):
    rp = logout_rp(client, factory, db)
    _identity, id_token = signed_in(rp, factory)
    unregistered = "https://attacker.example/logged-out"

    response = end_session(client, id_token_hint=id_token, post_logout_redirect_uri=unregistered, state="st")

    # §3: MUST NOT redirect to a URI that does not exactly match a registered one.
    assert_no_redirect(response)
    assert response.status_code in (200, 400)
    assert unregistered not in response.get_data(as_text=True)


def test_oidcc_rp_initiated_logout_modified_id_token_hint(client, factory, db):
    rp = logout_rp(client, factory, db)
    _identity, id_token = signed_in(rp, factory)

    response = end_session(client, id_token_hint=tamper_signature(id_token), post_logout_redirect_uri=PLRU,
                           state="st")

    assert_error_page(response)
    assert_still_signed_in(rp)  # an invalid request ends nothing


def test_oidcc_rp_initiated_logout_no_id_token_hint(client, factory, db):
    rp = logout_rp(client, factory, db)
    signed_in(rp, factory)

    page = end_session(client, client_id=rp.client_id, post_logout_redirect_uri=PLRU, state="st-9")

    # §6: no hint, so the person is asked first; nothing ended yet.
    form = confirmation_form(page)
    assert form["client_id"] == rp.client_id and form["post_logout_redirect_uri"] == PLRU and form["state"] == "st-9"
    assert_still_signed_in(rp)

    confirmed = client.post("/logout", data=form)
    # After the person confirms, the registered URI of the named client is honoured, with state.
    assert confirmed.status_code == 302, confirmed.get_data(as_text=True)[:500]
    assert confirmed.location == PLRU + "?state=st-9"
    assert_signed_out(rp)


def test_no_id_token_hint_and_no_client_id_never_redirects(client, factory, db):
    rp = logout_rp(client, factory, db)
    signed_in(rp, factory)

    form = confirmation_form(end_session(client, post_logout_redirect_uri=PLRU, state="st"))
    confirmed = client.post("/logout", data=form)

    # Without a hint or client_id the OP cannot tell whose URI it is: no redirect.
    assert_logged_out_page(confirmed)
    assert_signed_out(rp)


def test_oidcc_rp_initiated_logout_no_params(client, factory, db):
    rp = logout_rp(client, factory, db)
    signed_in(rp, factory)

    form = confirmation_form(end_session(client))
    assert set(form) == {"csrf_token"}

    assert_logged_out_page(client.post("/logout", data=form))
    assert_signed_out(rp)

    # Already signed out: the same request just shows the signed-out page.
    assert_logged_out_page(end_session(client))


def test_oidcc_rp_initiated_logout_no_post_logout_redirect_uri(client, factory, db):
    rp = logout_rp(client, factory, db)
    _identity, id_token = signed_in(rp, factory)

    response = end_session(client, id_token_hint=id_token, state="st")

    assert_logged_out_page(response)
    assert PLRU not in response.get_data(as_text=True)  # the registered URI is not used on its own
    assert_signed_out(rp)


def test_oidcc_rp_initiated_logout_no_state(client, factory, db):
    rp = logout_rp(client, factory, db)
    _identity, id_token = signed_in(rp, factory)

    response = end_session(client, id_token_hint=id_token, post_logout_redirect_uri=PLRU)

    assert response.status_code == 302
    assert response.location == PLRU
    assert_signed_out(rp)


def test_oidcc_rp_initiated_logout_only_state(client, factory, db):
    rp = logout_rp(client, factory, db)
    signed_in(rp, factory)

    form = confirmation_form(end_session(client, state="only-state"))
    response = client.post("/logout", data=form)

    assert_logged_out_page(response)
    assert PLRU not in response.get_data(as_text=True)
    assert_signed_out(rp)


def test_oidcc_rp_initiated_logout_query_added_to_post_logout_redirect_uri(client, factory, db):
    rp = logout_rp(client, factory, db)
    _identity, id_token = signed_in(rp, factory)

    # The suite's module: the registered URI with "?foo=bar" added is not registered.
    response = end_session(client, id_token_hint=id_token, post_logout_redirect_uri=PLRU + "?foo=bar", state="st")

    assert_no_redirect(response)
    assert "foo=bar" not in response.get_data(as_text=True)


def test_registered_post_logout_redirect_uri_with_query_is_kept_and_state_appended(client, factory, db):
    registered = "https://rp.example/bye?tenant=acme"
    rp = logout_rp(client, factory, db, post_logout_redirect_uris=[registered])
    _identity, id_token = signed_in(rp, factory)

    response = end_session(client, id_token_hint=id_token, post_logout_redirect_uri=registered, state="st-q")

    assert response.status_code == 302
    assert response.location == registered + "&state=st-q"
    assert_signed_out(rp)


@pytest.mark.parametrize("hint", [
    "garbage",
    "a.b.c",
    b64({"alg": "none"}) + "." + b64({"iss": ISSUER, "sub": "x", "aud": "x"}) + ".",
], ids=["not-a-jwt", "three-junk-parts", "alg-none"])
def test_oidcc_rp_initiated_logout_bad_id_token_hint(client, factory, db, hint):
    rp = logout_rp(client, factory, db)
    signed_in(rp, factory)

    response = end_session(client, id_token_hint=hint, client_id=rp.client_id, post_logout_redirect_uri=PLRU,
                           state="st")

    assert_error_page(response)
    assert_still_signed_in(rp)


def test_id_token_hint_signed_by_another_key_is_an_error(client, factory, db):
    rp = logout_rp(client, factory, db)
    _identity, id_token = signed_in(rp, factory)
    claims = pyjwt.decode(id_token, options={"verify_signature": False})
    foreign = josejwt.encode({"alg": "RS256", "kid": pyjwt.get_unverified_header(id_token)["kid"]}, claims,
                             RSAKey.generate_key(2048))

    response = end_session(client, id_token_hint=foreign, post_logout_redirect_uri=PLRU, state="st")

    assert_error_page(response)
    assert_still_signed_in(rp)


# -- further rules of the specification ---------------------------------------

def test_access_token_is_not_an_id_token_hint(client, factory, db):
    rp = logout_rp(client, factory, db)
    identity = factory.identity()
    access_token = rp.token(rp.sign_in(identity.email)["code"]).get_json()["access_token"]
    assert pyjwt.get_unverified_header(access_token)["typ"] == "at+jwt"  # signed by the OP too

    # §2: id_token_hint is "ID Token previously issued by the OP"; another JWT of the
    # OP is no such hint: an error page, or at most the confirmation page.
    response = end_session(client, id_token_hint=access_token, post_logout_redirect_uri=PLRU, state="st")

    assert_no_redirect(response)
    page = response.get_data(as_text=True)
    assert 'id="oauth-error"' in page or 'id="logout-confirm"' in page, page[:800]
    assert_still_signed_in(rp)


def test_client_id_not_matching_the_hints_audience_is_an_error(client, factory, db):
    rp = logout_rp(client, factory, db)
    other = logout_rp(client, factory, db)
    _identity, id_token = signed_in(rp, factory)

    # §2: "the OP MUST verify that the Client Identifier matches the one used as the audience".
    response = end_session(client, id_token_hint=id_token, client_id=other.client_id, post_logout_redirect_uri=PLRU,
                           state="st")

    assert_error_page(response)
    assert_still_signed_in(rp)


def test_matching_client_id_with_hint_is_accepted(client, factory, db):
    rp = logout_rp(client, factory, db)
    _identity, id_token = signed_in(rp, factory)

    response = end_session(client, id_token_hint=id_token, client_id=rp.client_id, post_logout_redirect_uri=PLRU,
                           state="st")

    assert response.status_code == 302 and response.location == PLRU + "?state=st"
    assert_signed_out(rp)


def test_expired_id_token_is_still_a_valid_hint(client, factory, db, runtime):
    rp = logout_rp(client, factory, db)
    _identity, id_token = signed_in(rp, factory)
    claims = pyjwt.decode(id_token, options={"verify_signature": False})
    now = int(time.time())
    claims.update(iat=now - 7200, exp=now - 3600, auth_time=now - 7200)
    # The same claims, issued by the OP two hours ago (its own key), now expired.
    expired = josejwt.encode({"alg": "RS256"}, claims, runtime.keys.signing_keyset("RS256"))
    with pytest.raises(pyjwt.ExpiredSignatureError):
        rp.verify_id_token(expired)

    response = end_session(client, id_token_hint=expired, post_logout_redirect_uri=PLRU, state="st-exp")

    # §2: the OP SHOULD accept ID Tokens whose exp has passed as hints.
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    assert response.location == PLRU + "?state=st-exp"
    assert_signed_out(rp)


def test_logout_request_by_post_with_id_token_hint(client, factory, db):
    rp = logout_rp(client, factory, db)
    _identity, id_token = signed_in(rp, factory)

    # §2: "The OP MUST support the use of the HTTP GET and POST methods"; an RP's
    # POST (form serialization) carries no CSRF token of the OP's pages.
    response = client.post("/logout", data={"id_token_hint": id_token, "post_logout_redirect_uri": PLRU,
                                            "state": "st-post"})

    assert response.status_code == 302, (response.status_code, response.get_data(as_text=True)[:500])
    assert response.location == PLRU + "?state=st-post"
    assert_signed_out(rp)


def test_confirmation_post_without_csrf_token_does_not_log_out(client, factory, db):
    rp = logout_rp(client, factory, db)
    signed_in(rp, factory)

    form = confirmation_form(end_session(client, client_id=rp.client_id, post_logout_redirect_uri=PLRU, state="st"))
    del form["csrf_token"]
    response = client.post("/logout", data=form)

    assert_no_redirect(response)
    assert response.status_code == 400
    assert_still_signed_in(rp)


def test_discovery_advertises_logout(client):
    metadata = client.get("/.well-known/openid-configuration").get_json()
    assert metadata["end_session_endpoint"] == ISSUER + "/logout"
    for flag in ("backchannel_logout_supported", "backchannel_logout_session_supported",
                 "frontchannel_logout_supported", "frontchannel_logout_session_supported"):
        assert metadata[flag] is True, flag
