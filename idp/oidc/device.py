"""OAuth 2.0 Device Authorization Grant (RFC 8628) on Authlib's endpoint and grant.

The device gets a device_code and a short user_code; the person signs in on
another screen at /device, enters the user code (brute force throttled per
browser), sees what the device asks for and approves or denies. The device
polls the token endpoint: ``authorization_pending`` until then, ``slow_down``
when it polls faster than INTERVAL (§3.5), ``access_denied``,
``expired_token``, and finally tokens, exactly once per device code.
"""

from __future__ import annotations

import hashlib
import time

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749 import (InvalidGrantError, InvalidRequestError, InvalidScopeError, UnauthorizedClientError,
                                    scope_to_list)
from authlib.oauth2.rfc8628 import DeviceAuthorizationEndpoint, DeviceCodeGrant
from authlib.oauth2.rfc8628.models import DeviceCredentialDict

from ..extensions import db_session, runtime
from . import tokens
from .grant_types import TOKEN_ENDPOINT_AUTH_METHODS, _principal

EXPIRES_IN = 600
INTERVAL = 5
GRACE = 300
DEVICE, USER_CODE, POLL = "device", "device_user_code", "device_poll"
_ALPHABET = set("BCDFGHJKLMNPQRSTVWXZ")


def _digest(device_code: str) -> str:
    return hashlib.sha256(device_code.encode()).hexdigest()


def normalize_user_code(user_code: str) -> str:
    return "".join(c for c in user_code.upper() if c in _ALPHABET)


class DeviceAuthorization(DeviceAuthorizationEndpoint):
    ENDPOINT_NAME = "device_authorization"
    CLIENT_AUTH_METHODS = TOKEN_ENDPOINT_AUTH_METHODS
    EXPIRES_IN = EXPIRES_IN
    INTERVAL = INTERVAL

    def create_endpoint_response(self, request):
        """§3.1-3.2, as Authlib's, with the client's scope rules applied."""
        client = self.authenticate_client(request)
        if not client.check_grant_type(DeviceCodeGrant.GRANT_TYPE):
            raise UnauthorizedClientError("The client may not use the device authorization grant.")
        scope = client.get_allowed_scope(request.payload.scope)
        if scope is None or "agreement" in (scope_to_list(scope) or []):
            # Choosing an agreement needs the browser flow's chooser.
            raise InvalidScopeError()
        user_code = self.generate_user_code()
        verification_uri = self.get_verification_uri()
        data = {
            "device_code": self.generate_device_code(),
            "user_code": user_code,
            "verification_uri": verification_uri,
            "verification_uri_complete": add_params_to_uri(verification_uri, [("user_code", user_code)]),
            "expires_in": self.EXPIRES_IN,
            "interval": self.INTERVAL,
        }
        self.save_device_credential(client.get_client_id(), scope, data)
        return 200, data, [("Content-Type", "application/json"), ("Cache-Control", "no-store")]

    def get_verification_uri(self):
        return runtime().settings.issuer + "/device"

    def save_device_credential(self, client_id, scope, data):
        store = runtime().store
        record = {"client_id": client_id, "scope": scope or "", "user_code": data["user_code"],
                  "expires_at": time.time() + EXPIRES_IN, "status": "pending"}
        # Kept past expiry so a late poll hears expired_token, not "unknown code".
        store.put(DEVICE, _digest(data["device_code"]), record, EXPIRES_IN + GRACE)
        store.put(USER_CODE, normalize_user_code(data["user_code"]), {"device": _digest(data["device_code"])},
                  EXPIRES_IN)


def find_by_user_code(user_code: str) -> tuple[str, dict] | tuple[None, None]:
    """(device key, record) for a pending user code, or (None, None)."""
    pointer = runtime().store.get(USER_CODE, normalize_user_code(user_code))
    if not pointer:
        return None, None
    record = runtime().store.get(DEVICE, pointer["device"])
    if not record or record["status"] != "pending" or record["expires_at"] < time.time():
        return None, None
    return pointer["device"], record


def decide(device_key: str, record: dict, approved: bool, login=None) -> None:
    """Record the person's answer for the polling device."""
    update = {"status": "approved" if approved else "denied"}
    if approved:
        update.update(identity_id=login.identity_id, auth_time=login.auth_time, acr=login.acr,
                      amr=list(login.amr), sid=login.sid)
    remaining = max(1, int(record["expires_at"] - time.time()))
    runtime().store.put(DEVICE, device_key, {**record, **update}, remaining)
    runtime().store.delete(USER_CODE, normalize_user_code(record["user_code"]))


class DeviceCode(DeviceCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_ENDPOINT_AUTH_METHODS

    def validate_token_request(self):
        """§3.4-3.5 as Authlib's, with RFC 6749 §5.2's invalid_grant for a device
        code that is unknown, used, or issued to another client."""
        device_code = self.request.payload.data.get("device_code")
        if not device_code:
            raise InvalidRequestError("Missing 'device_code' in payload")
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError(f"The client is not authorized to use 'grant_type={self.GRANT_TYPE}'")
        credential = self.query_device_credential(device_code)
        if not credential or credential.get_client_id() != client.get_client_id():
            raise InvalidGrantError("The device code is unknown, used, or not this client's.")
        self.request.client = client
        self.request.user = self.validate_device_credential(credential)
        self.request.credential = credential

    def query_device_credential(self, device_code):
        if not device_code or len(device_code) > 200:
            return None
        record = runtime().store.get(DEVICE, _digest(device_code))
        return DeviceCredentialDict({**record, "device_key": _digest(device_code)}) if record else None

    def query_user_grant(self, user_code):
        record = self.request.credential_record
        if record["status"] == "pending":
            return None
        if record["status"] == "denied":
            return None, False
        principal = _principal(record["identity_id"], {**record, "family_id": tokens.new_family_id()},
                               client=self.request.client)
        return (principal, True) if principal else (None, False)

    def validate_device_credential(self, credential):
        self.request.credential_record = credential
        return super().validate_device_credential(credential)

    def should_slow_down(self, credential):
        # §3.5: polling faster than the interval gets slow_down.
        last = runtime().store.get(POLL, credential["device_key"])
        runtime().store.put(POLL, credential["device_key"], {"at": time.time()}, EXPIRES_IN)
        return bool(last) and time.time() - last["at"] < INTERVAL

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None, include_refresh_token=True):
        include_refresh_token = include_refresh_token and "offline_access" in (scope_to_list(scope or "") or [])
        return super().generate_token(user, scope, grant_type, expires_in, include_refresh_token)

    def save_token(self, token):
        # A device code yields tokens once: consuming it is the atomic step.
        consumed = runtime().store.consume(DEVICE, self.request.credential["device_key"])
        if consumed is None or not consumed.first:
            raise InvalidGrantError("The device code was already used.")
        session = db_session()
        tokens.persist(session.connection(), token, self.request.client, self.request.user, new_family=True,
                       refresh_token_ttl=runtime().settings.refresh_token_ttl, grant_type=self.GRANT_TYPE)
        session.commit()
