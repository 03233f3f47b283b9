"""OAuth 2.0 Pushed Authorization Requests (RFC 9126).

The client POSTs its authorization request (authenticated, §2), we validate it
exactly as /authorize would (request objects included) and keep the effective
parameters for EXPIRES_IN seconds under a one-time ``request_uri``. /authorize
then takes the parameters from there: §4 "the authorization server MUST ...
use the request_uri ... to retrieve the authorization request", and the
``client_id`` outside must match. A client registered with
``require_pushed_authorization_requests`` is refused any other way in.
A DPoP proof sent with the push binds the code to its key (RFC 9449 §10.1).
"""

from __future__ import annotations

import secrets

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc9101.errors import InvalidRequestUriError
from flask import request as flask_request
from werkzeug.datastructures import MultiDict

from ..extensions import runtime
from ..params import Params
from . import dpop
from .endpoints import AUTH_METHODS
from .errors import safe

URN_PREFIX = "urn:ietf:params:oauth:request_uri:"
EXPIRES_IN = 60
KIND = "par"
#: Client authentication travels with the push but is not part of the request.
_AUTH_PARAMS = {"client_secret", "client_assertion", "client_assertion_type"}


def push(server):
    """Handle POST /par; returns (status, body, headers)."""
    request = server.create_oauth2_request(None)
    try:
        client = server.authenticate_client(request, [*AUTH_METHODS, "none"], "par")
        form = flask_request.form
        if "request_uri" in form:
            raise InvalidRequestError("'request_uri' is not allowed in a pushed authorization request.")
        if form.get("client_id") and form["client_id"] != client.client_id:
            raise InvalidRequestError("'client_id' does not match the authenticated client.")
        params = Params([(k, v) for k, v in form.items(multi=True) if k not in _AUTH_PARAMS])
        params["client_id"] = client.client_id
        proved = dpop.proved_key()  # RFC 9449 §10.1: checked as at the token endpoint
        pushed = server.create_oauth2_request(params)
        grant = server.get_authorization_grant(pushed)
        grant.validate_no_multiple_request_parameter(pushed)
        grant.validate_authorization_request()
        effective = pushed.payload.data
        stored = {k: (effective.getlist(k) if hasattr(effective, "getlist") else [effective[k]]) for k in effective}
        if proved is not None:
            # RFC 9449 §10.1: the proof binds the code as dpop_jkt would; with both (in the body or in a request
            # object, whichever the request's parameters came from), they must name the same key.
            if stored.setdefault("dpop_jkt", [proved]) != [proved]:
                raise InvalidRequestError("'dpop_jkt' does not match the key of the DPoP proof.")
    except OAuth2Error as error:
        # §2.3: errors are returned as JSON, never by redirect.
        error.redirect_uri = None
        return error()
    handle = secrets.token_urlsafe(32)
    runtime().store.put(KIND, handle, {"client_id": client.client_id, "params": stored}, EXPIRES_IN)
    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
    if proved is not None:
        headers.append(("DPoP-Nonce", dpop.current_nonce()))
    return 201, {"request_uri": URN_PREFIX + handle, "expires_in": EXPIRES_IN}, headers


def is_pushed(params: MultiDict) -> bool:
    return str(params.get("request_uri", "")).startswith(URN_PREFIX)


def resolve(params: MultiDict) -> MultiDict:
    """The pushed parameters for an /authorize request carrying our request_uri.

    Raises InvalidRequestUriError (unknown, expired or used) or
    InvalidRequestError (client_id or another parameter disagrees).
    """
    handle = params["request_uri"][len(URN_PREFIX):]
    consumed = runtime().store.consume(KIND, handle) if 0 < len(handle) <= 100 else None
    if consumed is None or not consumed.first:
        raise InvalidRequestUriError(description="The request_uri is unknown, expired or already used.")
    data = consumed.value
    if params.get("client_id") != data["client_id"]:
        raise InvalidRequestError("'client_id' does not match the pushed authorization request.")
    pushed = Params([(k, v) for k, values in data["params"].items() for v in values])
    for name in params:
        if name in ("request_uri", "client_id"):
            continue
        if params.getlist(name) != pushed.getlist(name):
            raise InvalidRequestError(safe(f"'{name}' differs from the pushed authorization request."))
    return pushed
