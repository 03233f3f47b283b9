"""Registering and listing clients (RPs)."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import DomainError
from ..security import hasher, new_secret
from .models import DEFAULT_SCOPE, Client


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
    if not redirect_uris:
        raise InvalidClientMetadataError("at least one redirect URI is required")
    if any("#" in uri for uri in redirect_uris):
        raise InvalidClientMetadataError("redirect URIs must not contain a fragment")
    client_id = client_id or secrets.token_urlsafe(16)
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


def list_clients(session: Session) -> list[Client]:
    return list(session.execute(select(Client).order_by(Client.client_id)).scalars())
