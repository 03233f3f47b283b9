"""My settings: e-mail, password, sessions, connected apps and agreements of the signed-in person.

    change e-mail ──password ok──▶ link to the new address (24 h, once) ──followed──▶ changed;
                                   notice to the old address
    sign out others ──▶ sessions_valid_after = now; this browser signs in afresh (new session id)
    revoke an app ──▶ its token families revoked (refresh tokens die), then the grant deleted

The functions above the routes take plain arguments (no request), like
services; they belong in identities.service and grants.service and live here
until those modules take them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from flask import abort, g, redirect, render_template, request, session, url_for
from flask_babel import format_datetime
from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..agreements.models import Agreement, Membership
from ..audit import service as audit
from ..audit.models import AuditEvent
from ..clients.models import Client
from ..errors import (
    DomainError,
    EmailTakenError,
    InvalidCredentialsError,
    InvalidEmailError,
)
from ..extensions import db_session, origin, runtime
from ..grants.models import Grant, TokenFamily
from ..identities import service as identities
from ..identities.models import Identity
from ..interaction.views import role_label
from ..mail import MailError
from ..oidc import tokens
from ..sessions import service as sessions
from ..storage.db import utcnow
from ..storage.ephemeral import EphemeralStore
from .passwords import _send
from .views import bp, signed_in

CHANGE_EMAIL = ("email_change", 24 * 3600)
AGREEMENTS_PAGE = 50


class EmailChangeLinkError(DomainError):
    code = "email_change_link_unavailable"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def request_email_change(session: Session, store: EphemeralStore, identity: Identity, new_email: str, *,
                         origin=None) -> str:
    """A single-use link that moves the identity to ``new_email``; returns its token.

    Raises InvalidEmailError, EmailTakenError (the caller mails a notice
    instead of a link, so the page does not tell whether the address has a login).
    """
    new_email = new_email.strip()
    if not identities.valid_email(new_email):
        raise InvalidEmailError("not an e-mail address")
    if identities.find_by_email(session, new_email) is not None:
        raise EmailTakenError("e-mail already registered")
    token = secrets.token_urlsafe(32)
    kind, ttl = CHANGE_EMAIL
    store.put(kind, _digest(token), {"identity_id": identity.id, "email": new_email}, ttl)
    audit.record(session, "identity.email_change_requested", actor=identity.id, subject=identity.id, origin=origin,
                 commit=True)
    return token


def peek_email_change(store: EphemeralStore, token: str) -> dict | None:
    if not token or len(token) > 100:
        return None
    return store.get(CHANGE_EMAIL[0], _digest(token))


def complete_email_change(session: Session, store: EphemeralStore, token: str, *, origin=None) -> tuple[Identity, str]:
    """Follow the link: the identity's e-mail becomes the new, verified address; commits.

    Returns (identity, previous address). Raises EmailChangeLinkError, EmailTakenError.
    """
    consumed = store.consume(CHANGE_EMAIL[0], _digest(token)) if token and len(token) <= 100 else None
    if consumed is None or not consumed.first:
        raise EmailChangeLinkError()
    identity = session.get(Identity, consumed.value["identity_id"])
    if identity is None or identity.disabled:
        raise EmailChangeLinkError()
    new_email = consumed.value["email"]
    taken = identities.find_by_email(session, new_email)
    if taken is not None and taken.id != identity.id:
        raise EmailTakenError("e-mail already registered")
    previous = identity.email
    identity.email, identity.email_normalized = new_email, identities.normalize_email(new_email)
    identity.email_verified = True
    audit.record(session, "identity.email_changed", actor=identity.id, subject=identity.id, origin=origin)
    try:
        session.commit()
    except IntegrityError:  # another identity took the address a moment ago
        session.rollback()
        raise EmailTakenError("e-mail already registered") from None
    return identity, previous


def end_other_sessions(session: Session, identity: Identity, *, origin=None) -> None:
    """Every browser signed in before now stops counting; commits. The caller signs this one in again."""
    identity.sessions_valid_after = utcnow()
    audit.record(session, "identity.sessions_ended", actor=identity.id, subject=identity.id, origin=origin)
    session.commit()


@dataclass(frozen=True)
class SignIn:
    at: dt.datetime
    ip: str | None
    user_agent: str | None


def other_sign_ins(session: Session, identity: Identity, current_signed_in_at: float, lifetime: int,
                   limit: int = 20) -> list[SignIn]:
    """Sign-ins that may still be active in other browsers, newest first.

    Browser sessions have no per-person index (they live in the ephemeral
    store under a digest of their id), so this reads the audit trail: password
    sign-ins younger than the session lifetime and after the last "sign out
    everywhere". A browser that signed out on its own still shows until then.
    """
    since = utcnow() - dt.timedelta(seconds=lifetime)
    if identity.sessions_valid_after and identity.sessions_valid_after > since:
        since = identity.sessions_valid_after
    rows = session.execute(select(AuditEvent).where(
        AuditEvent.subject_id == identity.id, AuditEvent.event == "identity.login_succeeded",
        AuditEvent.occurred_at > since).order_by(AuditEvent.id.desc()).limit(limit + 1)).scalars()
    rows = list(rows)
    # The event is written just after sign_in() stamps the session: the one
    # closest to this browser's sign-in (within seconds) is this browser.
    if rows:
        closest = min(rows, key=lambda r: abs(r.occurred_at.timestamp() - current_signed_in_at))
        if abs(closest.occurred_at.timestamp() - current_signed_in_at) < 3:
            rows.remove(closest)
    return [SignIn(r.occurred_at, r.ip, r.user_agent) for r in rows][:limit]


@dataclass(frozen=True)
class ConnectedApp:
    client: Client
    #: What the person consented to; empty for first-party apps (no consent asked).
    scope: str
    since: dt.datetime


def connected_apps(session: Session, identity_id: str) -> list[ConnectedApp]:
    """Apps with a consent (Grant) or live tokens (first-party apps ask no consent), by name."""
    apps: dict[str, ConnectedApp] = {}
    for grant, client in session.execute(select(Grant, Client).join(Client, Client.client_id == Grant.client_id)
                                         .where(Grant.identity_id == identity_id)):
        apps[client.client_id] = ConnectedApp(client, grant.scope, grant.created_at)
    live = session.execute(select(Client, TokenFamily.scope, TokenFamily.created_at)
                           .join(TokenFamily, TokenFamily.client_id == Client.client_id)
                           .where(TokenFamily.identity_id == identity_id, TokenFamily.revoked_at.is_(None),
                                  TokenFamily.expires_at > utcnow())
                           .order_by(TokenFamily.created_at.desc()).limit(200))
    for client, scope, created_at in live:
        apps.setdefault(client.client_id, ConnectedApp(client, scope, created_at))
    return sorted(apps.values(), key=lambda app: (app.client.client_name or "").lower())


def revoke_grant(session: Session, identity_id: str, client_id: str, *, origin=None) -> bool:
    """Forget the consent and revoke every token the client holds for the identity; True if there was any.

    Families are revoked first (each in its own commit, with those exchanged
    from them), the grant deleted last: a failure half-way leaves the app
    listed, so revoking again finishes the job.
    """
    grant = session.execute(select(Grant).where(Grant.identity_id == identity_id,
                                                Grant.client_id == client_id)).scalar_one_or_none()
    families = session.execute(select(TokenFamily.id).where(
        TokenFamily.identity_id == identity_id, TokenFamily.client_id == client_id,
        TokenFamily.revoked_at.is_(None))).scalars().all()
    if grant is None and not families:
        return False
    for family_id in families:
        tokens.revoke_family(session, family_id, "grant_revoked")
    if grant is not None:
        session.delete(grant)
    audit.record(session, "grant.revoked", actor=identity_id, subject=identity_id, client_id=client_id, origin=origin,
                 families=len(families))
    session.commit()
    return True


def my_agreements(session: Session, identity_id: str, q: str = "", after: str = "",
                  limit: int = AGREEMENTS_PAGE) -> tuple[list[Membership], str | None]:
    """A page of the person's memberships by agreement number; (items, next ``after`` or None).

    Unlike the chooser this shows every membership, time-registrant ones of
    mobile-only agreements included: it is the person's own list.
    """
    query = (select(Membership).join(Agreement, Agreement.id == Membership.agreement_id)
             .where(Membership.identity_id == identity_id))
    q = q.strip()
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").lower()
        query = query.where(Agreement.number.startswith(q, autoescape=True)
                            | Agreement.name.ilike(f"%{escaped}%", escape="\\"))
    if after:
        query = query.where(Agreement.number > after)
    rows = session.execute(query.order_by(Agreement.number).limit(limit + 1)).scalars().all()
    return rows[:limit], (rows[limit - 1].agreement.number if len(rows) > limit else None)


# -- routes -----------------------------------------------------------------------

def _link(endpoint: str, **values) -> str:
    return runtime().settings.issuer + url_for(endpoint, **values)


@bp.get("/settings")
@signed_in
def settings():
    identity = g.identity
    return render_template(
        "account/settings.html", identity=identity, login=g.login,
        sign_ins=other_sign_ins(db_session(), identity, g.login.signed_in_at, runtime().settings.session_lifetime),
        apps=connected_apps(db_session(), identity.id),
        agreements=my_agreements(db_session(), identity.id, limit=10)[0], role_label=role_label,
        notice=request.args.get("done"), format_time=_format_time)


def _format_time(value) -> str:
    if isinstance(value, (int, float)):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    return format_datetime(value, "short")


@bp.post("/settings/sessions/end-others")
@signed_in
def end_others():
    end_other_sessions(db_session(), g.identity, origin=origin())
    # Like a password change: this browser stays signed in, with a fresh session id.
    sessions.sign_in(session, g.identity.id, list(g.login.amr), runtime().settings.session_lifetime)
    return redirect(url_for("account.settings", done="sessions"))


@bp.post("/settings/apps/<client_id>/revoke")
@signed_in
def revoke_app(client_id):
    if len(client_id) > 100 or not revoke_grant(db_session(), g.identity.id, client_id, origin=origin()):
        abort(404)
    return redirect(url_for("account.settings", done="app"))


@bp.route("/settings/email", methods=["GET", "POST"])
@signed_in
def change_email():
    identity, errors = g.identity, []
    new_email = request.form.get("email", "").strip()[:320]
    if request.method == "POST":
        try:
            identities.authenticate(db_session(), runtime().passwords, identity.email, request.form.get("password", ""))
        except InvalidCredentialsError:
            errors.append(_("Your current password is not correct."))
        if not errors and identities.normalize_email(new_email) == identity.email_normalized:
            errors.append(_("That is already your e-mail address."))
        if not errors:
            try:
                token = request_email_change(db_session(), runtime().store, identity, new_email, origin=origin())
            except InvalidEmailError:
                errors.append(_("That does not look like an e-mail address."))
            except EmailTakenError:
                # The same page as a real change: whether an address has a login stays private.
                _send_quietly(new_email, _("Someone tried to use your e-mail address"), "mail/email_change_taken.txt")
                return render_template("account/check_mail.html", email=new_email)
            else:
                try:
                    _send(new_email, _("Confirm your new e-mail address"), "mail/email_change.txt",
                          link=_link("account.confirm_email", token=token), old_email=identity.email)
                except MailError:
                    errors.append(_("We could not send the mail just now. Try again in a moment."))
                else:
                    return render_template("account/check_mail.html", email=new_email)
    return render_template("account/settings_email.html", identity=identity, email=new_email,
                           errors=errors), 400 if errors else 200


def _send_quietly(to: str, subject: str, template: str, **context) -> None:
    try:
        _send(to, subject, template, **context)
    except MailError:
        pass  # a notice only; logged by the mailer


@bp.route("/settings/email/confirm/<token>", methods=["GET", "POST"])
def confirm_email(token):
    # GET only looks (mail scanners open links); the button spends the link.
    pending = peek_email_change(runtime().store, token)
    if pending is None:
        return render_template("errors/error.html", title=_("This link has expired or was already used"),
                               message=_("Sign in and ask for a new link on My settings.")), 400
    if request.method == "POST":
        try:
            identity, previous = complete_email_change(db_session(), runtime().store, token, origin=origin())
        except EmailChangeLinkError:
            return render_template("errors/error.html", title=_("This link has expired or was already used"),
                                   message=_("Sign in and ask for a new link on My settings.")), 400
        except EmailTakenError:
            return render_template("errors/error.html", title=_("That e-mail address is not available"),
                                   message=_("It was taken by another Connect login meanwhile.")), 409
        _send_quietly(previous, _("Your e-mail address was changed"), "mail/email_changed.txt",
                      new_email=identity.email)
        return render_template("account/settings_email_changed.html", identity=identity)
    return render_template("account/settings_email_confirm.html", email=pending["email"])


@bp.get("/agreements")
@signed_in
def agreements():
    q, after = request.args.get("q", "").strip()[:100], request.args.get("after", "")[:32]
    items, next_after = my_agreements(db_session(), g.identity.id, q=q, after=after)
    return render_template("account/settings_agreements.html", items=items, next_after=next_after, q=q,
                           role_label=role_label)


@bp.post("/agreements/invitation")
@signed_in
def open_invitation():
    """"Accept an invitation": the pasted link (or just its token) opens the invitation page."""
    value = request.form.get("invitation", "").strip()[:500]
    token = value.rstrip("/").rsplit("/", 1)[-1]
    if not token or len(token) > 100 or not all(c.isalnum() or c in "-_" for c in token):
        items, next_after = my_agreements(db_session(), g.identity.id)
        return render_template("account/settings_agreements.html", items=items, next_after=next_after, q="",
                               role_label=role_label,
                               invitation_error=_("Paste the whole link from the invitation e-mail.")), 400
    return redirect(url_for("agreement_admin.invitation", token=token))
