"""WSGI entry point: ``gunicorn idp.wsgi:app``. Refuses to start on an outdated schema."""

import gc

from .app import create_app

app = create_app()

# What the app is built of (modules, SQLAlchemy's metadata, templates, settings) lives as long as the process.
# Frozen, it is left out of the collector's full collections, which otherwise walked all of it: 77 ms with the
# GIL held, every request thread of the worker stalled, against 0.2 ms frozen (bench/README.md). Such
# collections are rare once the worker is warm; this is about that pause, not the average request. Objects
# made later are collected as before.
gc.collect()
gc.freeze()
