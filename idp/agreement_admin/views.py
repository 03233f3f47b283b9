"""Blueprint "agreement_admin": a superuser's pages for one agreement, at /agreements/<number>/.

Deny by default: every page and action first checks that the signed-in person
is a superuser of that agreement (403 otherwise, and nothing changes). When the
agreement requires two-step verification, so do its pages (step-up first).
RPs link here with the agreement number they show.
"""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, abort, g, redirect, render_template, request, url_for
from flask_babel import format_datetime
from flask_babel import gettext as _
from sqlalchemy import select

from ..account.passwords import _send
from ..account.views import signed_in
from ..agreements.models import Role
from ..policies import rate_limits
from ..audit import service as audit
from ..errors import InvalidEmailError, NotFoundError
from ..extensions import db_session, origin, runtime
from ..identities.models import Identity
from ..interaction.views import role_label
from ..invitations import service as invitations
from ..legacy_users import service as legacy_users
from ..mail import MailError
from ..sessions import service as sessions
from . import service

bp = Blueprint("agreement_admin", __name__, url_prefix="/agreements")
AUDIT_LIMIT = 50


def superuser(view):
    """The signed-in person must be a superuser of ``number``; sets g.agreement."""

    @wraps(view)
    @signed_in
    def wrapper(number, *args, **kwargs):
        try:
            g.agreement = service.require_superuser(db_session(), g.identity.id, number)
        except service.NotSuperuserError:
            abort(403, _("Only a superuser of this agreement can do that."))
        if g.agreement.require_second_factor and g.login.acr != sessions.ACR_MFA:
            target = url_for("agreement_admin.manage", number=number)
            return redirect(url_for("interaction.stepup", return_to=target))
        return view(number, *args, **kwargs)

    return wrapper


@bp.get("/")
@signed_in
def index():
    q = request.args.get("q", "").strip()[:100]
    return render_template("agreement_admin/index.html", agreements=service.superuser_agreements(db_session(),
                                                                                                 g.identity.id, q), q=q)


def _manage_page(error: str | None = None, status: int = 200, notice: str | None = None, **form):
    agreement = g.agreement
    session = db_session()
    events = audit.query(session, agreement_id=agreement.id, limit=AUDIT_LIMIT)
    people = {e.actor for e in events} | {e.subject_id for e in events}
    emails = dict(session.execute(select(Identity.id, Identity.email).where(Identity.id.in_(people - {None})))
                  .all()) if people - {None} else {}
    return render_template(
        "agreement_admin/manage.html", agreement=agreement, me=g.identity,
        members=service.members(session, agreement.id), legacy=legacy_users.pending(session, agreement.id),
        invitations=invitations.pending(session, agreement.id), events=events, emails=emails,
        roles=service.ROLES, role_label=role_label, error=error, notice=notice or request.args.get("done"),
        form=form, when=lambda value: format_datetime(value, "short"),
    ), status


@bp.get("/<number>/")
@superuser
def manage(number):
    return _manage_page()


def _done(notice: str):
    return redirect(url_for("agreement_admin.manage", number=g.agreement.number, done=notice))


@bp.post("/<number>/members/<int:membership_id>/role")
@superuser
def change_role(number, membership_id):
    role = request.form.get("role", "")
    try:
        service.change_role(db_session(), g.agreement, membership_id, role, actor=g.identity.id, origin=origin())
    except service.InvalidRoleError:
        return _manage_page(_("Choose one of the roles."), 400)
    except NotFoundError:
        abort(404)
    except service.LastSuperuserError:
        return _manage_page(_("An agreement needs at least one superuser. Make someone else superuser first."), 409)
    return _done("role")


@bp.post("/<number>/members/<int:membership_id>/remove")
@superuser
def remove_member(number, membership_id):
    try:
        service.remove_member(db_session(), g.agreement, membership_id, actor=g.identity.id, origin=origin())
    except NotFoundError:
        abort(404)
    except service.LastSuperuserError:
        return _manage_page(_("An agreement needs at least one superuser. Make someone else superuser first."), 409)
    return _done("removed")


@bp.post("/<number>/settings")
@superuser
def update_settings(number):
    service.set_require_second_factor(db_session(), g.agreement, request.form.get("require_second_factor") == "on",
                                      actor=g.identity.id, origin=origin())
    return _done("settings")


@bp.post("/<number>/legacy/<int:legacy_id>/email")
@superuser
def set_legacy_email(number, legacy_id):
    try:
        legacy_users.set_email(db_session(), g.agreement.id, legacy_id, request.form.get("email", "")[:320],
                               actor=g.identity.id, origin=origin())
    except NotFoundError:
        abort(404)
    except InvalidEmailError:
        return _manage_page(_("That does not look like an e-mail address."), 400)
    except legacy_users.EmailSharedError:
        return _manage_page(_("Another user of this agreement already has that e-mail address. "
                              "Every person needs their own."), 409)
    return _done("legacy_email")


def _deliver(invitation, token: str) -> None:
    days = max(1, round((invitation.expires_at - invitation.sent_at).total_seconds() / 86400))
    _send(invitation.email, _("You are invited to %(agreement)s", agreement=g.agreement.name), "mail/invitation.txt",
          link=runtime().settings.issuer + url_for("agreement_admin.invitation", token=token),
          agreement=g.agreement, inviter=g.identity, role=role_label(invitation.role), days=days,
          mobile_only=invitation.role == Role.time_registrant.value and g.agreement.time_registrants_mobile_only)


@bp.post("/<number>/invitations")
@superuser
def invite(number):
    rate_limits.hit("invitation", g.identity.id)
    email, role = request.form.get("email", "").strip()[:320], request.form.get("role", "")
    if role == Role.time_registrant.value:
        # A time registrant signs in on their phone with this address: it must be
        # their own, never the superuser's or one the office shares.
        confirmed = request.form.get("own_email") == "yes"
        mine = email.lower() == g.identity.email_normalized
        if mine or not confirmed:
            error = None
            if mine:
                error = _("That is your own e-mail address. A time registrant needs their own.")
            elif request.form.get("step") == "confirm":
                error = _("Confirm that this is the registrant's own e-mail address.")
            return render_template("agreement_admin/confirm_time_registrant.html", agreement=g.agreement, email=email,
                                   error=error), 400 if error else 200
    try:
        invitations.invite(db_session(), g.agreement, email=email, role=role, actor=g.identity.id, deliver=_deliver,
                           origin=origin())
    except InvalidEmailError:
        return _manage_page(_("That does not look like an e-mail address."), 400, invite_email=email)
    except service.InvalidRoleError:
        return _manage_page(_("Choose one of the roles."), 400, invite_email=email)
    except invitations.AlreadyMemberError:
        return _manage_page(_("That person is already a member of this agreement."), 409, invite_email=email)
    except MailError:
        return _manage_page(_("We could not send the invitation just now. Try again in a moment."), 503,
                            invite_email=email)
    return _done("invited")


@bp.post("/<number>/invitations/<invitation_id>/resend")
@superuser
def resend_invitation(number, invitation_id):
    try:
        invitations.resend(db_session(), g.agreement, invitation_id, actor=g.identity.id, deliver=_deliver,
                           origin=origin())
    except NotFoundError:
        abort(404)
    except invitations.InvitationUnavailableError:
        return _manage_page(_("That invitation is no longer pending."), 409)
    except MailError:
        return _manage_page(_("We could not send the invitation just now. Try again in a moment."), 503)
    return _done("resent")


@bp.post("/<number>/invitations/<invitation_id>/revoke")
@superuser
def revoke_invitation(number, invitation_id):
    try:
        invitations.revoke(db_session(), g.agreement, invitation_id, actor=g.identity.id, origin=origin())
    except NotFoundError:
        abort(404)
    except invitations.InvitationUnavailableError:
        return _manage_page(_("That invitation is no longer pending."), 409)
    return _done("revoked")


from . import joining  # noqa: F401  (activation and invitation pages on this blueprint)
