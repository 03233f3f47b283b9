"""The authorization endpoint's flow: Authlib validates, policies decide, interaction pages ask.

    /authorize ──valid──▶ checks ──need a page──▶ /interaction/<id>/login|consent
        │                   │                              │
        │ invalid client or │ nothing needed               ▼ done
        │ redirect_uri      ▼                     /authorize/resume/<id> (same checks)
        ▼            302 to the RP with code, state, iss
    error page (never a redirect to an unverified URI)

The pending request is stored server-side under the interaction id and bound
to this browser's session; resuming rebuilds it from storage, so nothing the
browser sends back can change what was asked for.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import scope_to_list
from authlib.oauth2.rfc6749.errors import AccessDeniedError, InvalidRequestError, InvalidClientError, UnsupportedResponseTypeError
from authlib.oauth2.rfc9101.errors import (InvalidRequestObjectError, InvalidRequestUriError,
                                            RequestNotSupportedError, RequestUriNotSupportedError)
from authlib.oidc.core.errors import LoginRequiredError
from flask import current_app, redirect, render_template, session, url_for
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import bindparam, select
from werkzeug.datastructures import MultiDict

from ..agreements import service as agreements
from ..extensions import current_app_object, db_session, runtime
from ..grants.models import Grant
from ..params import Params
from ..identities.models import Identity
from ..policies import prompts
from ..sessions import service as sessions
from ..storage.direct import DirectStatement
from . import par, subjects, tokens
from .tokens import Principal, new_family_id

INTERACTION = "interaction"
MAX_BOUND_INTERACTIONS = 10


def server():
    return current_app_object().extensions["authlib.server"]


def error_page(error: OAuth2Error, status: int = 400):
    return render_template("errors/oauth.html", error=error.error, description=error.get_error_description()), status


def _redirect_error(grant_request, error: OAuth2Error):
    response = server().handle_error_response(grant_request, error)
    if response.location:
        # RFC 9207 §2: "including error responses".
        response.location = add_params_to_uri(response.location, [("iss", runtime().settings.issuer)])
    return deliver(response, grant_request.payload.data)


def deliver(response, params):
    """Send an authorization response the way the RP asked (OAuth 2.0 Form Post
    Response Mode): with ``form_post`` the parameters go in an auto-submitted
    form instead of the query, so they stay out of URLs and logs."""
    if params.get("response_mode") != "form_post" or response.status_code != 302 or not response.location:
        return response
    parts = urlsplit(response.location)
    target = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    fields = parse_qsl(parts.query, keep_blank_values=True)
    page = render_template("oidc/form_post.html", action=target, fields=fields)
    return current_app.response_class(page, status=200, mimetype="text/html",
                                      headers={"Cache-Control": "no-store"})


#: Request-object errors come before Authlib checks the redirect URI; they may
#: still go back to the RP once we have checked it ourselves.
_REQUEST_OBJECT_ERRORS = (RequestNotSupportedError, RequestUriNotSupportedError, InvalidRequestObjectError,
                          InvalidRequestUriError)


def _verified_redirect_uri(params) -> str | None:
    client = server().query_client(params.get("client_id")) if params.get("client_id") else None
    if client is None:
        return None
    uri = params.get("redirect_uri")
    if uri:
        return uri if client.check_redirect_uri(uri) else None
    return client.get_default_redirect_uri()


def _handle_validation_error(error: OAuth2Error, request):
    # An error may be redirected only when the redirect URI was verified
    # against the client; otherwise (and for a missing or unknown response
    # type, per our contract) the person sees an error page.
    if isinstance(error, _REQUEST_OBJECT_ERRORS) and not error.redirect_uri:
        error.redirect_uri = _verified_redirect_uri(request.payload.data)
    if isinstance(error, (UnsupportedResponseTypeError, InvalidClientError)) or not error.redirect_uri:
        return error_page(error)
    return _redirect_error(request, error)


def _hint_mismatch(hint: str | None, identity, client) -> bool:
    """True when an id_token_hint names someone other than the signed-in person."""
    if not hint or identity is None:
        return False
    try:
        token = jwt.decode(hint, runtime().keys.public_keys())
    except (JoseError, ValueError):
        return True  # unreadable hint: matches nobody, so prompt=none fails safely
    # An expired ID token is still a valid hint (OIDC Core §3.1.2.1).
    if token.claims.get("iss") != runtime().settings.issuer:
        return True
    return token.claims.get("sub") != subjects.subject_for(identity, client)


def signed_in_identity(load=lambda identity_id: db_session().get(Identity, identity_id)):
    """(login, identity) for this browser, or (None, None) when nobody valid is signed in."""
    login = sessions.current(session)
    if login is None:
        return None, None
    identity = load(login.identity_id)
    if not sessions.valid_for(login, identity):
        return None, None
    return login, identity


def _signed_in_for_authorization(client_id: str | None):
    """``signed_in_identity`` for the authorization endpoint, which only reads the person (claims, subject,
    memberships): the identity as ``tokens.TokenIdentity``, without an ORM load on every SSO hop, and with it,
    in the same statement, what the person already consented to for the client the request names (None when
    nothing, or nobody is signed in)."""
    granted = None

    def load(identity_id):
        nonlocal granted
        row = runtime().db.read(_SIGNED_IN_PERSON, {"id": identity_id, "client_id": client_id or ""})
        if row is None:
            return None
        granted = row.pop("granted_scope")
        return tokens.TokenIdentity(**row)

    login, identity = signed_in_identity(load)
    return login, identity, granted if login else None


def effective_params(payload_data) -> MultiDict:
    """The request's parameters after a request object replaced them, as strings
    (a request object carries max_age as a number and claims as an object)."""
    if isinstance(payload_data, MultiDict):
        return payload_data

    def text(value):
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value) if isinstance(value, (dict, list)) else str(value)

    return Params([(k, text(v)) for k, v in payload_data.items()])


#: What the person already consented to for the client (remembered consent): read on every SSO hop, and
#: committed by grants.remember before any request that depends on it.
_GRANTS = Grant.__table__
_GRANTED_SCOPE = DirectStatement(select(_GRANTS.c.scope).where(
    _GRANTS.c.identity_id == bindparam("identity_id"), _GRANTS.c.client_id == bindparam("client_id")))
#: The signed-in person and that consent in one round trip, the SSO hop's first (grants are unique per person
#: and client, so the subquery gives at most one row).
_SIGNED_IN_PERSON = DirectStatement(tokens.TOKEN_IDENTITY_QUERY.add_columns(
    select(_GRANTS.c.scope).where(_GRANTS.c.identity_id == tokens.IDENTITIES.c.id,
                                  _GRANTS.c.client_id == bindparam("client_id"))
    .scalar_subquery().label("granted_scope")))


def handle(params: MultiDict, interaction: dict | None = None, interaction_id: str | None = None):
    """Run one authorization request from its parameters; returns a Flask response."""
    pushed = bool(interaction and interaction.get("pushed"))
    if par.is_pushed(params):
        try:
            params, pushed = par.resolve(params), True
        except OAuth2Error as error:
            return error_page(error)
    named_client = params.get("client_id")
    login, identity, granted = _signed_in_for_authorization(named_client)
    try:
        grant = server().get_consent_grant(request=params, end_user=identity)
    except OAuth2Error as error:
        return _handle_validation_error(error, server().create_oauth2_request(params))

    client = grant.request.client
    outer, params = params, effective_params(grant.request.payload.data)
    if client.meta("require_pushed_authorization_requests") and not pushed:
        return _redirect_error(grant.request, InvalidRequestError(
            "This client must push its authorization requests (RFC 9126).", redirect_uri=grant.redirect_uri,
            state=params.get("state")))
    agreement, agreement_reason = None, None
    if login and "agreement" in (scope_to_list(grant.request.scope) or []):
        agreement, agreement_reason = resolve_agreement(identity, client, params, interaction)
    if login and client.client_id != named_client:
        # Read for another client than the request turned out to be for: read again for this one.
        granted = (runtime().db.read(_GRANTED_SCOPE, {"identity_id": login.identity_id,
                                                      "client_id": client.client_id}) or {}).get("scope")
    ctx = prompts.Context(
        params=params, client=client, login=login,
        logged_in_here=bool(interaction and interaction.get("logged_in")),
        consented_here=bool(interaction and interaction.get("consented")),
        granted_scope=granted, requested_scope=grant.request.scope or "",
        hint_mismatch=_hint_mismatch(params.get("id_token_hint"), identity, client),
        agreement_reason=agreement_reason,
        acr_required=prompts.second_factor_required(
            params, client, agreement, password_alone_allowed=runtime().settings.password_min_length >= 15),
    )
    decision = prompts.evaluate(ctx)
    current_app_object().logger.debug("authorize %s: %s", client.client_id, decision.reason or "issue")
    if decision.error:
        return _redirect_error(grant.request, decision.error(description=decision.description,
                                                             redirect_uri=grant.redirect_uri, state=params.get("state")))
    if decision.interaction:
        interaction_id = interaction_id or _start_interaction(outer if not pushed else params, client.client_id,
                                                              pushed)
        return redirect(url_for(f"interaction.{decision.interaction}", interaction_id=interaction_id))

    principal = Principal(identity=identity, family_id=new_family_id(), auth_time=login.auth_time,
                          acr=login.acr, amr=list(login.amr), sid=login.sid, agreement=agreement)
    if interaction_id:
        runtime().store.delete(INTERACTION, interaction_id)
    if agreement is not None:
        agreements.mark_used(runtime().db, identity.id, agreement.agreement_pk)
    return deliver(server().create_authorization_response(request=grant.request, grant=grant, grant_user=principal),
                   params)


def resolve_agreement(identity, client, params, interaction) -> tuple[agreements.Selected | None, str | None]:
    """The agreement this authorization is for, or why there is none yet."""
    database = runtime().db
    candidates = agreements.first_eligible(database, identity.id, client)
    if not candidates:
        # Nothing to choose from: neither a hint nor select_agreement can help.
        return None, "no_eligible_agreement"
    chosen = (interaction or {}).get("agreement")
    if chosen:
        selected = agreements.find_eligible(database, identity.id, client, chosen)
        if selected is not None:
            return selected, None
    if "select_agreement" in (params.get("prompt") or "").split():
        return None, "agreement_not_selected"
    hint = params.get("agreement_hint")
    if hint:
        selected = agreements.find_eligible(database, identity.id, client, hint)
        return (selected, None) if selected else (None, "agreement_hint_not_member")
    if len(candidates) == 1:
        return candidates[0], None
    return None, "agreement_not_selected"


def deny(params: MultiDict, description: str = "The person declined the request."):
    """The person cancelled: tell the RP ``access_denied`` (if its request is still valid)."""
    request = server().create_oauth2_request(params)
    try:
        redirect_uri = server().get_consent_grant(request=params, end_user=None).redirect_uri
    except LoginRequiredError as error:  # prompt=none: still a verified redirect URI
        redirect_uri = error.redirect_uri
    except OAuth2Error as error:
        return _handle_validation_error(error, request)
    return _redirect_error(request, AccessDeniedError(description=description, redirect_uri=redirect_uri,
                                                      state=params.get("state")))


# -- interactions ------------------------------------------------------------

def _start_interaction(params: MultiDict, client_id: str, pushed: bool = False) -> str:
    # A pushed request's request_uri is single use: the interaction keeps the
    # pushed parameters themselves (and that they were pushed) for resuming.
    interaction_id = secrets.token_urlsafe(24)
    runtime().store.put(INTERACTION, interaction_id, {
        "params": {k: params.getlist(k) for k in params}, "client_id": client_id,
        "logged_in": False, "consented": False, "pushed": pushed,
    }, runtime().settings.interaction_ttl)
    bound = [i for i in session.get("interactions", []) if i != interaction_id]
    session["interactions"] = (bound + [interaction_id])[-MAX_BOUND_INTERACTIONS:]
    # Every interaction page is a form: the session gets its CSRF secret in this write, which binds the
    # interaction, not in a store write of its own when the first page renders. Flask-WTF keeps the secret under
    # the field's name and signs whatever it finds there.
    session.setdefault(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), secrets.token_hex(20))
    return interaction_id


def load_interaction(interaction_id: str) -> dict | None:
    """The pending request, if it exists and belongs to this browser."""
    if interaction_id not in session.get("interactions", []):
        return None
    return runtime().store.get(INTERACTION, interaction_id)


def update_interaction(interaction_id: str, data: dict, **changes) -> None:
    runtime().store.put(INTERACTION, interaction_id, {**data, **changes}, runtime().settings.interaction_ttl)


def interaction_params(data: dict) -> MultiDict:
    return Params([(k, v) for k, values in data["params"].items() for v in values])


def expired_interaction_page():
    return render_template("errors/interaction_expired.html"), 400
