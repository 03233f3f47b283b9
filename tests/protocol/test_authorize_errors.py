"""Bad input at /authorize: an error page when the redirect URI cannot be trusted,
an OAuth error back to the RP (with state and iss) when it can."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tests.helpers.oidc import RP, make_rp, pkce_pair, query

ISSUER = "https://idp.test"


def _params(rp, **overrides):
    _, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": rp.client_id, "redirect_uri": rp.redirect_uri,
              "scope": "openid", "state": "st-1", "nonce": "n-1",
              "code_challenge": challenge, "code_challenge_method": "S256"}
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def _get(browser, params):
    return browser.get("/authorize?" + urlencode(params))


def assert_error_page(response, error=None):
    """The person sees an error page at the IdP; nothing goes to any redirect URI."""
    assert response.status_code == 400, (response.status_code, response.location)
    assert response.location is None
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"
    if error is not None:
        assert f'id="oauth-error">{error}<' in response.get_data(as_text=True)


def assert_redirect_error(response, rp, error, state="st-1"):
    assert response.status_code == 302, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.location.startswith(rp.redirect_uri + "?"), response.location
    params = query(response.location)
    assert params["error"] == error, params
    assert params.get("error_description"), params
    assert params["state"] == state
    assert params["iss"] == ISSUER
    assert "code" not in params
    return params


# -- redirect URI -------------------------------------------------------------

def test_oidcc_ensure_registered_redirect_uri(client, factory):
    rp = make_rp(client, factory)
    response = _get(client, _params(rp, redirect_uri="https://attacker.example/cb"))
    assert_error_page(response)


@pytest.mark.parametrize("variant", [
    "https://rp.example/cb/",                 # trailing slash
    "https://rp.example/cb?x=1",              # query added
    "https://rp.example/cb#frag",             # fragment added
    "http://rp.example/cb",                   # scheme changed
    "https://RP.example/cb",                  # case of host changed
    "https://rp.example:8443/cb",             # port added
    "https://rp.example/CB",                  # path case
    "https://rp.example.attacker.example/cb",  # suffix host
])
def test_oidcc_redirect_uri_mismatch_is_error_page(client, factory, variant):
    rp = make_rp(client, factory)
    assert_error_page(_get(client, _params(rp, redirect_uri=variant)))


def test_oidcc_redirect_uri_mismatch_even_with_prompt_none(client, factory):
    # Errors that would otherwise be redirected must not go to an unverified URI.
    rp = make_rp(client, factory)
    response = _get(client, _params(rp, redirect_uri="https://attacker.example/cb", prompt="none"))
    assert_error_page(response)


def test_unknown_client_is_error_page(client, factory):
    rp = make_rp(client, factory)
    response = _get(client, _params(rp, client_id="no-such-client"))
    assert_error_page(response)


def test_missing_client_id_is_error_page(client, factory):
    rp = make_rp(client, factory)
    response = _get(client, _params(rp, client_id=None))
    assert_error_page(response)


def test_native_loopback_redirect_matches_any_port(client, factory):
    identity = factory.identity()
    client_row, _ = factory.client(public=True, native=True, redirect_uris=("http://127.0.0.1/callback",))
    rp = RP(client, client_row.client_id, None, "http://127.0.0.1:53117/callback")
    result = rp.sign_in(identity.email, state="loop")
    assert result["state"] == "loop"
    body = rp.token(result["code"]).get_json()
    assert body.get("access_token"), body


@pytest.mark.parametrize("variant", [
    "http://127.0.0.1:53117/other",     # path differs
    "http://localhost:53117/callback",  # not a loopback IP literal
    "https://127.0.0.1:53117/callback",  # scheme differs
    "http://127.0.0.2:53117/callback",  # a different loopback address
])
def test_native_loopback_other_mismatches_are_error_page(client, factory, variant):
    client_row, _ = factory.client(public=True, native=True, redirect_uris=("http://127.0.0.1/callback",))
    rp = RP(client, client_row.client_id, None, "http://127.0.0.1/callback")
    assert_error_page(_get(client, _params(rp, redirect_uri=variant)))


def test_loopback_port_not_relaxed_for_web_client(client, factory):
    client_row, secret = factory.client(redirect_uris=("http://127.0.0.1/callback",))
    rp = RP(client, client_row.client_id, secret, "http://127.0.0.1/callback")
    assert_error_page(_get(client, _params(rp, redirect_uri="http://127.0.0.1:53117/callback")))


# -- response_type --------------------------------------------------------------

def test_oidcc_response_type_missing(client, factory):
    rp = make_rp(client, factory)
    assert_error_page(_get(client, _params(rp, response_type=None)))


@pytest.mark.parametrize("response_type", ["token", "id_token", "code id_token", "code token", "id_token token",
                                           "none", "bogus"])
def test_unsupported_response_type_is_error_page(client, factory, response_type):
    rp = make_rp(client, factory)
    assert_error_page(_get(client, _params(rp, response_type=response_type)))


# -- PKCE ---------------------------------------------------------------------------

def test_pkce_plain_refused(client, factory):
    rp = make_rp(client, factory)
    response = _get(client, _params(rp, code_challenge="a" * 43, code_challenge_method="plain"))
    assert_redirect_error(response, rp, "invalid_request")


def test_pkce_challenge_without_method_refused(client, factory):
    # RFC 7636 §4.3: an absent method means plain.
    rp = make_rp(client, factory)
    response = _get(client, _params(rp, code_challenge_method=None))
    assert_redirect_error(response, rp, "invalid_request")


def test_pkce_unknown_method_refused(client, factory):
    rp = make_rp(client, factory)
    response = _get(client, _params(rp, code_challenge_method="S512"))
    assert_redirect_error(response, rp, "invalid_request")


def test_public_client_without_pkce_refused(client, factory):
    client_row, _ = factory.client(public=True)
    rp = RP(client, client_row.client_id, None, client_row.redirect_uris[0])
    response = _get(client, _params(rp, code_challenge=None, code_challenge_method=None))
    assert_redirect_error(response, rp, "invalid_request")


def test_public_client_without_pkce_refused_by_post(client, factory):
    client_row, _ = factory.client(public=True)
    rp = RP(client, client_row.client_id, None, client_row.redirect_uris[0])
    response = client.post("/authorize", data=_params(rp, code_challenge=None, code_challenge_method=None))
    assert_redirect_error(response, rp, "invalid_request")


def test_prompt_none_combined_with_other_value_is_invalid_request(client, factory):
    # OIDC Core §3.1.2.1: none with any other value is an error.
    rp = make_rp(client, factory)
    assert_redirect_error(_get(client, _params(rp, prompt="none login")), rp, "invalid_request")


# -- request objects (not supported: must be refused, not ignored) ----------------

def test_oidcc_request_uri_unsigned_supported_correctly_or_rejected_as_unsupported(client, factory):
    rp = make_rp(client, factory)
    response = _get(client, _params(rp, request_uri="https://rp.example/request.jwt"))
    assert_redirect_error(response, rp, "request_uri_not_supported")


def test_oidcc_unsigned_request_object_supported_correctly_or_rejected_as_unsupported(client, factory):
    import jwt as pyjwt

    rp = make_rp(client, factory)
    request_object = pyjwt.encode({"iss": rp.client_id, "aud": ISSUER, "response_type": "code",
                                   "client_id": rp.client_id, "redirect_uri": rp.redirect_uri, "scope": "openid",
                                   "state": "st-1", "nonce": "n-1"}, key=None, algorithm="none")
    response = _get(client, _params(rp, request=request_object))
    # Supported: the request object's parameters are processed (the person is asked to sign in).
    assert response.status_code == 302 and "/interaction/" in response.location, response.location


# -- the interaction ---------------------------------------------------------------

def test_resume_after_completion_is_not_a_second_code(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory)
    response = rp.follow(rp.authorize(state="rs-1"))
    response = rp.login(response, identity.email)
    assert response.status_code == 302 and "/authorize/resume/" in response.location, response.location
    resume = response.location
    response = rp.follow(response)
    response = rp.follow(rp.consent(response))
    assert query(response.location)["code"]
    again = client.get(resume)
    assert again.status_code == 400
    assert again.location is None


def test_values_authlib_would_quote_with_forbidden_characters_are_400_not_500(client, factory):
    # RFC 6749 §5.2 limits error_description to printable ASCII; Authlib quotes
    # response_type, redirect_uri and grant_type there and raises on anything else.
    rp = make_rp(client, factory)
    response = client.get("/authorize?" + urlencode({"client_id": rp.client_id, "redirect_uri": rp.redirect_uri,
                                                     "response_type": "c\u00f8de", "scope": "openid"}))
    assert response.status_code == 400 and response.location is None
    response = client.get("/authorize?" + urlencode({"client_id": rp.client_id, "response_type": "code",
                                                     "redirect_uri": "https://rp.example/\u00e6", "scope": "openid"}))
    assert response.status_code == 400 and response.location is None
    response = client.post("/token", data={"grant_type": "\u00e6bler"})
    assert response.status_code == 400
    assert response.get_json()["error"] in ("invalid_request", "unsupported_grant_type")
