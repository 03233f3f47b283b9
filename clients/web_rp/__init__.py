"""A sample product relying party (accounting / invoicing), configured by environment variables."""

from .app import create_app, load_config

__all__ = ["create_app", "load_config"]
