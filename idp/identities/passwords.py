"""Password hashing: argon2id through passlib, with parameters from Settings.

``verify_and_update`` tells us when a stored hash was made with older
parameters, so login can rehash it transparently (DESIGN: rehash on login).
"""

from __future__ import annotations

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
    def __init__(self, memory_kib: int, time_cost: int, parallelism: int):
        self._context = make_context(memory_kib, time_cost, parallelism)
        # Verified against when the e-mail is unknown, so an unknown address
        # costs the same time as a known one.
        self._dummy = self._context.hash("not-a-real-password")

    def hash(self, password: str) -> str:
        return self._context.hash(password)

    def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """(valid, new_hash_or_None); always spends one full hash computation."""
        if not stored:
            self._context.verify(password, self._dummy)
            return False, None
        try:
            return self._context.verify_and_update(password, stored)
        except ValueError:
            self._context.verify(password, self._dummy)
            return False, None
