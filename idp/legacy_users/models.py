from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..agreements.models import Agreement
from ..storage.db import Base, UTCDateTime, utcnow


class LegacyUser(Base):
    """An agreement's username and password from the old world, until it moves onto an identity.

    The password hash is kept exactly as imported (bcrypt, sha512_crypt, ...)
    and wiped at activation: from then on the old credentials prove nothing.
    """

    __tablename__ = "legacy_users"
    __table_args__ = (
        UniqueConstraint("agreement_id", "username_normalized", name="uq_legacy_users_agreement_username"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    agreement_id: Mapped[str] = mapped_column(ForeignKey("agreements.id", ondelete="CASCADE"), index=True)
    #: As the old system spelled it (shown to superusers).
    username: Mapped[str] = mapped_column(String(100))
    #: Lower-cased: old usernames were typed case-insensitively.
    username_normalized: Mapped[str] = mapped_column(String(100))
    #: The address the old system knew, or one a superuser set; may be shared by several people.
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    role: Mapped[str] = mapped_column(String(32), default="user", server_default="user")
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    activated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The identity this legacy user moved onto.
    identity_id: Mapped[str | None] = mapped_column(ForeignKey("identities.id", ondelete="SET NULL"), nullable=True,
                                                    index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    agreement: Mapped[Agreement] = relationship(lazy="joined")

    @property
    def activated(self) -> bool:
        return self.activated_at is not None
