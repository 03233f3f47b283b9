"""clients/stepup.py: RFC 9470 step-up challenge helper (stdlib only, copied by integrators)."""

from __future__ import annotations

import json

import pytest

from clients import stepup
from clients.stepup import ACR_MFA, ACR_PASSWORD

NOW = 1_700_000_000


# --------------------------------------------------------------------------- challenge()


def test_challenge_acr_values_matches_rfc_9470_shape():
    header = stepup.challenge([ACR_MFA], description="A different authentication level is required")
    assert header == ('Bearer error="insufficient_user_authentication", '
                      'error_description="A different authentication level is required", '
                      'acr_values="urn:connect-idp:acr:mfa"')


def test_challenge_max_age_realm_and_several_acrs():
    header = stepup.challenge([ACR_MFA, ACR_PASSWORD], max_age=300, realm="api")
    assert header == ('Bearer realm="api", error="insufficient_user_authentication", '
                      'error_description="A stronger authentication is required", '
                      'acr_values="urn:connect-idp:acr:mfa urn:connect-idp:acr:pwd", max_age="300"')


def test_challenge_escapes_backslash_and_quote():
    header = stepup.challenge([ACR_MFA], description='say "hi" \\o/', realm='r"e\\alm')
    assert 'error_description="say \\"hi\\" \\\\o/"' in header
    assert 'realm="r\\"e\\\\alm"' in header
    parsed = stepup.parse_challenge(header)
    assert parsed["error_description"] == 'say "hi" \\o/'
    assert parsed["realm"] == 'r"e\\alm'


@pytest.mark.parametrize("kwargs, error", [
    ({}, ValueError),
    ({"acr_values": []}, ValueError),
    ({"acr_values": ["two words"]}, ValueError),
    ({"acr_values": [""]}, ValueError),
    ({"acr_values": ACR_MFA}, TypeError),  # a bare string would be split per character
    ({"max_age": -1}, ValueError),
    ({"max_age": True}, TypeError),
    ({"max_age": "60"}, TypeError),
    ({"max_age": 60, "description": "line\r\nSet-Cookie: x=1"}, ValueError),
    ({"max_age": 60, "realm": "caf\u00e9"}, ValueError),
])
def test_challenge_rejects_bad_input(kwargs, error):
    with pytest.raises(error):
        stepup.challenge(**kwargs)


def test_challenge_max_age_zero_and_no_description():
    header = stepup.challenge(max_age=0, description=None)
    assert header == 'Bearer error="insufficient_user_authentication", max_age="0"'
    assert stepup.authorization_params(stepup.parse_challenge(header)) == {"max_age": "0"}


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("acr_values, max_age, expected", [
    ([ACR_MFA], None, {"acr_values": ACR_MFA}),
    (None, 120, {"max_age": "120"}),
    ([ACR_MFA, ACR_PASSWORD], 60, {"acr_values": f"{ACR_MFA} {ACR_PASSWORD}", "max_age": "60"}),
])
def test_round_trip(acr_values, max_age, expected):
    parsed = stepup.parse_challenge(stepup.challenge(acr_values, max_age))
    assert parsed["scheme"] == "Bearer"
    assert parsed["error"] == "insufficient_user_authentication"
    assert parsed["error_description"] == "A stronger authentication is required"
    assert parsed["acr_values"] == (acr_values or [])
    assert parsed["max_age"] == max_age
    assert stepup.authorization_params(parsed) == expected


# --------------------------------------------------------------------------- parse_challenge()


def test_parse_odd_spacing_case_and_token_values():
    header = ('  bEaReR   realm = "example" ,error=insufficient_user_authentication,,  '
              'ERROR_DESCRIPTION="More recent authentication is required" ,\tmax_age=5 , '
              'acr_values="  urn:connect-idp:acr:mfa   urn:connect-idp:acr:pwd ", scope="read write"  ')
    assert stepup.parse_challenge(header) == {
        "scheme": "Bearer",
        "realm": "example",
        "error": "insufficient_user_authentication",
        "error_description": "More recent authentication is required",
        "max_age": 5,
        "acr_values": [ACR_MFA, ACR_PASSWORD],
        "scope": "read write",
    }


def test_parse_quoted_string_with_commas_equals_and_escapes():
    header = r'Bearer error="insufficient_user_authentication", error_description="a, b=\"c\" \\ d\e", max_age="10"'
    parsed = stepup.parse_challenge(header)
    assert parsed["error_description"] == 'a, b="c" \\ de'
    assert parsed["max_age"] == 10


def test_parse_picks_bearer_among_other_challenges():
    header = ('Basic realm="x, Bearer error=\\"nope\\"", Negotiate YWJj==, '
              'Newauth realm="apps", type=1, title="Login to \\"apps\\"", '
              'Bearer error="insufficient_user_authentication", acr_values="urn:connect-idp:acr:mfa", '
              'DPoP algs="ES256"')
    parsed = stepup.parse_challenge(header)
    assert parsed == {"scheme": "Bearer", "error": "insufficient_user_authentication",
                      "error_description": None, "acr_values": [ACR_MFA], "max_age": None}


def test_parse_bare_bearer_and_other_errors():
    assert stepup.parse_challenge('Bearer realm="example"') == {
        "scheme": "Bearer", "realm": "example", "error": None, "error_description": None,
        "acr_values": [], "max_age": None}
    assert stepup.parse_challenge("Bearer")["error"] is None
    parsed = stepup.parse_challenge('Bearer error="invalid_token", error_description="The access token expired"')
    assert parsed["error"] == "invalid_token"
    assert parsed["error_description"] == "The access token expired"
    parsed = stepup.parse_challenge('Bearer error="insufficient_scope", scope="admin"')
    assert parsed["scope"] == "admin"


@pytest.mark.parametrize("header", [
    "",
    'Basic realm="x"',
    'Bearer error="unterminated',
    'Bearer error=',
    'Bearer error="a" junk',
    'Bearer error="a", error="b"',
    'Bearer abc==',
    'error="a"',
    'Bearer error="insufficient_user_authentication", max_age="-5"',
    'Bearer error="insufficient_user_authentication", max_age="soon"',
    'Bearer error="a\x01"',
])
def test_parse_rejects_malformed(header):
    with pytest.raises(ValueError):
        stepup.parse_challenge(header)


# --------------------------------------------------------------------------- authorization_params()


@pytest.mark.parametrize("header", [
    'Bearer error="invalid_token"',
    'Bearer error="insufficient_scope", scope="admin"',
    'Bearer realm="example"',
])
def test_authorization_params_refuses_non_step_up_errors(header):
    with pytest.raises(ValueError):
        stepup.authorization_params(stepup.parse_challenge(header))


def test_authorization_params_refuses_empty_step_up():
    with pytest.raises(ValueError):
        stepup.authorization_params(stepup.parse_challenge('Bearer error="insufficient_user_authentication"'))


def test_authorization_params_only_what_was_asked():
    parsed = stepup.parse_challenge('Bearer error="insufficient_user_authentication", acr_values="x"')
    assert stepup.authorization_params(parsed) == {"acr_values": "x"}


# --------------------------------------------------------------------------- insufficient()


def claims(**extra):
    return {"sub": "u1", "amr": ["pwd"], **extra}


def test_no_requirement_is_sufficient():
    assert stepup.insufficient(claims()) is False


@pytest.mark.parametrize("acr, required, expected", [
    (ACR_MFA, ACR_MFA, False),
    (ACR_PASSWORD, ACR_MFA, True),
    (None, ACR_MFA, True),
    (["urn:connect-idp:acr:mfa"], ACR_MFA, True),  # not a string
    ("urn:connect-idp:acr:MFA", ACR_MFA, True),  # exact match only
    (ACR_PASSWORD, [ACR_MFA, ACR_PASSWORD], False),
    (ACR_MFA, (ACR_MFA,), False),
    ("urn:other", [ACR_MFA, ACR_PASSWORD], True),
])
def test_acr(acr, required, expected):
    token = claims() if acr is None else claims(acr=acr)
    assert stepup.insufficient(token, required_acr=required) is expected


@pytest.mark.parametrize("auth_time, expected", [
    (NOW - 299, False),
    (NOW - 300, False),  # exactly max_age old is still fine
    (NOW - 301, True),
    (NOW + 5, False),  # small clock skew
    (float(NOW - 10), False),
    ("1700000000", True),  # not a NumericDate
    (True, True),
])
def test_max_age(auth_time, expected):
    assert stepup.insufficient(claims(auth_time=auth_time), max_age=300, now=NOW) is expected


def test_missing_auth_time_with_max_age_is_insufficient():
    assert stepup.insufficient(claims(acr=ACR_MFA), required_acr=ACR_MFA, max_age=300, now=NOW) is True
    assert stepup.insufficient(claims(acr=ACR_MFA), required_acr=ACR_MFA, now=NOW) is False


def test_acr_and_max_age_combined_and_default_clock():
    import time

    fresh = claims(acr=ACR_MFA, auth_time=int(time.time()))
    assert stepup.insufficient(fresh, required_acr=ACR_MFA, max_age=60) is False
    assert stepup.insufficient(fresh, required_acr=ACR_PASSWORD, max_age=60) is True
    stale = claims(acr=ACR_MFA, auth_time=int(time.time()) - 3600)
    assert stepup.insufficient(stale, required_acr=ACR_MFA, max_age=60) is True


@pytest.mark.parametrize("kwargs", [{"required_acr": []}, {"required_acr": [""]}, {"max_age": -1}])
def test_insufficient_rejects_bad_requirements(kwargs):
    with pytest.raises((ValueError, TypeError)):
        stepup.insufficient(claims(acr=ACR_MFA, auth_time=NOW), now=NOW, **kwargs)


# --------------------------------------------------------------------------- flask_response()


def test_flask_response():
    header = stepup.challenge([ACR_MFA], max_age=60, description="Use your second factor")
    body, status, headers = stepup.flask_response(header)
    assert status == 401
    assert json.loads(body) == {"error": "insufficient_user_authentication",
                                "error_description": "Use your second factor"}
    assert ("WWW-Authenticate", header) in headers
    assert ("Content-Type", "application/json") in headers
    body, _, _ = stepup.flask_response(header, "Other text")
    assert json.loads(body)["error_description"] == "Other text"


def test_flask_response_works_in_flask():
    flask = pytest.importorskip("flask")
    app = flask.Flask(__name__)

    @app.get("/api")
    def api():
        return stepup.flask_response(stepup.challenge([ACR_MFA]))

    response = app.test_client().get("/api")
    assert response.status_code == 401
    assert response.is_json
    info = stepup.parse_challenge(response.headers["WWW-Authenticate"])
    assert stepup.authorization_params(info) == {"acr_values": ACR_MFA}
