"""Resource Indicators for OAuth 2.0 (RFC 8707) at the token endpoint.

``resource`` parameters name the APIs an access token is for; they become its
``aud`` (RFC 9068 §3). Each must be an absolute URI without a fragment
(§2: otherwise ``invalid_target``) and one this client is registered for (its
``resources`` metadata) or the IdP's own APIs (the issuer). Without a
``resource``, tokens are for the IdP's own APIs.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from authlib.oauth2 import OAuth2Error

from ..extensions import current_g, runtime
from .errors import safe


class InvalidTargetError(OAuth2Error):
    error = "invalid_target"


def allowed_resources(client) -> set[str]:
    return {runtime().settings.issuer, *(client.meta("resources") or [])}


def audience_for(request, client) -> list[str]:
    """The token's audience from the request's ``resource`` parameters; raises InvalidTargetError."""
    resources = request.payload.datalist.get("resource", []) if hasattr(request.payload, "datalist") else []
    if not resources:
        return [runtime().settings.issuer]
    for resource in resources:
        try:
            parts = urlsplit(resource)
        except ValueError as error:
            raise InvalidTargetError("A resource is not a valid URI.") from error
        if not parts.scheme or not parts.netloc or parts.fragment or "#" in resource:
            raise InvalidTargetError(safe(f"'{resource}' is not an absolute URI without a fragment."))
        if resource not in allowed_resources(client):
            raise InvalidTargetError(safe(f"The client may not ask for tokens for '{resource}'."))
    return list(dict.fromkeys(resources))


class ResourceIndicators:
    """A token-grant extension: validates ``resource`` and sets the audience."""

    def __call__(self, grant):
        grant.register_hook("before_create_token_response", self.validate)

    def validate(self, grant):
        current_g().token_audience = audience_for(grant.request, grant.request.client)


def current_audience() -> str | list[str]:
    audience = current_g().get("token_audience") or [runtime().settings.issuer]
    return audience[0] if len(audience) == 1 else audience
