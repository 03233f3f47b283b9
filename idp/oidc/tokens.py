"""Access and refresh tokens: JWT access tokens (RFC 9068), opaque rotating refresh tokens.

Every token issued is recorded (access tokens by ``jti``, refresh tokens by
keyed hash) under a TokenFamily, so revoking the family revokes all of it.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field

from authlib.oauth2.rfc6749 import scope_to_list
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import bindparam, cast, exists, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..agreements.service import Selected
from ..grants.models import AccessToken, RefreshToken, TokenFamily
from ..identities.models import Identity
from ..security import hasher, new_secret
from ..audit import service as audit
from ..audit.models import AuditEvent
from ..extensions import origin
from ..storage.db import Database, utcnow
from ..storage.direct import DirectStatement
from .. import observability
from . import dpop

ACCESS_TOKEN_ALG = "ES256"


@dataclass(frozen=True)
class TokenIdentity:
    """The columns of a person's identity that tokens carry (claims.identity_claims, the subject), read by one
    direct statement: the grants and the authorization endpoint change nothing on the person, and an ORM load
    (identity map, the session's transaction) costs several times the read itself on every refresh, code
    exchange and SSO authorization."""

    id: str
    email: str
    email_verified: bool
    name: str
    given_name: str
    family_name: str
    locale: str | None
    updated_at: dt.datetime | None
    disabled: bool
    #: For the authorization endpoint's "is this browser's sign-in still good" (sessions.valid_for).
    sessions_valid_after: dt.datetime | None


IDENTITIES = Identity.__table__
#: A person's ``TokenIdentity`` columns by id; the authorization endpoint reads more columns with them.
TOKEN_IDENTITY_QUERY = (select(*(IDENTITIES.c[name] for name in TokenIdentity.__dataclass_fields__))
                        .where(IDENTITIES.c.id == bindparam("id")))
_TOKEN_IDENTITY = DirectStatement(TOKEN_IDENTITY_QUERY)


def token_identity(database: Database, identity_id: str) -> TokenIdentity | None:
    row = database.read(_TOKEN_IDENTITY, {"id": identity_id})
    return TokenIdentity(**row) if row is not None else None


@dataclass
class Principal:
    """The person a token is issued to, with how and when they authenticated.

    Authlib hands the "user" it is given to every token and claim hook; carrying
    the authentication context here lets those hooks fill auth_time/acr/amr/sid
    without another look-up.
    """

    identity: Identity | TokenIdentity
    family_id: str
    auth_time: int | None = None
    acr: str | None = None
    amr: list[str] = field(default_factory=list)
    sid: str | None = None
    agreement: Selected | None = None
    #: The ``sub`` this client sees (pairwise or public).
    subject: str | None = None
    claims_request: dict | None = None

    def get_user_id(self) -> str:
        return self.subject or self.identity.id


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class CompactSigner:
    """ES256 or RS256 JWS compact serialisation (RFC 7515 §7.1) with one key, for the access tokens and ID tokens
    this IdP signs.

    joserfc's ``jwt.encode`` takes any key set, algorithm and header and checks them all on every call (for
    ES256 about twice the cost of the signature itself, for RS256 about 120,000 instructions a token), for a
    header that is the same for every token until the key rotates. Here the header is encoded once per key and
    the signature comes from ``cryptography`` (the same OpenSSL call joserfc makes): RSASSA-PKCS1-v1_5 with
    SHA-256 (RFC 7518 §3.3), or ECDSA P-256 written as §3.4's 64-byte r || s. The claims are encoded as joserfc
    encodes them (compact separators, UTF-8). Logout tokens and everything that verifies still go through
    joserfc.
    """

    def __init__(self, keyset, typ: str):
        self.keyset = keyset
        (key,) = keyset.keys
        supported = (isinstance(key, RSAKey) and key.alg == "RS256"
                     or isinstance(key, ECKey) and key.alg == "ES256" and key.curve_name == "P-256")
        if not supported or key.private_key is None:
            raise ValueError("CompactSigner signs with one private RS256 key or P-256 key (ES256)")
        self._private = key.private_key
        self._sign = self._es256 if key.alg == "ES256" else self._rs256
        header = {"typ": typ, "alg": key.alg, "kid": key.kid}
        self._prefix = _b64(json.dumps(header, separators=(",", ":")).encode()) + "."

    def sign(self, claims: dict) -> str:
        signing_input = self._prefix + _b64(json.dumps(claims, ensure_ascii=False, separators=(",", ":")).encode())
        return signing_input + "." + _b64(self._sign(signing_input.encode("ascii")))

    def _es256(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._private.sign(data, _ECDSA_SHA256))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def _rs256(self, data: bytes) -> bytes:
        return self._private.sign(data, _PKCS1V15, _SHA256)


_signers: dict[tuple[str, str], CompactSigner] = {}


def compact_signer(keys, alg: str, typ: str) -> CompactSigner:
    """The signer for the key ring's active ``alg`` key, made again when the ring's key set for it changes (a
    rotation): kept per process, as the key ring is."""
    keyset = keys.signing_keyset(alg)
    signer = _signers.get((alg, typ))
    if signer is None or signer.keyset is not keyset:
        signer = _signers[(alg, typ)] = CompactSigner(keyset, typ)
    return signer


#: The last access token this thread signed and its claims: the grant records the token's row right after signing,
#: and need not decode what it just encoded.
_signed = threading.local()


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_SHA256 = hashes.SHA256()
_PKCS1V15 = padding.PKCS1v15()


def new_family_id() -> str:
    return secrets.token_urlsafe(24)


class AccessTokenGenerator(JWTBearerTokenGenerator):
    """Authlib's RFC 9068 generator, signing with the key ring's active ES256 key (``CompactSigner``)."""

    def __init__(self, issuer: str, keys, access_token_ttl: int):
        super().__init__(issuer=issuer, alg=ACCESS_TOKEN_ALG, refresh_token_generator=self._refresh_token,
                         expires_generator=lambda client, grant_type: access_token_ttl)
        self.keys = keys

    @staticmethod
    def _refresh_token(client, grant_type, user, scope):
        return new_secret()

    def get_jti(self, client, grant_type, user, scope):
        """The time in milliseconds (fixed-width hex), then 128 random bits from one urandom read (Authlib's
        default draws 16 characters one by one). access_tokens is keyed by jti: a key that grows with time is
        inserted into the last pages of its index, which every connection has at hand, where a random one
        went to a page of its own, read in and written back at commit (bench/README.md). The time says no
        more than the token's ``iat``."""
        return f"{time.time_ns() // 1_000_000:012x}{secrets.token_urlsafe(16)}"

    def get_audiences(self, client, user, scope):
        # From the request's resource indicators (RFC 8707); without one the
        # token is for the IdP's own APIs (UserInfo, the agreements API).
        from .resource_indicators import current_audience

        return current_audience()

    def get_auth_time(self, user):
        return getattr(user, "auth_time", None)

    def get_acr(self, user):
        return getattr(user, "acr", None)

    def get_amr(self, user):
        return getattr(user, "amr", None) or None

    def generate(self, grant_type, client, user=None, scope=None, expires_in=None, include_refresh_token=True):
        token = super().generate(grant_type, client, user, scope, expires_in, include_refresh_token)
        if dpop.current_jkt():
            token["token_type"] = "DPoP"  # RFC 9449 §5
        return token

    def access_token_generator(self, client, grant_type, user, scope):
        """RFC 9068 §2.2's claims, as Authlib's generator writes them, signed by ``CompactSigner``."""
        now = int(time.time())
        claims = {"iss": self.issuer, "exp": now + self._get_expires_in(client, grant_type),
                  "client_id": client.get_client_id(), "iat": now, "jti": self.get_jti(client, grant_type, user, scope),
                  "scope": scope,
                  # §2.2: the person's subject, or for a grant without one (client_credentials) the client's.
                  "sub": str(user.get_user_id()) if user else client.get_client_id(),
                  "aud": self.get_audiences(client, user, scope)}
        if auth_time := self.get_auth_time(user):
            claims["auth_time"] = auth_time
        if acr := self.get_acr(user):
            claims["acr"] = acr
        if amr := self.get_amr(user):
            claims["amr"] = amr
        claims.update(self.get_extra_claims(client, grant_type, user, scope))
        token = compact_signer(self.keys, ACCESS_TOKEN_ALG, "at+jwt").sign(claims)
        _signed.last = (token, claims)
        return token

    def get_extra_claims(self, client, grant_type, user, scope):
        claims = {}
        if dpop.current_jkt():
            claims["cnf"] = {"jkt": dpop.current_jkt()}
        if getattr(user, "sid", None):
            claims["sid"] = user.sid
        if getattr(user, "agreement", None) is not None and "agreement" in (scope_to_list(scope) or []):
            claims.update(user.agreement.claims())
        return claims


def _jwt_claims(token: str) -> dict:
    """Claims of a JWT this process just signed (no verification needed)."""
    last = getattr(_signed, "last", None)
    if last is not None and last[0] is token:
        return last[1]
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


#: (table, prefix of its bind names) in the order the rows are written.
_PARTS = {"family": (TokenFamily.__table__, "f"), "access": (AccessToken.__table__, "a"),
          "refresh": (RefreshToken.__table__, "r"), "audit": (AuditEvent.__table__, "e")}


@functools.cache
def _one_statement(parts: tuple[str, ...], columns: tuple[tuple[str, ...], ...]) -> DirectStatement:
    """PostgreSQL: every row of a token response in one INSERT with data-modifying CTEs.

    One statement instead of one per row: on PostgreSQL each statement is a round trip and about 0.1 ms of
    CPU in psycopg and SQLAlchemy, the largest cost of a token response. The rows, their transaction and
    the foreign keys (checked at the end of the statement) are the same as with separate INSERTs.
    Built once per shape and cached."""
    inserts = []
    for part, names in zip(parts, columns):
        table, prefix = _PARTS[part]
        inserts.append(insert(table).values({name: bindparam(f"{prefix}_{name}", type_=table.c[name].type)
                                             for name in names}))
    *ctes, last = inserts
    return DirectStatement(last.add_cte(*(statement.cte(f"new_{part}") for statement, part in zip(ctes, parts))))


@functools.cache
def _rotating_statement(parts: tuple[str, ...], columns: tuple[tuple[str, ...], ...]) -> DirectStatement:
    """PostgreSQL: the refresh grant's rotation claim and the rows of its response in one statement.

    The claim is ``claim_rotation``'s conditional UPDATE, as a data-modifying CTE; each row is inserted only if
    the claim took (``INSERT ... SELECT ... WHERE EXISTS``), and the statement answers how many it claimed (0
    or 1). One statement is atomic by itself, so it runs in autocommit: one round trip where BEGIN, the
    INSERTs, the UPDATE and COMMIT took four (bench/README.md). Two refreshes racing with the same token: the
    second waits for the first's row lock, sees ``rotated_at`` set and claims nothing, so it inserts nothing,
    as the UPDATE in a transaction did. The values are cast to their columns' types: in a SELECT list a
    parameter has no column to take its type from."""
    refresh = RefreshToken.__table__
    claimed = (update(refresh)
               .where(refresh.c.token_hash == bindparam("claimed_hash"), refresh.c.rotated_at.is_(None))
               .values(rotated_at=bindparam("claimed_at", type_=refresh.c.rotated_at.type))
               .returning(refresh.c.token_hash)
               .cte("claimed"))
    inserts = []
    for part, names in zip(parts, columns):
        table, prefix = _PARTS[part]
        values = select(*(cast(bindparam(f"{prefix}_{name}", type_=table.c[name].type), table.c[name].type)
                          for name in names)).where(exists(claimed.select()))
        inserts.append(insert(table).from_select(list(names), values).cte(f"new_{part}"))
    return DirectStatement(select(func.count().label("claimed")).select_from(claimed).add_cte(*inserts))


#: SQLite: one INSERT per row (no data-modifying CTEs there), in the grant's transaction.
_INSERTS = {part: DirectStatement(insert(table).inline()) for part, (table, _prefix) in _PARTS.items()}


def _write(connection: Connection, rows: dict[str, dict], claim: RefreshCredential | None = None) -> bool:
    """The rows, after claiming ``claim`` (the refresh token being rotated) if given; False, with nothing
    written, when the claim fails (another request rotated that token first)."""
    if connection.dialect.name == "postgresql":
        parts = tuple(rows)
        columns = tuple(tuple(rows[part]) for part in parts)
        params = {f"{_PARTS[part][1]}_{name}": value for part in parts for name, value in rows[part].items()}
        if claim is not None:
            params.update(claimed_hash=claim.token_hash, claimed_at=utcnow())
            return _rotating_statement(parts, columns).first(connection, params)["claimed"] == 1
        _one_statement(parts, columns).execute(connection, params)
        return True
    if claim is not None and not claim_rotation(connection, claim):
        return False
    for part, values in rows.items():
        _INSERTS[part].execute(connection, values)
    return True


def persist(connection: Connection, token: dict, client, principal: Principal | None, *, new_family: bool,
            refresh_token_ttl: int, parent_id: str | None = None, grant_type: str | None = None,
            family_expires_at: dt.datetime | None = None, claim: RefreshCredential | None = None) -> bool:
    """Record the tokens of one token response and its audit event in the caller's transaction (no commit).

    ``connection`` is the grant's: ``session.connection()`` where the grant did more in its transaction (token
    exchange, the device grant), or ``persist_alone``'s, for a grant that does not. A refresh token ends when
    its family does: a new family's end is computed here, an existing one's is ``family_expires_at``.
    ``claim``: the refresh token this response rotates, claimed with the rows (``_write``); False, and
    nothing recorded, when another request claimed it first."""
    # Core INSERTs: the same rows as session.add() would write, without the unit of work's bookkeeping for
    # objects nobody reads back in this request (the token endpoint's hottest cost).
    now = utcnow()
    rows: dict[str, dict] = {}
    family_id = principal.family_id if principal else None
    if principal and new_family:
        family_expires_at = now + dt.timedelta(seconds=refresh_token_ttl)
        rows["family"] = dict(
            id=family_id, client_id=client.get_client_id(), identity_id=principal.identity.id,
            scope=token.get("scope", ""), sid=principal.sid, auth_time=principal.auth_time,
            acr=principal.acr, amr=principal.amr,
            agreement_id=principal.agreement.agreement_pk if principal.agreement else None,
            claims_request=principal.claims_request or {},
            # §5: public clients' refresh tokens are bound to the DPoP key.
            dpop_jkt=dpop.current_jkt() if getattr(client, "is_public", False) else None,
            created_at=now, expires_at=family_expires_at, parent_id=parent_id, revoked_at=None,
            revoked_reason=None,
        )
    claims = _jwt_claims(token["access_token"])
    rows["access"] = dict(
        jti=claims["jti"], family_id=family_id, client_id=client.get_client_id(),
        identity_id=principal.identity.id if principal else None, scope=token.get("scope", ""),
        expires_at=dt.datetime.fromtimestamp(claims["exp"], dt.timezone.utc),
    )
    if token.get("refresh_token"):
        rows["refresh"] = dict(token_hash=hasher().hash(token["refresh_token"]), family_id=family_id,
                               created_at=now, expires_at=family_expires_at, rotated_at=None)
    rows["audit"] = audit.row("token.issued", actor=f"client:{client.get_client_id()}",
                              subject=principal.identity.id if principal else None,
                              client_id=client.get_client_id(), reason=grant_type, origin=origin(),
                              with_refresh=bool(token.get("refresh_token")))
    if not _write(connection, rows, claim):
        return False
    observability.count_token(grant_type)
    return True


def persist_alone(database: Database, token: dict, client, principal: Principal | None = None, *,
                  new_family: bool = False, **kwargs) -> bool:
    """``persist`` for a grant that writes nothing else in its transaction: client_credentials, the code
    exchange (the code itself is spent in the store), the refresh grant (its rotation claim goes with the
    rows). On PostgreSQL that is one statement, atomic by itself: sent in autocommit it is one round trip
    instead of BEGIN, the statement and COMMIT. SQLite writes its rows in one short transaction."""
    # On the connection the request already holds (a token request ends in Database.remove): no pool check-out.
    with database.own_transaction(held=True) as connection:
        return persist(connection, token, client, principal, new_family=new_family, **kwargs)


def revoke_family(session: Session, family_id: str, reason: str) -> bool:
    """Revoke a token family and every family exchanged from it; commits. True if it was live."""
    changed = session.execute(
        update(TokenFamily).where(TokenFamily.id == family_id, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    ).rowcount
    if changed:
        family = session.get(TokenFamily, family_id)
        event = "token.reuse_detected" if reason.endswith("_reuse") else "token.revoked"
        audit.record(session, event, subject=family.identity_id, client_id=family.client_id, reason=reason,
                     origin=origin(), family=family_id)
    # Token exchange starts a child family; a reused ancestor takes its children along.
    frontier = [family_id]
    while frontier:
        children = session.execute(select(TokenFamily.id).where(TokenFamily.parent_id.in_(frontier))).scalars().all()
        if children:
            session.execute(update(TokenFamily).where(TokenFamily.id.in_(children), TokenFamily.revoked_at.is_(None))
                            .values(revoked_at=utcnow(), revoked_reason=reason))
        frontier = children
    session.commit()
    return changed == 1


@dataclass(frozen=True)
class FamilyState:
    """A token family's row as the refresh and exchange grants read it (see ``RefreshCredential``)."""

    id: str
    client_id: str
    identity_id: str | None
    scope: str
    sid: str | None
    auth_time: int | None
    acr: str | None
    amr: list
    agreement_id: str | None
    parent_id: str | None
    dpop_jkt: str | None
    claims_request: dict
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    revoked_reason: str | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class RefreshCredential:
    """A presented refresh token with its family and its family's person, read by one statement (Authlib's
    TokenMixin for the grant).

    The refresh grant needs the token, every column of its family and the person's token columns; loading
    them as ORM objects (identity map, the session's transaction) cost several times the statement, and a
    read of its own for the person cost a round trip more on PostgreSQL. Nothing is written through these
    objects: rotation is the conditional UPDATE of ``claim_rotation``."""

    token_hash: str
    family_id: str
    created_at: dt.datetime
    expires_at: dt.datetime
    rotated_at: dt.datetime | None
    family: FamilyState
    #: None when the family has no person (or the person is gone).
    identity: TokenIdentity | None = None

    def check_client(self, client):
        return self.family.client_id == client.get_client_id()

    def get_scope(self):
        return self.family.scope

    def get_expires_in(self):
        return int((self.expires_at - self.created_at).total_seconds())

    def is_expired(self):
        return self.expires_at <= utcnow()

    def is_revoked(self):
        return self.family.revoked or self.rotated_at is not None


_FAMILY_FIELDS = tuple(FamilyState.__dataclass_fields__)
_IDENTITY_FIELDS = tuple(TokenIdentity.__dataclass_fields__)
_REFRESH_CREDENTIAL = DirectStatement(
    select(RefreshToken.__table__.c.token_hash, RefreshToken.__table__.c.family_id,
           RefreshToken.__table__.c.created_at, RefreshToken.__table__.c.expires_at,
           RefreshToken.__table__.c.rotated_at,
           *(TokenFamily.__table__.c[name].label(f"family__{name}") for name in _FAMILY_FIELDS),
           *(IDENTITIES.c[name].label(f"identity__{name}") for name in _IDENTITY_FIELDS))
    .select_from(RefreshToken.__table__
                 .join(TokenFamily.__table__, TokenFamily.__table__.c.id == RefreshToken.__table__.c.family_id)
                 .outerjoin(IDENTITIES, IDENTITIES.c.id == TokenFamily.__table__.c.identity_id))
    .where(RefreshToken.__table__.c.token_hash == bindparam("hash"))
)


def find_refresh_token(database: Database, value: str) -> RefreshCredential | None:
    row = database.read(_REFRESH_CREDENTIAL, {"hash": hasher().hash(value)})
    if row is None:
        return None
    family = FamilyState(**{name: row.pop(f"family__{name}") for name in _FAMILY_FIELDS})
    identity = {name: row.pop(f"identity__{name}") for name in _IDENTITY_FIELDS}
    return RefreshCredential(family=family, identity=TokenIdentity(**identity) if identity["id"] else None, **row)


_CLAIM_ROTATION = DirectStatement(
    update(RefreshToken.__table__)
    .where(RefreshToken.__table__.c.token_hash == bindparam("claimed_hash"),
           RefreshToken.__table__.c.rotated_at.is_(None))
    .values(rotated_at=bindparam("now", type_=RefreshToken.__table__.c.rotated_at.type)))


def claim_rotation(connection: Connection, refresh_token: RefreshCredential) -> bool:
    """Mark a refresh token used, in ``connection``'s transaction (the one that holds the new tokens); False if
    another request already did (reuse)."""
    # The conditional UPDATE is the atomic step. A direct statement: the ORM's bulk-update path would also
    # search the identity map for objects to synchronise, and Core's execution machinery costs more than the
    # UPDATE.
    return _CLAIM_ROTATION.execute(connection, {"claimed_hash": refresh_token.token_hash, "now": utcnow()}) == 1


def find_access_token(session: Session, jti: str) -> AccessToken | None:
    return session.get(AccessToken, jti)


@dataclass(frozen=True)
class AccessTokenState:
    """What a resource, UserInfo or introspection needs to know of a recorded access token: read with one
    Core SELECT (token joined to its family), not loaded as ORM objects, on every API call."""

    jti: str
    client_id: str
    identity_id: str | None
    scope: str
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    family_id: str | None
    family_revoked_at: dt.datetime | None
    #: The family's OIDC ``claims`` request (for UserInfo); empty for a token without a family.
    claims_request: dict | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.family_revoked_at is None and self.expires_at > utcnow()


_ACCESS_TOKENS, _FAMILIES = AccessToken.__table__, TokenFamily.__table__
_ACCESS_TOKEN_STATE = DirectStatement(
    select(_ACCESS_TOKENS.c.jti, _ACCESS_TOKENS.c.client_id, _ACCESS_TOKENS.c.identity_id, _ACCESS_TOKENS.c.scope,
           _ACCESS_TOKENS.c.expires_at, _ACCESS_TOKENS.c.revoked_at, _ACCESS_TOKENS.c.family_id,
           _FAMILIES.c.revoked_at.label("family_revoked_at"), _FAMILIES.c.claims_request)
    .select_from(_ACCESS_TOKENS.outerjoin(_FAMILIES, _FAMILIES.c.id == _ACCESS_TOKENS.c.family_id))
    .where(_ACCESS_TOKENS.c.jti == bindparam("jti"))
)


def access_token_state(database: Database, jti: str) -> AccessTokenState | None:
    row = database.read(_ACCESS_TOKEN_STATE, {"jti": jti})
    return AccessTokenState(**row) if row is not None else None


@dataclass(frozen=True)
class RefreshTokenState:
    """A refresh token and its family as introspection and revocation see them: one Core SELECT."""

    token_hash: str
    family_id: str
    created_at: dt.datetime
    expires_at: dt.datetime
    rotated_at: dt.datetime | None
    client_id: str
    identity_id: str | None
    scope: str
    family_revoked_at: dt.datetime | None

    def is_revoked(self) -> bool:
        return self.family_revoked_at is not None or self.rotated_at is not None


_REFRESH_TOKENS = RefreshToken.__table__
_REFRESH_TOKEN_STATE = DirectStatement(
    select(_REFRESH_TOKENS.c.token_hash, _REFRESH_TOKENS.c.family_id, _REFRESH_TOKENS.c.created_at,
           _REFRESH_TOKENS.c.expires_at, _REFRESH_TOKENS.c.rotated_at, _FAMILIES.c.client_id, _FAMILIES.c.identity_id,
           _FAMILIES.c.scope, _FAMILIES.c.revoked_at.label("family_revoked_at"))
    .select_from(_REFRESH_TOKENS.join(_FAMILIES, _FAMILIES.c.id == _REFRESH_TOKENS.c.family_id))
    .where(_REFRESH_TOKENS.c.token_hash == bindparam("hash"))
)


def refresh_token_state(database: Database, value: str) -> RefreshTokenState | None:
    row = database.read(_REFRESH_TOKEN_STATE, {"hash": hasher().hash(value)})
    return RefreshTokenState(**row) if row is not None else None


def revoke_access_token(session: Session, jti: str) -> None:
    """Revoke one access token; commits."""
    session.execute(update(AccessToken).where(AccessToken.jti == jti, AccessToken.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))
    session.commit()
