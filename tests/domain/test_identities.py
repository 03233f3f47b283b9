"""Identities: case-insensitive e-mail, argon2id hashes, rehash on login, through both ways of checking a
password: ``authenticate`` (the account pages, ORM) and ``authenticate_sign_in`` (the sign-in page, one direct
statement)."""

from __future__ import annotations

import pytest

from idp.errors import EmailTakenError, InvalidCredentialsError, InvalidEmailError
from idp.identities import service
from idp.identities.passwords import PasswordHasher
from tests.helpers.factories import PASSWORD, unique
from tests.protocol.test_two_step import enrol_directly


@pytest.fixture(params=["authenticate", "authenticate_sign_in"])
def authenticate(request, app, db, runtime):
    """(e-mail, password) -> the identity's id, by either function; as a request runs them, in an app context."""
    def check(email: str, password: str) -> str:
        with app.app_context():
            if request.param == "authenticate":
                return service.authenticate(db, runtime.passwords, email, password).id
            return service.authenticate_sign_in(runtime.db, runtime.passwords, email, password).id

    return check


def test_email_is_unique_case_insensitively(db, factory):
    identity = factory.identity(email=f"{unique('Mixed')}@Example.COM")
    with pytest.raises(EmailTakenError):
        factory.identity(email=identity.email.lower())
    assert service.find_by_email(db, identity.email.upper()).id == identity.id


def test_password_is_stored_as_argon2id(factory):
    identity = factory.identity()
    assert identity.password_hash.startswith("$argon2id$")
    assert PASSWORD not in identity.password_hash


def test_authenticate_accepts_any_case_of_email(factory, authenticate):
    identity = factory.identity()
    assert authenticate(identity.email.upper(), PASSWORD) == identity.id


def test_unknown_email_and_wrong_password_raise_the_same(factory, authenticate):
    identity = factory.identity()
    with pytest.raises(InvalidCredentialsError) as wrong:
        authenticate(identity.email, PASSWORD + "x")
    with pytest.raises(InvalidCredentialsError) as unknown:
        authenticate(f"{unique('nobody')}@example.com", PASSWORD)
    with pytest.raises(InvalidCredentialsError) as malformed:
        authenticate("not an address", PASSWORD)
    assert str(wrong.value) == str(unknown.value) == str(malformed.value)
    # For the audit trail only: whose account a wrong password was tried on.
    assert (wrong.value.details["identity_id"], unknown.value.details["identity_id"]) == (identity.id, None)


def test_disabled_identity_cannot_log_in(db, factory, authenticate):
    identity = factory.identity()
    identity.disabled = True
    db.commit()
    with pytest.raises(InvalidCredentialsError):
        authenticate(identity.email, PASSWORD)


def test_outdated_hash_is_rehashed_on_login(db, runtime, authenticate):
    old = PasswordHasher(memory_kib=512, time_cost=1, parallelism=1)
    identity = service.create_identity(db, old, email=f"{unique('old')}@example.com", password=PASSWORD)
    assert "m=512" in identity.password_hash
    authenticate(identity.email, PASSWORD)
    db.refresh(identity)
    assert "m=1024" in identity.password_hash  # the app's current parameters
    assert authenticate(identity.email, PASSWORD) == identity.id  # and it still verifies


def test_unicode_passwords_are_normalised(db, runtime, authenticate):
    # "é" typed as one code point or as e + combining accent is the same password.
    identity = service.create_identity(db, runtime.passwords, email=f"{unique('u')}@example.com",
                                       password="caf\u00e9-long-enough-password")
    assert authenticate(identity.email, "cafe\u0301-long-enough-password") == identity.id


def test_the_sign_in_page_learns_of_an_authenticator_and_an_unverified_address(app, db, factory, runtime):
    def sign_in(identity):
        with app.app_context():
            return service.authenticate_sign_in(runtime.db, runtime.passwords, identity.email, PASSWORD)

    plain, enrolled = factory.identity(), factory.identity()
    enrol_directly(runtime, db, enrolled)
    assert (sign_in(plain).has_second_factor, sign_in(enrolled).has_second_factor) == (False, True)
    assert sign_in(plain).email_verified is True
    plain.email_verified = False
    db.commit()
    assert sign_in(plain).email_verified is False


def test_malformed_email_is_refused(db, runtime):
    with pytest.raises(InvalidEmailError):
        service.create_identity(db, runtime.passwords, email="not-an-email", password=PASSWORD)
