"""A tiny time-registration API: validates the IdP's access tokens locally (JWKS) and
returns fake entries for the token's agreement."""

from .app import create_app, load_config

__all__ = ["create_app", "load_config"]
