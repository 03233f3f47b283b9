"""Configuration: one frozen Settings object, built from IDP_* environment variables.

This is the only module that reads ``os.environ``. Every key is named once here,
with its default. ``from_env`` fails at boot on anything unsafe, so a bad
deployment never serves a request.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(RuntimeError):
    """The configuration is unusable; the message says what to change."""


def is_loopback_http(url: str) -> bool:
    """True for plain-http URLs on a loopback host (a developer's laptop)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    #: development | production | test
    env: str = "development"
    #: The issuer identifier; every endpoint URL is derived from it.
    issuer: str = "http://localhost:5000"
    database_url: str = f"sqlite:///{PROJECT_ROOT / 'instance' / 'idp.sqlite3'}"
    #: Empty means no Redis: short-lived state falls back to the database.
    redis_url: str = ""
    #: Prefix for every Redis key, so several deployments (or test runs) can share a server.
    redis_prefix: str = "idp:"
    secret_key: str = ""
    #: AES key (base64url, 32 bytes) for secrets at rest; empty: one kept in keys_dir.
    data_key: str = ""
    #: Keys pairwise subject identifiers; empty: derived from secret_key. Changing
    #: it changes every pairwise ``sub``, so set it once and keep it.
    pairwise_salt: str = ""
    keys_dir: Path = PROJECT_ROOT / "keys"
    #: None: Secure cookies unless the issuer is loopback http.
    cookie_secure: bool | None = None
    session_cookie_name: str = "idp_session"
    #: Absolute lifetime of a browser session (seconds).
    session_lifetime: int = 12 * 3600
    #: Argon2id parameters (OWASP: m=19 MiB, t=2, p=1 as a floor).
    argon2_memory_kib: int = 19456
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    #: argon2id hashing threads per process (one worker per core: 1).
    argon2_concurrency: int = 1
    #: NIST SP 800-63B-4: 15 when the password may be the only factor. Below 15,
    #: every sign-in must also pass two-step verification.
    password_min_length: int = 15
    authorization_code_ttl: int = 60
    access_token_ttl: int = 3600
    id_token_ttl: int = 3600
    refresh_token_ttl: int = 30 * 24 * 3600
    #: A pending login/consent interaction expires after this many seconds.
    interaction_ttl: int = 1800
    #: Seconds between checks of the key directory for rotated keys.
    keys_reload_interval: int = 10
    #: Dynamic registration without an initial access token (RFC 7591 §3).
    open_registration: bool = False
    #: JWK Set (JSON text) of issuers whose software statements are trusted.
    software_statement_jwks: str = ""
    #: Seconds an old client secret keeps working after a rotation.
    secret_rotation_overlap: int = 24 * 3600
    #: How many reverse proxies in front set X-Forwarded-For/-Proto (0: trust none).
    trusted_proxies: int = 0
    #: One JSON object per log line (default in production).
    log_json: bool = False
    #: Multiplies every request rate limit (policies/rate_limits.py); 0 turns them off.
    rate_limit_factor: float = 1.0
    #: Failed sign-ins from one IP in 15 minutes before that IP is paused.
    login_ip_lock_after: int = 50
    #: Require a server nonce in every DPoP proof (RFC 9449 §8).
    dpop_require_nonce: bool = False
    #: Refuse to serve when the database schema is behind the code.
    check_schema: bool = True
    default_locale: str = "en"
    supported_locales: tuple[str, ...] = ("en", "da")
    #: Outgoing mail. Empty smtp_host: messages are written as .eml files into outbox_dir.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_starttls: bool = False
    #: Implicit TLS (usually port 465); wins over smtp_starttls.
    smtp_ssl: bool = False
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    mail_from: str = "Connect login <no-reply@localhost>"
    outbox_dir: Path = PROJECT_ROOT / "outbox"
    extra: dict = field(default_factory=dict)

    @property
    def secure_cookies(self) -> bool:
        if self.cookie_secure is not None:
            return self.cookie_secure
        return not is_loopback_http(self.issuer)

    @property
    def max_token_ttl(self) -> int:
        return max(self.access_token_ttl, self.id_token_ttl)

    def with_(self, **changes) -> Settings:
        return replace(self, **changes)


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _read_optional(path: str) -> str:
    """The contents of the file at ``path`` (empty path: empty); fails at boot if unreadable."""
    if not path:
        return ""
    try:
        return Path(path).read_text()
    except OSError as error:
        raise SettingsError(f"cannot read {path}: {error}") from error


def _dev_secret(keys_dir: Path) -> str:
    """A per-checkout random secret for development, kept beside the dev keys."""
    path = keys_dir / "dev-secret-key"
    if path.exists():
        return path.read_text().strip()
    keys_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


def from_env(environ: dict[str, str] | None = None) -> Settings:
    """Build Settings from IDP_* variables; raise SettingsError when unsafe."""
    env = os.environ if environ is None else environ
    defaults = Settings()

    def get(name: str, default):
        return env.get(f"IDP_{name}", default)

    mode = get("ENV", defaults.env)
    if mode not in {"development", "production", "test"}:
        raise SettingsError(f"IDP_ENV must be development, production or test, not {mode!r}")
    keys_dir = Path(get("KEYS_DIR", defaults.keys_dir))
    cookie_secure = get("COOKIE_SECURE", "")
    settings = Settings(
        env=mode,
        issuer=get("ISSUER", defaults.issuer).rstrip("/"),
        database_url=get("DATABASE_URL", defaults.database_url),
        redis_url=get("REDIS_URL", ""),
        redis_prefix=get("REDIS_PREFIX", defaults.redis_prefix),
        secret_key=get("SECRET_KEY", ""),
        data_key=get("DATA_KEY", ""),
        pairwise_salt=get("PAIRWISE_SALT", ""),
        keys_dir=keys_dir,
        cookie_secure=_bool(cookie_secure) if cookie_secure else None,
        argon2_memory_kib=int(get("ARGON2_MEMORY_KIB", defaults.argon2_memory_kib)),
        argon2_time_cost=int(get("ARGON2_TIME_COST", defaults.argon2_time_cost)),
        argon2_parallelism=int(get("ARGON2_PARALLELISM", defaults.argon2_parallelism)),
        argon2_concurrency=max(1, int(get("ARGON2_CONCURRENCY", defaults.argon2_concurrency))),
        password_min_length=int(get("PASSWORD_MIN_LENGTH", defaults.password_min_length)),
        access_token_ttl=int(get("ACCESS_TOKEN_TTL", defaults.access_token_ttl)),
        refresh_token_ttl=int(get("REFRESH_TOKEN_TTL", defaults.refresh_token_ttl)),
        session_lifetime=int(get("SESSION_LIFETIME", defaults.session_lifetime)),
        dpop_require_nonce=_bool(get("DPOP_REQUIRE_NONCE", "false")),
        open_registration=_bool(get("OPEN_REGISTRATION", "false")),
        rate_limit_factor=float(get("RATE_LIMIT_FACTOR", defaults.rate_limit_factor)),
        log_json=_bool(get("LOG_JSON", "true" if mode == "production" else "false")),
        keys_reload_interval=int(get("KEYS_RELOAD_INTERVAL", defaults.keys_reload_interval)),
        trusted_proxies=int(get("TRUSTED_PROXIES", defaults.trusted_proxies)),
        login_ip_lock_after=int(get("LOGIN_IP_LOCK_AFTER", defaults.login_ip_lock_after)),
        software_statement_jwks=_read_optional(get("SOFTWARE_STATEMENT_JWKS", "")),
        secret_rotation_overlap=int(get("SECRET_ROTATION_OVERLAP", defaults.secret_rotation_overlap)),
        smtp_host=get("SMTP_HOST", defaults.smtp_host),
        smtp_port=int(get("SMTP_PORT", defaults.smtp_port)),
        smtp_starttls=_bool(get("SMTP_STARTTLS", "")),
        smtp_ssl=_bool(get("SMTP_SSL", "")),
        smtp_username=get("SMTP_USERNAME", defaults.smtp_username),
        smtp_password=get("SMTP_PASSWORD", defaults.smtp_password),
        mail_from=get("MAIL_FROM", defaults.mail_from),
        outbox_dir=Path(get("OUTBOX_DIR", defaults.outbox_dir)),
    )
    if not settings.secret_key:
        if mode == "production":
            raise SettingsError("IDP_SECRET_KEY is required in production (at least 32 random bytes).")
        settings = settings.with_(secret_key=_dev_secret(keys_dir))
    validate(settings)
    return settings


_PLACEHOLDER_WORDS = ("change", "secret", "example", "placeholder", "production", "password", "default")


def _is_secret_file(name: str) -> bool:
    """Signing keys and the data/dev keys; not e.g. a README in the folder."""
    return name.endswith(".json") or name in ("data-key", "dev-secret-key")


def validate(settings: Settings) -> None:
    if settings.password_min_length < 8:
        raise SettingsError("IDP_PASSWORD_MIN_LENGTH must be at least 8 (NIST SP 800-63B-4).")
    parts = urlsplit(settings.issuer)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
        raise SettingsError("IDP_ISSUER must be an absolute http(s) URL without query or fragment.")
    if settings.env == "production":
        if parts.scheme != "https" and not is_loopback_http(settings.issuer):
            raise SettingsError("IDP_ISSUER must use https in production (http only on loopback).")
        if len(settings.secret_key) < 32:
            raise SettingsError("IDP_SECRET_KEY is too short: use at least 32 random characters.")
        lowered = settings.secret_key.lower()
        if len(set(settings.secret_key)) < 16 or any(word in lowered for word in _PLACEHOLDER_WORDS):
            raise SettingsError("IDP_SECRET_KEY looks like a placeholder: generate a random one, e.g. "
                                "python -c 'import secrets; print(secrets.token_urlsafe(48))'.")
        if settings.keys_dir.is_dir():
            exposed = [p.name for p in settings.keys_dir.iterdir()
                       if p.is_file() and _is_secret_file(p.name) and p.stat().st_mode & 0o077]
            if exposed:
                raise SettingsError(f"Key files in {settings.keys_dir} are readable by others ({', '.join(exposed)}): "
                                    f"run chmod 600 on them.")
