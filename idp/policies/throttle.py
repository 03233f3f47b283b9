"""Brute-force protection for passwords (NIST SP 800-63B §5.2.2 "rate limiting").

Failures are counted per account (the normalised e-mail, so an unknown address
is throttled exactly like a known one and reveals nothing) and per client IP,
in the shared store (Redis across processes, else the database):
- from the FREE_FAILURES-th failure on, each next attempt must wait a growing
  delay (2, 4, 8, ... seconds);
- at LOCK_AFTER failures in WINDOW, the account is locked until the window
  ends, well before NIST's 100; the person is told when and may reset the
  password by e-mail instead;
- an IP with IP_LOCK_AFTER failures in WINDOW is locked likewise, whatever
  accounts it tries.
A successful sign-in clears the account's count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..storage.ephemeral import EphemeralStore

WINDOW = 15 * 60
FREE_FAILURES = 4
LOCK_AFTER = 10
IP_LOCK_AFTER = 50
_FAILURES, _LAST, _IP = "login_failures", "login_last_failure", "login_ip_failures"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0
    locked: bool = False
    #: The account's failures in the window when it was checked.
    failures: int = 0


def check(store: EphemeralStore, account: str, ip: str | None, ip_lock_after: int = IP_LOCK_AFTER) -> Verdict:
    """May this attempt go ahead? (Does not count it.) The two counts are read together: one round trip."""
    if ip:
        ip_failures, failures = store.counts((_IP, ip), (_FAILURES, account))
        if ip_failures >= ip_lock_after:
            return Verdict(False, WINDOW, locked=True)
    else:
        failures = store.count(_FAILURES, account)
    if failures >= LOCK_AFTER:
        return Verdict(False, WINDOW, locked=True)
    if failures >= FREE_FAILURES:
        last = store.get(_LAST, account)
        delay = 2 ** (failures - FREE_FAILURES + 1)
        wait = int((last["at"] + delay) - time.time()) + 1 if last else 0
        if wait > 0:
            return Verdict(False, wait, failures=failures)
    return Verdict(True, failures=failures)


def failed(store: EphemeralStore, account: str, ip: str | None) -> int:
    """Count a failure; returns the account's count in the window."""
    count = store.incr(_FAILURES, account, WINDOW)
    store.put(_LAST, account, {"at": time.time()}, WINDOW)
    if ip:
        store.incr(_IP, ip, WINDOW)
    return count


def succeeded(store: EphemeralStore, account: str, verdict: Verdict) -> None:
    """Clear the account's count, if the check before this sign-in found any: nearly every sign-in has none,
    and two deletes were two writes (on SQLite two commits) per sign-in. A failure counted while this
    sign-in's password was being checked stays counted."""
    if verdict.failures:
        store.delete(_FAILURES, account)
        store.delete(_LAST, account)
