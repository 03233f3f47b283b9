"""GET /api/v1/me/agreements: the caller's agreements for an RP's switcher menu
(bearer token with scope ``agreement``; search, product filter, cursor paging)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from urllib.parse import urlencode

import pytest
from sqlalchemy import delete

from idp.agreements.models import Membership
from idp.oidc import tokens as idp_tokens
from tests.protocol.test_agreements_authorize import add_agreement, agreement_rp, new_prefix, sign_in_with

ITEM_KEYS = {"agreement_id", "agreement_name", "agreement_product", "agreement_role", "last_used_at"}


def get(browser, token=None, **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    query = "?" + urlencode({k: v for k, v in params.items() if v is not None}) if params else ""
    return browser.get("/api/v1/me/agreements" + query, headers=headers)


def ok(response) -> dict:
    assert response.status_code == 200, (response.status_code, response.get_data(as_text=True))
    assert response.headers.get("Cache-Control") == "no-store"
    body = response.get_json()
    assert set(body) == {"items", "next_cursor"}
    for item in body["items"]:
        assert set(item) == ITEM_KEYS, item
        assert isinstance(item["agreement_id"], str)
    return body


def numbers(body) -> list[str]:
    return [i["agreement_id"] for i in body["items"]]


def all_pages(browser, token, limit, **params) -> list[dict]:
    pages, cursor = [], None
    while True:
        body = ok(get(browser, token, limit=limit, cursor=cursor, **params))
        pages.append(body)
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "paging does not end"


def assert_error(response, status, error):
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert body and body.get("error") == error, body
    assert "items" not in body
    return body


def access_token(rp, identity, number, **params) -> str:
    body = rp.token(sign_in_with(rp, identity, number, agreement_hint=number, **params)["code"]).get_json()
    return body["access_token"]


@pytest.fixture
def api(client, factory, db):
    """A person with 7 agreements in product P (prefix p1) and 3 in Q (prefix p2), signed in
    to a product-neutral RP; a stranger with agreements of the same product and prefix."""
    p, q = factory.product(), factory.product()
    prefix = new_prefix(8)
    me = factory.identity()
    names = ["Nordlys Bakery", "Havblik Consulting", "Nordhavn Freight", "Solsikke Design", "Ravn & Co",
             "Egern IT", "Lærke Revision"]
    mine_p = [add_agreement(db, p, (me, "superuser" if i == 0 else "user"), name=n, number=f"{prefix}1{i:03d}")
              for i, n in enumerate(names)]
    mine_q = [add_agreement(db, q, (me, "time_registrant"), name=f"Quay Shipping {i}", number=f"{prefix}2{i:03d}")
              for i in range(3)]
    stranger = factory.identity()
    theirs = [add_agreement(db, p, stranger, name="Nordlys Stranger Holding", number=f"{prefix}1500"),
              add_agreement(db, p, stranger, name="Private Stranger Farm", number=f"{prefix}3000")]
    rp = agreement_rp(client, factory)  # product-neutral
    token = access_token(rp, me, mine_p[1].number)

    class Api:
        pass

    a = Api()
    a.p, a.q, a.prefix, a.me, a.mine_p, a.mine_q, a.stranger, a.theirs, a.rp, a.token = (
        p, q, prefix, me, mine_p, mine_q, stranger, theirs, rp, token)
    a.mine = mine_p + mine_q
    return a


def test_pages_through_everything_with_cursors(client, db, api):
    pages = all_pages(client, api.token, limit=3)
    assert [len(p["items"]) for p in pages] == [3, 3, 3, 1]  # 10 agreements, 4 pages
    items = [i for p in pages for i in p["items"]]
    listed = [i["agreement_id"] for i in items]
    assert listed == sorted(a.number for a in api.mine)  # ordered by number, no gaps, no repeats
    by_number = {i["agreement_id"]: i for i in items}
    first = by_number[api.mine_p[0].number]
    assert first == {"agreement_id": api.mine_p[0].number, "agreement_name": "Nordlys Bakery",
                     "agreement_product": api.p.id, "agreement_role": "superuser", "last_used_at": None}
    assert by_number[api.mine_q[0].number]["agreement_role"] == "time_registrant"
    assert by_number[api.mine_q[0].number]["agreement_product"] == api.q.id
    used = by_number[api.mine_p[1].number]["last_used_at"]  # the one signed in with
    assert used and dt.datetime.fromisoformat(used.replace("Z", "+00:00"))

    # The same cursor gives the same page again.
    again = ok(get(client, api.token, limit=3, cursor=pages[1]["next_cursor"]))
    assert again == pages[2]

    # Stable while the person works: using an agreement (last use changes) and a new
    # membership sorting before the cursor neither repeat nor skip items.
    cursor = pages[0]["next_cursor"]
    access_token(api.rp, api.me, api.mine_p[6].number)
    add_agreement(db, api.p, api.me, number=f"{api.prefix}0000")
    rest = []
    while cursor:
        body = ok(get(client, api.token, limit=3, cursor=cursor))
        rest += numbers(body)
        cursor = body["next_cursor"]
    assert rest == listed[3:]


def test_default_and_maximum_page_sizes(client, api):
    assert numbers(ok(get(client, api.token))) == sorted(a.number for a in api.mine)
    assert ok(get(client, api.token, limit=100))["next_cursor"] is None
    body = ok(get(client, api.token, limit=1))
    assert len(body["items"]) == 1 and body["next_cursor"]


def test_search_by_name_fragment_and_number_prefix(client, api):
    assert numbers(ok(get(client, api.token, q="nordlys"))) == [api.mine_p[0].number]
    assert numbers(ok(get(client, api.token, q="NORD"))) == [api.mine_p[0].number, api.mine_p[2].number]
    assert numbers(ok(get(client, api.token, q="lærke"))) == [api.mine_p[6].number]
    assert numbers(ok(get(client, api.token, q="& co"))) == [api.mine_p[4].number]
    assert numbers(ok(get(client, api.token, q=api.prefix + "2"))) == [a.number for a in api.mine_q]
    assert numbers(ok(get(client, api.token, q=api.mine_p[3].number))) == [api.mine_p[3].number]
    assert numbers(ok(get(client, api.token, q="%"))) == []
    assert numbers(ok(get(client, api.token, q="no such thing"))) == []
    # Search pages too.
    pages = all_pages(client, api.token, limit=2, q=api.prefix + "1")
    assert [n for p in pages for n in numbers(p)] == [a.number for a in api.mine_p]
    assert len(pages) == 4


def test_product_filter(client, factory, db, api):
    assert numbers(ok(get(client, api.token, product=api.q.id))) == [a.number for a in api.mine_q]
    assert numbers(ok(get(client, api.token, product=api.p.id, q="nord"))) == [api.mine_p[0].number,
                                                                              api.mine_p[2].number]
    assert numbers(ok(get(client, api.token, product="no-such-product"))) == []
    pages = all_pages(client, api.token, limit=2, product=api.p.id)
    assert [n for p in pages for n in numbers(p)] == [a.number for a in api.mine_p]

    # A client of product P never lists Q's agreements, even when asked for them.
    scoped = agreement_rp(client, factory, product=api.p)
    token = access_token(scoped, api.me, api.mine_p[0].number)
    assert numbers(ok(get(client, token))) == [a.number for a in api.mine_p]
    assert numbers(ok(get(client, token, product=api.q.id))) == []


def test_another_persons_agreements_never_appear(client, api):
    listed = [n for p in all_pages(client, api.token, limit=4) for n in numbers(p)]
    for theirs in api.theirs:
        assert theirs.number not in listed
        assert numbers(ok(get(client, api.token, q=theirs.number))) == []
    assert numbers(ok(get(client, api.token, q="Stranger"))) == []
    assert numbers(ok(get(client, api.token, q="nordlys"))) == [api.mine_p[0].number]


def test_stranger_sees_only_their_own(app, factory, api):
    browser = app.test_client()
    rp = agreement_rp(browser, factory)
    token = access_token(rp, api.stranger, api.theirs[0].number)
    assert numbers(ok(get(browser, token))) == [a.number for a in api.theirs]
    assert numbers(ok(get(browser, token, q=api.prefix))) == [a.number for a in api.theirs]


def test_closed_removed_and_restricted_memberships_are_not_listed(client, factory, db, api):
    closing, leaving = api.mine_p[3], api.mine_p[4]
    closing.closed = True
    db.execute(delete(Membership).where(Membership.agreement_id == leaving.id))
    db.commit()
    restricted = add_agreement(db, api.p, (api.me, "time_registrant"), mobile_only=True,
                               number=f"{api.prefix}1999")
    listed = numbers(ok(get(client, api.token, limit=100)))
    assert closing.number not in listed and leaving.number not in listed
    assert restricted.number not in listed  # a web client
    assert len(listed) == 8

    # A mobile app sees the restricted membership.
    mobile = agreement_rp(client, factory, db, mobile_app=True)
    token = access_token(mobile, api.me, api.mine_p[0].number)
    listed = numbers(ok(get(client, token, limit=100)))
    assert restricted.number in listed and len(listed) == 9


def test_missing_or_bad_token_is_401_with_challenge(client, db, api):
    response = get(client)
    assert response.status_code == 401
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer"), response.headers
    response = get(client, "not-a-token")
    assert response.status_code == 401
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    # A revoked token stops working at once.
    idp_tokens.revoke_family(db, _family_id(db, api.token), "test")
    response = get(client, api.token)
    assert response.status_code == 401 and "items" not in (response.get_json() or {})


def _family_id(db, token):
    import jwt as pyjwt

    jti = pyjwt.decode(token, options={"verify_signature": False})["jti"]
    return idp_tokens.find_access_token(db, jti).family_id


def test_token_without_agreement_scope_is_403_insufficient_scope(client, factory, api):
    token = api.rp.token(api.rp.sign_in(api.me.email, scope="openid profile")["code"]).get_json()["access_token"]
    response = get(client, token)
    assert_error(response, 403, "insufficient_scope")

    # A client that may not ask for the scope at all is refused at authorization.
    plain = agreement_rp(client, factory, scope="openid profile email")
    response = plain.follow(plain.authorize(scope="openid agreement"))
    assert response.status_code == 302 and "error=invalid_scope" in response.location


BAD_LIMITS = ["0", "101", "x", "-1", "1.5", "1e2"]


def _b64(value) -> str:
    return base64.urlsafe_b64encode(value if isinstance(value, bytes) else json.dumps(value).encode()).decode()


BAD_CURSORS = ["!!!", "abc", _b64(b"not json"), _b64([]), _b64({"after": 5}), _b64({"before": "1"}), _b64("after"),
               _b64({"after": None})]


def test_bad_limit_or_cursor_is_invalid_request(client, api):
    for limit in BAD_LIMITS:
        body = assert_error(get(client, api.token, limit=limit), 400, "invalid_request")
        assert body.get("error_description"), limit
    for cursor in BAD_CURSORS:
        body = assert_error(get(client, api.token, cursor=cursor), 400, "invalid_request")
        assert body.get("error_description"), cursor
    ok(get(client, api.token, limit="1"))
    ok(get(client, api.token, limit="100"))
