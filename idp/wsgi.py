"""WSGI entry point: ``gunicorn idp.wsgi:app``. Refuses to start on an outdated schema."""

from .app import create_app

app = create_app()
