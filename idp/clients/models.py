from __future__ import annotations

import datetime as dt
import ipaddress
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin, list_to_scope, scope_to_list
from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from ..security import hasher
from ..storage.db import Base, JSONDict, JSONList, UTCDateTime, utcnow


TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
DEFAULT_GRANT_TYPES = ("authorization_code", "refresh_token", TOKEN_EXCHANGE)
#: Every scope this IdP knows; a client is registered for some of them.
KNOWN_SCOPES = ("openid", "profile", "email", "address", "phone", "offline_access", "agreement")
DEFAULT_SCOPE = " ".join(KNOWN_SCOPES)


def _is_loopback_ip(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redirect_uri_matches(registered: str, requested: str, native: bool) -> bool:
    """Exact string match (RFC 9700 §4.1.3), except the port of a loopback IP
    redirect for native apps, which "MUST allow any port" (RFC 8252 §7.3)."""
    if registered == requested:
        return True
    if not native:
        return False
    a, b = urlsplit(registered), urlsplit(requested)
    if a.scheme != "http" or b.scheme != "http" or not _is_loopback_ip(a.hostname):
        return False
    return (a.hostname, a.path, a.query, a.fragment) == (b.hostname, b.path, b.query, b.fragment) and b.username is None


class Client(Base, ClientMixin):
    """A registered RP (OAuth 2.0 client)."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    #: HMAC of the secret; the secret itself is shown once and never stored.
    client_secret_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    client_name: Mapped[str] = mapped_column(String(200))
    #: None: a product-neutral client.
    product_id: Mapped[str | None] = mapped_column(ForeignKey("products.id"), nullable=True)
    application_type: Mapped[str] = mapped_column(String(16), default="web")
    redirect_uris: Mapped[list] = mapped_column(JSONList, default=list)
    post_logout_redirect_uris: Mapped[list] = mapped_column(JSONList, default=list)
    grant_types: Mapped[list] = mapped_column(JSONList, default=lambda: list(DEFAULT_GRANT_TYPES))
    response_types: Mapped[list] = mapped_column(JSONList, default=lambda: ["code"])
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(40), default="client_secret_basic")
    #: Space-separated scopes this client may ask for.
    scope: Mapped[str] = mapped_column(String(1000), default=DEFAULT_SCOPE)
    id_token_signed_response_alg: Mapped[str] = mapped_column(String(10), default="RS256")
    #: First-party clients skip the consent page; only an operator sets this.
    first_party: Mapped[bool] = mapped_column(Boolean, default=False)
    require_second_factor: Mapped[bool] = mapped_column(Boolean, default=False)
    #: A mobile time-registration app: the only kind of client a time registrant
    #: may use when their agreement says so.
    mobile_app: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: HMAC of the RFC 7592 registration access token, for dynamically registered clients.
    registration_access_token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: After a secret rotation the old secret keeps working until this moment.
    previous_secret_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    previous_secret_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Registration metadata without a column of its own (RFC 7591 / OIDC
    #: Registration names: jwks, jwks_uri, backchannel_logout_uri, ...).
    extra_metadata: Mapped[dict] = mapped_column(JSONDict, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    # -- Authlib ClientMixin ------------------------------------------------
    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        # OIDC Core 3.1.2.1 makes redirect_uri REQUIRED; with exactly one
        # registered URI plain OAuth requests may omit it (RFC 6749 §3.1.2.3).
        if len(self.redirect_uris) == 1:
            return self.redirect_uris[0]
        return None

    def get_allowed_scope(self, scope):
        """The requested scopes this client may have; None (→ invalid_scope) when it
        asks for a scope we offer but it is not registered for. Scopes nobody
        offers are ignored, as RFC 6749 §3.3 allows."""
        if not scope:
            return ""
        allowed = set(scope_to_list(self.scope) or [])
        requested = scope_to_list(scope) or []
        if any(s in KNOWN_SCOPES and s not in allowed for s in requested):
            return None
        return list_to_scope([s for s in requested if s in allowed])

    def check_redirect_uri(self, redirect_uri):
        native = self.application_type == "native"
        return any(redirect_uri_matches(r, redirect_uri, native) for r in self.redirect_uris)

    def check_client_secret(self, client_secret):
        if hasher().verify(client_secret, self.client_secret_hash):
            return True
        # During a rotation's overlap the previous secret still works.
        return (self.previous_secret_expires_at is not None and self.previous_secret_expires_at > utcnow()
                and hasher().verify(client_secret, self.previous_secret_hash))

    def check_endpoint_auth_method(self, method, endpoint):
        # Revocation and introspection use the token endpoint's method
        # (RFC 8414 §2: their auth methods default to the token endpoint's).
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type):
        return response_type in self.response_types

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    def meta(self, name: str, default=None):
        return (self.extra_metadata or {}).get(name, default)

    @property
    def client_metadata(self) -> dict:
        return {**(self.extra_metadata or {}), "client_name": self.client_name,
                "application_type": self.application_type,
                "post_logout_redirect_uris": list(self.post_logout_redirect_uris or [])}


class ClientOwner(Base):
    """A person who may manage a client in the developer portal."""

    __tablename__ = "client_owners"

    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"), primary_key=True)
    identity_id: Mapped[str] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True,
                                             index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class InitialAccessToken(Base):
    """Lets an integrator register clients (RFC 7591 §3); stored as a keyed hash."""

    __tablename__ = "initial_access_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: Clients registered with it belong to this product (None: any or none).
    product_id: Mapped[str | None] = mapped_column(ForeignKey("products.id"), nullable=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
