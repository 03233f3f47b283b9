"""The device verification page (RFC 8628 §3.3): enter the code, see what the device asks, decide."""

from __future__ import annotations

from flask import redirect, render_template, request, url_for
from flask_babel import gettext as _

from ..clients.models import Client
from ..extensions import db_session, origin, runtime
from ..grants import service as grants
from ..oidc import authorize as flow
from ..oidc import device
from .views import bp

MAX_ATTEMPTS = 10
ATTEMPT_WINDOW = 600


@bp.route("/device", methods=["GET", "POST"])
def device_verification():
    login, identity = flow.signed_in_identity()
    if login is None:
        return redirect(url_for("interaction.standalone_login", next=request.full_path.rstrip("?")))
    user_code = request.values.get("user_code", "").strip()[:20]
    if request.method == "GET" or "decision" not in request.form:
        if request.method == "GET" and not user_code:
            return render_template("interaction/device.html", user_code="", error=None)
        # §5.1: user codes are short, so guessing is throttled per browser session.
        if runtime().store.incr("device_attempts", login.sid, ATTEMPT_WINDOW) > MAX_ATTEMPTS:
            return render_template("interaction/device.html", user_code=user_code,
                                   error=_("Too many attempts. Wait 10 minutes and try again.")), 429
        key, record = device.find_by_user_code(user_code)
        if record is None:
            return render_template("interaction/device.html", user_code=user_code,
                                   error=_("That code is not valid or has expired. Check the code on your device.")), 400
        client = db_session().get(Client, record["client_id"])
        return render_template("interaction/device_confirm.html", client=client, user_code=user_code,
                               scopes=grants.describe(record["scope"]), identity=identity)
    key, record = device.find_by_user_code(user_code)
    if record is None:
        return render_template("interaction/device.html", user_code=user_code,
                               error=_("That code is not valid or has expired. Check the code on your device.")), 400
    approved = request.form.get("decision") == "allow"
    if approved:
        grants.remember(db_session(), identity.id, record["client_id"], record["scope"], origin=origin())
    device.decide(key, record, approved, login)
    return render_template("interaction/device_done.html", approved=approved)
