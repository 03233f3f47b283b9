"""WSGI entry point: ``gunicorn idp.wsgi:app``. Refuses to start on an outdated schema."""

import gc

from .app import create_app

app = create_app()

# What the app is built of (modules, SQLAlchemy's metadata, templates, settings) lives as long as the process.
# Frozen, it is left out of the collector's full collections, which otherwise walked all of it: about 130 ms
# each, once per thousand or so sign-ins on one worker (bench/README.md). Objects made later are collected as
# before.
gc.collect()
gc.freeze()
