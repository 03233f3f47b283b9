"""Blueprint "oidc": the protocol endpoints. Thin: Authlib and oidc.authorize do the work."""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError
from flask import Blueprint, jsonify, request

from ..extensions import current_app_object, current_request, runtime
from . import authorize as flow
from ..policies import rate_limits
from . import dpop, par, registration
from .discovery import metadata

bp = Blueprint("oidc", __name__)


def _public_json(payload: dict, max_age: int):
    response = jsonify(payload)
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    # Browser-based RPs read discovery and keys cross-origin.
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@bp.route("/authorize", methods=["GET", "POST"])
def authorize():
    # POST is allowed by OIDC Core §3.1.2.1; parameters then come in the body.
    request_ = current_request()
    params = request_.form.copy() if request_.method == "POST" else request_.args.copy()  # Params (idp/params.py)
    return flow.handle(params)


@bp.get("/authorize/resume/<interaction_id>")
def resume(interaction_id):
    data = flow.load_interaction(interaction_id)
    if data is None:
        return flow.expired_interaction_page()
    return flow.handle(flow.interaction_params(data), data, interaction_id)


def _client_key(request) -> str:
    """Who is calling the token endpoint, for its rate limit: the client id if
    it says one (Basic or form), else the IP."""
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.username:
        return f"client:{auth.username[:100]}"
    if request.form.get("client_id"):
        return f"client:{request.form['client_id'][:100]}"
    return f"ip:{request.remote_addr}"


@bp.post("/token")
def token():
    server = current_app_object().extensions["authlib.server"]
    request_ = current_request()
    rate_limits.hit("token", _client_key(request_))
    try:
        if not request_.values.get("grant_type"):
            # RFC 6749 §5.2: a missing required parameter is invalid_request. (Authlib would look for a grant
            # of type None and answer unsupported_grant_type, which is for a type we do not offer.)
            raise InvalidRequestError("Missing 'grant_type'.")
        dpop.check_token_request()
    except OAuth2Error as error:
        return server.handle_error_response(server.create_oauth2_request(None), error)
    response = server.create_token_response()
    if dpop.current_jkt():
        response.headers["DPoP-Nonce"] = dpop.current_nonce()
    return response


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo():
    return current_app_object().extensions["authlib.server"].create_endpoint_response("userinfo")


@bp.post("/par")
def pushed_authorization_request():
    server = current_app_object().extensions["authlib.server"]
    return server.handle_response(*par.push(server))


@bp.post("/device_authorization")
def device_authorization():
    return current_app_object().extensions["authlib.server"].create_endpoint_response("device_authorization")


@bp.post("/register")
def register():
    rate_limits.hit("register", request.remote_addr or "-")
    server = current_app_object().extensions["authlib.server"]
    return server.handle_response(*registration.register())


@bp.route("/register/<client_id>", methods=["GET", "PUT", "DELETE"])
def configure_client(client_id):
    server = current_app_object().extensions["authlib.server"]
    return server.handle_response(*registration.configure(client_id))


@bp.post("/revoke")
def revoke():
    return current_app_object().extensions["authlib.server"].create_endpoint_response("revocation")


@bp.post("/introspect")
def introspect():
    return current_app_object().extensions["authlib.server"].create_endpoint_response("introspection")


@bp.get("/jwks")
def jwks():
    return _public_json(runtime().keys.jwks(), 300)


@bp.get("/.well-known/openid-configuration")
@bp.get("/.well-known/oauth-authorization-server")
def discovery():
    settings = runtime().settings
    return _public_json(metadata(settings.issuer, settings.supported_locales), 3600)
