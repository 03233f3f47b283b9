"""Password hashing: argon2id through passlib, with parameters from Settings.

``verify_and_update`` tells us when a stored hash was made with older
parameters, so login can rehash it transparently (DESIGN: rehash on login).
"""

from __future__ import annotations

import os
import weakref
from concurrent.futures import ThreadPoolExecutor

from passlib.context import CryptContext


def make_context(memory_kib: int, time_cost: int, parallelism: int) -> CryptContext:
    return CryptContext(
        schemes=["argon2"],
        argon2__type="ID",
        argon2__memory_cost=memory_kib,
        argon2__rounds=time_cost,
        argon2__parallelism=parallelism,
    )


class PasswordHasher:
    """argon2id hashing and checking, on a small pool of hashing threads per process.

    A hash is CPU-bound and releases the GIL, so with one worker per core two at once finish no sooner than
    one after the other. And each holds 19 MiB that glibc keeps in the arena of the thread that freed it:
    hashed on any of a worker's request threads, that is 19 MiB per thread for good (a worker grew from
    112 MB to 183 MB after a burst of logins). On the pool's own threads it is ``concurrency`` x 19 MiB, and
    reused, not faulted in again for every login (bench/README.md). A request waiting for its hash holds
    no GIL."""

    def __init__(self, memory_kib: int, time_cost: int, parallelism: int, concurrency: int = 1):
        self._concurrency = concurrency
        self._pool = self._new_pool()
        self._context = make_context(memory_kib, time_cost, parallelism)
        # Verified against when the e-mail is unknown, so an unknown address
        # costs the same time as a known one.
        self._dummy = self._context.hash("not-a-real-password")
        # A forked worker (gunicorn --preload) does not inherit the parent's threads: give it a pool of its own.
        reference = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (hasher := reference()) and hasher._renew_pool())

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="argon2")

    def _renew_pool(self) -> None:
        self._pool = self._new_pool()

    def hash(self, password: str) -> str:
        return self._pool.submit(self._context.hash, password).result()

    def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """(valid, new_hash_or_None); always spends one full hash computation."""
        return self._pool.submit(self._verify, password, stored).result()

    def _verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        if not stored:
            self._context.verify(password, self._dummy)
            return False, None
        try:
            return self._context.verify_and_update(password, stored)
        except ValueError:
            self._context.verify(password, self._dummy)
            return False, None
