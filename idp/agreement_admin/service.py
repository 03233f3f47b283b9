"""Memberships as a superuser manages them: add, change role, remove, agreement settings.

What it enforces:
    * only a superuser of the agreement acts on it (NotSuperuserError, also for
      an unknown agreement number, so the answer reveals nothing);
    * an agreement always keeps at least one superuser (LastSuperuserError):
      the agreement row is locked (SELECT ... FOR UPDATE) before counting, so two
      superusers demoting each other at once cannot both succeed;
    * every change is audited in the same transaction, with the agreement's id.

A removed membership or a changed role reaches RPs at the next refresh or token
exchange (``agreements.service.current`` is checked there), as DESIGN.md says.

These functions belong with ``agreements.service`` (add_member and friends);
they live here until that module takes them.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..agreements.models import Agreement, Membership, Role
from ..audit import service as audit
from ..errors import DomainError, NotFoundError
from ..identities.models import Identity

ROLES = tuple(r.value for r in Role)
MEMBERS_LIMIT = 500


class NotSuperuserError(DomainError):
    code = "not_superuser"
    status = 403


class LastSuperuserError(DomainError):
    code = "last_superuser"
    status = 409


class InvalidRoleError(DomainError):
    code = "invalid_role"


def valid_role(role: str) -> bool:
    return role in ROLES


def find_agreement(session: Session, number: str) -> Agreement | None:
    if not number or len(number) > 32:
        return None
    return session.execute(select(Agreement).where(Agreement.number == number)).scalar_one_or_none()


def membership(session: Session, identity_id: str, agreement_id: str) -> Membership | None:
    return session.execute(select(Membership).where(Membership.identity_id == identity_id,
                                                    Membership.agreement_id == agreement_id)).scalar_one_or_none()


def require_superuser(session: Session, identity_id: str, number: str) -> Agreement:
    """The agreement with this number if the identity is its superuser; raises NotSuperuserError."""
    agreement = find_agreement(session, number)
    member = membership(session, identity_id, agreement.id) if agreement else None
    if member is None or member.role != Role.superuser.value:
        raise NotSuperuserError("not a superuser of this agreement")
    return agreement


def is_superuser_anywhere(session: Session, identity_id: str) -> bool:
    return session.execute(select(Membership.id).where(Membership.identity_id == identity_id,
                                                       Membership.role == Role.superuser.value).limit(1)).first() is not None


def superuser_agreements(session: Session, identity_id: str, q: str = "", limit: int = 50) -> list[Agreement]:
    query = (select(Agreement).join(Membership, Membership.agreement_id == Agreement.id)
             .where(Membership.identity_id == identity_id, Membership.role == Role.superuser.value))
    q = (q or "").strip()
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Agreement.number.startswith(q, autoescape=True)
                            | func.lower(Agreement.name).like(f"%{escaped.lower()}%", escape="\\"))
    return list(session.execute(query.order_by(Agreement.number).limit(limit)).scalars())


def members(session: Session, agreement_id: str, limit: int = MEMBERS_LIMIT) -> list[tuple[Membership, Identity]]:
    rows = session.execute(select(Membership, Identity).join(Identity, Identity.id == Membership.identity_id)
                           .where(Membership.agreement_id == agreement_id)
                           .order_by(Identity.email_normalized).limit(limit))
    return [(m, i) for m, i in rows]


def _lock(session: Session, agreement_id: str) -> None:
    # Only the id column: the Agreement entity joins its product (an outer join FOR UPDATE refuses).
    session.execute(select(Agreement.id).where(Agreement.id == agreement_id).with_for_update()).scalar_one()


def _superusers(session: Session, agreement_id: str) -> int:
    return session.execute(select(func.count()).select_from(Membership).where(
        Membership.agreement_id == agreement_id, Membership.role == Role.superuser.value)).scalar_one()


def _member_of(session: Session, agreement_id: str, membership_id: int) -> Membership:
    member = session.get(Membership, membership_id)
    # Another agreement's membership id is "not found" here: tenants never see each other.
    if member is None or member.agreement_id != agreement_id:
        raise NotFoundError("no such member")
    return member


def add_member(session: Session, identity_id: str, agreement_id: str, role: str, *, actor: str | None, origin=None,
               reason: str) -> tuple[Membership, bool]:
    """The identity's membership of the agreement, created with ``role`` if missing (no commit).

    An existing membership keeps its role: a superuser decided it, and neither
    an old username nor an invitation may silently raise or lower it.
    Returns (membership, created).
    """
    if not valid_role(role):
        raise InvalidRoleError(role)
    existing = membership(session, identity_id, agreement_id)
    if existing is not None:
        return existing, False
    member = Membership(identity_id=identity_id, agreement_id=agreement_id, role=role)
    session.add(member)
    session.flush()
    audit.record(session, "membership.added", actor=actor, subject=identity_id, agreement_id=agreement_id,
                 reason=reason, origin=origin, role=role)
    return member, True


def change_role(session: Session, agreement: Agreement, membership_id: int, role: str, *, actor: str,
                origin=None) -> Membership:
    """Give a member another role; commits. Raises InvalidRoleError, NotFoundError, LastSuperuserError."""
    if not valid_role(role):
        raise InvalidRoleError(role)
    _lock(session, agreement.id)
    member = _member_of(session, agreement.id, membership_id)
    if member.role == role:
        session.rollback()
        return member
    if member.role == Role.superuser.value and _superusers(session, agreement.id) <= 1:
        session.rollback()
        raise LastSuperuserError("an agreement keeps at least one superuser")
    previous, member.role = member.role, role
    audit.record(session, "membership.role_changed", actor=actor, subject=member.identity_id,
                 agreement_id=agreement.id, origin=origin, role=role, previous_role=previous)
    session.commit()
    return member


def remove_member(session: Session, agreement: Agreement, membership_id: int, *, actor: str, origin=None) -> None:
    """Remove a member (effective at their next refresh); commits. Raises NotFoundError, LastSuperuserError."""
    _lock(session, agreement.id)
    member = _member_of(session, agreement.id, membership_id)
    if member.role == Role.superuser.value and _superusers(session, agreement.id) <= 1:
        session.rollback()
        raise LastSuperuserError("an agreement keeps at least one superuser")
    audit.record(session, "membership.removed", actor=actor, subject=member.identity_id, agreement_id=agreement.id,
                 origin=origin, role=member.role)
    session.delete(member)
    session.commit()


def set_require_second_factor(session: Session, agreement: Agreement, required: bool, *, actor: str,
                              origin=None) -> bool:
    """Turn "members must use two-step verification" on or off; commits. True if it changed."""
    if agreement.require_second_factor == required:
        return False
    agreement.require_second_factor = required
    audit.record(session, "agreement.settings_changed", actor=actor, agreement_id=agreement.id, origin=origin,
                 require_second_factor=required)
    session.commit()
    return True
