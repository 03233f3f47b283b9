"""Minimal OpenID Connect relying party used to demo and browser-test the IdP."""

from .app import create_app, load_config

__all__ = ["create_app", "load_config"]
