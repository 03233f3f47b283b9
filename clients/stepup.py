"""Step-up authentication (RFC 9470) for resource servers and clients of the Connect IdP.

Standard library only: copy this file into your project as it is.

Resource server side::

    claims = validate_access_token(token)            # your JWT / introspection check
    if stepup.insufficient(claims, required_acr=stepup.ACR_MFA, max_age=300):
        header = stepup.challenge([stepup.ACR_MFA], max_age=300)
        return stepup.flask_response(header)          # (json body, 401, headers)

Client side, on a 401 from the resource server::

    info = stepup.parse_challenge(response.headers["WWW-Authenticate"])
    if info["error"] == stepup.ERROR:
        extra = stepup.authorization_params(info)     # {"acr_values": ..., "max_age": ...}
        # start a new authorization request with ``extra`` added, get a new
        # access token, then retry the call (once: do not loop).

The challenge is ``WWW-Authenticate: Bearer error="insufficient_user_authentication",
error_description="...", acr_values="a b"`` and/or ``max_age="300"`` (RFC 9470 §3,
RFC 6750 §3). Access tokens of the Connect IdP carry ``acr``, ``amr`` and
``auth_time`` (RFC 9470 §6).
"""

from __future__ import annotations

import json
import re
import time

__all__ = [
    "ACR_MFA",
    "ACR_PASSWORD",
    "ERROR",
    "authorization_params",
    "challenge",
    "flask_response",
    "insufficient",
    "parse_challenge",
]

#: acr of a password-only login at the Connect IdP.
ACR_PASSWORD = "urn:connect-idp:acr:pwd"
#: acr of a password plus second-factor login at the Connect IdP.
ACR_MFA = "urn:connect-idp:acr:mfa"
#: The RFC 9470 error code.
ERROR = "insufficient_user_authentication"

_DEFAULT_DESCRIPTION = "A stronger authentication is required"

# RFC 9110 §5.6.2 tchar / token; §11.2 token68.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_WS = " \t\r\n"
# What may appear in a header value we produce: printable ASCII, SP, HTAB.
_HEADER_SAFE = re.compile(r"[\t\x20-\x7e]*")


# --------------------------------------------------------------------------- producing


def _quote(value: str, what: str) -> str:
    """RFC 9110 §5.6.4 quoted-string: backslash-escape ``\\`` and ``"``.

    Control characters (CR/LF: header injection) and non-ASCII text are refused
    rather than silently altered.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string")
    if not _HEADER_SAFE.fullmatch(value):
        raise ValueError(f"{what} may hold only printable ASCII characters")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_max_age(max_age, what: str = "max_age") -> int:
    if isinstance(max_age, bool) or not isinstance(max_age, int):
        raise TypeError(f"{what} must be an integer number of seconds")
    if max_age < 0:
        raise ValueError(f"{what} must not be negative")
    return max_age


def challenge(acr_values: list[str] | None = None, max_age: int | None = None,
              description: str | None = _DEFAULT_DESCRIPTION, realm: str | None = None) -> str:
    """The ``WWW-Authenticate`` value of an RFC 9470 step-up challenge (send with 401).

    ``acr_values``: acceptable acr values, most preferred first (sent space-separated).
    ``max_age``: seconds allowed since the user last actively authenticated.
    At least one of them is required. ``description`` (``error_description``) and
    ``realm`` are optional; ``None`` leaves them out.
    """
    if isinstance(acr_values, str):
        raise TypeError("acr_values must be a list of strings, not a string")
    acr_values = list(acr_values or [])
    for value in acr_values:
        if not isinstance(value, str) or not value:
            raise ValueError("each acr value must be a non-empty string")
        if any(c in value for c in _WS):
            raise ValueError(f"acr value {value!r} must not contain whitespace (the list is space-separated)")
    if max_age is not None:
        _check_max_age(max_age)
    if not acr_values and max_age is None:
        raise ValueError("a step-up challenge needs acr_values, max_age or both")

    params = []
    if realm is not None:
        params.append(f"realm={_quote(realm, 'realm')}")
    params.append(f'error="{ERROR}"')
    if description is not None:
        params.append(f"error_description={_quote(description, 'description')}")
    if acr_values:
        params.append(f"acr_values={_quote(' '.join(acr_values), 'acr_values')}")
    if max_age is not None:
        params.append(f'max_age="{max_age}"')
    return "Bearer " + ", ".join(params)


def flask_response(challenge_header: str, description: str | None = None):
    """``(json_body, 401, headers)``: a response tuple Flask (and similar) accept as is.

    The JSON body repeats ``error`` and ``error_description``; by default both are
    taken from ``challenge_header`` (a value made by :func:`challenge`).
    """
    info = parse_challenge(challenge_header)
    body = {"error": info["error"] or ERROR}
    text = description if description is not None else info.get("error_description")
    if text is not None:
        body["error_description"] = text
    headers = [
        ("WWW-Authenticate", challenge_header),
        ("Content-Type", "application/json"),
        ("Cache-Control", "no-store"),
    ]
    return json.dumps(body), 401, headers


# --------------------------------------------------------------------------- checking


def insufficient(claims: dict, *, required_acr: str | list[str] | tuple[str, ...] | None = None,
                 max_age: int | None = None, now: float | None = None) -> bool:
    """True when validated access-token ``claims`` do not meet the requirement.

    ``required_acr``: one acr value or a list of acceptable ones; the token's
    ``acr`` must equal one of them exactly (no ordering between levels is assumed:
    list every acceptable value). A missing or non-string ``acr`` is insufficient.
    ``max_age``: the token's ``auth_time`` must be at most this many seconds old
    (``now - auth_time > max_age`` is insufficient); a missing or non-numeric
    ``auth_time`` is insufficient. With neither requirement the answer is False.

    Validate the token (signature, issuer, audience, expiry) before calling this.
    """
    if not isinstance(claims, dict):
        raise TypeError("claims must be a dict")
    if required_acr is not None:
        acceptable = [required_acr] if isinstance(required_acr, str) else list(required_acr)
        if not acceptable or not all(isinstance(v, str) and v for v in acceptable):
            raise ValueError("required_acr must be a non-empty string or a non-empty list of them")
        acr = claims.get("acr")
        if not isinstance(acr, str) or acr not in acceptable:
            return True
    if max_age is not None:
        _check_max_age(max_age)
        auth_time = claims.get("auth_time")
        if isinstance(auth_time, bool) or not isinstance(auth_time, (int, float)):
            return True
        if (time.time() if now is None else now) - auth_time > max_age:
            return True
    return False


# --------------------------------------------------------------------------- parsing


class _Scanner:
    """RFC 9110 §11.6.1: ``#challenge``, ``challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]``."""

    def __init__(self, text: str):
        self.s = text
        self.i = 0

    def error(self, message: str):
        raise ValueError(f"malformed WWW-Authenticate value at offset {self.i}: {message}")

    def skip_ws(self) -> bool:
        start = self.i
        while self.i < len(self.s) and self.s[self.i] in _WS:
            self.i += 1
        return self.i > start

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def token(self) -> str | None:
        match = _TOKEN.match(self.s, self.i)
        if not match:
            return None
        self.i = match.end()
        return match.group()

    def quoted(self) -> str:
        assert self.s[self.i] == '"'
        self.i += 1
        out = []
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == '"':
                self.i += 1
                return "".join(out)
            if c == "\\":
                if self.i + 1 >= len(self.s):
                    break
                c = self.s[self.i + 1]
                self.i += 1
            if c != "\t" and (c < " " or c == "\x7f"):
                self.error("control character in quoted string")
            out.append(c)
            self.i += 1
        self.error("unterminated quoted string")

    def at_element_end(self) -> bool:
        """After OWS: end of input or a list comma."""
        save = self.i
        self.skip_ws()
        if self.peek() in ("", ","):
            return True
        self.i = save
        return False

    def challenges(self) -> list[tuple[str, str | None, list[tuple[str, str]]]]:
        result: list[tuple[str, str | None, list[tuple[str, str]]]] = []
        while True:
            # Empty list elements (", ,") are allowed (RFC 9110 §5.6.1).
            while self.skip_ws() or self.peek() == ",":
                if self.peek() == ",":
                    self.i += 1
            if not self.peek():
                return result
            start = self.i
            name = self.token()
            if name is None:
                self.error(f"unexpected {self.peek()!r}")
            self.skip_ws()
            if self.peek() == "=":
                # An auth-param continuing the current challenge's comma-separated list.
                if not result or result[-1][1] is not None:
                    self.i = start
                    self.error("parameter outside a challenge")
                result[-1][2].append(self.param_value(name))
                continue
            # A new challenge: ``name`` is its scheme.
            self.i = start + len(name)
            params: list[tuple[str, str]] = []
            token68 = None
            if self.skip_ws() and not self.at_element_end():
                match = _TOKEN68.match(self.s, self.i)
                save = self.i
                if match:
                    self.i = match.end()
                    if self.at_element_end():
                        token68 = match.group()
                    else:
                        self.i = save
                if token68 is None:
                    param = self.token()
                    if param is None:
                        self.error(f"unexpected {self.peek()!r}")
                    self.skip_ws()
                    if self.peek() != "=":
                        self.error("expected '=' after parameter name")
                    params.append(self.param_value(param))
            elif self.peek() not in ("", ","):
                self.error("expected a space after the scheme")
            result.append((name, token68, params))

    def param_value(self, name: str) -> tuple[str, str]:
        """At ``BWS "=" BWS ( token / quoted-string )``; ends at a comma or the end."""
        self.i += 1  # "="
        self.skip_ws()
        if self.peek() == '"':
            value = self.quoted()
        else:
            value = self.token()
            if value is None:
                self.error(f"missing value for {name!r}")
        if not self.at_element_end():
            self.error(f"unexpected text after parameter {name!r}")
        return name.lower(), value


def parse_challenge(header_value: str) -> dict:
    """Parse the ``Bearer`` challenge of a ``WWW-Authenticate`` value.

    Other challenges in the same value (``Basic realm="x", Bearer ...``, also as
    several headers joined with ", ") are skipped; the first Bearer challenge is
    used. Parameter names are lower-cased; values are unquoted and unescaped.
    Returns ``{"scheme": "Bearer", "error": str|None, "error_description":
    str|None, "acr_values": [..], "max_age": int|None, ...}`` plus any other
    parameters (``realm``, ``scope``, ...) as strings, whatever the error code.

    Raises ValueError for a malformed value, no Bearer challenge, a parameter
    given twice, or a ``max_age`` that is not a non-negative integer.
    """
    if not isinstance(header_value, str):
        raise TypeError("header_value must be a string")
    for scheme, token68, params in _Scanner(header_value).challenges():
        if scheme.lower() != "bearer":
            continue
        if token68 is not None:
            raise ValueError("a Bearer challenge takes auth-params, not token68")
        result: dict = {}
        for name, value in params:
            if name in result:
                raise ValueError(f"parameter {name!r} given twice")
            result[name] = value
        acr_values = result.get("acr_values")
        result["acr_values"] = acr_values.split() if acr_values else []
        max_age = result.get("max_age")
        if max_age is not None:
            max_age = max_age.strip()
            if not max_age.isascii() or not max_age.isdigit():
                raise ValueError(f"max_age must be a non-negative integer, not {max_age!r}")
            max_age = int(max_age)
        result["max_age"] = max_age
        result.setdefault("error", None)
        result.setdefault("error_description", None)
        return {"scheme": "Bearer", **result}
    raise ValueError("no Bearer challenge in the WWW-Authenticate value")


def authorization_params(challenge: dict) -> dict:
    """What to add to the next authorization request for a parsed step-up challenge.

    Returns ``{"acr_values": "a b"}``, ``{"max_age": "300"}`` or both: only what
    the challenge asked for, as strings ready for a query string. Raises
    ValueError when the challenge's error is not ``insufficient_user_authentication``
    (e.g. ``invalid_token``: get a new token, do not step up) or when it names
    neither acr_values nor max_age (a new request would change nothing).
    """
    if challenge.get("error") != ERROR:
        raise ValueError(f"not a step-up challenge (error={challenge.get('error')!r})")
    params = {}
    acr_values = challenge.get("acr_values")
    if isinstance(acr_values, str):
        acr_values = acr_values.split()
    if acr_values:
        params["acr_values"] = " ".join(acr_values)
    max_age = challenge.get("max_age")
    if max_age is not None:
        params["max_age"] = str(_check_max_age(int(max_age) if isinstance(max_age, str) else max_age))
    if not params:
        raise ValueError("the step-up challenge names neither acr_values nor max_age")
    return params
