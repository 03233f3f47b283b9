"""Blueprint "portal": a signed-in person's own OAuth clients ("apps") at /developer.

An app belongs to the people in ``client_owners``: its creator and anyone they
share it with by e-mail. Only they can see or change it (403 for anyone else,
nothing changed). Apps are made from one of four kinds, each a fixed set of
registration metadata checked by ``clients.metadata.validate`` exactly as dynamic
registration checks it; the portal never makes a first-party client.

A client secret is shown once, in the response to the form that made it
(creation or rotation), and stored only as a keyed hash. After a rotation the
previous secret keeps working for ``settings.secret_rotation_overlap`` seconds.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from flask import Blueprint, abort, g, redirect, render_template, request, url_for
from flask_babel import format_datetime, format_timedelta
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..account.views import signed_in
from ..clients import metadata as client_metadata
from ..clients import service as clients
from ..clients.models import Client, ClientOwner
from ..extensions import db_session, origin, runtime
from ..identities import service as identities
from ..identities.models import Identity
from ..storage.db import utcnow

bp = Blueprint("portal", __name__, url_prefix="/developer")

CODE_GRANTS = ["authorization_code", "refresh_token"]
#: kind -> (label, hint, registration metadata apart from names and URIs)
KINDS: dict[str, tuple] = {
    "web": (_l("Web app"),
            _l("Runs on a server that can keep a secret. Redirect URIs use https."),
            {"application_type": "web", "token_endpoint_auth_method": "client_secret_basic",
             "grant_types": CODE_GRANTS, "response_types": ["code"]}),
    "spa": (_l("Single-page app"),
            _l("Runs in the browser, so it has no secret and uses PKCE. Redirect URIs use https."),
            {"application_type": "web", "token_endpoint_auth_method": "none",
             "grant_types": CODE_GRANTS, "response_types": ["code"]}),
    "native": (_l("Native or mobile app"),
               _l("Installed on a phone or computer: no secret, PKCE. Redirect URIs use http://127.0.0.1 "
                  "(any port) or your own scheme in reverse-domain form, such as com.example.app:/callback."),
               {"application_type": "native", "token_endpoint_auth_method": "none",
                "grant_types": CODE_GRANTS, "response_types": ["code"]}),
    "m2m": (_l("Machine to machine"),
            _l("A service calling APIs on its own behalf (client credentials). No people sign in, "
               "so there are no redirect URIs."),
            {"application_type": "web", "token_endpoint_auth_method": "client_secret_basic",
             "grant_types": ["client_credentials"], "response_types": []}),
}


def kind_of(client: Client) -> str:
    if "authorization_code" not in (client.grant_types or []):
        return "m2m"
    if client.application_type == "native":
        return "native"
    return "spa" if client.token_endpoint_auth_method == "none" else "web"


def _lines(name: str) -> list[str]:
    """A one-URI-per-line textarea as a list, blank lines dropped."""
    return [line.strip() for line in request.form.get(name, "").splitlines() if line.strip()]


def _control(value: str) -> bool:
    """Control characters (NUL above all, which PostgreSQL text cannot hold) never belong in these fields."""
    return any(ord(c) < 32 or ord(c) == 127 for c in value)


def _unparseable(uris: list[str]) -> list[str]:
    """Messages for URIs urlsplit cannot even parse (e.g. a broken IPv6 literal) or with
    control characters, which the shared validator does not catch yet."""
    errors = []
    for uri in uris:
        try:
            urlsplit(uri)
        except ValueError:
            errors.append(_("'%(uri)s' is not a valid URI.", uri=uri))
            continue
        if _control(uri):
            errors.append(_("'%(uri)s' is not a valid URI.", uri=uri.encode("unicode_escape").decode()))
    return errors


def _owned(client_id: str) -> Client:
    """The app, if the signed-in person owns it; 404 if there is none, else 403."""
    client = None if _control(client_id) else db_session().get(Client, client_id)
    if client is None:
        abort(404, description=_("There is no such app. It may have been deleted."))
    if not clients.is_owner(db_session(), client.client_id, g.identity.id):
        abort(403, description=_("Only the app's owners can see or change it."))
    return client


def _owner_emails(client: Client) -> list[str]:
    rows = db_session().execute(
        select(Identity.email).join(ClientOwner, ClientOwner.identity_id == Identity.id)
        .where(ClientOwner.client_id == client.client_id).order_by(ClientOwner.created_at, Identity.email))
    return list(rows.scalars())


def _overlap_text(seconds: int) -> str | None:
    """The overlap in words, exact ("90 minutes", not a rounded "2 hours"); None for none."""
    if seconds <= 0:
        return None
    unit = next(u for u in (86400, 3600, 60, 1) if seconds % u == 0)
    # Babel uses the largest unit whose count reaches ``threshold``: the exact unit's count.
    return format_timedelta(dt.timedelta(seconds=seconds), threshold=seconds / unit, add_direction=False)


def _previous_secret_until(client: Client) -> str | None:
    expires = client.previous_secret_expires_at
    if expires is None or expires <= utcnow():
        return None
    return format_datetime(expires, "long")  # with the time zone


@bp.get("/")
@signed_in
def index():
    apps = [(client, kind_of(client)) for client in clients.owned_by(db_session(), g.identity.id)]
    return render_template("portal/index.html", apps=apps, kinds=KINDS, deleted=request.args.get("deleted") == "1")


@bp.route("/apps/new", methods=["GET", "POST"])
@signed_in
def create():
    kind = request.form.get("kind", request.args.get("kind", "web"))
    form = {"kind": kind if kind in KINDS else "web", "client_name": request.form.get("client_name", ""),
            "redirect_uris": request.form.get("redirect_uris", ""),
            "post_logout_redirect_uris": request.form.get("post_logout_redirect_uris", "")}
    if request.method == "GET":
        return render_template("portal/new.html", kinds=KINDS, form=form, errors=[])
    errors = []
    redirect_uris, logout_uris = _lines("redirect_uris"), _lines("post_logout_redirect_uris")
    name = form["client_name"].strip()
    if kind not in KINDS:
        errors.append(_("Choose what kind of app this is."))
    if not name:
        errors.append(_("Give the app a name; people see it when they sign in."))
    elif _control(name):
        errors.append(_("The name must not contain control characters."))
    if kind == "m2m" and (redirect_uris or logout_uris):
        errors.append(_("Machine-to-machine apps have no redirect URIs. Leave those fields empty."))
    elif kind in KINDS and kind != "m2m" and not redirect_uris:
        errors.append(_("Enter at least one redirect URI, one per line."))
    errors += _unparseable(redirect_uris + logout_uris)
    client = secret = None
    if not errors:
        data = {**KINDS[kind][2], "client_name": name, "redirect_uris": redirect_uris,
                "post_logout_redirect_uris": logout_uris}
        try:
            metadata = client_metadata.validate(data)
            client, secret, _token = clients.register(db_session(), metadata, product_id=None,
                                                      cipher=runtime().cipher, owner_id=g.identity.id,
                                                      with_registration_token=False, origin=origin())
        except (client_metadata.ClientMetadataError, clients.InvalidClientMetadataError) as error:
            db_session().rollback()
            errors.append(str(error))
    if errors:
        return render_template("portal/new.html", kinds=KINDS, form=form, errors=errors), 400
    return render_template("portal/secret.html", client=client, secret=secret, kind=kind, kinds=KINDS,
                           created=True), 201


def _show(client: Client, *, errors=(), uri_form=None, share_errors=(), share_email="", shared=None, status=200):
    uri_form = uri_form or {"redirect_uris": "\n".join(client.redirect_uris or []),
                            "post_logout_redirect_uris": "\n".join(client.post_logout_redirect_uris or [])}
    return render_template(
        "portal/app.html", client=client, kind=kind_of(client), kinds=KINDS, owners=_owner_emails(client),
        errors=list(errors), uri_form=uri_form, share_errors=list(share_errors), share_email=share_email,
        shared=shared, saved=request.args.get("saved") == "1", previous_until=_previous_secret_until(client),
        overlap=_overlap_text(runtime().settings.secret_rotation_overlap)), status


@bp.get("/apps/<client_id>")
@signed_in
def show(client_id):
    return _show(_owned(client_id))


@bp.post("/apps/<client_id>/uris")
@signed_in
def edit_uris(client_id):
    client = _owned(client_id)
    uri_form = {"redirect_uris": request.form.get("redirect_uris", ""),
                "post_logout_redirect_uris": request.form.get("post_logout_redirect_uris", "")}
    redirect_uris, logout_uris = _lines("redirect_uris"), _lines("post_logout_redirect_uris")
    if kind_of(client) == "m2m":
        return _show(client, errors=[_("Machine-to-machine apps have no redirect URIs.")], uri_form=uri_form,
                     status=400)
    if not redirect_uris:
        return _show(client, errors=[_("Enter at least one redirect URI, one per line.")], uri_form=uri_form,
                     status=400)
    broken = _unparseable(redirect_uris + logout_uris)
    if broken:
        return _show(client, errors=broken, uri_form=uri_form, status=400)
    # Everything else stays as registered; RFC 7592 updates are full replacements.
    data = {**client_metadata.describe(client), "redirect_uris": redirect_uris,
            "post_logout_redirect_uris": logout_uris}
    try:
        clients.update_registration(db_session(), client, client_metadata.validate(data), runtime().cipher)
    except (client_metadata.ClientMetadataError, clients.InvalidClientMetadataError) as error:
        db_session().rollback()
        return _show(db_session().get(Client, client_id), errors=[str(error)], uri_form=uri_form, status=400)
    return redirect(url_for("portal.show", client_id=client.client_id, saved=1))


@bp.post("/apps/<client_id>/rotate")
@signed_in
def rotate(client_id):
    client = _owned(client_id)
    overlap = runtime().settings.secret_rotation_overlap
    try:
        secret = clients.rotate_secret(db_session(), client, overlap, runtime().cipher)
    except clients.InvalidClientMetadataError:
        db_session().rollback()
        return _show(client, errors=[_("This app has no secret to rotate.")], status=400)
    return render_template("portal/secret.html", client=client, secret=secret, kind=kind_of(client), kinds=KINDS,
                           created=False, overlap=_overlap_text(overlap),
                           previous_until=_previous_secret_until(client))


@bp.post("/apps/<client_id>/owners")
@signed_in
def share(client_id):
    client = _owned(client_id)
    email = request.form.get("email", "").strip()
    if _control(email):
        return _show(client, share_errors=[_("Enter a valid e-mail address.")], status=400)
    identity = identities.find_by_email(db_session(), email) if email else None
    if not email:
        return _show(client, share_errors=[_("Enter the e-mail address of the person to share with.")], status=400)
    if identity is None or identity.disabled:
        return _show(client, share_email=email, status=400, share_errors=[
            _("Nobody with a Connect login uses %(email)s. Ask them to sign up first, then share again.",
              email=email)])
    clients.add_owner(db_session(), client.client_id, identity.id)
    return _show(client, shared=identity.email)


@bp.route("/apps/<client_id>/delete", methods=["GET", "POST"])
@signed_in
def delete(client_id):
    client = _owned(client_id)
    if request.method == "GET":
        return render_template("portal/delete.html", client=client)
    clients.delete(db_session(), client, actor=g.identity.id, origin=origin())  # revokes its tokens first
    return redirect(url_for("portal.index", deleted=1))
