from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..agreements.models import Agreement
from ..storage.db import Base, UTCDateTime, utcnow


class InvitationStatus(str, enum.Enum):
    pending = "pending"
    accepted = "accepted"
    revoked = "revoked"


class Invitation(Base):
    """An invitation to join an agreement with a role, sent to one e-mail address.

    The link's token is random (256 bits) and stored only as a keyed hash; a
    resend replaces it, so only the newest mail's link works. Accepting flips
    ``status`` from pending exactly once (a conditional UPDATE).
    """

    __tablename__ = "invitations"
    __table_args__ = (Index("ix_invitations_agreement_status", "agreement_id", "status"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    agreement_id: Mapped[str] = mapped_column(ForeignKey("agreements.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    email_normalized: Mapped[str] = mapped_column(String(320), index=True)
    role: Mapped[str] = mapped_column(String(32), default="user", server_default="user")
    status: Mapped[str] = mapped_column(String(16), default=InvitationStatus.pending.value,
                                        server_default=InvitationStatus.pending.value)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[str | None] = mapped_column(ForeignKey("identities.id", ondelete="SET NULL"), nullable=True)
    sent_count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    accepted_by: Mapped[str | None] = mapped_column(ForeignKey("identities.id", ondelete="SET NULL"), nullable=True)

    agreement: Mapped[Agreement] = relationship(lazy="joined")

    @property
    def expired(self) -> bool:
        return self.expires_at <= utcnow()
