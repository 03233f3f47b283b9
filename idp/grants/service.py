"""Remembered consent."""

from __future__ import annotations

from authlib.oauth2.rfc6749 import list_to_scope, scope_to_list
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..audit import service as audit
from .models import Grant

SCOPE_DESCRIPTIONS = {
    "openid": _l("Sign you in with your Connect login"),
    "profile": _l("Your name"),
    "email": _l("Your e-mail address"),
    "offline_access": _l("Stay connected when you are not using it"),
    "agreement": _l("Know which agreement you work in, and your role there"),
    "address": _l("Your address"),
    "phone": _l("Your phone number"),
}


def remember(session: Session, identity_id: str, client_id: str, scope: str, origin=None) -> Grant:
    """Add ``scope`` to what the identity granted the client; commits."""
    try:
        return _remember(session, identity_id, client_id, scope, origin)
    except IntegrityError:
        # The same person consented in another tab at the same moment: merge into theirs.
        session.rollback()
        return _remember(session, identity_id, client_id, scope, origin)


def _remember(session: Session, identity_id: str, client_id: str, scope: str, origin) -> Grant:
    grant = session.execute(
        select(Grant).where(Grant.identity_id == identity_id, Grant.client_id == client_id)
    ).scalar_one_or_none()
    if grant is None:
        grant = Grant(identity_id=identity_id, client_id=client_id, scope="")
        session.add(grant)
    merged = list(dict.fromkeys((scope_to_list(grant.scope) or []) + (scope_to_list(scope) or [])))
    grant.scope = list_to_scope(merged)
    audit.record(session, "grant.given", actor=identity_id, subject=identity_id, client_id=client_id, origin=origin,
                 scope=scope)
    session.commit()
    return grant


def describe(scope: str) -> list[tuple[str, str]]:
    return [(s, str(SCOPE_DESCRIPTIONS.get(s, s))) for s in scope_to_list(scope) or []]
