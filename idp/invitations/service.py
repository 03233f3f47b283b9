"""Invitations: a superuser asks someone, by e-mail, to join an agreement with a role.

What it enforces:
    * the link is single-use and expires (7 days); accepting is one conditional
      UPDATE (pending and unexpired -> accepted), so two clicks, two tabs or two
      people racing get one membership and one "already used";
    * a resend mails a new link and kills the old one (the stored hash changes);
      a revoked invitation's link stops working at once;
    * the mail is sent before the transaction commits: when the mail server
      refuses, no invitation is left behind that nobody received;
    * a new person's identity is verified by the invitation itself (they
      followed a link sent to that address) and lands in the agreement in the
      same transaction.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..agreement_admin import service as memberships
from ..agreements.models import Agreement
from ..audit import service as audit
from ..errors import DomainError, EmailTakenError, InvalidEmailError, NotFoundError
from ..identities import service as identities
from ..identities.models import Identity
from ..security import hasher
from ..storage.db import utcnow
from .models import Invitation, InvitationStatus

INVITATION_TTL = 7 * 24 * 3600
PENDING = InvitationStatus.pending.value

#: deliver(invitation, token): sends the mail; raises to abort (nothing is kept).
Deliver = Callable[[Invitation, str], None]


class InvitationUnavailableError(DomainError):
    """The link is unknown, used, expired or revoked; ``reason`` says which."""

    code = "invitation_unavailable"
    status = 410

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class AlreadyMemberError(DomainError):
    code = "already_member"
    status = 409


def _token_hash(token: str) -> str:
    return hasher().hash("invitation:" + token)


def find(session: Session, token: str) -> Invitation | None:
    if not token or len(token) > 100:
        return None
    return session.execute(select(Invitation).where(Invitation.token_hash == _token_hash(token))).scalar_one_or_none()


def usable(invitation: Invitation | None) -> Invitation:
    """The invitation if it can still be accepted; raises InvitationUnavailableError with the reason."""
    if invitation is None:
        raise InvitationUnavailableError("unknown")
    if invitation.status == InvitationStatus.accepted.value:
        raise InvitationUnavailableError("used")
    if invitation.status == InvitationStatus.revoked.value:
        raise InvitationUnavailableError("revoked")
    if invitation.expired:
        raise InvitationUnavailableError("expired")
    return invitation


def pending(session: Session, agreement_id: str, limit: int = 200) -> list[Invitation]:
    return list(session.execute(select(Invitation).where(Invitation.agreement_id == agreement_id,
                                                         Invitation.status == PENDING)
                                .order_by(Invitation.created_at.desc()).limit(limit)).scalars())


def invite(session: Session, agreement: Agreement, *, email: str, role: str, actor: str, deliver: Deliver,
           origin=None, ttl: int = INVITATION_TTL) -> Invitation:
    """Invite ``email`` to the agreement with ``role`` and mail the link; commits.

    A pending invitation to the same address is renewed (new role, new link,
    new expiry) rather than duplicated. Raises InvalidEmailError,
    InvalidRoleError, AlreadyMemberError; whatever ``deliver`` raises aborts it all.
    """
    email = email.strip()
    if not identities.valid_email(email):
        raise InvalidEmailError("not an e-mail address")
    if not memberships.valid_role(role):
        raise memberships.InvalidRoleError(role)
    existing_identity = identities.find_by_email(session, email)
    if existing_identity is not None and memberships.membership(session, existing_identity.id, agreement.id):
        raise AlreadyMemberError("already a member")
    token = secrets.token_urlsafe(32)
    invitation = session.execute(select(Invitation).where(
        Invitation.agreement_id == agreement.id, Invitation.status == PENDING,
        Invitation.email_normalized == identities.normalize_email(email))).scalars().first()
    now = utcnow()
    if invitation is None:
        invitation = Invitation(agreement_id=agreement.id, email=email, email_normalized=identities.normalize_email(email),
                                role=role, status=PENDING, invited_by=actor, sent_count=0)
        session.add(invitation)
    invitation.role, invitation.token_hash, invitation.invited_by = role, _token_hash(token), actor
    invitation.sent_at, invitation.expires_at = now, now + dt.timedelta(seconds=ttl)
    invitation.sent_count = (invitation.sent_count or 0) + 1
    session.flush()
    audit.record(session, "invitation.sent", actor=actor, agreement_id=agreement.id, origin=origin,
                 invitation=invitation.id, role=role, email=invitation.email_normalized)
    try:
        deliver(invitation, token)
    except BaseException:
        session.rollback()
        raise
    session.commit()
    return invitation


def _of_agreement(session: Session, agreement: Agreement, invitation_id: str) -> Invitation:
    invitation = session.get(Invitation, invitation_id) if invitation_id and len(invitation_id) <= 36 else None
    if invitation is None or invitation.agreement_id != agreement.id:
        raise NotFoundError("no such invitation")
    return invitation


def resend(session: Session, agreement: Agreement, invitation_id: str, *, actor: str, deliver: Deliver, origin=None,
           ttl: int = INVITATION_TTL) -> Invitation:
    """Mail a fresh link (the old one stops working) and restart the expiry; commits.

    Raises NotFoundError, InvitationUnavailableError (accepted or revoked: invite again instead).
    """
    invitation = _of_agreement(session, agreement, invitation_id)
    if invitation.status != PENDING:
        raise InvitationUnavailableError("used" if invitation.status == InvitationStatus.accepted.value else "revoked")
    return invite(session, agreement, email=invitation.email, role=invitation.role, actor=actor, deliver=deliver,
                  origin=origin, ttl=ttl)


def revoke(session: Session, agreement: Agreement, invitation_id: str, *, actor: str, origin=None) -> None:
    """Withdraw a pending invitation; its link stops working. Commits. Raises NotFoundError, InvitationUnavailableError."""
    invitation = _of_agreement(session, agreement, invitation_id)
    changed = session.execute(update(Invitation).where(Invitation.id == invitation.id, Invitation.status == PENDING)
                              .values(status=InvitationStatus.revoked.value)
                              .execution_options(synchronize_session=False)).rowcount
    if changed != 1:
        session.rollback()
        raise InvitationUnavailableError("used")
    audit.record(session, "invitation.revoked", actor=actor, agreement_id=agreement.id, origin=origin,
                 invitation=invitation.id, email=invitation.email_normalized)
    session.commit()
    session.expire(invitation)


def _claim(session: Session, token: str, identity_id: str) -> Invitation:
    """Flip the invitation to accepted exactly once (no commit); raises InvitationUnavailableError."""
    invitation = usable(find(session, token))
    claimed = session.execute(
        update(Invitation).where(Invitation.id == invitation.id, Invitation.status == PENDING,
                                 Invitation.token_hash == _token_hash(token), Invitation.expires_at > utcnow())
        .values(status=InvitationStatus.accepted.value, accepted_at=utcnow(), accepted_by=identity_id)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        session.rollback()
        raise InvitationUnavailableError("used")
    return invitation


def accept(session: Session, token: str, identity: Identity, *, origin=None):
    """A signed-in person accepts: their membership with the invited role; commits.

    Returns (membership, created): an existing membership keeps its role.
    Raises InvitationUnavailableError.
    """
    invitation = _claim(session, token, identity.id)
    member, created = memberships.add_member(session, identity.id, invitation.agreement_id, invitation.role,
                                             actor=identity.id, origin=origin, reason="invitation")
    audit.record(session, "invitation.accepted", actor=identity.id, subject=identity.id,
                 agreement_id=invitation.agreement_id, origin=origin, invitation=invitation.id, role=member.role)
    session.commit()
    session.expire(invitation)
    return member, created


def accept_as_new(session: Session, passwords, token: str, *, password: str, given_name: str = "",
                  family_name: str = "", origin=None) -> Identity:
    """A new person accepts: an identity for the invited address, verified by the link, and the membership; commits.

    The caller checks the password policy. Raises InvitationUnavailableError,
    EmailTakenError (the address has a login: sign in and accept instead).
    """
    invitation = usable(find(session, token))
    if identities.find_by_email(session, invitation.email) is not None:
        raise EmailTakenError("e-mail already registered")
    identity = Identity(email=invitation.email, email_normalized=invitation.email_normalized, email_verified=True,
                        given_name=given_name[:100], family_name=family_name[:100],
                        name=" ".join(p for p in (given_name[:100], family_name[:100]) if p),
                        password_hash=passwords.hash(identities.normalize_password(password)))
    session.add(identity)
    try:
        session.flush()
        _claim(session, token, identity.id)
        audit.record(session, "identity.created", actor=identity.id, subject=identity.id,
                     agreement_id=invitation.agreement_id, reason="invitation", origin=origin)
        audit.record(session, "identity.email_verified", actor=identity.id, subject=identity.id, origin=origin,
                     reason="invitation")
        member, _created = memberships.add_member(session, identity.id, invitation.agreement_id, invitation.role,
                                                  actor=identity.id, origin=origin, reason="invitation")
        audit.record(session, "invitation.accepted", actor=identity.id, subject=identity.id,
                     agreement_id=invitation.agreement_id, origin=origin, invitation=invitation.id, role=member.role)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise EmailTakenError("e-mail already registered") from None
    return identity
