"""Identities: case-insensitive e-mail, argon2id hashes, rehash on login."""

from __future__ import annotations

import pytest

from idp.errors import EmailTakenError, InvalidCredentialsError, InvalidEmailError
from idp.identities import service
from idp.identities.passwords import PasswordHasher
from tests.helpers.factories import PASSWORD, unique


def test_email_is_unique_case_insensitively(db, factory):
    identity = factory.identity(email=f"{unique('Mixed')}@Example.COM")
    with pytest.raises(EmailTakenError):
        factory.identity(email=identity.email.lower())
    assert service.find_by_email(db, identity.email.upper()).id == identity.id


def test_password_is_stored_as_argon2id(factory):
    identity = factory.identity()
    assert identity.password_hash.startswith("$argon2id$")
    assert PASSWORD not in identity.password_hash


def test_authenticate_accepts_any_case_of_email(db, factory, runtime):
    identity = factory.identity()
    assert service.authenticate(db, runtime.passwords, identity.email.upper(), PASSWORD).id == identity.id


def test_unknown_email_and_wrong_password_raise_the_same(db, factory, runtime):
    identity = factory.identity()
    with pytest.raises(InvalidCredentialsError) as wrong:
        service.authenticate(db, runtime.passwords, identity.email, PASSWORD + "x")
    with pytest.raises(InvalidCredentialsError) as unknown:
        service.authenticate(db, runtime.passwords, f"{unique('nobody')}@example.com", PASSWORD)
    assert str(wrong.value) == str(unknown.value)


def test_disabled_identity_cannot_log_in(db, factory, runtime):
    identity = factory.identity()
    identity.disabled = True
    db.commit()
    with pytest.raises(InvalidCredentialsError):
        service.authenticate(db, runtime.passwords, identity.email, PASSWORD)


def test_outdated_hash_is_rehashed_on_login(db, factory, runtime):
    old = PasswordHasher(memory_kib=512, time_cost=1, parallelism=1)
    identity = service.create_identity(db, old, email=f"{unique('old')}@example.com", password=PASSWORD)
    assert "m=512" in identity.password_hash
    service.authenticate(db, runtime.passwords, identity.email, PASSWORD)
    db.refresh(identity)
    assert "m=1024" in identity.password_hash  # the app's current parameters
    service.authenticate(db, runtime.passwords, identity.email, PASSWORD)  # and it still verifies


def test_unicode_passwords_are_normalised(db, runtime):
    # "é" typed as one code point or as e + combining accent is the same password.
    identity = service.create_identity(db, runtime.passwords, email=f"{unique('u')}@example.com",
                                       password="caf\u00e9-long-enough-password")
    assert service.authenticate(db, runtime.passwords, identity.email, "cafe\u0301-long-enough-password")


def test_malformed_email_is_refused(db, runtime):
    with pytest.raises(InvalidEmailError):
        service.create_identity(db, runtime.passwords, email="not-an-email", password=PASSWORD)
