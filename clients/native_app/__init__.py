"""A command-line native app (RFC 8252): system browser, loopback redirect, PKCE,
a stored refresh token, and agreement switching by token exchange."""

from .app import AuthError, Config, NativeApp, TokenStore

__all__ = ["AuthError", "Config", "NativeApp", "TokenStore"]
