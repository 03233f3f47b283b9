"""The ``idp`` command: Flask's CLI with each domain's commands."""

from __future__ import annotations

import json
import sys

import click
from flask import Flask
from flask.cli import FlaskGroup, with_appcontext

from .extensions import db_session, runtime


def _cli_app() -> Flask:
    from .app import create_app
    from .settings import from_env

    # The CLI must work on an empty or old database: it is how you upgrade one.
    return create_app(from_env().with_(check_schema=False))


@click.group(cls=FlaskGroup, create_app=_cli_app, add_default_commands=False)
def main():
    """Connect IdP administration."""


def register(app: Flask) -> None:
    from .legacy_users.cli import legacy_group

    for group in (db, keys, clients_group, logout_group, audit_group, legacy_group):
        app.cli.add_command(group)
    app.cli.add_command(demo)
    app.cli.add_command(serve)


@click.group("db", help="Database schema.")
def db():
    pass


@db.command("upgrade", help="Apply migrations up to the newest revision.")
@with_appcontext
def db_upgrade():
    from .storage import migrations

    migrations.upgrade(runtime().settings.database_url)
    click.echo(f"database at {migrations.head_revision()}")


@db.command("current", help="Show the schema revision.")
@with_appcontext
def db_current():
    from .storage import migrations

    click.echo(f"current: {migrations.current_revision(runtime().db.engine)}  head: {migrations.head_revision()}")


@click.command("demo", help="Seed demo products, people, agreements and sample clients (idempotent).")
@with_appcontext
def demo():
    from . import demo as demo_data

    created = demo_data.seed(db_session(), runtime().passwords)
    click.echo("created " + ", ".join(f"{n} {k}" for k, n in created.items()))
    click.echo(f"demo logins: anna@, bo@, carl@, dora@example.com  password: {demo_data.DEMO_PASSWORD}")


@click.group("keys", help="Signing keys.")
def keys():
    pass


def _print_keys():
    from .oidc import keys as key_files

    for k in key_files.load_directory(runtime().settings.keys_dir):
        click.echo(f"{k.kid}  {k.alg}  {k.state}")


@keys.command("generate", help="Create the active and next keys if missing.")
@with_appcontext
def keys_generate():
    from .oidc import keys as key_files

    created = key_files.generate(runtime().settings.keys_dir)
    click.echo(f"created {len(created)} key(s)")
    _print_keys()


@keys.command("rotate", help="Activate the next keys, retire the active ones, create new next keys.")
@with_appcontext
def keys_rotate():
    from .oidc import keys as key_files

    key_files.rotate(runtime().settings.keys_dir)
    _print_keys()


@keys.command("prune", help="Delete retired keys that no unexpired token can need.")
@with_appcontext
def keys_prune():
    from .oidc import keys as key_files

    removed = key_files.prune(runtime().settings.keys_dir, runtime().settings.max_token_ttl)
    click.echo(f"removed {len(removed)} key(s)")


@keys.command("list", help="List keys and their states.")
@with_appcontext
def keys_list():
    _print_keys()


@click.group("clients", help="OAuth clients (RPs).")
def clients_group():
    pass


@clients_group.command("create", help="Register a client; prints its secret once.")
@click.option("--name", required=True)
@click.option("--redirect-uri", "redirect_uris", multiple=True)
@click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True)
@click.option("--product", default=None, help="Product slug; omit for a product-neutral client.")
@click.option("--public", is_flag=True, help="No secret (native or browser app); PKCE required.")
@click.option("--native", is_flag=True, help="application_type=native: loopback redirects on any port.")
@click.option("--first-party", is_flag=True, help="Skip the consent page.")
@click.option("--client-id", default=None, help="Choose the client id (default: random).")
@click.option("--scope", default=None, help="Allowed scopes (default: all this IdP offers).")
@click.option("--grant-type", "grant_types", multiple=True, help="Default: authorization_code, refresh_token, "
              "token exchange (client_credentials for a machine-to-machine client).")
@click.option("--auth-method", default=None, help="token_endpoint_auth_method (default client_secret_basic).")
@click.option("--mobile-app", is_flag=True, help="A mobile time-registration app (time registrants may use it).")
@with_appcontext
def clients_create(name, redirect_uris, post_logout_redirect_uris, product, public, native, first_party, client_id,
                   scope, grant_types, auth_method, mobile_app):
    from .clients import metadata, service
    from .clients.models import DEFAULT_GRANT_TYPES

    data = {"client_name": name, "redirect_uris": list(redirect_uris),
            "post_logout_redirect_uris": list(post_logout_redirect_uris),
            "application_type": "native" if native else "web",
            "grant_types": list(grant_types) or ([g for g in DEFAULT_GRANT_TYPES] if redirect_uris
                                                 else ["client_credentials"]),
            "token_endpoint_auth_method": auth_method or ("none" if public else "client_secret_basic")}
    if scope:
        data["scope"] = scope
    if product:
        data["product"] = product
    try:
        validated = metadata.validate(data)
        client, secret, _token = service.register(
            db_session(), validated, product_id=None, cipher=runtime().cipher, with_registration_token=False,
            first_party=first_party, client_id=client_id, actor="operator")
    except (metadata.ClientMetadataError, service.InvalidClientMetadataError) as error:
        raise click.ClickException(str(error)) from error
    client.mobile_app = mobile_app
    db_session().commit()
    click.echo(json.dumps({"client_id": client.client_id, "client_secret": secret}))
    if secret:
        click.echo("The secret is shown only now; store it safely.", err=True)


def _client_or_fail(client_id):
    from .clients.models import Client

    client = db_session().get(Client, client_id)
    if client is None:
        raise click.ClickException(f"no client {client_id}")
    return client


@clients_group.command("show", help="Show a client's registered metadata as JSON.")
@click.argument("client_id")
@with_appcontext
def clients_show(client_id):
    from .clients import metadata

    client = _client_or_fail(client_id)
    click.echo(json.dumps({**metadata.describe(client), "disabled": client.disabled, "first_party": client.first_party,
                           "mobile_app": client.mobile_app}, indent=2))


@clients_group.command("update", help="Change a client: redirect URIs, name, product, flags.")
@click.argument("client_id")
@click.option("--name")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Replaces all redirect URIs.")
@click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True)
@click.option("--product")
@click.option("--scope")
@click.option("--first-party/--third-party", default=None, help="Only operators may set this.")
@click.option("--require-second-factor/--no-require-second-factor", default=None)
@click.option("--mobile-app/--not-mobile-app", default=None)
@with_appcontext
def clients_update(client_id, name, redirect_uris, post_logout_redirect_uris, product, scope, first_party,
                   require_second_factor, mobile_app):
    from .clients.metadata import ClientMetadataError, check_redirect_uri

    from .agreements.models import Product
    from .clients.models import KNOWN_SCOPES

    client = _client_or_fail(client_id)
    if scope is not None and any(s not in KNOWN_SCOPES for s in scope.split()):
        raise click.ClickException(f"scope may only contain: {' '.join(KNOWN_SCOPES)}")
    if product is not None and db_session().get(Product, product) is None:
        raise click.ClickException(f"unknown product {product}")
    try:
        if redirect_uris:
            client.redirect_uris = [check_redirect_uri(u, client.application_type) for u in redirect_uris]
        if post_logout_redirect_uris:
            client.post_logout_redirect_uris = [check_redirect_uri(u, client.application_type)
                                                for u in post_logout_redirect_uris]
    except ClientMetadataError as error:
        raise click.ClickException(str(error)) from error
    for attribute, value in (("client_name", name), ("product_id", product), ("scope", scope),
                             ("first_party", first_party), ("require_second_factor", require_second_factor),
                             ("mobile_app", mobile_app)):
        if value is not None:
            setattr(client, attribute, value)
    db_session().commit()
    click.echo(f"updated {client_id}")


@clients_group.command("disable", help="Disable a client and revoke all its tokens.")
@click.argument("client_id")
@with_appcontext
def clients_disable(client_id):
    from .clients import service

    service.disable(db_session(), _client_or_fail(client_id), actor="operator")
    click.echo(f"disabled {client_id}; its tokens are revoked")


@clients_group.command("enable", help="Enable a disabled client.")
@click.argument("client_id")
@with_appcontext
def clients_enable(client_id):
    client = _client_or_fail(client_id)
    client.disabled = False
    db_session().commit()
    click.echo(f"enabled {client_id}")


@clients_group.command("delete", help="Delete a client and everything issued to it.")
@click.argument("client_id")
@click.confirmation_option(prompt="Delete this client and revoke its tokens?")
@with_appcontext
def clients_delete(client_id):
    from .clients import service

    service.delete(db_session(), _client_or_fail(client_id), actor="operator")
    click.echo(f"deleted {client_id}")


@clients_group.command("rotate-secret", help="Issue a new secret; the old one works for the overlap.")
@click.argument("client_id")
@click.option("--overlap", type=int, default=None, help="Seconds the old secret keeps working.")
@with_appcontext
def clients_rotate_secret(client_id, overlap):
    from .clients import service

    overlap = runtime().settings.secret_rotation_overlap if overlap is None else overlap
    try:
        secret = service.rotate_secret(db_session(), _client_or_fail(client_id), overlap, runtime().cipher)
    except service.InvalidClientMetadataError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps({"client_id": client_id, "client_secret": secret, "old_secret_valid_for": overlap}))


def _duration(value: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)
    except (ValueError, IndexError, KeyError) as error:
        raise click.BadParameter("use a number of seconds or e.g. 30m, 12h, 7d") from error
    if seconds <= 0:
        raise click.BadParameter("the lifetime must be positive")
    return seconds


@clients_group.command("initial-token", help="Issue an initial access token for dynamic registration.")
@click.option("--product", default=None, help="Clients registered with it belong to this product.")
@click.option("--expires", default="7d", help="Lifetime, e.g. 3600, 12h, 7d.")
@click.option("--description", default="")
@with_appcontext
def clients_initial_token(product, expires, description):
    from .clients import service

    try:
        row, token = service.issue_initial_token(db_session(), product_id=product, expires_in=_duration(expires),
                                                 description=description)
    except service.InvalidClientMetadataError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps({"id": row.id, "initial_access_token": token, "expires_at": row.expires_at.isoformat(),
                           "product": product}))
    click.echo("The token is shown only now.", err=True)


@clients_group.command("initial-tokens", help="List initial access tokens (never their values).")
@with_appcontext
def clients_initial_tokens():
    from .clients import service
    from .storage.db import utcnow

    for row in service.list_initial_tokens(db_session()):
        state = "revoked" if row.revoked_at else ("expired" if row.expires_at <= utcnow() else "active")
        click.echo(f"{row.id}  product={row.product_id or '-'}  expires={row.expires_at.isoformat()}  {state}  "
                   f"{row.description}")


@clients_group.command("revoke-initial-token", help="Revoke an initial access token by its id.")
@click.argument("token_id")
@with_appcontext
def clients_revoke_initial_token(token_id):
    from .clients import service

    if not service.revoke_initial_token(db_session(), token_id):
        raise click.ClickException(f"no active initial access token {token_id}")
    click.echo(f"revoked {token_id}")


@clients_group.command("list", help="List registered clients.")
@with_appcontext
def clients_list():
    from .clients import service

    for client in service.list_clients(db_session()):
        state = "  DISABLED" if client.disabled else ""
        click.echo(f"{client.client_id}  {client.client_name}  product={client.product_id or '-'}  "
                   f"auth={client.token_endpoint_auth_method}  redirect_uris={' '.join(client.redirect_uris)}{state}")


@click.group("audit", help="Audit events.")
def audit_group():
    pass


@audit_group.command("list", help="Show audit events, newest first.")
@click.option("--event", default=None, help="e.g. identity.login_failed")
@click.option("--subject", default=None, help="An identity id.")
@click.option("--agreement", default=None, help="An agreement id.")
@click.option("--since", default=None, help="ISO date or datetime (UTC).")
@click.option("--limit", default=50, type=int)
@with_appcontext
def audit_list(event, subject, agreement, since, limit):
    for row in _audit_rows(event, subject, agreement, since, limit):
        click.echo(f"{row.occurred_at.isoformat()}  {row.event:32}  subject={row.subject_id or '-'}  "
                   f"client={row.client_id or '-'}  agreement={row.agreement_id or '-'}  ip={row.ip or '-'}  "
                   f"{row.reason or ''}")


@audit_group.command("export", help="Export audit events as JSON lines (oldest first).")
@click.option("--event", default=None)
@click.option("--subject", default=None)
@click.option("--agreement", default=None)
@click.option("--since", default=None)
@click.option("--limit", default=100000, type=int)
@with_appcontext
def audit_export(event, subject, agreement, since, limit):
    for row in reversed(_audit_rows(event, subject, agreement, since, limit)):
        click.echo(json.dumps(row.as_dict(), sort_keys=True))


def _audit_rows(event, subject, agreement, since, limit):
    import datetime as dt

    from .audit import service

    when = None
    if since:
        try:
            when = dt.datetime.fromisoformat(since)
        except ValueError as error:
            raise click.BadParameter("use an ISO date such as 2026-11-29 or 2026-11-29T10:00") from error
        when = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    return service.query(db_session(), event=event, subject=subject, agreement_id=agreement, since=when, limit=limit)


@click.group("logout", help="Back-channel logout deliveries.")
def logout_group():
    pass


@logout_group.command("retry", help="Deliver back-channel logout tokens that failed before (run from cron).")
@with_appcontext
def logout_retry():
    from .oidc import logout

    delivered, pending = logout.retry_pending(db_session())
    click.echo(f"delivered {delivered}, still pending {pending}")


@click.command("serve", help="Run the IdP (development server; use gunicorn idp.wsgi:app in production).")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=5000, type=int)
@with_appcontext
def serve(host, port):
    from werkzeug.serving import run_simple

    from .app import create_app
    from .storage.migrations import SchemaOutOfDateError

    try:
        app = create_app(runtime().settings.with_(check_schema=True))
    except SchemaOutOfDateError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    run_simple(host, port, app, threaded=True, use_reloader=False)
