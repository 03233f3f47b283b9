"""Blueprint "account": a person's own settings at the IdP (two-step verification, ...)."""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlencode

from flask import Blueprint, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _

from ..errors import InvalidCredentialsError
from ..audit import service as audit
from ..extensions import db_session, origin, runtime
from ..identities import service as identities
from ..identities import totp as totp_module
from ..identities.totp import InvalidTotpError, TotpLockedError, TotpReplayError
from ..interaction.views import safe_path
from ..oidc import authorize as flow
from ..sessions import service as sessions

bp = Blueprint("account", __name__, url_prefix="/account")
ENROL_KEY = "totp_enrolment"


def signed_in(view):
    """Account pages need a valid sign-in; without one, sign in and come back."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        login, identity = flow.signed_in_identity()
        if login is None:
            return redirect(url_for("interaction.standalone_login", next=request.full_path.rstrip("?")))
        g.login, g.identity = login, identity
        return view(*args, **kwargs)

    return wrapper


@bp.get("/")
@signed_in
def overview():
    enrolled = runtime().totp.enrolled(db_session(), g.identity.id)
    remaining = totp_module.unused_recovery_codes(db_session(), g.identity.id) if enrolled else 0
    return render_template("account/overview.html", identity=g.identity, enrolled=enrolled, remaining=remaining,
                           login=g.login)


def _reauthenticate(identity) -> str | None:
    """Password and a current code, as the issue asks before changing a second factor."""
    try:
        identities.authenticate(db_session(), runtime().passwords, identity.email, request.form.get("password", ""))
    except InvalidCredentialsError:
        return _("The password is not correct.")
    try:
        runtime().totp.verify(db_session(), identity.id, request.form.get("code", ""))
    except TotpLockedError:
        return _("Too many attempts. Wait 5 minutes and try again.")
    except (InvalidTotpError, TotpReplayError):
        return _("That code is not right. Check your authenticator app and try again.")
    return None


@bp.route("/two-step/enrol", methods=["GET", "POST"])
@signed_in
def enrol():
    """Set up an authenticator: scan, confirm with a first code, keep the recovery codes."""
    identity, return_to = g.identity, safe_path(request.args.get("return_to"), url_for("account.overview"))
    already = runtime().totp.enrolled(db_session(), identity.id)
    pending = session.get(ENROL_KEY)
    error, status = None, 200
    if request.method == "POST" and request.form.get("step") == "reauth":
        error = _reauthenticate(identity)
        if error is None:
            pending = session[ENROL_KEY] = {"secret": totp_module.new_secret(), "reauthenticated": True}
        status = 400 if error else 200
    elif request.method == "POST" and pending and already and not pending.get("reauthenticated"):
        # Started before an authenticator existed (another tab enrolled since):
        # replacing it now needs the password and a current code like any other.
        session.pop(ENROL_KEY, None)
        pending, error, status = None, _("Two-step verification was set up meanwhile. Confirm it is you to replace it."), 400
    elif request.method == "POST" and pending:
        try:
            runtime().totp.check_code(pending["secret"], identity.id, request.form.get("code", ""))
        except TotpLockedError:
            error, status = _("Too many attempts. Wait 5 minutes and try again."), 429
        except (InvalidTotpError, TotpReplayError):
            error, status = _("That code is not right. Check your authenticator app and try again."), 400
        else:
            audit.record(db_session(), "second_factor.enrolled", actor=identity.id, subject=identity.id,
                         origin=origin())
            codes = runtime().totp.enrol(db_session(), identity.id, pending["secret"])
            session.pop(ENROL_KEY, None)
            # A right code from the new authenticator is a second factor: the
            # session is raised now, so step-up can continue straight away.
            sessions.step_up(session)
            return render_template("account/recovery_codes.html", codes=codes, return_to=return_to)
    if already and not (pending and pending.get("reauthenticated")):
        return render_template("account/reauth.html", error=error, purpose="enrol"), status
    if not pending:
        pending = session[ENROL_KEY] = {"secret": totp_module.new_secret(), "reauthenticated": already}
    uri = totp_module.provisioning_uri(pending["secret"], identity.email)
    return render_template("account/enrol.html", secret=pending["secret"], qr=totp_module.qr_svg(uri), error=error,
                           action=url_for("account.enrol") + "?" + urlencode({"return_to": return_to})), status


@bp.route("/two-step/disable", methods=["GET", "POST"])
@signed_in
def disable():
    if not runtime().totp.enrolled(db_session(), g.identity.id):
        return redirect(url_for("account.overview"))
    error, status = None, 200
    if request.method == "POST":
        error = _reauthenticate(g.identity)
        if error is None:
            audit.record(db_session(), "second_factor.disabled", actor=g.identity.id, subject=g.identity.id,
                         origin=origin())
            runtime().totp.disable(db_session(), g.identity.id)
            return redirect(url_for("account.overview"))
        status = 400
    return render_template("account/reauth.html", error=error, purpose="disable"), status


from . import passwords  # noqa: E402,F401  (registers the password routes on this blueprint)
from . import settings  # noqa: E402,F401  (registers the My settings routes on this blueprint)
