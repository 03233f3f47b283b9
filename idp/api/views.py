"""Blueprint "api": JSON APIs for RPs, authorized by our access tokens."""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from flask import Blueprint, current_app, jsonify, request

from ..agreements import service as agreements
from ..extensions import db_session, runtime
from ..policies import rate_limits

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _error(status: int, error: str, description: str):
    return jsonify(error=error, error_description=description), status


@bp.get("/me/agreements")
def my_agreements():
    """The caller's agreements for an RP's switcher: ?q=&product=&cursor=&limit= (scope ``agreement``)."""
    try:
        token = current_app.extensions["authlib.protector"].acquire_token(["agreement"])
    except OAuth2Error as error:
        return current_app.extensions["authlib.server"].handle_response(*error())
    rate_limits.hit("agreements_api", f"{token['client_id']}:{token['sub']}")
    try:
        limit = int(request.args.get("limit", 50))
    except ValueError:
        return _error(400, "invalid_request", "'limit' must be a whole number from 1 to 100.")
    if not 1 <= limit <= agreements.MAX_PAGE:
        return _error(400, "invalid_request", "'limit' must be a whole number from 1 to 100.")
    client = runtime().clients.get(db_session(), token["client_id"])
    # The token's sub may be pairwise; the record knows whose token it is.
    record = token.recorded
    if record.identity_id is None:
        # A client_credentials token has no person, so no agreements to list.
        return _error(403, "insufficient_scope", "This API needs a token issued to a person.")
    try:
        page = agreements.page(db_session(), record.identity_id, client, q=request.args.get("q", "")[:100],
                               product=request.args.get("product") or None, cursor=request.args.get("cursor") or None,
                               limit=limit)
    except ValueError:
        return _error(400, "invalid_request", "'cursor' is not one this API returned.")
    response = jsonify(items=page.items, next_cursor=page.next_cursor)
    response.headers["Cache-Control"] = "no-store"
    return response
