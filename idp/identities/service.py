"""Identities: creation and password authentication."""

from __future__ import annotations

import re
import unicodedata

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..errors import EmailTakenError, InvalidCredentialsError, InvalidEmailError
from ..audit import service as audit
from ..storage.db import utcnow
from .models import Identity
from .passwords import PasswordHasher

# Deliberately loose: the address is proven by a verification mail, not a regex.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MAX_PASSWORD_LENGTH = 1024


def normalize_email(email: str) -> str:
    return email.strip().lower()


def normalize_password(password: str) -> str:
    # NIST SP 800-63B §5.1.1.2: normalise Unicode so the same password typed on
    # two keyboards verifies the same.
    return unicodedata.normalize("NFKC", password)


def valid_email(email: str) -> bool:
    if len(email) > 320 or any(ord(c) < 32 or ord(c) == 127 for c in email):
        return False
    return bool(_EMAIL.match(email.strip()))


def find_by_email(session: Session, email: str) -> Identity | None:
    return session.execute(select(Identity).where(Identity.email_normalized == normalize_email(email))).scalar_one_or_none()


def create_identity(session: Session, hasher: PasswordHasher, *, email: str, password: str | None, name: str = "",
                    given_name: str = "", family_name: str = "", email_verified: bool = False) -> Identity:
    """Create and commit an identity. Raises InvalidEmailError, EmailTakenError."""
    if not valid_email(email):
        raise InvalidEmailError("not an e-mail address")
    if find_by_email(session, email) is not None:
        raise EmailTakenError("e-mail already registered")
    identity = Identity(
        email=email.strip(),
        email_normalized=normalize_email(email),
        email_verified=email_verified,
        name=name or " ".join(p for p in (given_name, family_name) if p),
        given_name=given_name,
        family_name=family_name,
        password_hash=hasher.hash(normalize_password(password)) if password else None,
    )
    session.add(identity)
    session.commit()
    return identity


def authenticate(session: Session, hasher: PasswordHasher, email: str, password: str) -> Identity:
    """Return the identity for e-mail + password, rehashing an outdated hash.

    Raises InvalidCredentialsError, the same way for an unknown e-mail, a wrong
    password and a disabled identity, after the same amount of work.
    """
    identity = find_by_email(session, email) if valid_email(email) else None
    password = normalize_password(password[:MAX_PASSWORD_LENGTH])
    ok, new_hash = hasher.verify(password, identity.password_hash if identity else None)
    if not ok or identity is None or identity.disabled:
        raise InvalidCredentialsError()
    if new_hash:
        identity.password_hash = new_hash
        session.commit()
    return identity


def set_password(session: Session, hasher: PasswordHasher, identity: Identity, password: str, *,
                 reason: str = "changed", origin=None) -> None:
    """Change the password and end every session and refresh token of the identity; commits.

    "Changing the password ends other sessions": sessions signed in before now
    stop counting (sessions.service.valid_for) and every token family is revoked.
    """
    from ..grants.models import TokenFamily  # domain-to-domain, imported late to keep models independent

    identity.password_hash = hasher.hash(normalize_password(password))
    identity.sessions_valid_after = utcnow()
    session.execute(update(TokenFamily).where(TokenFamily.identity_id == identity.id,
                                              TokenFamily.revoked_at.is_(None))
                    .values(revoked_at=utcnow(), revoked_reason="password_changed"))
    audit.record(session, "identity.password_changed", actor=identity.id, subject=identity.id, reason=reason,
                 origin=origin)
    session.commit()
