"""Getting into an agreement: "switch to the new login" with legacy credentials, and invitations.

    /agreements/activate ──legacy credentials ok──▶ /agreements/activate/details
        signed in:      "add to my login" ──▶ membership now
        not signed in:  own e-mail + new password ──▶ mail ──▶ /activate/confirm/<token> ──▶ identity + membership
                        e-mail already has a login ──▶ explained: sign in first (the proof is kept 15 min)

    /agreements/invitations/<token>
        signed in:      accept ──▶ membership
        address has a login, not signed in ──▶ sign in, come back
        new person:     name + password ──▶ identity (verified by the link) + membership, signed in

Proven legacy credentials are remembered in the server-side session only
(never in a cookie or URL) and only for 15 minutes.
"""

from __future__ import annotations

import time

from flask import redirect, render_template, request, session, url_for
from flask_babel import gettext as _

from ..account.passwords import _policy_problems, _send
from ..agreements.models import Role
from ..audit import service as audit
from ..errors import EmailTakenError, InvalidEmailError
from ..extensions import db_session, origin, runtime
from ..identities import service as identities
from ..interaction.views import role_label
from ..invitations import service as invitations
from ..legacy_users import service as legacy_users
from ..legacy_users.models import LegacyUser
from ..mail import MailError
from ..oidc import authorize as flow
from ..sessions import service as sessions
from .views import bp

PROOF = "legacy_proof"
PROOF_TTL = 15 * 60


def _proven() -> LegacyUser | None:
    proof = session.get(PROOF)
    if not proof or proof["expires_at"] < time.time():
        session.pop(PROOF, None)
        return None
    legacy = db_session().get(LegacyUser, proof["legacy_user_id"])
    return legacy if legacy is not None and not legacy.activated else None


@bp.route("/activate", methods=["GET", "POST"])
def activate():
    """Agreement number, old username and password: the first step of both activation and "add agreement"."""
    _login, identity = flow.signed_in_identity()
    form = {k: request.form.get(k, "").strip()[:100] for k in ("agreement_number", "username")}
    error, status = None, 200
    if request.method == "POST":
        password = request.form.get("password", "")
        if not form["agreement_number"] or not form["username"] or not password:
            error, status = _("Enter the agreement number, your username and your password."), 400
        else:
            try:
                legacy = legacy_users.check_credentials(db_session(), runtime().store, form["agreement_number"],
                                                        form["username"], password, origin=origin())
            except legacy_users.LegacyLockedError:
                error, status = _("Too many attempts. Wait 15 minutes and try again."), 429
            except legacy_users.AlreadyActivatedError:
                error, status = _("This username has already moved to the new login. Sign in with your e-mail "
                                  "address instead."), 409
            except legacy_users.InvalidLegacyCredentialsError:
                error, status = _("The agreement number, username or password is not correct."), 401
            else:
                session[PROOF] = {"legacy_user_id": legacy.id, "expires_at": time.time() + PROOF_TTL}
                return redirect(url_for("agreement_admin.activate_details"))
    return render_template("legacy/activate.html", form=form, error=error, identity=identity), status


@bp.route("/activate/details", methods=["GET", "POST"])
def activate_details():
    legacy = _proven()
    if legacy is None:
        return render_template("errors/error.html", title=_("Start again"),
                               message=_("Enter the agreement number, username and password again.")), 400
    _login, identity = flow.signed_in_identity()
    if identity is not None:
        return _attach(legacy, identity)
    return _new_login(legacy)


def _attach(legacy: LegacyUser, identity):
    """Signed in: being signed in is the proof that this login is the person's own."""
    if request.method == "POST":
        try:
            member, created = legacy_users.attach_to_identity(db_session(), legacy.id, identity, origin=origin())
        except legacy_users.AlreadyActivatedError:
            session.pop(PROOF, None)
            return render_template("errors/error.html", title=_("Already moved"),
                                   message=_("This username has already moved to the new login.")), 409
        session.pop(PROOF, None)
        return render_template("legacy/added.html", agreement=member.agreement, role=role_label(member.role),
                               created=created)
    return render_template("legacy/attach.html", legacy=legacy, identity=identity, role=role_label(legacy.role))


def _new_login(legacy: LegacyUser):
    form = {k: request.form.get(k, "").strip()[:320 if k == "email" else 100]
            for k in ("email", "given_name", "family_name")}
    if request.method == "GET":
        form["email"] = legacy.email or ""
    errors, status = [], 200
    if request.method == "POST":
        password = request.form.get("password", "")
        if not identities.valid_email(form["email"]):
            errors.append(_("That does not look like an e-mail address."))
        errors += _policy_problems(password, form["email"], (form["given_name"], form["family_name"]))
        if not errors:
            try:
                token = legacy_users.start_activation(db_session(), runtime().store, runtime().passwords, legacy,
                                                      email=form["email"], password=password,
                                                      given_name=form["given_name"], family_name=form["family_name"])
            except InvalidEmailError:
                errors.append(_("That does not look like an e-mail address."))
            except EmailTakenError:
                # The several-people-one-address rule: an address with a login is its
                # owner's; only they, signed in, can add this agreement to it.
                return render_template("legacy/email_taken.html", email=form["email"], agreement=legacy.agreement,
                                       next=url_for("agreement_admin.activate_details")), 409
            else:
                try:
                    _send(form["email"], _("Confirm your e-mail address"), "mail/legacy_activation.txt",
                          link=runtime().settings.issuer + url_for("agreement_admin.activate_confirm", token=token),
                          agreement=legacy.agreement, username=legacy.username)
                except MailError:
                    errors.append(_("We could not send the mail just now. Try again in a moment."))
                else:
                    audit.record(db_session(), "legacy_user.activation_started", agreement_id=legacy.agreement_id,
                                 origin=origin(), commit=True, legacy_user=legacy.id)
                    session.pop(PROOF, None)
                    return render_template("legacy/check_mail.html", email=form["email"])
        status = 400
    return render_template("legacy/details.html", legacy=legacy, form=form, errors=errors,
                           min_length=runtime().settings.password_min_length, role=role_label(legacy.role)), status


@bp.route("/activate/confirm/<token>", methods=["GET", "POST"])
def activate_confirm(token):
    # GET only looks (mail scanners open links); the button spends the link.
    pending = legacy_users.peek_activation(runtime().store, token)
    if pending is None:
        return render_template("errors/error.html", title=_("This link has expired or was already used"),
                               message=_("Switch to the new login again to get a new link.")), 400
    if request.method == "POST":
        try:
            identity = legacy_users.complete_activation(db_session(), runtime().store, token, origin=origin())
        except legacy_users.ActivationLinkError:
            return render_template("errors/error.html", title=_("This link has expired or was already used"),
                                   message=_("Switch to the new login again to get a new link.")), 400
        except legacy_users.AlreadyActivatedError:
            return render_template("errors/error.html", title=_("Already moved"),
                                   message=_("This username has already moved to the new login.")), 409
        except EmailTakenError:
            return render_template("errors/error.html", title=_("That e-mail address is not available"),
                                   message=_("It got a Connect login meanwhile. Sign in with it, then add the "
                                             "agreement under My settings.")), 409
        return render_template("legacy/activated.html", identity=identity)
    return render_template("legacy/confirm.html", email=pending.email)


# -- invitations ---------------------------------------------------------------------

_UNAVAILABLE = {
    "used": lambda: _("This invitation has already been used"),
    "expired": lambda: _("This invitation has expired"),
    "revoked": lambda: _("This invitation was withdrawn"),
    "unknown": lambda: _("This invitation link is not valid"),
}


def _unavailable(error: invitations.InvitationUnavailableError):
    return render_template("errors/error.html", title=_UNAVAILABLE[error.reason](),
                           message=_("Ask the agreement's superuser to send you a new invitation.")), 410


@bp.route("/invitations/<token>", methods=["GET", "POST"])
def invitation(token):
    try:
        invite = invitations.usable(invitations.find(db_session(), token))
    except invitations.InvitationUnavailableError as error:
        return _unavailable(error)
    _login, identity = flow.signed_in_identity()
    here = url_for("agreement_admin.invitation", token=token)
    context = {"invitation": invite, "agreement": invite.agreement, "role": role_label(invite.role), "here": here,
               "mobile_only": invite.role == Role.time_registrant.value and invite.agreement.time_registrants_mobile_only}
    if identity is not None:
        if request.method == "POST":
            try:
                member, created = invitations.accept(db_session(), token, identity, origin=origin())
            except invitations.InvitationUnavailableError as error:
                return _unavailable(error)
            return render_template("agreement_admin/invitation_accepted.html",
                                   **{**context, "role": role_label(member.role), "created": created})
        return render_template("agreement_admin/invitation.html", identity=identity, **context)
    if identities.find_by_email(db_session(), invite.email) is not None:
        # The address has a login: its owner signs in and comes back here.
        return render_template("agreement_admin/invitation.html", identity=None, has_login=True, **context)
    return _new_person(token, invite, context)


def _new_person(token: str, invite, context: dict):
    form = {k: request.form.get(k, "").strip()[:100] for k in ("given_name", "family_name")}
    errors, status = [], 200
    if request.method == "POST":
        password = request.form.get("password", "")
        errors = _policy_problems(password, invite.email, (form["given_name"], form["family_name"]))
        if not errors:
            try:
                identity = invitations.accept_as_new(db_session(), runtime().passwords, token, password=password,
                                                     given_name=form["given_name"], family_name=form["family_name"],
                                                     origin=origin())
            except invitations.InvitationUnavailableError as error:
                return _unavailable(error)
            except EmailTakenError:
                return render_template("agreement_admin/invitation.html", identity=None, has_login=True,
                                       **context), 409
            # They followed the mailed link and chose the password just now: signed in.
            sessions.sign_in(session, identity.id, ["pwd"], runtime().settings.session_lifetime)
            audit.record(db_session(), "identity.login_succeeded", actor=identity.id, subject=identity.id,
                         reason="invitation", origin=origin(), commit=True, amr=["pwd"])
            return render_template("agreement_admin/invitation_accepted.html", created=True, **context)
        status = 400
    return render_template("agreement_admin/invitation_new.html", form=form, errors=errors,
                           min_length=runtime().settings.password_min_length, **context), status
