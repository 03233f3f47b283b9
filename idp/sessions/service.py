"""Who is signed in to this browser, and since when."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

LOGIN_KEY = "login"
#: acr values for the two levels (advertised in acr_values_supported).
ACR_PASSWORD = "urn:connect-idp:acr:pwd"
ACR_MFA = "urn:connect-idp:acr:mfa"


@dataclass(frozen=True)
class BrowserLogin:
    identity_id: str
    auth_time: int
    amr: tuple[str, ...]
    acr: str
    #: OIDC session id, in ID tokens as ``sid`` (for logout).
    sid: str
    expires_at: int
    #: Precise time of sign-in, to compare with a "signed out everywhere" moment.
    signed_in_at: float = 0.0


def current(session) -> BrowserLogin | None:
    data = session.get(LOGIN_KEY)
    if not data:
        return None
    if data["expires_at"] <= time.time():
        return None
    return BrowserLogin(data["identity_id"], data["auth_time"], tuple(data["amr"]), data["acr"], data["sid"],
                        data["expires_at"], data.get("signed_in_at", data["auth_time"]))


def sign_in(session, identity_id: str, amr: list[str], lifetime: int) -> BrowserLogin:
    """Record a fresh login and rotate the session id."""
    precise = time.time()
    now = int(precise)
    session.regenerate()
    acr = ACR_MFA if "mfa" in amr else ACR_PASSWORD
    session[LOGIN_KEY] = {"identity_id": identity_id, "auth_time": now, "amr": amr, "acr": acr,
                          "sid": secrets.token_urlsafe(16), "expires_at": now + lifetime, "signed_in_at": precise}
    return current(session)


def step_up(session) -> BrowserLogin | None:
    """Raise the current login to the second level after a TOTP check.

    ``auth_time`` stays the password's time: max_age asks for a fresh password,
    which a second factor alone does not give. The session id rotates.
    """
    data = session.get(LOGIN_KEY)
    if not data:
        return None
    amr = list(dict.fromkeys([*data["amr"], "otp", "mfa"]))
    session.regenerate()
    session[LOGIN_KEY] = {**data, "amr": amr, "acr": ACR_MFA}
    return current(session)


def valid_for(login: BrowserLogin | None, identity) -> bool:
    """A login counts only for an enabled identity whose sessions were not ended since."""
    if login is None or identity is None or identity.disabled:
        return False
    ended = identity.sessions_valid_after
    return ended is None or login.signed_in_at > ended.timestamp()


def sign_out(session) -> None:
    session.clear()
