"""The agreement contract at /authorize (DESIGN.md "The agreement contract", issue 3).

Chooser (product scoping, search, recent first), agreement_hint, prompt=none
switching, prompt=select_agreement, exactly one / no eligible agreement, the
time-registrant restriction, a tampered chooser form, and the agreement claims
in the ID token, the JWT access token and UserInfo (verified with PyJWT
against /jwks, never the list of all agreements).
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlencode

import jwt as pyjwt
import pytest
from sqlalchemy import delete, select, update

from idp.agreements.models import Agreement, Membership, Product
from idp.clients.models import Client
from tests.conftest import ISSUER
from tests.helpers.factories import unique
from tests.helpers.oidc import RP, csrf_token, make_rp, path_of, query

SCOPE = "openid profile email offline_access agreement"
AGREEMENT_CLAIMS = {"agreement_id", "agreement_name", "agreement_product", "agreement_role"}
AGREEMENT_BUTTON = re.compile(r'name="agreement" value="([^"]+)"')


# -- helpers (also used by test_token_exchange.py and test_agreements_api.py) -------

def new_number(prefix: str = "") -> str:
    """A fresh 12-digit agreement number, optionally starting with ``prefix``."""
    return prefix + "".join(secrets.choice("0123456789") for _ in range(12 - len(prefix)))


def new_prefix(length: int = 8) -> str:
    """A number prefix nobody else's agreement starts with (numbers are unique)."""
    return new_number()[:length]


def add_agreement(db, product: Product, *members, name: str | None = None, number: str | None = None,
                  closed: bool = False, mobile_only: bool = False) -> Agreement:
    """An agreement with chosen name/number; ``members`` are identities or (identity, role) pairs."""
    agreement = Agreement(number=number or new_number(), name=name or unique("Agreement"), product_id=product.id,
                          closed=closed, time_registrants_mobile_only=mobile_only)
    db.add(agreement)
    db.flush()
    for member in members:
        identity, role = member if isinstance(member, tuple) else (member, "user")
        db.add(Membership(identity_id=identity.id, agreement_id=agreement.id, role=role))
    db.commit()
    return agreement


def agreement_rp(browser, factory, db=None, *, product: Product | None = None, first_party: bool = True,
                 mobile_app: bool = False, scope: str = SCOPE, grant_types: list[str] | None = None) -> RP:
    """An RP whose registration allows the ``agreement`` scope."""
    rp = make_rp(browser, factory, product=product.id if product else None, scope=scope, first_party=first_party)
    if mobile_app or grant_types is not None:
        assert db is not None, "pass the db fixture to change the client"
        client = db.get(Client, rp.client_id)
        if mobile_app:
            client.mobile_app = True
        if grant_types is not None:
            client.grant_types = grant_types
        db.commit()
    return rp


def is_page(response, name: str) -> bool:
    return (response.status_code == 302 and "/interaction/" in response.location
            and response.location.split("?")[0].endswith("/" + name))


def start(rp: RP, identity, scope: str = SCOPE, **params):
    """Authorize (scope ``agreement``), logging in if asked; the response after login."""
    response = rp.follow(rp.authorize(scope=scope, **params))
    if is_page(response, "login"):
        response = rp.follow(rp.login(response, identity.email))
    return response


def chooser(rp: RP, response, q: str | None = None):
    """The chooser page the response leads to: (path, html, listed numbers in order)."""
    assert is_page(response, "agreement"), (response.status_code, response.location,
                                            response.get_data(as_text=True)[:300])
    path = path_of(response.location)
    page = rp.browser.get(path + ("?" + urlencode({"q": q}) if q is not None else ""))
    assert page.status_code == 200, page.status_code
    html = page.get_data(as_text=True)
    return path, html, AGREEMENT_BUTTON.findall(html)


def choose(rp: RP, path: str, number: str):
    """Submit the chooser form with ``number`` (a button value); the raw POST response."""
    html = rp.browser.get(path).get_data(as_text=True)
    return rp.browser.post(path, data={"csrf_token": csrf_token(html), "agreement": number})


def finish(rp: RP, response) -> dict:
    """Follow to the RP, consenting if asked; the callback parameters."""
    response = rp.follow(response)
    if is_page(response, "consent"):
        response = rp.follow(rp.consent(response))
    assert response.status_code == 302 and response.location.startswith(rp.redirect_uri + "?"), (
        response.status_code, response.location, response.get_data(as_text=True)[:300])
    return query(response.location)


def sign_in_with(rp: RP, identity, number: str, **params) -> dict:
    """A whole login that ends in ``number`` (chooser if shown); callback params."""
    response = start(rp, identity, **params)
    if is_page(response, "agreement"):
        path, _html, _numbers = chooser(rp, response)
        response = choose(rp, path, number)
    return finish(rp, response)


def assert_code_without_page(response, rp: RP) -> dict:
    assert response.status_code == 302, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.location.startswith(rp.redirect_uri + "?"), f"a page was shown: {response.location}"
    params = query(response.location)
    assert "error" not in params, params
    assert params["code"] and params["iss"] == ISSUER
    return params


def assert_rp_error(response, rp: RP, error: str, state: str | None = None) -> dict:
    assert response.status_code == 302, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.location.startswith(rp.redirect_uri + "?"), response.location
    params = query(response.location)
    assert params.get("error") == error, params
    assert params.get("error_description"), params
    assert "code" not in params
    assert params["iss"] == ISSUER
    if state is not None:
        assert params["state"] == state
    return params


def verify_access_token(browser, token: str) -> dict:
    """An RFC 9068 access token, verified with PyJWT against /jwks."""
    header = pyjwt.get_unverified_header(token)
    assert header["typ"].lower() in ("at+jwt", "application/at+jwt"), header
    jwks = browser.get("/jwks").get_json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    return pyjwt.decode(token, pyjwt.PyJWK(key).key, algorithms=[header["alg"]], audience=ISSUER, issuer=ISSUER,
                        options={"require": ["exp", "iat", "sub", "iss", "aud", "jti", "client_id"]})


def userinfo(browser, access_token: str):
    return browser.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})


def assert_agreement_claims(claims: dict, agreement: Agreement, role: str = "user") -> None:
    assert isinstance(claims.get("agreement_id"), str), claims
    assert claims["agreement_id"] == agreement.number
    assert claims["agreement_name"] == agreement.name
    assert claims["agreement_product"] == agreement.product_id
    assert claims["agreement_role"] == role
    # The selected agreement only, never the list of all of them.
    assert {k for k in claims if "agreement" in k} == AGREEMENT_CLAIMS, sorted(claims)
    assert not any(isinstance(v, (list, dict)) for k, v in claims.items() if k.startswith("agreement"))


def tokens_for(rp: RP, params: dict) -> dict:
    """Redeem the code; returns the token response plus verified ``id``/``at``/``userinfo`` claims."""
    response = rp.token(params["code"])
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    body["id"] = rp.verify_id_token(body["id_token"])
    body["at"] = verify_access_token(rp.browser, body["access_token"])
    info = userinfo(rp.browser, body["access_token"])
    assert info.status_code == 200, info.get_data(as_text=True)
    body["userinfo"] = info.get_json()
    return body


def assert_tokens_for(body: dict, agreement: Agreement, role: str = "user") -> None:
    for name in ("id", "at", "userinfo"):
        assert_agreement_claims(body[name], agreement, role)


@pytest.fixture
def product(factory):
    return factory.product()


@pytest.fixture
def other_product(factory):
    return factory.product()


# -- discovery ------------------------------------------------------------------------

def test_discovery_advertises_select_agreement_scope_and_claims(client):
    meta = client.get("/.well-known/openid-configuration").get_json()
    assert "select_agreement" in meta["prompt_values_supported"]
    assert "agreement" in meta["scopes_supported"]
    assert AGREEMENT_CLAIMS <= set(meta["claims_supported"])
    assert "urn:ietf:params:oauth:grant-type:token-exchange" in meta["grant_types_supported"]


# -- the chooser ----------------------------------------------------------------------

def test_chooser_lists_the_clients_product_and_claims_reach_every_token(client, factory, db, product, other_product):
    identity = factory.identity()
    boss = add_agreement(db, product, (identity, "superuser"), name="Nordlys Bakery ApS")
    staff = add_agreement(db, product, identity, name="Havblik Consulting")
    foreign = add_agreement(db, other_product, identity, name="Elsewhere Ltd")
    rp = agreement_rp(client, factory, product=product, first_party=False)  # consent comes after the chooser

    response = start(rp, identity, nonce="n-agreement")
    path, html, numbers = chooser(rp, response)
    assert sorted(numbers) == sorted([boss.number, staff.number])
    assert foreign.number not in html and foreign.name not in html
    assert "Nordlys Bakery ApS" in html and "Superuser" in html

    params = finish(rp, choose(rp, path, staff.number))
    body = tokens_for(rp, params)
    assert_tokens_for(body, staff, "user")
    assert body["id"]["nonce"] == "n-agreement"
    assert body["id"]["sub"] == body["at"]["sub"] == body["userinfo"]["sub"] == identity.id

    # Choosing the superuser agreement next time gives that role.
    response = start(rp, identity, prompt="select_agreement")
    path, _html, _numbers = chooser(rp, response)
    assert_tokens_for(tokens_for(rp, finish(rp, choose(rp, path, boss.number))), boss, "superuser")


def test_product_neutral_client_sees_agreements_of_every_product(client, factory, db, product, other_product):
    identity = factory.identity()
    one = add_agreement(db, product, identity)
    two = add_agreement(db, other_product, (identity, "time_registrant"))
    rp = agreement_rp(client, factory)  # no product

    path, _html, numbers = chooser(rp, start(rp, identity))
    assert sorted(numbers) == sorted([one.number, two.number])
    body = tokens_for(rp, finish(rp, choose(rp, path, two.number)))
    assert_tokens_for(body, two, "time_registrant")
    assert body["id"]["agreement_product"] == other_product.id


def test_chooser_search_by_name_and_number_prefix(client, factory, db, product):
    identity = factory.identity()
    prefix = new_prefix(6)
    bakery = add_agreement(db, product, identity, name="Nordlys Bakery ApS", number=prefix + "000111")
    freight = add_agreement(db, product, identity, name="Nordhavn Freight", number=prefix + "000222")
    consult = add_agreement(db, product, identity, name="Havblik Consulting", number=new_number())
    stranger = factory.identity()
    theirs = add_agreement(db, product, stranger, name="Nordlys Secret Holding", number=prefix + "000333")
    rp = agreement_rp(client, factory, product=product)
    response = start(rp, identity)

    def search(q):
        return chooser(rp, response, q=q)[2]

    assert search("") == sorted(search(""))  # nothing used yet: by number
    assert set(search("")) == {bakery.number, freight.number, consult.number}
    assert search("nordlys") == [bakery.number]          # name fragment, any case
    assert search("BAKERY") == [bakery.number]
    assert set(search("nord")) == {bakery.number, freight.number}
    assert set(search(prefix)) == {bakery.number, freight.number}  # number prefix
    assert search(prefix + "0002") == [freight.number]
    assert search(consult.number) == [consult.number]
    assert search("Secret") == [] and theirs.number not in search(prefix)  # someone else's
    assert search("%") == [] and search("_") == []  # LIKE wildcards are literal
    _path, html, numbers = chooser(rp, response, q="no such agreement")
    assert numbers == [] and 'id="agreement-empty"' in html

    # The JSON endpoint behind instant filtering answers the same.
    path = path_of(response.location)
    found = client.get(path + "/search?" + urlencode({"q": "nordlys"})).get_json()
    assert [i["number"] for i in found["items"]] == [bakery.number]
    assert found["items"][0]["name"] == "Nordlys Bakery ApS"
    found = client.get(path + "/search?" + urlencode({"q": prefix})).get_json()
    assert {i["number"] for i in found["items"]} == {bakery.number, freight.number}

    # A result of a search can be chosen.
    assert_tokens_for(tokens_for(rp, finish(rp, choose(rp, path, freight.number))), freight)


def test_chooser_shows_a_limited_list_and_search_reaches_the_rest(client, factory, db, product):
    identity = factory.identity()
    prefix = new_prefix(8)
    db.add_all([Agreement(number=f"{prefix}{i:04d}", name=f"Bulk customer {i:04d}", product_id=product.id)
                for i in range(60)])
    db.flush()
    ids = db.execute(select(Agreement.id, Agreement.number).where(Agreement.number.startswith(prefix))).all()
    db.add_all([Membership(identity_id=identity.id, agreement_id=pk, role="user") for pk, _ in ids])
    db.commit()
    rp = agreement_rp(client, factory, product=product)

    response = start(rp, identity)
    _path, html, numbers = chooser(rp, response)
    assert len(numbers) == 50 and numbers == sorted(numbers)
    assert f"{prefix}0059" not in numbers
    assert chooser(rp, response, q="customer 0059")[2] == [f"{prefix}0059"]
    assert chooser(rp, response, q=f"{prefix}0059")[2] == [f"{prefix}0059"]


def test_exactly_one_eligible_agreement_skips_the_chooser(client, factory, db, product, other_product):
    identity = factory.identity()
    only = add_agreement(db, product, (identity, "superuser"))
    add_agreement(db, other_product, identity)  # another product's: not eligible here
    add_agreement(db, product, identity, closed=True)  # closed: not eligible
    rp = agreement_rp(client, factory, product=product)

    params = assert_code_without_page(start(rp, identity), rp)
    assert_tokens_for(tokens_for(rp, params), only, "superuser")


def test_no_eligible_agreement_shows_a_page_then_access_denied(client, factory, db, product, other_product):
    identity = factory.identity()
    add_agreement(db, other_product, identity)
    add_agreement(db, product, identity, closed=True)
    rp = agreement_rp(client, factory, product=product)

    response = start(rp, identity, state="st-none")
    assert is_page(response, "no-agreement"), (response.status_code, response.location)
    path = path_of(response.location)
    page = client.get(path)
    assert page.status_code == 403
    html = page.get_data(as_text=True)
    assert 'id="no-agreement"' in html and identity.email in html
    back = client.post(path, data={"csrf_token": csrf_token(html)})
    assert_rp_error(back, rp, "access_denied", "st-none")


@pytest.mark.parametrize("asked", ["select_agreement", "agreement_hint"])
def test_no_eligible_agreement_wins_over_select_agreement_and_hint(client, factory, db, product, other_product,
                                                                   asked):
    """With no eligible agreement there is nothing to choose: the no-agreement page
    (then access_denied), never an empty chooser the person cannot leave."""
    identity = factory.identity()
    add_agreement(db, other_product, identity)
    somebody_elses = add_agreement(db, product, factory.identity())
    rp = agreement_rp(client, factory, product=product)
    params = ({"prompt": "select_agreement"} if asked == "select_agreement"
              else {"agreement_hint": somebody_elses.number})

    response = start(rp, identity, state="st-none", **params)
    assert is_page(response, "no-agreement"), (response.status_code, response.location)
    path = path_of(response.location)
    page = client.get(path)
    assert page.status_code == 403
    back = client.post(path, data={"csrf_token": csrf_token(page.get_data(as_text=True))})
    assert_rp_error(back, rp, "access_denied", "st-none")


def test_prompt_none_without_eligible_agreement_is_access_denied(client, factory, db, product, other_product):
    identity = factory.identity()
    add_agreement(db, other_product, identity)
    rp = agreement_rp(client, factory, product=product)
    assert_code_without_page(start(rp, identity, scope="openid"), rp)  # a session, without an agreement

    response = rp.follow(rp.authorize(scope=SCOPE, prompt="none", state="pn-none"))
    assert_rp_error(response, rp, "access_denied", "pn-none")


def test_without_agreement_scope_there_is_no_chooser_and_no_claims(client, factory, db, product):
    identity = factory.identity()
    add_agreement(db, product, identity)
    add_agreement(db, product, identity)
    rp = agreement_rp(client, factory, product=product)

    body = tokens_for(rp, assert_code_without_page(start(rp, identity, scope="openid profile"), rp))
    for name in ("id", "at", "userinfo"):
        assert not [k for k in body[name] if "agreement" in k], body[name]


def test_chooser_belongs_to_the_browser_that_started_it(app, client, factory, db, product):
    identity = factory.identity()
    add_agreement(db, product, identity)
    mine = add_agreement(db, product, identity)
    rp = agreement_rp(client, factory, product=product)
    path, _html, _numbers = chooser(rp, start(rp, identity))

    other_browser = app.test_client()
    assert other_browser.get(path).status_code == 400
    assert other_browser.post(path, data={"agreement": mine.number}).status_code == 400
    assert other_browser.get(path + "/search?q=").status_code == 404


# -- agreement_hint and prompt=none switching ----------------------------------------

def test_valid_hint_skips_the_chooser(client, factory, db, product):
    identity = factory.identity()
    add_agreement(db, product, identity)
    hinted = add_agreement(db, product, (identity, "superuser"))
    rp = agreement_rp(client, factory, product=product)

    params = assert_code_without_page(start(rp, identity, agreement_hint=hinted.number), rp)
    assert_tokens_for(tokens_for(rp, params), hinted, "superuser")


def test_prompt_none_with_hint_switches_agreement_silently(client, factory, db, product):
    identity = factory.identity()
    first = add_agreement(db, product, identity)
    second = add_agreement(db, product, (identity, "superuser"))
    rp = agreement_rp(client, factory, product=product)
    before = tokens_for(rp, sign_in_with(rp, identity, first.number))
    assert_tokens_for(before, first)

    response = rp.follow(rp.authorize(scope=SCOPE, prompt="none", agreement_hint=second.number, state="sw-1"))
    params = assert_code_without_page(response, rp)
    assert params["state"] == "sw-1"
    after = tokens_for(rp, params)
    assert_tokens_for(after, second, "superuser")
    assert after["id"]["sub"] == before["id"]["sub"]
    assert after["id"]["auth_time"] == before["id"]["auth_time"]  # no new login

    # ...and back again.
    response = rp.follow(rp.authorize(scope=SCOPE, prompt="none", agreement_hint=first.number))
    assert_tokens_for(tokens_for(rp, assert_code_without_page(response, rp)), first)


def test_prompt_none_with_hint_without_session_is_login_required(client, factory, db, product):
    identity = factory.identity()
    hinted = add_agreement(db, product, identity)
    add_agreement(db, product, identity)
    rp = agreement_rp(client, factory, product=product)

    response = rp.follow(rp.authorize(scope=SCOPE, prompt="none", agreement_hint=hinted.number, state="lr"))
    assert response.status_code == 302 and response.location.startswith(rp.redirect_uri + "?")
    params = query(response.location)
    assert params["error"] == "login_required" and params["state"] == "lr" and "code" not in params


def test_prompt_none_with_hint_without_consent_is_consent_required(client, factory, db, product):
    identity = factory.identity()
    hinted = add_agreement(db, product, identity)
    add_agreement(db, product, identity)
    signed_in = agreement_rp(client, factory, product=product)
    sign_in_with(signed_in, identity, hinted.number)
    third_party = agreement_rp(client, factory, product=product, first_party=False)  # never consented

    response = third_party.follow(third_party.authorize(scope=SCOPE, prompt="none", agreement_hint=hinted.number))
    assert third_party.redirect_uri in response.location
    assert query(response.location)["error"] == "consent_required"


@pytest.fixture
def bad_hints(factory, db, product, other_product):
    """(identity, two eligible agreements, {kind: hint}) for every kind of hint the person may not use."""
    identity = factory.identity()
    eligible = [add_agreement(db, product, identity), add_agreement(db, product, identity)]
    removed = add_agreement(db, product, identity)
    db.execute(delete(Membership).where(Membership.agreement_id == removed.id))
    db.commit()
    hints = {
        "not_member": add_agreement(db, product, factory.identity()).number,
        "unknown": new_number(),
        "other_product": add_agreement(db, other_product, identity).number,
        "closed": add_agreement(db, product, identity, closed=True).number,
        "removed": removed.number,
        "malformed_text": "' OR '1'='1",
        "malformed_long": eligible[0].number + "9" * 40,
        "malformed_markup": "<b id=injected>1</b>",
    }
    return identity, eligible, hints


def test_prompt_none_with_unusable_hint_is_access_denied(client, factory, product, bad_hints):
    identity, eligible, hints = bad_hints
    rp = agreement_rp(client, factory, product=product)
    sign_in_with(rp, identity, eligible[0].number)  # a live session

    for kind, hint in hints.items():
        response = rp.follow(rp.authorize(scope=SCOPE, prompt="none", agreement_hint=hint, state=kind))
        assert response.status_code == 302 and response.location.startswith(rp.redirect_uri + "?"), kind
        assert query(response.location).get("error") == "access_denied", (kind, query(response.location))
        assert_rp_error(response, rp, "access_denied", kind)


def test_unusable_hint_shows_the_chooser_with_a_notice(client, factory, product, bad_hints):
    identity, eligible, hints = bad_hints
    rp = agreement_rp(client, factory, product=product)
    response = start(rp, identity, agreement_hint=hints["not_member"])  # logs in

    for kind, hint in hints.items():
        if kind != "not_member":
            response = rp.follow(rp.authorize(scope=SCOPE, agreement_hint=hint))
        path, html, numbers = chooser(rp, response)
        assert 'id="agreement-notice"' in html, kind
        assert "<b id=injected>" not in html  # the hint is shown escaped
        assert sorted(numbers) == sorted(a.number for a in eligible), kind
    assert_tokens_for(tokens_for(rp, finish(rp, choose(rp, path, eligible[1].number))), eligible[1])


# -- prompt=select_agreement and prompt=none without a hint ---------------------------

def test_select_agreement_forces_the_chooser(client, factory, db, product):
    identity = factory.identity()
    only = add_agreement(db, product, identity)
    rp = agreement_rp(client, factory, product=product)

    # Even with exactly one eligible agreement.
    path, html, numbers = chooser(rp, start(rp, identity, prompt="select_agreement"))
    assert numbers == [only.number] and 'id="agreement-notice"' not in html
    assert_tokens_for(tokens_for(rp, finish(rp, choose(rp, path, only.number))), only)

    # With a session: no login page, straight to the chooser; a hint does not skip it.
    second = add_agreement(db, product, identity)
    response = rp.follow(rp.authorize(scope=SCOPE, prompt="select_agreement", agreement_hint=only.number))
    path, _html, numbers = chooser(rp, response)
    assert sorted(numbers) == sorted([only.number, second.number])
    assert_tokens_for(tokens_for(rp, finish(rp, choose(rp, path, second.number))), second)


def test_prompt_none_without_hint(client, factory, db, product):
    identity = factory.identity()
    first = add_agreement(db, product, identity)
    rp = agreement_rp(client, factory, product=product)
    assert_code_without_page(start(rp, identity), rp)  # one eligible: no chooser

    # Still exactly one: prompt=none succeeds with it.
    response = rp.follow(rp.authorize(scope=SCOPE, prompt="none"))
    assert_tokens_for(tokens_for(rp, assert_code_without_page(response, rp)), first)

    # Several: the person would have to choose.
    add_agreement(db, product, identity)
    response = rp.follow(rp.authorize(scope=SCOPE, prompt="none", state="ir"))
    assert_rp_error(response, rp, "interaction_required", "ir")


# -- the chooser form can't be tampered with ------------------------------------------

def test_tampered_chooser_post_is_rejected_and_nothing_issued(client, factory, db, product, other_product):
    identity = factory.identity()
    add_agreement(db, product, identity)
    add_agreement(db, product, identity)
    targets = {
        "not_member": add_agreement(db, product, factory.identity()).number,
        "other_product": add_agreement(db, other_product, identity).number,
        "closed": add_agreement(db, product, identity, closed=True).number,
        "unknown": new_number(),
        "empty": "",
    }
    rp = agreement_rp(client, factory, product=product)
    path, _html, numbers = chooser(rp, start(rp, identity))
    interaction_id = path.split("/")[2]

    for kind, target in targets.items():
        assert target not in numbers
        response = choose(rp, path, target)
        assert response.status_code == 400, kind
        assert "code=" not in (response.location or ""), kind
        # The pending request still needs a choice: resuming leads back to the chooser.
        assert is_page(client.get(f"/authorize/resume/{interaction_id}"), "agreement"), kind


# -- time registrants restricted to mobile apps ---------------------------------------

def test_time_registrant_restriction_applies_to_non_mobile_clients(client, factory, db, product):
    identity = factory.identity()
    restricted = add_agreement(db, product, (identity, "time_registrant"), mobile_only=True)
    restricted_but_user = add_agreement(db, product, identity, mobile_only=True)
    unrestricted = add_agreement(db, product, (identity, "time_registrant"))
    web = agreement_rp(client, factory, product=product)
    mobile = agreement_rp(client, factory, db, product=product, mobile_app=True)

    # Web client: the restricted membership is not offered, not usable by hint, not postable.
    response = start(web, identity, agreement_hint=restricted.number)
    path, html, numbers = chooser(web, response)
    assert 'id="agreement-notice"' in html
    assert sorted(numbers) == sorted([restricted_but_user.number, unrestricted.number])
    assert choose(web, path, restricted.number).status_code == 400
    assert_tokens_for(tokens_for(web, finish(web, choose(web, path, unrestricted.number))), unrestricted,
                      "time_registrant")
    response = web.follow(web.authorize(scope=SCOPE, prompt="none", agreement_hint=restricted.number))
    assert_rp_error(response, web, "access_denied")

    # Mobile app: it is offered and usable.
    path, _html, numbers = chooser(mobile, mobile.follow(mobile.authorize(scope=SCOPE)))
    assert restricted.number in numbers and len(numbers) == 3
    assert_tokens_for(tokens_for(mobile, finish(mobile, choose(mobile, path, restricted.number))), restricted,
                      "time_registrant")
    response = mobile.follow(mobile.authorize(scope=SCOPE, prompt="none", agreement_hint=restricted.number))
    assert_tokens_for(tokens_for(mobile, assert_code_without_page(response, mobile)), restricted, "time_registrant")


def test_time_registrant_whose_only_agreement_is_restricted_has_none_on_the_web(client, factory, db, product):
    identity = factory.identity()
    restricted = add_agreement(db, product, (identity, "time_registrant"), mobile_only=True)
    web = agreement_rp(client, factory, product=product)
    mobile = agreement_rp(client, factory, db, product=product, mobile_app=True)

    assert is_page(start(web, identity), "no-agreement")
    params = assert_code_without_page(mobile.follow(mobile.authorize(scope=SCOPE)), mobile)
    assert_tokens_for(tokens_for(mobile, params), restricted, "time_registrant")


# -- recent first, last_used_at, closed and removed -----------------------------------

def test_chooser_lists_the_most_recently_used_first(client, factory, db, product):
    identity = factory.identity()
    prefix = new_prefix(9)
    a, b, c = (add_agreement(db, product, identity, number=f"{prefix}{n}00") for n in (1, 2, 3))
    rp = agreement_rp(client, factory, product=product)

    def last_used():
        db.expire_all()
        return {m.agreement_id: m.last_used_at for m in db.execute(
            select(Membership).where(Membership.identity_id == identity.id)).scalars()}

    path, _html, numbers = chooser(rp, start(rp, identity))
    assert numbers == [a.number, b.number, c.number]  # never used: by number
    assert set(last_used().values()) == {None}
    finish(rp, choose(rp, path, b.number))
    used = last_used()
    assert used[b.id] is not None and used[a.id] is None and used[c.id] is None

    path, _html, numbers = chooser(rp, rp.follow(rp.authorize(scope=SCOPE, prompt="select_agreement")))
    assert numbers == [b.number, a.number, c.number]
    finish(rp, choose(rp, path, c.number))
    used = last_used()
    assert used[c.id] > used[b.id]

    path, _html, numbers = chooser(rp, rp.follow(rp.authorize(scope=SCOPE, prompt="select_agreement")))
    assert numbers == [c.number, b.number, a.number]
    # A silent switch by hint counts as use too.
    assert_code_without_page(rp.follow(rp.authorize(scope=SCOPE, prompt="none", agreement_hint=a.number)), rp)
    _path, _html, numbers = chooser(rp, rp.follow(rp.authorize(scope=SCOPE, prompt="select_agreement")))
    assert numbers == [a.number, c.number, b.number]


def test_chooser_search_keeps_the_most_recently_used_first(client, factory, db, product):
    """A search matches first and orders after (idp/agreements/service.py chooser_list): the order is still
    recent first, then by number, and only matching, eligible agreements are listed."""
    identity = factory.identity()
    prefix = new_prefix(9)
    word = "Kvist" + secrets.token_hex(3)
    a, b, c = (add_agreement(db, product, identity, number=f"{prefix}{n}00", name=f"{word} {n} ApS") for n in (1, 2, 3))
    add_agreement(db, product, identity, number=f"{prefix}400", name="Something else A/S")
    closed = add_agreement(db, product, identity, number=f"{prefix}500", name=f"{word} closed")
    db.execute(update(Agreement).where(Agreement.id == closed.id).values(closed=True))
    db.commit()
    rp = agreement_rp(client, factory, product=product)
    response = start(rp, identity)
    path, _html, numbers = chooser(rp, response, q=word.lower())
    assert numbers == [a.number, b.number, c.number]  # never used: by number
    finish(rp, choose(rp, path, c.number))
    _path, _html, numbers = chooser(rp, rp.follow(rp.authorize(scope=SCOPE, prompt="select_agreement")), q=word)
    assert numbers == [c.number, a.number, b.number]


def test_chooser_no_longer_offers_closed_agreements_or_removed_memberships(client, factory, db, product):
    identity = factory.identity()
    keep = [add_agreement(db, product, identity), add_agreement(db, product, identity)]
    closing = add_agreement(db, product, identity)
    leaving = add_agreement(db, product, identity)
    rp = agreement_rp(client, factory, product=product)
    path, _html, numbers = chooser(rp, start(rp, identity))
    assert len(numbers) == 4

    db.execute(update(Agreement).where(Agreement.id == closing.id).values(closed=True))
    db.execute(delete(Membership).where(Membership.agreement_id == leaving.id))
    db.commit()
    _path, _html, numbers = chooser(rp, rp.follow(rp.authorize(scope=SCOPE)))
    assert sorted(numbers) == sorted(a.number for a in keep)
    assert choose(rp, path, closing.number).status_code == 400
    assert choose(rp, path, leaving.number).status_code == 400
