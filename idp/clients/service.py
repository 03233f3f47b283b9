"""Registering and listing clients (RPs)."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..agreements.models import Product
from ..audit import service as audit
from ..errors import DomainError
from ..grants.models import AccessToken, TokenFamily
from ..security import hasher, new_secret
from ..storage.db import utcnow
from .models import DEFAULT_SCOPE, Client, ClientOwner, InitialAccessToken


class InvalidClientMetadataError(DomainError):
    code = "invalid_client_metadata"


AUTH_METHODS = ("client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt", "none")


def create_client(session: Session, *, client_name: str, redirect_uris: list[str], product_id: str | None = None,
                  public: bool = False, native: bool = False, first_party: bool = False,
                  client_id: str | None = None, client_secret: str | None = None,
                  scope: str = DEFAULT_SCOPE, mobile_app: bool = False,
                  post_logout_redirect_uris: list[str] | None = None,
                  token_endpoint_auth_method: str | None = None, grant_types: list[str] | None = None,
                  metadata: dict | None = None, cipher=None) -> tuple[Client, str | None]:
    """Create and commit a client; returns it with its secret (shown once, stored hashed).

    ``metadata`` holds registration fields without a column (jwks, jwks_uri,
    backchannel_logout_uri, subject_type, ...). A client_secret_jwt client's
    secret is also kept encrypted with ``cipher``: it is the HMAC key."""
    if not redirect_uris and "client_credentials" not in (grant_types or []):
        raise InvalidClientMetadataError("at least one redirect URI is required")
    if any("#" in uri for uri in redirect_uris):
        raise InvalidClientMetadataError("redirect URIs must not contain a fragment")
    # Hex, 128 bits: a base64url id may start with "-", and an operator's `idp clients show -E3x...`
    # then reads as an option.
    client_id = client_id or secrets.token_hex(16)
    if session.get(Client, client_id) is not None:
        raise InvalidClientMetadataError(f"client {client_id} exists")
    method = token_endpoint_auth_method or ("none" if public else "client_secret_basic")
    if method not in AUTH_METHODS:
        raise InvalidClientMetadataError(f"unsupported token_endpoint_auth_method {method}")
    metadata = dict(metadata or {})
    if method == "private_key_jwt" and not (metadata.get("jwks") or metadata.get("jwks_uri")):
        raise InvalidClientMetadataError("private_key_jwt needs jwks or jwks_uri")
    if metadata.get("jwks") and metadata.get("jwks_uri"):
        raise InvalidClientMetadataError("jwks and jwks_uri are mutually exclusive")
    secret = None if method in ("none", "private_key_jwt") else (client_secret or new_secret())
    if method == "client_secret_jwt":
        if cipher is None:
            raise InvalidClientMetadataError("client_secret_jwt needs the data cipher")
        metadata["client_secret_encrypted"] = cipher.encrypt(secret, client_id)
    client = Client(
        client_id=client_id, client_name=client_name, product_id=product_id,
        application_type="native" if native else "web", redirect_uris=list(redirect_uris),
        post_logout_redirect_uris=list(post_logout_redirect_uris or []),
        token_endpoint_auth_method=method,
        client_secret_hash=hasher().hash(secret) if secret else None,
        scope=scope, first_party=first_party, mobile_app=mobile_app, extra_metadata=metadata,
        **({"grant_types": list(grant_types)} if grant_types else {}),
    )
    session.add(client)
    session.commit()
    return client, secret


def find(session: Session, client_id) -> Client | None:
    """A client by id; None for anything that cannot be one (too long, control characters)."""
    if not isinstance(client_id, str) or not client_id or len(client_id) > 100:
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in client_id):
        return None
    return session.get(Client, client_id)


def list_clients(session: Session) -> list[Client]:
    return list(session.execute(select(Client).order_by(Client.client_id)).scalars())


# -- registration (RFC 7591 / 7592), portal and CLI ----------------------------

def register(session: Session, metadata: dict, *, product_id: str | None, cipher, owner_id: str | None = None,
             with_registration_token: bool = True, first_party: bool = False,
             client_id: str | None = None, actor: str | None = None,
             origin=None) -> tuple[Client, str | None, str | None]:
    """Create a client from validated metadata (clients.metadata.validate); commits.

    Returns (client, secret or None, registration access token or None); both
    secrets are shown once and stored only as keyed hashes."""
    if metadata.get("product") and product_id and metadata["product"] != product_id:
        raise InvalidClientMetadataError("This initial access token is for another product.")
    product = product_id or metadata.get("product")
    if product and session.get(Product, product) is None:
        raise InvalidClientMetadataError(f"Unknown product '{product}'.")
    client, secret = create_client(
        session, client_name=metadata["client_name"], redirect_uris=metadata["redirect_uris"] or ["https://invalid"],
        product_id=product, native=metadata["application_type"] == "native", first_party=first_party,
        scope=metadata["scope"], post_logout_redirect_uris=metadata["post_logout_redirect_uris"],
        token_endpoint_auth_method=metadata["token_endpoint_auth_method"], grant_types=metadata["grant_types"],
        metadata=metadata["extra"], cipher=cipher, client_id=client_id)
    if not metadata["redirect_uris"]:
        client.redirect_uris = []  # machine-to-machine clients have none
    client.response_types = metadata["response_types"]
    client.id_token_signed_response_alg = metadata["id_token_signed_response_alg"]
    token = new_secret() if with_registration_token else None
    client.registration_access_token_hash = hasher().hash(token) if token else None
    if owner_id:
        session.add(ClientOwner(client_id=client.client_id, identity_id=owner_id))
    audit.record(session, "client.registered", actor=actor or owner_id, client_id=client.client_id, origin=origin,
                 product=product)
    session.commit()
    return client, secret, token


def update_registration(session: Session, client: Client, metadata: dict, cipher) -> Client:
    """Replace a client's metadata (RFC 7592 §2.2 is a full replacement); commits."""
    if metadata["token_endpoint_auth_method"] != client.token_endpoint_auth_method:
        raise InvalidClientMetadataError("Changing token_endpoint_auth_method needs a new registration.")
    client.client_name = metadata["client_name"]
    client.application_type = metadata["application_type"]
    client.redirect_uris = metadata["redirect_uris"]
    client.post_logout_redirect_uris = metadata["post_logout_redirect_uris"]
    client.grant_types = metadata["grant_types"]
    client.response_types = metadata["response_types"]
    client.scope = metadata["scope"]
    client.id_token_signed_response_alg = metadata["id_token_signed_response_alg"]
    kept = {k: v for k, v in (client.extra_metadata or {}).items() if k == "client_secret_encrypted"}
    client.extra_metadata = {**kept, **metadata["extra"]}
    audit.record(session, "client.updated", client_id=client.client_id)
    session.commit()
    return client


def check_registration_token(client: Client | None, token: str) -> bool:
    return client is not None and not client.disabled and hasher().verify(token, client.registration_access_token_hash)


def revoke_client_tokens(session: Session, client_id: str, reason: str) -> None:
    session.execute(update(TokenFamily).where(TokenFamily.client_id == client_id, TokenFamily.revoked_at.is_(None))
                    .values(revoked_at=utcnow(), revoked_reason=reason))
    session.execute(update(AccessToken).where(AccessToken.client_id == client_id, AccessToken.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))


def disable(session: Session, client: Client, actor: str | None = None, origin=None) -> None:
    """Disable a client and revoke every token it holds; commits."""
    client.disabled = True
    revoke_client_tokens(session, client.client_id, "client_disabled")
    audit.record(session, "client.disabled", actor=actor, client_id=client.client_id, origin=origin)
    session.commit()


def delete(session: Session, client: Client, actor: str | None = None, origin=None) -> None:
    revoke_client_tokens(session, client.client_id, "client_deleted")
    audit.record(session, "client.deleted", actor=actor, client_id=client.client_id, origin=origin)
    session.delete(client)
    session.commit()


def rotate_secret(session: Session, client: Client, overlap_seconds: int, cipher=None) -> str:
    """A new secret; the old one keeps working for ``overlap_seconds``; commits."""
    if client.token_endpoint_auth_method in ("none", "private_key_jwt"):
        raise InvalidClientMetadataError("This client has no secret.")
    secret = new_secret()
    client.previous_secret_hash = client.client_secret_hash if overlap_seconds > 0 else None
    client.previous_secret_expires_at = utcnow() + dt.timedelta(seconds=overlap_seconds) if overlap_seconds > 0 else None
    client.client_secret_hash = hasher().hash(secret)
    if client.token_endpoint_auth_method == "client_secret_jwt":
        client.extra_metadata = {**(client.extra_metadata or {}),
                                 "client_secret_encrypted": cipher.encrypt(secret, client.client_id)}
    audit.record(session, "client.secret_rotated", client_id=client.client_id, overlap_seconds=overlap_seconds)
    session.commit()
    return secret


def owned_by(session: Session, identity_id: str) -> list[Client]:
    return list(session.execute(select(Client).join(ClientOwner, ClientOwner.client_id == Client.client_id)
                                .where(ClientOwner.identity_id == identity_id).order_by(Client.created_at)).scalars())


def is_owner(session: Session, client_id: str, identity_id: str) -> bool:
    return session.get(ClientOwner, (client_id, identity_id)) is not None


def add_owner(session: Session, client_id: str, identity_id: str) -> None:
    if not is_owner(session, client_id, identity_id):
        session.add(ClientOwner(client_id=client_id, identity_id=identity_id))
        session.commit()


# -- initial access tokens --------------------------------------------------

def issue_initial_token(session: Session, *, product_id: str | None, expires_in: int,
                        description: str = "") -> tuple[InitialAccessToken, str]:
    if product_id and session.get(Product, product_id) is None:
        raise InvalidClientMetadataError(f"Unknown product '{product_id}'.")
    token = new_secret()
    row = InitialAccessToken(id=str(uuid.uuid4()), token_hash=hasher().hash(token), product_id=product_id,
                             description=description, expires_at=utcnow() + dt.timedelta(seconds=expires_in))
    session.add(row)
    session.commit()
    return row, token


def find_initial_token(session: Session, token: str) -> InitialAccessToken | None:
    row = session.execute(select(InitialAccessToken).where(InitialAccessToken.token_hash == hasher().hash(token))
                          ).scalar_one_or_none()
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        return None
    return row


def revoke_initial_token(session: Session, token_id: str) -> bool:
    changed = session.execute(update(InitialAccessToken).where(InitialAccessToken.id == token_id,
                                                               InitialAccessToken.revoked_at.is_(None))
                              .values(revoked_at=utcnow())).rowcount
    session.commit()
    return changed == 1


def list_initial_tokens(session: Session) -> list[InitialAccessToken]:
    return list(session.execute(select(InitialAccessToken).order_by(InitialAccessToken.created_at)).scalars())
