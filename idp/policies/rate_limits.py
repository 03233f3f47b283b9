"""Request rate limits: fixed windows in the shared store, answered with 429 and Retry-After.

Each bucket names what is limited and how much per window. Views call
``hit(bucket, key)`` with the key that matters (client, IP, account); the app's
error handler turns RateLimitedError into the response.

Every request takes a numbered count from its window's counter (idp/storage/counters.py) and is let in
only if its number is within the limit, so all workers together never let in more than the limit.
"""

from __future__ import annotations

import time

from ..errors import DomainError
from ..extensions import runtime

#: bucket: (requests allowed, window in seconds)
LIMITS = {
    "token": (600, 60),            # per client (or IP without client id)
    "register": (30, 3600),        # per IP
    "password_reset": (10, 900),   # per IP, and per address below
    "password_reset_address": (3, 3600),
    "invitation": (50, 3600),      # per inviting identity
    "agreements_api": (300, 60),   # per access token subject
    "password_strength": (120, 60),
    "device_verification": (30, 600),
}


class RateLimitedError(DomainError):
    code = "rate_limited"
    status = 429

    def __init__(self, retry_after: int):
        super().__init__("too many requests")
        self.retry_after = retry_after


def hit(bucket: str, key: str) -> None:
    """Count one request; raise RateLimitedError past the bucket's limit."""
    allowed, window = LIMITS[bucket]
    state = runtime()
    factor = state.settings.rate_limit_factor
    if factor <= 0:
        return
    allowed = max(1, int(allowed * factor))
    now = int(time.time())
    current = now // window
    count = state.rate_counter.take(bucket, key, current, allowed, window + 1)
    if count > allowed:
        if count == allowed + 1:  # once per window, not once per refused request
            from ..audit import service as audit
            from ..extensions import db_session, origin

            audit.record(db_session(), "rate_limit.exceeded", reason=bucket, origin=origin(), commit=True)
        raise RateLimitedError(retry_after=max(1, (current + 1) * window - now))
