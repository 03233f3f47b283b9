"""OAuth 2.0 Form Post Response Mode (the conformance suite's Form Post plan)."""

from __future__ import annotations

import re

from tests.helpers.oidc import make_rp

FIELD = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def form_fields(response) -> dict:
    html = response.get_data(as_text=True)
    return {name: value.replace("&amp;", "&") for name, value in FIELD.findall(html)}


def test_oidcc_form_post_code_flow(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory, first_party=True)
    response = rp.follow(rp.authorize(response_mode="form_post", state="fp-1"))
    response = rp.follow(rp.login(response, identity.email))
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert f'action="{rp.redirect_uri}"' in html
    assert "<script>" not in html and "onload" not in html  # no inline script under our CSP
    assert 'src="/static/form_post.js"' in html
    fields = form_fields(response)
    assert fields["state"] == "fp-1" and fields["iss"] == "https://idp.test"
    token = rp.token(fields["code"])
    assert token.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def test_form_post_errors_are_posted_too(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory, first_party=True)
    rp.sign_in(identity.email)
    other = make_rp(client, factory)
    response = other.authorize(response_mode="form_post", prompt="none", state="fp-2")
    assert response.status_code == 200
    fields = form_fields(response)
    assert fields["error"] == "consent_required" and fields["state"] == "fp-2"


def test_unsupported_response_mode_is_invalid_request(client, factory):
    rp = make_rp(client, factory)
    response = rp.authorize(response_mode="fragment", state="fp-3")
    assert response.status_code == 302 and "error=invalid_request" in response.location
    assert "state=fp-3" in response.location


def test_form_post_values_are_escaped(client, factory):
    identity = factory.identity()
    rp = make_rp(client, factory, first_party=True)
    rp.sign_in(identity.email)
    response = rp.authorize(response_mode="form_post", state='"><script>alert(1)</script>')
    html = response.get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert form_fields(response)["state"].startswith("&#34;&gt;") or "&#34;" in html or "&quot;" in html
