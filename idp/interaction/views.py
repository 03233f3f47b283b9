"""Blueprint "interaction": the pages /authorize hands off to (login, consent) and IdP logout."""

from __future__ import annotations

from urllib.parse import urlsplit

from authlib.oauth2 import OAuth2Error
from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import validate_csrf
from wtforms.validators import ValidationError

from ..agreements import service as agreements
from ..extensions import csrf, db_session, origin, runtime
from ..grants import service as grants
from ..identities.models import Identity
from ..oidc import authorize as flow
from ..oidc import logout as logout_channels
from ..sessions import service as sessions

bp = Blueprint("interaction", __name__)

ROLE_LABELS = {"superuser": _l("Superuser"), "user": _l("User"), "time_registrant": _l("Time registrant")}


def role_label(role: str) -> str:
    return str(ROLE_LABELS.get(role, role))


def _load(interaction_id):
    data = flow.load_interaction(interaction_id)
    if data is not None:
        g.ui_locales = (data["params"].get("ui_locales") or [None])[0]
        # The protocol endpoints' cache (idp/clients/cache.py): a sign-in shows this page and takes its POST,
        # and an ORM load of the client cost each of them more than the rest of the look-up.
        client = runtime().clients.get(db_session(), data["client_id"])
        if client is not None and not client.disabled:
            return data, client
    return None, None


def safe_path(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path on this site, else ``default``: no open redirects."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(c) < 32 for c in target):
        return default
    return target


def _resume(interaction_id):
    return redirect(url_for("oidc.resume", interaction_id=interaction_id))


def _signed_in(interaction_id):
    """The pending request, its client and the signed-in login, or Nones."""
    data, client = _load(interaction_id)
    login, _identity = flow.signed_in_identity()
    if data is None or login is None:
        return None, None, None
    return data, client, login


@bp.route("/interaction/<interaction_id>/agreement", methods=["GET", "POST"])
def agreement(interaction_id):
    data, client, login = _signed_in(interaction_id)
    if data is None:
        return flow.expired_interaction_page()
    params = flow.interaction_params(data)
    if request.method == "POST":
        number = request.form.get("agreement", "")
        # Never trust the posted number: it must be one of this person's
        # eligible agreements for this client, checked again here.
        if agreements.find_eligible(runtime().db, login.identity_id, client, number) is None:
            return render_template("errors/error.html", title=_("That agreement is not available"),
                                   message=_("Choose one of the agreements in the list.")), 400
        flow.update_interaction(interaction_id, data, agreement=number)
        return _resume(interaction_id)
    q = request.args.get("q", "").strip()[:100]
    hint = params.get("agreement_hint")
    notice = None
    if hint and agreements.find_eligible(runtime().db, login.identity_id, client, hint) is None:
        notice = _("You do not have access to agreement %(number)s. Choose another one.", number=hint)
    items = agreements.chooser_list(db_session(), login.identity_id, client, q)
    return render_template("interaction/agreement.html", client=client, items=items, q=q, notice=notice,
                           interaction_id=interaction_id, limit=agreements.CHOOSER_LIMIT, role_label=role_label)


@bp.get("/interaction/<interaction_id>/agreement/search")
def agreement_search(interaction_id):
    """JSON for the chooser's instant filtering; the page works without it."""
    data, client, login = _signed_in(interaction_id)
    if data is None:
        return {"error": "interaction_expired"}, 404
    items = agreements.chooser_list(db_session(), login.identity_id, client, request.args.get("q", "")[:100])
    return {"items": [{"number": i.number, "name": i.name, "role": role_label(i.role)} for i in items]}


@bp.route("/interaction/<interaction_id>/no-agreement", methods=["GET", "POST"])
def no_agreement(interaction_id):
    data, client, login = _signed_in(interaction_id)
    if data is None:
        return flow.expired_interaction_page()
    if request.method == "POST":
        return flow.deny(flow.interaction_params(data),
                         "The person has no agreement that this application can be used with.")
    identity = db_session().get(Identity, login.identity_id)
    return render_template("interaction/no_agreement.html", client=client, identity=identity), 403


@bp.route("/interaction/<interaction_id>/consent", methods=["GET", "POST"])
def consent(interaction_id):
    data, client, login = _signed_in(interaction_id)
    if data is None:
        return flow.expired_interaction_page()
    params = flow.interaction_params(data)
    scope = client.get_allowed_scope(params.get("scope", ""))
    if request.method == "POST":
        if request.form.get("action") != "allow":
            return flow.deny(params)
        grants.remember(db_session(), login.identity_id, client.client_id, scope, origin=origin())
        flow.update_interaction(interaction_id, data, consented=True)
        return _resume(interaction_id)
    identity = db_session().get(Identity, login.identity_id)
    return render_template("interaction/consent.html", client=client, identity=identity,
                           scopes=grants.describe(scope), interaction_id=interaction_id)


@bp.route("/logout", methods=["GET", "POST"])
@csrf.exempt
def logout():
    """RP-Initiated Logout 1.0 and the IdP's own "sign out".

    An RP may POST here (§2) without our CSRF token; a valid id_token_hint is
    its proof. Without one, only the confirmation form (with a CSRF token) signs out.
    """
    server = flow.server()
    try:
        end = server.validate_endpoint_request("end_session")
    except OAuth2Error as error:
        # §4: on errors the OP "MUST not perform post-logout redirection".
        return flow.error_page(error)
    if request.method == "POST" and end.needs_confirmation:
        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError:
            return render_template("errors/error.html", title=_("This form has expired"),
                                   message=_("Go back, reload the page and try again.")), 400
    login, identity = flow.signed_in_identity()
    if end.needs_confirmation and request.method == "GET" and login is not None:
        return render_template("interaction/logout.html", identity=identity, client=end.client,
                               params=[(k, v) for k, v in request.args.items(multi=True) if k != "csrf_token"])
    sid = login.sid if login else None
    sessions.sign_out(session)
    frames = logout_channels.notify_clients(db_session(), sid)
    if end.redirect_uri and not frames:
        return redirect(end.redirect_uri)
    response = current_app.make_response(render_template(
        "interaction/logged_out.html", frames=frames, continue_to=end.redirect_uri))
    if frames:
        origins = " ".join(sorted({"{0.scheme}://{0.netloc}".format(urlsplit(u)) for u in frames}))
        response.headers["Content-Security-Policy"] = (
            f"default-src 'self'; img-src 'self' data:; frame-src {origins}; frame-ancestors 'none'; base-uri 'none'")
    return response


@bp.get("/")
def home():
    _login, identity = flow.signed_in_identity()
    return render_template("interaction/home.html", identity=identity)


@bp.get("/language/<code>")
def language(code):
    if code in runtime().settings.supported_locales:
        session["locale"] = code
    return redirect(safe_path(request.args.get("next")))


from . import device as _device_routes  # noqa: E402,F401  (registers /device on this blueprint)
from . import login as _sign_in_routes  # noqa: E402,F401  (registers the sign-in routes on this blueprint)
