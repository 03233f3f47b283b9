"""Consent records and everything issued under them.

A TokenFamily is one authorization: the code redemption that started it and
every access and refresh token rotated from it. Revoking the family revokes
all of them at once (code replay, refresh-token reuse, logout, revocation).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..storage.db import Base, JSONDict, JSONList, UTCDateTime, utcnow


class Grant(Base):
    """What an identity consented to for a client (remembered consent)."""

    __tablename__ = "grants"
    __table_args__ = (UniqueConstraint("identity_id", "client_id", name="uq_grants_identity_client"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    identity_id: Mapped[str] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class TokenFamily(Base):
    __tablename__ = "token_families"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"), index=True)
    identity_id: Mapped[str | None] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True, nullable=True)
    scope: Mapped[str] = mapped_column(String(1000), default="")
    #: The browser session (``sid``) the family was issued in.
    sid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    auth_time: Mapped[int | None] = mapped_column(Integer, nullable=True)
    acr: Mapped[str | None] = mapped_column(String(100), nullable=True)
    amr: Mapped[list] = mapped_column(JSONList, default=list)
    #: The agreement every token of this family is for (scope ``agreement``).
    agreement_id: Mapped[str | None] = mapped_column(ForeignKey("agreements.id", ondelete="CASCADE"), nullable=True,
                                                     index=True)
    #: The family a token exchange started from: revoking it revokes this one too.
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("token_families.id", ondelete="CASCADE"), nullable=True,
                                                  index=True)
    #: Thumbprint of the DPoP key a public client's refresh tokens are bound to.
    dpop_jkt: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: The OIDC ``claims`` request of the authorization, for UserInfo (§5.5).
    claims_request: Mapped[dict] = mapped_column(JSONDict, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Absolute end of the family: rotation never extends past it.
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class RefreshToken(Base):
    """A refresh token's row. The grants read it with its family as ``tokens.RefreshCredential``."""

    __tablename__ = "refresh_tokens"

    #: HMAC of the token; the token itself is only ever in the client's hands.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(ForeignKey("token_families.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    #: Set when this token was exchanged for a new one; a second use is reuse.
    rotated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    family: Mapped[TokenFamily] = relationship(lazy="joined")


class AccessToken(Base):
    """Every JWT access token issued, by ``jti``, so it can be revoked."""

    __tablename__ = "access_tokens"
    # family_id's index is partial: a client_credentials token has no family, and is never looked up by one.
    __table_args__ = (Index("ix_access_tokens_expires_at", "expires_at"),
                      Index("ix_access_tokens_family_id", "family_id", sqlite_where=text("family_id IS NOT NULL"),
                            postgresql_where=text("family_id IS NOT NULL")))

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str | None] = mapped_column(ForeignKey("token_families.id", ondelete="CASCADE"), nullable=True)
    client_id: Mapped[str] = mapped_column(String(100))
    identity_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    scope: Mapped[str] = mapped_column(String(1000), default="")
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    family: Mapped[TokenFamily | None] = relationship(lazy="joined")

    @property
    def active(self) -> bool:
        if self.revoked_at is not None or self.expires_at <= utcnow():
            return False
        return self.family is None or not self.family.revoked


class LogoutDelivery(Base):
    """A back-channel logout token on its way to an RP (kept until delivered)."""

    __tablename__ = "logout_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"), index=True)
    uri: Mapped[str] = mapped_column(String(2000))
    logout_token: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
