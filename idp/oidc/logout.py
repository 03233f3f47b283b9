"""Logout: RP-Initiated Logout 1.0 (Authlib's EndSessionEndpoint), Back-Channel
Logout 1.0 and Front-Channel Logout 1.0 (which Authlib lacks).

When a browser session ends, every RP that received tokens in it (token
families carry the session's ``sid``) is told:
- back-channel: a signed logout token POSTed to its ``backchannel_logout_uri``
  (§2.4: iss, aud, iat, exp, jti, sub, sid, events; never a nonce), in the
  background, retried with backoff; failures stay queued for ``idp logout retry``;
- front-channel: its ``frontchannel_logout_uri`` (with iss and sid when it asks
  for them) loaded in an iframe of the signed-out page.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests
from authlib.common.urls import add_params_to_uri
from authlib.oidc.rpinitiated import EndSessionEndpoint
from authlib.oauth2.rfc6749 import InvalidRequestError
from joserfc import jws, jwt
from joserfc.errors import JoseError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..clients.models import Client
from ..extensions import runtime
from ..grants.models import LogoutDelivery, TokenFamily
from ..identities.models import Identity
from ..storage.db import utcnow
from . import subjects

log = logging.getLogger(__name__)
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TTL = 120
RETRY_DELAYS = (0, 1, 3)
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="backchannel")


class EndSession(EndSessionEndpoint):
    """Confirmation, not a redirect, for a request without a valid id_token_hint;
    after the person confirms, a registered post_logout_redirect_uri is honoured."""

    def get_server_jwks(self):
        return runtime().keys.public_keys()

    def get_algorithms(self):
        return ["RS256", "ES256"]

    def _validate_id_token_hint(self, id_token_hint):
        # §2: the hint is an *ID Token* we issued. Our access tokens (at+jwt)
        # and logout tokens are signed by the same keys, so look at the type.
        try:
            typ = jws.extract_compact(id_token_hint.encode()).headers().get("typ")
        except (JoseError, ValueError) as error:
            raise InvalidRequestError("'id_token_hint' is not a JWT.") from error
        if typ in ("at+jwt", "logout+jwt"):
            raise InvalidRequestError("'id_token_hint' must be an ID Token.")
        return super()._validate_id_token_hint(id_token_hint)

    def resolve_client_from_id_token_claims(self, id_token_claims):
        # Our ID tokens carry aud as a one-element list; one audience is not ambiguous.
        aud = id_token_claims.get("aud")
        if isinstance(aud, list) and len(aud) == 1:
            aud = aud[0]
        return self.server.query_client(aud) if isinstance(aud, str) else None

    def is_post_logout_redirect_uri_legitimate(self, request, post_logout_redirect_uri, client, logout_hint):
        # The confirmation form (CSRF-protected) is the person saying yes.
        return request.method == "POST"

    def end_session(self, end_session_request):
        """The view signs the browser out; see ``notify_clients``."""


def clients_of_session(session: Session, sid: str) -> list[tuple[Client, str]]:
    """(client, identity_id) for every RP that got tokens in the browser session ``sid``."""
    rows = session.execute(
        select(Client, TokenFamily.identity_id).join(TokenFamily, TokenFamily.client_id == Client.client_id)
        .where(TokenFamily.sid == sid).distinct()
    ).all()
    return [(client, identity_id) for client, identity_id in rows]


def logout_token(client: Client, identity: Identity, sid: str) -> str:
    settings = runtime().settings
    now = int(time.time())
    claims = {"iss": settings.issuer, "aud": client.client_id, "iat": now, "exp": now + LOGOUT_TOKEN_TTL,
              "jti": secrets.token_urlsafe(16), "sub": subjects.subject_for(identity, client),
              "events": {BACKCHANNEL_EVENT: {}}}
    if sid:
        claims["sid"] = sid
    alg = client.id_token_signed_response_alg or "RS256"
    return jwt.encode({"alg": alg, "typ": "logout+jwt"}, claims, runtime().keys.signing_keyset(alg))


def front_channel_urls(pairs: list[tuple[Client, str]], sid: str) -> list[str]:
    urls = []
    for client, _identity_id in pairs:
        uri = client.meta("frontchannel_logout_uri")
        if not uri:
            continue
        if client.meta("frontchannel_logout_session_required"):
            uri = add_params_to_uri(uri, [("iss", runtime().settings.issuer), ("sid", sid)])
        urls.append(uri)
    return urls


def notify_clients(session: Session, sid: str | None) -> list[str]:
    """Queue back-channel logout for every RP of ``sid``; return front-channel URLs."""
    if not sid:
        return []
    pairs = clients_of_session(session, sid)
    deliveries = []
    for client, identity_id in pairs:
        uri = client.meta("backchannel_logout_uri")
        identity = session.get(Identity, identity_id) if identity_id else None
        if uri and identity is not None:
            delivery = LogoutDelivery(id=str(uuid.uuid4()), client_id=client.client_id, uri=uri,
                                      logout_token=logout_token(client, identity, sid))
            session.add(delivery)
            deliveries.append(delivery.id)
    session.commit()
    factory = runtime().db.session_factory
    for delivery_id in deliveries:
        _pool.submit(_deliver_with_retries, factory, delivery_id)
    return front_channel_urls(pairs, sid)


def _deliver_with_retries(factory, delivery_id: str) -> None:
    for delay in RETRY_DELAYS:
        time.sleep(delay)
        with factory() as session:
            if deliver(session, delivery_id):
                return


def deliver(session: Session, delivery_id: str) -> bool:
    """POST one logout token (§2.5); True once the RP answered 200 or 204."""
    delivery = session.get(LogoutDelivery, delivery_id)
    if delivery is None or delivery.delivered_at is not None:
        return True
    delivery.attempts += 1
    try:
        response = requests.post(delivery.uri, data={"logout_token": delivery.logout_token}, timeout=5,
                                 allow_redirects=False, headers={"Cache-Control": "no-store"})
        ok = response.status_code in (200, 204)
        delivery.last_error = None if ok else f"HTTP {response.status_code}"
    except requests.RequestException as error:
        ok, delivery.last_error = False, type(error).__name__
    if ok:
        delivery.delivered_at = utcnow()
    session.commit()
    if not ok:
        log.warning("back-channel logout to %s failed (attempt %s): %s", delivery.client_id, delivery.attempts,
                    delivery.last_error)
    return ok


def retry_pending(session: Session, max_attempts: int = 10) -> tuple[int, int]:
    """Deliver queued logout tokens again (CLI/cron); (delivered, still pending)."""
    pending = session.execute(select(LogoutDelivery.id).where(LogoutDelivery.delivered_at.is_(None),
                                                              LogoutDelivery.attempts < max_attempts)).scalars().all()
    delivered = sum(1 for delivery_id in pending if deliver(session, delivery_id))
    return delivered, len(pending) - delivered

