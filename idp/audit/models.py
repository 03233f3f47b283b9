from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from ..storage.db import Base, JSONDict, UTCDateTime, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"
    # Partial: the rows without an agreement or a subject (a client's own token, most of the table) are never
    # looked up through these indexes, and leaving them out saves two index insertions per such row.
    __table_args__ = (
        Index("ix_audit_events_agreement_time", "agreement_id", "occurred_at",
              sqlite_where=text("agreement_id IS NOT NULL"), postgresql_where=text("agreement_id IS NOT NULL")),
        Index("ix_audit_events_subject_time", "subject_id", "occurred_at",
              sqlite_where=text("subject_id IS NOT NULL"), postgresql_where=text("subject_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    #: Who acted: an identity id, "client:<id>", "operator" or None (anonymous).
    actor: Mapped[str | None] = mapped_column(String(120), nullable=True)
    #: Whom it concerns (usually an identity id).
    subject_id: Mapped[str | None] = mapped_column(String(120), nullable=True)
    agreement_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    client_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)
    details: Mapped[dict] = mapped_column(JSONDict, default=dict)

    def as_dict(self) -> dict:
        return {"id": self.id, "occurred_at": self.occurred_at.isoformat(), "event": self.event, "actor": self.actor,
                "subject": self.subject_id, "agreement_id": self.agreement_id, "client_id": self.client_id,
                "reason": self.reason, "ip": self.ip, "user_agent": self.user_agent, "details": self.details}
