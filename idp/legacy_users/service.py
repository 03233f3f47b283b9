"""Legacy users: checking old credentials, moving them onto identities, and superusers' e-mail updates.

    agreement number + username + password ──ok──▶ proven (kept in the browser session)
        │                                              │
        │ signed in ("add agreement")                  │ not signed in: own e-mail + new password
        ▼                                              ▼
    attach_to_identity ◀── membership ──  complete_activation ◀── verification link (24 h, once)

What it enforces:
    * legacy hashes are verified as imported, with passlib's schemes; an
      unknown username costs the same work as a known one (dummy verify);
    * failures are counted per legacy username and per IP, like password
      sign-in: the 10th failure within 15 minutes locks that username (the
      50th that IP) for 15 minutes, right passwords included;
    * activation wipes the legacy hash in the same transaction that creates
      the membership (a conditional UPDATE: a legacy user moves exactly once);
    * nobody attaches a legacy user to an identity whose e-mail is someone
      else's without signing in as that identity: an e-mail that already has a
      login is refused (EmailTakenError) unless the browser is signed in.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from passlib.context import CryptContext
from passlib.exc import MissingBackendError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..agreement_admin import service as memberships
from ..audit import service as audit
from ..errors import DomainError, EmailTakenError, InvalidEmailError
from ..identities import service as identities
from ..identities.models import Identity
from ..storage.db import utcnow
from ..storage.ephemeral import EphemeralStore
from .models import LegacyUser

#: What the old systems used; passlib identifies each hash by its format.
SCHEMES = ["bcrypt", "pbkdf2_sha256", "pbkdf2_sha512", "sha512_crypt", "sha256_crypt", "md5_crypt", "argon2"]


def _dummy_scheme() -> str:
    # dummy_verify() hashes with the default scheme: make that a typical old-system
    # cost (bcrypt, cost 10), or sha512_crypt where bcrypt is not installed.
    try:
        from passlib.hash import bcrypt

        bcrypt.get_backend()
        return "bcrypt"
    except MissingBackendError:
        return "sha512_crypt"


legacy_context = CryptContext(schemes=SCHEMES, default=_dummy_scheme(), bcrypt__default_rounds=10)

#: Failures in FAILURE_WINDOW before a legacy username, or an IP, is locked for the
#: rest of it: the numbers password sign-in uses (an office behind one IP gets more).
MAX_FAILURES = 10
MAX_IP_FAILURES = 50
FAILURE_WINDOW = 15 * 60
#: The verification link of an activation: 24 hours, once.
ACTIVATION = ("legacy_activation", 24 * 3600)
MAX_USERNAME = 100


class InvalidLegacyCredentialsError(DomainError):
    code = "invalid_legacy_credentials"
    status = 401


class LegacyLockedError(DomainError):
    code = "legacy_locked"
    status = 429


class AlreadyActivatedError(DomainError):
    code = "legacy_already_activated"
    status = 409


class ActivationLinkError(DomainError):
    code = "activation_link_unavailable"


class EmailSharedError(DomainError):
    """Another legacy user of the agreement already has this e-mail."""

    code = "email_shared"
    status = 409


def normalize_username(username: str) -> str:
    return username.strip().lower()


def hash_problem(value: str) -> str | None:
    """Why a legacy hash cannot be verified, or None when passlib can verify it."""
    value = (value or "").strip()
    if not value:
        return "empty hash"
    scheme = legacy_context.identify(value, required=False)
    if scheme is None:
        return "unrecognised hash format"
    try:
        handler = legacy_context.handler(scheme)
        # Parses salt, rounds and checksum: catches truncated hashes, and settings
        # strings without a checksum (which would verify no password at all).
        if not getattr(handler.from_string(value), "checksum", None):
            return f"malformed {scheme} hash: no checksum"
        if hasattr(handler, "get_backend"):
            handler.get_backend()
    except MissingBackendError:
        return f"{scheme} support is not installed"
    except (ValueError, TypeError) as error:
        return f"malformed {scheme} hash: {error}"
    return None


def find(session: Session, agreement_number: str, username: str) -> LegacyUser | None:
    from ..agreements.models import Agreement

    if not agreement_number or len(agreement_number) > 32 or not username or len(username) > MAX_USERNAME:
        return None
    return session.execute(
        select(LegacyUser).join(Agreement, Agreement.id == LegacyUser.agreement_id)
        .where(Agreement.number == agreement_number.strip(),
               LegacyUser.username_normalized == normalize_username(username))
    ).scalar_one_or_none()


def _verify(password: str, stored: str | None) -> bool:
    if not stored:
        legacy_context.dummy_verify()
        return False
    try:
        return legacy_context.verify(password, stored)
    except (ValueError, TypeError, MissingBackendError):
        legacy_context.dummy_verify()
        return False


def _failed(session: Session, store: EphemeralStore, keys: list[tuple[str, str]], legacy: LegacyUser | None,
            reason: str, origin) -> None:
    for kind, ident in keys:
        limit = MAX_IP_FAILURES if kind == "legacy_ip" else MAX_FAILURES
        if store.incr(f"{kind}_failures", ident, FAILURE_WINDOW) >= limit:
            store.put(f"{kind}_lock", ident, {"locked": True}, FAILURE_WINDOW)
    audit.record(session, "legacy_user.login_failed", subject=legacy.identity_id if legacy else None,
                 agreement_id=legacy.agreement_id if legacy else None, reason=reason, origin=origin, commit=True,
                 legacy_user=legacy.id if legacy else None)


def check_credentials(session: Session, store: EphemeralStore, agreement_number: str, username: str, password: str,
                      *, origin=None) -> LegacyUser:
    """The legacy user these old credentials prove.

    Raises LegacyLockedError (too many failures for this username or IP),
    InvalidLegacyCredentialsError (the same for an unknown agreement, username
    or a wrong password) and AlreadyActivatedError.
    """
    agreement_number, username = agreement_number.strip()[:32], username.strip()[:MAX_USERNAME]
    ip = getattr(origin, "ip", None) or "-"
    keys = [("legacy_user", hashlib.sha256(f"{agreement_number}\0{normalize_username(username)}".encode()).hexdigest()),
            ("legacy_ip", ip)]
    if any(store.get(f"{kind}_lock", ident) for kind, ident in keys):
        audit.record(session, "legacy_user.login_failed", reason="locked", origin=origin, commit=True)
        raise LegacyLockedError()
    legacy = find(session, agreement_number, username)
    if legacy is not None and legacy.activated:
        # The hash is gone, so no password can be checked: say what happened instead.
        legacy_context.dummy_verify()
        _failed(session, store, keys, legacy, "already_activated", origin)
        raise AlreadyActivatedError()
    if not _verify(password[:1024], legacy.password_hash if legacy else None) or legacy is None:
        _failed(session, store, keys, legacy, "invalid_credentials", origin)
        raise InvalidLegacyCredentialsError()
    store.delete("legacy_user_failures", keys[0][1])
    return legacy


def _retire(session: Session, legacy: LegacyUser, identity: Identity, *, actor: str, origin) -> tuple[object, bool]:
    """Move the legacy user onto the identity: wipe the hash, add the membership (no commit)."""
    moved = session.execute(
        update(LegacyUser).where(LegacyUser.id == legacy.id, LegacyUser.activated_at.is_(None))
        .values(activated_at=utcnow(), identity_id=identity.id, password_hash=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    if moved != 1:
        raise AlreadyActivatedError()
    member, created = memberships.add_member(session, identity.id, legacy.agreement_id, legacy.role, actor=actor,
                                             origin=origin, reason="legacy_activation")
    audit.record(session, "legacy_user.activated", actor=actor, subject=identity.id, agreement_id=legacy.agreement_id,
                 origin=origin, legacy_user=legacy.id, role=member.role)
    session.expire(legacy)
    return member, created


def attach_to_identity(session: Session, legacy_user_id: int, identity: Identity, *, origin=None):
    """"Add agreement" for a signed-in person: the legacy user becomes their membership; commits.

    Returns (membership, created). Raises AlreadyActivatedError.
    """
    legacy = session.get(LegacyUser, legacy_user_id)
    if legacy is None or legacy.activated:
        raise AlreadyActivatedError()
    try:
        result = _retire(session, legacy, identity, actor=identity.id, origin=origin)
    except AlreadyActivatedError:
        session.rollback()
        raise
    session.commit()
    return result


# -- activation by a person without a Connect login ---------------------------------

@dataclass(frozen=True)
class PendingActivation:
    legacy_user_id: int
    email: str
    password_hash: str
    given_name: str
    family_name: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_activation(session: Session, store: EphemeralStore, hasher, legacy: LegacyUser, *, email: str,
                     password: str, given_name: str = "", family_name: str = "") -> str:
    """Remember the new login's details behind a single-use link for ``email``; returns the link's token.

    Nothing durable is written until the link is followed: the identity is born
    verified. The caller checks the password policy. Raises InvalidEmailError,
    EmailTakenError (the address already has a login: sign in and add the agreement).
    """
    email = email.strip()
    if not identities.valid_email(email):
        raise InvalidEmailError("not an e-mail address")
    if identities.find_by_email(session, email) is not None:
        raise EmailTakenError("e-mail already registered")
    token = secrets.token_urlsafe(32)
    kind, ttl = ACTIVATION
    store.put(kind, _digest(token), {
        "legacy_user_id": legacy.id, "email": email, "given_name": given_name[:100], "family_name": family_name[:100],
        # An argon2 hash, never the password: the store holds nothing that signs anyone in.
        "password_hash": hasher.hash(identities.normalize_password(password)),
    }, ttl)
    return token


def peek_activation(store: EphemeralStore, token: str) -> PendingActivation | None:
    """The pending activation behind a link, without spending it (mail scanners open links)."""
    if not token or len(token) > 100:
        return None
    data = store.get(ACTIVATION[0], _digest(token))
    return PendingActivation(**data) if data else None


def complete_activation(session: Session, store: EphemeralStore, token: str, *, origin=None) -> Identity:
    """Follow the verification link: create the verified identity and its membership; commits.

    Raises ActivationLinkError (used, expired or unknown), AlreadyActivatedError
    (someone moved the legacy user meanwhile), EmailTakenError (the address got a
    login meanwhile). On any error nothing is written.
    """
    if not token or len(token) > 100:
        raise ActivationLinkError()
    consumed = store.consume(ACTIVATION[0], _digest(token))
    if consumed is None or not consumed.first:
        raise ActivationLinkError()
    pending = PendingActivation(**consumed.value)
    legacy = session.get(LegacyUser, pending.legacy_user_id)
    if legacy is None or legacy.activated:
        raise AlreadyActivatedError()
    if identities.find_by_email(session, pending.email) is not None:
        raise EmailTakenError("e-mail already registered")
    identity = Identity(
        email=pending.email, email_normalized=identities.normalize_email(pending.email), email_verified=True,
        given_name=pending.given_name, family_name=pending.family_name,
        name=" ".join(p for p in (pending.given_name, pending.family_name) if p),
        password_hash=pending.password_hash,
    )
    session.add(identity)
    try:
        session.flush()
        audit.record(session, "identity.created", actor=identity.id, subject=identity.id,
                     agreement_id=legacy.agreement_id, reason="legacy_activation", origin=origin)
        audit.record(session, "identity.email_verified", actor=identity.id, subject=identity.id, origin=origin,
                     reason="legacy_activation")
        _retire(session, legacy, identity, actor=identity.id, origin=origin)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise EmailTakenError("e-mail already registered") from None
    except AlreadyActivatedError:
        session.rollback()
        raise
    return identity


# -- superusers ---------------------------------------------------------------------

def pending(session: Session, agreement_id: str, limit: int = 500) -> list[LegacyUser]:
    """The agreement's legacy users that have not moved to the new login yet."""
    return list(session.execute(
        select(LegacyUser).where(LegacyUser.agreement_id == agreement_id, LegacyUser.activated_at.is_(None))
        .order_by(LegacyUser.username_normalized).limit(limit)).scalars())


def set_email(session: Session, agreement_id: str, legacy_user_id: int, email: str, *, actor: str,
              origin=None) -> LegacyUser:
    """A superuser gives a legacy user their own e-mail; commits.

    Raises NotFoundError (not this agreement's, or already activated),
    InvalidEmailError, EmailSharedError (another legacy user of the agreement
    has it: every person needs their own address).
    """
    from ..errors import NotFoundError

    legacy = session.get(LegacyUser, legacy_user_id)
    if legacy is None or legacy.agreement_id != agreement_id or legacy.activated:
        raise NotFoundError("no such legacy user")
    email = email.strip()
    if not identities.valid_email(email):
        raise InvalidEmailError("not an e-mail address")
    others = session.execute(select(LegacyUser.id, LegacyUser.email).where(
        LegacyUser.agreement_id == agreement_id, LegacyUser.id != legacy.id,
        LegacyUser.activated_at.is_(None), LegacyUser.email.is_not(None))).all()
    if any(identities.normalize_email(other_email) == identities.normalize_email(email) for _, other_email in others):
        raise EmailSharedError("another user of this agreement has this e-mail")
    previous, legacy.email = legacy.email, email
    audit.record(session, "legacy_user.email_set", actor=actor, agreement_id=agreement_id, origin=origin,
                 legacy_user=legacy.id, had_email=bool(previous))
    session.commit()
    return legacy


# -- import -------------------------------------------------------------------------

COLUMNS = ("agreement_number", "agreement_name", "product", "username", "email", "role", "legacy_hash")


@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    agreements_created: int = 0
    #: (row number in the file, reason)
    rejected: list[tuple[int, str]] = None

    def __post_init__(self):
        self.rejected = self.rejected or []


def _normalize_role(value: str) -> str:
    return value.strip().lower().replace("-", "_").replace(" ", "_")


def import_rows(session: Session, rows, *, origin=None, dry_run: bool = False) -> ImportSummary:
    """Create or update legacy users (and their agreements) from CSV rows; commits once at the end.

    ``rows`` yields (row number, dict by COLUMNS). Idempotent: a row that
    matches what is stored changes nothing. A stored e-mail is kept (it may be
    one a superuser set); the file's fills only an empty one. A bad row is reported with its
    reason and the rest are imported. An activated legacy user is never
    brought back (its row is rejected as such).
    """
    from ..agreements.models import Agreement, Product

    summary = ImportSummary()
    products = {p.id for p in session.execute(select(Product)).scalars()}
    agreements: dict[str, Agreement | None] = {}
    seen: dict[tuple[str, str], int] = {}
    for number, row in rows:
        reason = None
        values = {k: (row.get(k) or "").strip() for k in COLUMNS}
        agreement_number, product, username = values["agreement_number"], values["product"], values["username"]
        role, email, legacy_hash = _normalize_role(values["role"] or "user"), values["email"], values["legacy_hash"]
        if not agreement_number or len(agreement_number) > 32:
            reason = "agreement number missing or longer than 32 characters"
        elif not username or len(username) > MAX_USERNAME:
            reason = f"username missing or longer than {MAX_USERNAME} characters"
        elif product not in products:
            reason = f"unknown product {product!r}"
        elif not memberships.valid_role(role):
            reason = f"unknown role {values['role']!r} (use superuser, user or time_registrant)"
        elif email and not identities.valid_email(email):
            reason = f"not an e-mail address: {email!r}"
        elif (problem := hash_problem(legacy_hash)) is not None:
            reason = problem
        elif (agreement_number, normalize_username(username)) in seen:
            reason = f"duplicate of row {seen[(agreement_number, normalize_username(username))]}"
        if reason is None:
            if agreement_number not in agreements:
                agreements[agreement_number] = session.execute(
                    select(Agreement).where(Agreement.number == agreement_number)).scalar_one_or_none()
            agreement = agreements[agreement_number]
            if agreement is not None and agreement.product_id != product:
                reason = f"agreement {agreement_number} belongs to product {agreement.product_id!r}"
        if reason is not None:
            summary.rejected.append((number, reason))
            continue
        seen[(agreement_number, normalize_username(username))] = number
        if agreement is None:
            agreement = Agreement(number=agreement_number, name=values["agreement_name"] or agreement_number,
                                  product_id=product)
            session.add(agreement)
            session.flush()
            agreements[agreement_number] = agreement
            summary.agreements_created += 1
        legacy = session.execute(select(LegacyUser).where(
            LegacyUser.agreement_id == agreement.id,
            LegacyUser.username_normalized == normalize_username(username))).scalar_one_or_none()
        if legacy is None:
            session.add(LegacyUser(agreement_id=agreement.id, username=username,
                                   username_normalized=normalize_username(username), email=email or None,
                                   role=role, password_hash=legacy_hash))
            summary.created += 1
        elif legacy.activated:
            summary.rejected.append((number, "already moved to the new login; left as it is"))
        else:
            # An e-mail already stored wins over the file's: a superuser may have
            # given a person their own address in place of a shared one.
            email = legacy.email or email or None
            if (legacy.username, legacy.email, legacy.role, legacy.password_hash) == (username, email, role,
                                                                                    legacy_hash):
                summary.unchanged += 1
            else:
                legacy.username, legacy.email, legacy.role, legacy.password_hash = username, email, role, legacy_hash
                summary.updated += 1
    if dry_run:
        session.rollback()
        return summary
    audit.record(session, "legacy_user.imported", actor="operator", origin=origin, created=summary.created,
                 updated=summary.updated, unchanged=summary.unchanged, rejected=len(summary.rejected),
                 agreements_created=summary.agreements_created)
    session.commit()
    return summary
