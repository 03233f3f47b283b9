"""Identities: creation and password authentication."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from sqlalchemy import bindparam, exists, select, update
from sqlalchemy.orm import Session

from ..errors import EmailTakenError, InvalidCredentialsError, InvalidEmailError
from ..audit import service as audit
from ..storage.db import Database, utcnow
from ..storage.direct import DirectStatement
from .models import Identity, SecondFactor
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
    new_hash = _verify(hasher, identity.password_hash if identity else None, identity is None or identity.disabled,
                       password, identity.id if identity else None)
    if new_hash:
        identity.password_hash = new_hash
        session.commit()
    return identity


def _verify(hasher: PasswordHasher, stored: str | None, refused: bool, password: str,
            identity_id: str | None) -> str | None:
    """Check the password against ``stored`` (one full hash computation whether or not there is one); returns
    a new hash if the stored one's parameters are outdated. Raises InvalidCredentialsError, whose details name
    the person the e-mail belongs to, if any, for the audit trail (its message is the same either way)."""
    ok, new_hash = hasher.verify(normalize_password(password[:MAX_PASSWORD_LENGTH]), stored)
    if not ok or refused:
        raise InvalidCredentialsError(identity_id=identity_id)
    return new_hash


@dataclass(frozen=True)
class SignIn:
    """Who the sign-in page's e-mail and password identified, with what the page decides next on."""

    id: str
    email_verified: bool
    #: A confirmed authenticator: the password alone does not sign in (``Totp.enrolled``).
    has_second_factor: bool


_IDENTITIES = Identity.__table__
_SIGN_IN = DirectStatement(
    select(_IDENTITIES.c.id, _IDENTITIES.c.password_hash, _IDENTITIES.c.disabled, _IDENTITIES.c.email_verified,
           exists().where(SecondFactor.__table__.c.identity_id == _IDENTITIES.c.id).label("has_second_factor"))
    .where(_IDENTITIES.c.email_normalized == bindparam("email")))
#: As the ORM writes a rehash in ``authenticate`` (``updated_at`` is the column's onupdate).
_REHASH = DirectStatement(update(_IDENTITIES).where(_IDENTITIES.c.id == bindparam("identity_id"))
                          .values(password_hash=bindparam("password_hash"),
                                  updated_at=bindparam("now", type_=_IDENTITIES.c.updated_at.type)))


def authenticate_sign_in(database: Database, hasher: PasswordHasher, email: str, password: str) -> SignIn:
    """``authenticate`` for the sign-in page, which changes nothing on the person but an outdated hash: the
    person and whether they have an authenticator in one direct statement, not two ORM loads (5 % of a
    sign-in's instructions in process, and on PostgreSQL a round trip; bench/README.md). The account pages,
    which change the person in the same session, keep ``authenticate``. The same refusal, after the same work,
    for an unknown e-mail, a wrong password and a disabled identity."""
    row = database.read(_SIGN_IN, {"email": normalize_email(email)}) if valid_email(email) else None
    new_hash = _verify(hasher, row["password_hash"] if row else None, row is None or row["disabled"], password,
                       row["id"] if row else None)
    if new_hash:
        with database.own_transaction(held=True) as connection:
            _REHASH.execute(connection, {"identity_id": row["id"], "password_hash": new_hash, "now": utcnow()})
    return SignIn(row["id"], row["email_verified"], row["has_second_factor"])


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
