from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..storage.db import Base, UTCDateTime, utcnow


class Role(str, enum.Enum):
    superuser = "superuser"
    user = "user"
    time_registrant = "time_registrant"


class Product(Base):
    """A family of RPs sharing agreements (``e-conomic``, ``dinero``, ...)."""

    __tablename__ = "products"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the slug
    name: Mapped[str] = mapped_column(String(200))


class Agreement(Base):
    """A customer account inside one product."""

    __tablename__ = "agreements"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    #: The public agreement number people know and type.
    number: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), index=True)
    require_second_factor: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Time registrants of this agreement may only sign in to mobile time-registration apps.
    time_registrants_mobile_only: Mapped[bool] = mapped_column(Boolean, default=False)
    closed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    product: Mapped[Product] = relationship(lazy="joined")


class Membership(Base):
    """Identity x agreement, with one role."""

    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("identity_id", "agreement_id", name="uq_memberships_identity_agreement"),
        # The chooser lists one person's agreements, most recently used first.
        # (PostgreSQL also gets a DESC NULLS LAST twin; see the 0009b migration.)
        Index("ix_memberships_identity_last_used", "identity_id", "last_used_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    identity_id: Mapped[str] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    agreement_id: Mapped[str] = mapped_column(ForeignKey("agreements.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32), default=Role.user.value)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    agreement: Mapped[Agreement] = relationship(lazy="joined")
