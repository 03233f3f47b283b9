"""idp/params.py: request parameters whose ``get`` answers a missing name without building an exception, and
otherwise behave as Werkzeug's."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import ImmutableMultiDict, MultiDict
from werkzeug.exceptions import BadRequestKeyError

from idp.params import ImmutableParams, Params
from tests.helpers.oidc import make_rp


@pytest.mark.parametrize("ours,werkzeugs", [(Params, MultiDict), (ImmutableParams, ImmutableMultiDict)])
def test_they_answer_as_werkzeugs_do(ours, werkzeugs):
    items = [("prompt", "login"), ("max_age", "60"), ("resource", "https://a.test/"), ("resource", "https://b.test/"),
             ("empty", ""), ("bad_int", "x")]
    mine, theirs = ours(items), werkzeugs(items)
    for name in ("prompt", "resource", "empty", "missing"):
        assert mine.get(name) == theirs.get(name) and mine.get(name, "d") == theirs.get(name, "d")
        assert mine.getlist(name) == theirs.getlist(name)
    assert mine.get("max_age", type=int) == 60 == theirs.get("max_age", type=int)
    assert mine.get("bad_int", -1, type=int) == -1 == theirs.get("bad_int", -1, type=int)
    assert mine.get("missing", 7, type=int) == 7
    assert list(mine.items(multi=True)) == list(theirs.items(multi=True))
    with pytest.raises(BadRequestKeyError):
        mine["missing"]  # indexing still raises, as Werkzeug's does
    copy = mine.copy()
    assert type(copy) is Params and copy == mine


def test_an_authorization_request_builds_no_exception_for_the_parameters_it_lacks(app, client, factory, monkeypatch):
    """A request from an RP that is already signed in (the SSO hop): none of the optional parameters it leaves
    out, nor the look-up of the session cookie or of the headers added to every response, costs an exception
    any more (Werkzeug's get and setdefault built a BadRequestKeyError for each)."""
    rp = make_rp(client, factory)
    identity = factory.identity()
    rp.sign_in(identity.email)
    built = []
    original = BadRequestKeyError.__init__

    def counting(self, *args, **kwargs):
        built.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(BadRequestKeyError, "__init__", counting)
    with app.test_request_context("/authorize?ui_locales=da"):
        from flask import request

        assert isinstance(request.args, ImmutableParams) and request.args.copy().__class__ is Params
    result = rp.sign_in(identity.email)
    assert result["code"] and result["iss"]
    # Werkzeug's own look-ups of a response's Content-Length and Content-Type (its test client's too) remain;
    # the parameters, the session cookie and the security headers (idp/app.py) build none.
    ours = [args[0] for args in built if str(args[0]).lower() not in ("content-length", "content-type")]
    assert ours == []
