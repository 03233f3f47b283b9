"""Application factory."""

from __future__ import annotations

import os

from flask import Flask, g, has_app_context, jsonify, render_template, request, session
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.exceptions import HTTPException

from . import mail, observability, security
from .identities.totp import Totp
from .security import DataCipher, load_data_key
from .extensions import Runtime, babel, csrf, current_g, current_request, runtime
from .identities.passwords import PasswordHasher
from .oidc import keys as keys_module
from .oidc import server as oidc_server
from .oidc.documents import PublicDocuments
from .oidc.lean import LeanProtocolEndpoints
from .params import IdPRequest
from .clients.cache import ClientCache
from .policies.rate_limits import RateLimitedError
from .sessions.interface import ServerSessionInterface
from .settings import Settings, from_env
from .storage import migrations
from .storage.counters import BlockCounter
from .storage.db import Database
from .storage.ephemeral import make_store

#: Paths answered in JSON: machines call them, not people.
API_PREFIXES = ("/token", "/userinfo", "/jwks", "/.well-known", "/api/", "/healthz", "/readyz", "/register",
                "/revoke", "/introspect", "/par", "/device_authorization", "/account/password/strength", "/metrics")


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or from_env()
    app = Flask(__name__)
    app.request_class = IdPRequest
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_NAME=settings.session_cookie_name,
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # The CSRF token lives as long as the session it is stored in.
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SSL_STRICT=False,
        BABEL_DEFAULT_LOCALE=settings.default_locale,
        BABEL_TRANSLATION_DIRECTORIES=os.path.join(app.root_path, "translations"),
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    security.configure(settings.secret_key)
    database = Database(settings.database_url)
    if settings.check_schema:
        migrations.check_current(database.engine)
    keys_module.generate(settings.keys_dir)
    store = make_store(database, settings.redis_url, settings.redis_prefix, held=has_app_context)
    cipher = DataCipher(load_data_key(settings.data_key, settings.keys_dir))
    app.extensions["idp"] = Runtime(
        settings=settings,
        db=database,
        store=store,
        keys=keys_module.KeyRing(settings.keys_dir, settings.max_token_ttl, settings.keys_reload_interval),
        passwords=PasswordHasher(settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism,
                                 settings.argon2_concurrency),
        totp=Totp(cipher, store),
        mailer=mail.from_settings(settings),
        cipher=cipher,
        clients=ClientCache(database),
        rate_counter=BlockCounter(store),
    )
    app.session_interface = ServerSessionInterface(lambda: runtime().store, settings.session_lifetime)

    babel.init_app(app, locale_selector=_select_locale)

    @app.before_request
    def _session_store_available():
        # Before the CSRF check, which would otherwise call a form "expired"
        # when in truth the session store is down (503, not 400).
        if getattr(session._get_current_object(), "unavailable", False):
            raise RedisError("session store unavailable")

    csrf.init_app(app)
    app.wsgi_app = PublicDocuments(app.wsgi_app, app.extensions["idp"])
    app.wsgi_app = LeanProtocolEndpoints(app.wsgi_app, app, security_headers)
    if settings.trusted_proxies:
        # Behind N proxies, the client's address is the Nth from the right of X-Forwarded-For.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies)
    with app.app_context():
        server, protector = oidc_server.build(app)
    app.extensions["authlib.server"] = server
    app.extensions["authlib.protector"] = protector

    observability.configure_logging(settings.log_json)
    observability.init_app(app)
    _register_blueprints(app)
    _register_handlers(app)
    _register_cli(app)
    return app


def _select_locale():
    supported = runtime().settings.supported_locales
    # OIDC ui_locales: the RP's preference for this sign-in, in order.
    for tag in (getattr(g, "ui_locales", None) or "").split():
        base = tag.split("-")[0].lower()
        if base in supported:
            return base
    if session.get("locale") in supported:
        return session["locale"]
    return request.accept_languages.best_match(supported) or runtime().settings.default_locale


def _register_blueprints(app: Flask) -> None:
    from .account.views import bp as account_bp
    from .agreement_admin.views import bp as agreement_admin_bp
    from .api.openapi import bp as openapi_bp
    from .portal.views import bp as portal_bp
    from .api.views import bp as api_bp
    from .interaction.views import bp as interaction_bp
    from .oidc.views import bp as oidc_bp

    # Protocol endpoints authenticate clients and tokens instead; browsers'
    # cookies never authorize anything there.
    csrf.exempt(oidc_bp)
    csrf.exempt(api_bp)
    app.register_blueprint(oidc_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(interaction_bp)
    app.register_blueprint(account_bp)
    app.register_blueprint(agreement_admin_bp)
    app.register_blueprint(portal_bp)
    app.register_blueprint(openapi_bp)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz():
        checks = {}
        try:
            with runtime().db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as error:  # noqa: BLE001 - any failure means not ready
            checks["database"] = f"error: {type(error).__name__}"
        try:
            runtime().store.ping()
            checks["store"] = "ok"
        except Exception as error:  # noqa: BLE001
            checks["store"] = f"error: {type(error).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return jsonify(status="ok" if ready else "unavailable", checks=checks), 200 if ready else 503


def _rollback() -> None:
    """Roll back the request's transaction, even when its connection is gone."""
    try:
        runtime().db.session.rollback()
    except DBAPIError:
        try:
            runtime().db.session().invalidate()
        except DBAPIError:
            pass


def _wants_json() -> bool:
    return request.path.startswith(API_PREFIXES)


#: (name, lower-case name, value) of the headers every response gets unless its view set them.
_ALWAYS = tuple((name, name.lower(), value) for name, value in (
    ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer")))
_FOR_PAGES = tuple((name, name.lower(), value) for name, value in (
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"),
    ("Cache-Control", "no-store")))
_HSTS = (("Strict-Transport-Security", "strict-transport-security", "max-age=31536000"),)


def security_headers(response):
    """What every response carries (also those of the lean protocol path, idp/oidc/lean.py).

    The names already set are read once: Werkzeug's ``setdefault`` finds a missing header by catching the
    exception its look-up raises, one built per header on every response."""
    headers = response.headers
    present = {name.lower() for name, _value in headers.items()}
    wanted = _ALWAYS
    if response.mimetype == "text/html":
        wanted += _FOR_PAGES
    if runtime().settings.issuer.startswith("https://"):
        wanted += _HSTS
    for name, lower, value in wanted:
        if lower not in present:
            headers.add(name, value)
    return response


def _register_handlers(app: Flask) -> None:
    @app.context_processor
    def _template_helpers():
        return {"current_locale": lambda: str(get_locale())}

    @app.before_request
    def _ui_locales():
        current_g().ui_locales = current_request().args.get("ui_locales")

    app.after_request(security_headers)

    @app.teardown_appcontext
    def _remove_session(_exc):
        try:
            runtime().db.remove()
        except DBAPIError:
            # The connection died after the request's work was done; the pool
            # drops it, and the response already sent stays correct.
            app.logger.warning("database connection lost while ending a request")

    @app.errorhandler(RateLimitedError)
    def _rate_limited(error: RateLimitedError):
        headers = {"Retry-After": str(error.retry_after)}
        if _wants_json():
            return jsonify(error="rate_limited", error_description="Too many requests; retry later."), 429, headers
        return render_template("errors/error.html", title=_("Too many requests"),
                               message=_("Wait a moment and try again.")), 429, headers

    @app.errorhandler(RedisError)
    @app.errorhandler(OperationalError)
    def _unavailable(error):
        # A store or database outage is temporary and says so: 503 with
        # Retry-After, never a 500 and never an unsafe fallback.
        app.logger.error("dependency unavailable on %s %s: %s", request.method, request.path, type(error).__name__)
        _rollback()
        headers = {"Retry-After": "5"}
        if _wants_json():
            return jsonify(error="temporarily_unavailable",
                           error_description="The service is briefly unavailable; retry shortly."), 503, headers
        return render_template("errors/error.html", title=_("Briefly unavailable"),
                               message=_("Please try again in a moment.")), 503, headers

    @app.errorhandler(DataError)
    def _bad_value(error):
        # A value the database refuses (e.g. a NUL byte for PostgreSQL) is the
        # caller's mistake: 400, and nothing half-written.
        _rollback()
        if _wants_json():
            return jsonify(error="invalid_request", error_description="A parameter holds an invalid value."), 400
        return render_template("errors/error.html", title=_("Invalid request"),
                               message=_("Check the address and try again.")), 400

    @app.errorhandler(CSRFError)
    def _csrf_error(error):
        return render_template("errors/error.html", title=_("This form has expired"),
                               message=_("Go back, reload the page and try again.")), 400

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        if _wants_json():
            body = {"error": "invalid_request" if error.code < 500 else "server_error",
                    "error_description": error.description if error.code < 500 else "Internal error"}
            if error.code == 404:
                body["error"] = "not_found"
            return jsonify(body), error.code
        return render_template("errors/error.html", title=error.name,
                               message=error.description if error.code < 500 else ""), error.code

    @app.errorhandler(ValueError)
    def _value_error(error: ValueError):
        # Authlib quotes request values in some error descriptions and refuses
        # (ValueError) characters RFC 6749 §5.2 forbids there: that is still
        # the caller's bad input, so a 400 in the protocol's shape, not a 500.
        if "Error description contains forbidden characters" not in str(error):
            return _unexpected(error)
        _rollback()
        if _wants_json():
            return jsonify(error="invalid_request",
                           error_description="The request contains characters that are not allowed."), 400
        return render_template("errors/oauth.html", error="invalid_request",
                               description="The request contains characters that are not allowed."), 400

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        _rollback()
        if _wants_json():
            return jsonify(error="server_error", error_description="Internal error"), 500
        return render_template("errors/error.html", title=_("Something went wrong"),
                               message=_("Please try again in a moment.")), 500


def _register_cli(app: Flask) -> None:
    from .cli import register

    register(app)
