"""Signing in: the password step, the second step (TOTP or recovery code) and step-up.

    password ──ok, no authenticator──────────────▶ signed in (amr pwd)
       │
       └──ok, authenticator──▶ second step ──ok──▶ signed in (amr pwd otp mfa)

    signed in (pwd) ──/stepup──▶ code ──ok──▶ raised to mfa (no authenticator yet: enrol first)

A password alone never signs in a person who has an authenticator: between
the two steps the session holds only a short-lived ``pending_login``.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

from flask import redirect, render_template, request, session, url_for
from flask_babel import gettext as _

from ..errors import InvalidCredentialsError
from .. import observability
from ..audit import service as audit
from ..extensions import db_session, origin, runtime
from ..identities import service as identities
from ..identities.totp import InvalidTotpError, TotpLockedError, TotpReplayError
from ..oidc import authorize as flow
from ..policies import throttle
from ..sessions import service as sessions
from .views import _load, bp, safe_path

PENDING = "pending_login"
PENDING_TTL = 300


def _password_form(client, next_url: str | None, interaction_id: str | None, login_hint: str = "",
                   interaction: dict | None = None):
    """Handle the e-mail + password form; returns a response. ``interaction`` is the pending request's data as
    the view loaded it."""
    email = request.form.get("email", login_hint).strip()
    error, status = None, 200
    if request.method == "POST":
        password = request.form.get("password", "")
        if not email or not password:
            error, status = _("Enter your e-mail address and your password."), 400
        elif not identities.valid_email(email):
            error, status = _("That does not look like an e-mail address."), 400
        elif not (verdict := throttle.check(runtime().store, identities.normalize_email(email), request.remote_addr,
                                            runtime().settings.login_ip_lock_after)).allowed:
            error, status = _throttled_message(verdict), 429
        else:
            account = identities.normalize_email(email)
            try:
                identity = identities.authenticate_sign_in(runtime().db, runtime().passwords, email, password)
            except InvalidCredentialsError as refused:
                # The same words for an unknown e-mail and a wrong password.
                error, status = _("The e-mail address or the password is not correct."), 401
                failures = throttle.failed(runtime().store, account, request.remote_addr)
                observability.LOGINS.labels("failed").inc()
                audit.record(db_session(), "identity.locked" if failures == throttle.LOCK_AFTER
                             else "identity.login_failed", subject=refused.details.get("identity_id"),
                             reason="invalid_credentials", origin=origin(), commit=True, email=account)
            else:
                throttle.succeeded(runtime().store, account, verdict)
                if not identity.email_verified:
                    # Only after the right password, so this reveals nothing to a stranger.
                    error, status = _("Confirm your e-mail address first: open the link we sent you."), 403
                else:
                    return _after_password(identity, next_url, interaction_id, interaction)
    return render_template("interaction/login.html", client=client, email=email, error=error,
                           interaction_id=interaction_id), status


def _throttled_message(verdict) -> str:
    if verdict.locked:
        return _("Too many failed attempts. Signing in with this address is paused for 15 minutes. "
                 "You can reset your password instead.")
    return _("Too many attempts. Wait %(seconds)s seconds and try again.", seconds=verdict.retry_after)


def _after_password(identity: identities.SignIn, next_url: str, interaction_id: str | None,
                    interaction: dict | None):
    if identity.has_second_factor:
        session[PENDING] = {"identity_id": identity.id, "next": next_url, "interaction_id": interaction_id,
                            "expires_at": time.time() + PENDING_TTL}
        return redirect(url_for("interaction.second_step"))
    return _signed_in(identity.id, ["pwd"], next_url, interaction_id, interaction)


def _signed_in(identity_id: str, amr: list[str], next_url: str, interaction_id: str | None,
               interaction: dict | None = None):
    """Sign the browser in and mark the pending request, if any, as signed in to. ``interaction`` is its data if
    this request loaded it already (the password step: one store read fewer per sign-in)."""
    sessions.sign_in(session, identity_id, amr, runtime().settings.session_lifetime)
    observability.LOGINS.labels("succeeded").inc()
    audit.record(db_session(), "identity.login_succeeded", actor=identity_id, subject=identity_id, origin=origin(),
                 commit=True, amr=amr)
    if interaction_id:
        data = interaction if interaction is not None else flow.load_interaction(interaction_id)
        if data is not None:
            flow.update_interaction(interaction_id, data, logged_in=True)
    return redirect(next_url)


@bp.route("/interaction/<interaction_id>/login", methods=["GET", "POST"])
def login(interaction_id):
    data, client = _load(interaction_id)
    if data is None:
        return flow.expired_interaction_page()
    params = flow.interaction_params(data)
    if request.method == "POST" and request.form.get("action") == "cancel":
        return flow.deny(params)
    return _password_form(client, url_for("oidc.resume", interaction_id=interaction_id), interaction_id,
                          params.get("login_hint", ""), data)


@bp.route("/login", methods=["GET", "POST"])
def standalone_login():
    """Sign in to the IdP itself (account pages), outside any authorization request."""
    next_url = safe_path(request.args.get("next"), url_for("account.overview"))
    if request.method == "POST" and request.form.get("action") == "cancel":
        return redirect(url_for("interaction.home"))
    return _password_form(None, next_url, None)


@bp.route("/login/second-step", methods=["GET", "POST"])
def second_step():
    pending = session.get(PENDING)
    if not pending or pending["expires_at"] < time.time():
        session.pop(PENDING, None)
        return render_template("errors/error.html", title=_("Your sign-in has expired"),
                               message=_("Start again from the app you came from.")), 400
    error, status = None, 200
    if request.method == "POST":
        error, status = _check_second_factor(pending["identity_id"])
        if error is None:
            session.pop(PENDING, None)
            return _signed_in(pending["identity_id"], ["pwd", "otp", "mfa"], pending["next"],
                              pending.get("interaction_id"))
    return render_template("interaction/second_step.html", error=error), status


def _check_second_factor(identity_id: str) -> tuple[str | None, int]:
    """Check the posted TOTP or recovery code: (error message or None, status)."""
    code, recovery = request.form.get("code", ""), request.form.get("recovery_code", "")
    totp = runtime().totp
    try:
        if recovery.strip():
            totp.use_recovery_code(db_session(), identity_id, recovery)
        else:
            totp.verify(db_session(), identity_id, code)
    except TotpLockedError:
        audit.record(db_session(), "identity.locked", subject=identity_id, reason="second_factor", origin=origin(),
                     commit=True)
        return _("Too many attempts. Wait 5 minutes and try again."), 429
    except TotpReplayError:
        audit.record(db_session(), "second_factor.failed", subject=identity_id, reason="replay", origin=origin(),
                     commit=True)
        return _("That code has already been used. Wait for the next code and try again."), 400
    except InvalidTotpError:
        audit.record(db_session(), "second_factor.failed", subject=identity_id, reason="wrong_code",
                     origin=origin(), commit=True)
        return _("That code is not right. Check your authenticator app and try again."), 400
    audit.record(db_session(), "second_factor.recovery_code_used" if recovery.strip() else "second_factor.verified",
                 actor=identity_id, subject=identity_id, origin=origin(), commit=True)
    return None, 200


@bp.get("/interaction/<interaction_id>/stepup")
def interaction_stepup(interaction_id):
    return redirect(url_for("interaction.stepup", return_to=url_for("oidc.resume", interaction_id=interaction_id)))


@bp.route("/stepup", methods=["GET", "POST"])
def stepup():
    """Raise the current sign-in to the second level, then go back where we came from."""
    return_to = safe_path(request.args.get("return_to"))
    login, identity = flow.signed_in_identity()
    here = url_for("interaction.stepup") + "?" + urlencode({"return_to": return_to})
    if login is None:
        return redirect(url_for("interaction.standalone_login", next=here))
    if login.acr == sessions.ACR_MFA:
        return redirect(return_to)
    if not runtime().totp.enrolled(db_session(), identity.id):
        return redirect(url_for("account.enrol", return_to=return_to))
    error, status = None, 200
    if request.method == "POST":
        error, status = _check_second_factor(identity.id)
        if error is None:
            sessions.step_up(session)
            return redirect(return_to)
    return render_template("interaction/stepup.html", error=error, identity=identity), status
