"""TOTP second factor (RFC 6238) and recovery codes.

What it enforces:
- codes are 6 digits after removing the spaces people type, accepted for the
  current 30-second step and one either side;
- a code is accepted once: the (identity, time step) pair is recorded in the
  ephemeral store (Redis across processes) and a second use is refused;
- at most MAX_ATTEMPTS attempts per identity in ATTEMPT_WINDOW seconds; after
  that the step is locked until the window ends, right codes included;
- seeds are AES-GCM encrypted at rest, bound to their identity; never logged;
- recovery codes are single use and stored as keyed hashes.
"""

from __future__ import annotations

import hmac
import io
import secrets
import time
from dataclasses import dataclass

import pyotp
import segno
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ..errors import DomainError
from ..security import DataCipher, hasher
from ..storage.db import utcnow
from ..storage.ephemeral import EphemeralStore
from .models import RecoveryCode, SecondFactor

ISSUER_NAME = "Connect login"
STEP = 30
MAX_ATTEMPTS = 5
ATTEMPT_WINDOW = 300
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i look-alikes


class TotpLockedError(DomainError):
    code = "totp_locked"
    status = 429


class TotpReplayError(DomainError):
    code = "totp_replay"


class InvalidTotpError(DomainError):
    code = "invalid_totp"


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER_NAME)


def qr_svg(uri: str) -> str:
    """An inline SVG QR code, rendered here: the seed never goes to a QR service."""
    buffer = io.BytesIO()
    # omitsize: a viewBox instead of a fixed size, so CSS can scale it whole.
    segno.make(uri, error="m").save(buffer, kind="svg", scale=5, border=2, xmldecl=False, svgns=True,
                                     title="QR code", omitsize=True)
    return buffer.getvalue().decode()


def normalize_code(code: str) -> str:
    return "".join(code.split())


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step the code belongs to (±1 step of now), or None."""
    code = normalize_code(code)
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = int((now if now is not None else time.time()) // STEP)
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


@dataclass
class Totp:
    """TOTP checks for one process: the cipher for seeds and the shared store."""

    cipher: DataCipher
    store: EphemeralStore

    def find(self, session: Session, identity_id: str) -> SecondFactor | None:
        return session.execute(select(SecondFactor).where(SecondFactor.identity_id == identity_id)).scalar_one_or_none()

    def enrolled(self, session: Session, identity_id: str) -> bool:
        return self.find(session, identity_id) is not None

    def _throttle(self, identity_id: str) -> None:
        if self.store.incr("totp_attempts", identity_id, ATTEMPT_WINDOW) > MAX_ATTEMPTS:
            raise TotpLockedError("too many attempts")

    def check_code(self, secret: str, identity_id: str, code: str, now: float | None = None) -> None:
        """Accept ``code`` once for this identity; raises InvalidTotpError, TotpReplayError, TotpLockedError."""
        self._throttle(identity_id)
        step = matching_step(secret, code, now)
        if step is None:
            raise InvalidTotpError("wrong code")
        # "Reject OTP tokens that have already been used": the first process to
        # count this (identity, step) wins; every other use is a replay.
        if self.store.incr("totp_used", f"{identity_id}:{step}", STEP * 4) != 1:
            raise TotpReplayError("code already used")
        self.store.delete("totp_attempts", identity_id)

    def verify(self, session: Session, identity_id: str, code: str, now: float | None = None) -> None:
        factor = self.find(session, identity_id)
        if factor is None:
            raise InvalidTotpError("no authenticator")
        self.check_code(self.cipher.decrypt(factor.secret_encrypted, identity_id), identity_id, code, now)

    def enrol(self, session: Session, identity_id: str, secret: str) -> list[str]:
        """Store a confirmed authenticator (replacing any) and return fresh recovery codes; commits."""
        session.execute(delete(SecondFactor).where(SecondFactor.identity_id == identity_id))
        session.add(SecondFactor(identity_id=identity_id, secret_encrypted=self.cipher.encrypt(secret, identity_id)))
        codes = _replace_recovery_codes(session, identity_id)
        session.commit()
        return codes

    def disable(self, session: Session, identity_id: str) -> None:
        session.execute(delete(SecondFactor).where(SecondFactor.identity_id == identity_id))
        session.execute(delete(RecoveryCode).where(RecoveryCode.identity_id == identity_id))
        session.commit()

    def use_recovery_code(self, session: Session, identity_id: str, code: str) -> None:
        """Spend one recovery code; raises InvalidTotpError or TotpLockedError."""
        self._throttle(identity_id)
        digest = hasher().hash(_normalize_recovery(code))
        spent = session.execute(
            update(RecoveryCode).where(RecoveryCode.identity_id == identity_id, RecoveryCode.code_hash == digest,
                                       RecoveryCode.used_at.is_(None)).values(used_at=utcnow())
        ).rowcount
        session.commit()
        if spent != 1:
            raise InvalidTotpError("wrong recovery code")
        self.store.delete("totp_attempts", identity_id)


def _normalize_recovery(code: str) -> str:
    return "".join(c for c in code.lower() if c.isalnum())


def _replace_recovery_codes(session: Session, identity_id: str) -> list[str]:
    session.execute(delete(RecoveryCode).where(RecoveryCode.identity_id == identity_id))
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
        session.add(RecoveryCode(identity_id=identity_id, code_hash=hasher().hash(raw)))
    return codes


def unused_recovery_codes(session: Session, identity_id: str) -> int:
    return len(session.execute(select(RecoveryCode.id).where(RecoveryCode.identity_id == identity_id,
                                                             RecoveryCode.used_at.is_(None))).all())
