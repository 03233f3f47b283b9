"""Numbered counts for rate limits, reserved from the shared store in blocks.

A request is let in when its number in the window's count is within the limit, so all workers together
never let in more than the limit. For large limits (the token endpoint's 600 a minute) a process reserves
counts in blocks of a fiftieth of the limit (at most 32) and hands them out locally: one store round trip
per block instead of one per request, on the hottest endpoint. The price is that a caller at its limit may
be refused up to (block - 1) counts early per worker that still holds unused counts; never late. Small
limits (password resets, registration) are counted one by one, exactly as before.
"""

from __future__ import annotations

import os
import threading
import time
import weakref

#: A block is at most this share of the limit ...
BLOCK_DIVISOR = 50
#: ... and at most this many counts.
MAX_BLOCK = 32
#: Reservations kept per process before those of past windows are dropped.
MAX_HELD = 10_000


class _Held:
    """Counts this process reserved in one window: ``next`` to ``last`` are still unused."""

    __slots__ = ("window", "next", "last", "exhausted", "stale_after")

    def __init__(self, window: int, first: int, last: int, exhausted: bool, stale_after: float):
        self.window, self.next, self.last, self.exhausted = window, first, last, exhausted
        #: When the window is certainly over (buckets have windows of different lengths).
        self.stale_after = stale_after


class BlockCounter:
    """Numbered counts from the shared store, reserved in blocks where the limit allows it (per store,
    per process: a forked worker starts with nothing reserved, so parent and child never share counts)."""

    def __init__(self, store):
        self._store = store
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], _Held] = {}
        self._reserving: set[tuple[str, str]] = set()
        _counters.add(self)

    def take(self, bucket: str, key: str, window: int, allowed: int, ttl: int) -> int:
        """This request's number in the window's count."""
        block = min(MAX_BLOCK, allowed // BLOCK_DIVISOR)
        kind, ident = f"rate:{bucket}", f"{key}:{window}"
        if block <= 1:
            return self._store.incr(kind, ident, ttl)
        slot = (bucket, key)
        with self._lock:
            held = self._held.get(slot)
            if held is not None and held.window == window:
                if held.next <= held.last:
                    held.next += 1
                    return held.next - 1
                if held.exhausted:
                    # Past the limit already: refused without asking the store again this window.
                    return allowed + 2
            reserving = slot not in self._reserving
            if reserving:
                self._reserving.add(slot)
        if not reserving:
            # Another thread is reserving this slot's next block: count this request on its own rather than
            # wait behind that round trip (a store that hangs must not queue every request of the process).
            return self._store.incr(kind, ident, ttl)
        try:
            last = self._store.incr(kind, ident, ttl, amount=block)
        except BaseException:
            with self._lock:
                self._reserving.discard(slot)
            raise
        first = last - block + 1
        now = time.monotonic()
        with self._lock:
            # The new block is in place when the next reservation may start. (Ending the reservation first let
            # a thread that found the old block used up reserve another in between, and whichever block was put
            # in place first was overwritten: its numbers were never handed out.)
            self._reserving.discard(slot)
            if len(self._held) >= MAX_HELD:
                self._held = {k: v for k, v in self._held.items() if v.stale_after > now}
            self._held[slot] = _Held(window, first + 1, last, exhausted=last > allowed, stale_after=now + ttl)
        return first

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._held = {}
        self._reserving = set()


_counters: weakref.WeakSet[BlockCounter] = weakref.WeakSet()


def _after_fork() -> None:
    for counter in list(_counters):
        counter._forget()


os.register_at_fork(after_in_child=_after_fork)
