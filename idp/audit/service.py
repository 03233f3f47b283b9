"""Recording and reading audit events."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from .events import EVENTS
from ..storage.db import utcnow
from .models import AuditEvent

_SECRET_WORDS = ("password", "secret", "token", "code", "otp")


@dataclass(frozen=True)
class Origin:
    """Where a request came from; views build it, services pass it along."""

    ip: str | None = None
    user_agent: str | None = None


def row(event: str, *, actor: str | None = None, subject: str | None = None, agreement_id: str | None = None,
        client_id: str | None = None, reason: str | None = None, origin: Origin | None = None, **details) -> dict:
    """The audit_events row of one event, checked: for callers that insert it in a statement of their own."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}: add it to idp/audit/events.py")
    if any(word in key.lower() for key in details for word in _SECRET_WORDS):
        raise ValueError("audit details must not carry secrets")
    origin = origin or Origin()
    return dict(occurred_at=utcnow(), event=event, actor=actor, subject_id=subject, agreement_id=agreement_id,
                client_id=client_id, reason=reason, ip=origin.ip,
                user_agent=(origin.user_agent or "")[:300] or None, details=details)


def record(session: Session, event: str, *, commit: bool = False, **fields) -> None:
    """Add an event to the caller's transaction (commit=True commits it alone)."""
    # A Core INSERT in the caller's transaction (rolled back with it): events are written, never read back
    # in the same request.
    session.connection().execute(_INSERT, row(event, **fields))
    if commit:
        session.commit()


_INSERT = insert(AuditEvent.__table__)


def query(session: Session, *, event: str | None = None, subject: str | None = None, agreement_id: str | None = None,
          since: dt.datetime | None = None, limit: int = 100, before_id: int | None = None) -> list[AuditEvent]:
    """Newest first, filtered, paged by id."""
    statement = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if event:
        statement = statement.where(AuditEvent.event == event)
    if subject:
        statement = statement.where(AuditEvent.subject_id == subject)
    if agreement_id:
        statement = statement.where(AuditEvent.agreement_id == agreement_id)
    if since:
        statement = statement.where(AuditEvent.occurred_at >= since)
    if before_id:
        statement = statement.where(AuditEvent.id < before_id)
    return list(session.execute(statement).scalars())
