from __future__ import annotations

import pytest

from idp.settings import SettingsError, from_env, is_loopback_http


def test_defaults_for_development_generate_a_secret(tmp_path):
    settings = from_env({"IDP_KEYS_DIR": str(tmp_path)})
    assert settings.env == "development"
    assert len(settings.secret_key) >= 32
    # The generated secret is kept, so restarts do not log everyone out.
    assert from_env({"IDP_KEYS_DIR": str(tmp_path)}).secret_key == settings.secret_key
    assert (tmp_path / "dev-secret-key").stat().st_mode & 0o077 == 0


def test_production_requires_a_secret(tmp_path):
    with pytest.raises(SettingsError, match="IDP_SECRET_KEY"):
        from_env({"IDP_ENV": "production", "IDP_ISSUER": "https://idp.example", "IDP_KEYS_DIR": str(tmp_path)})


def test_production_refuses_short_secret(tmp_path):
    with pytest.raises(SettingsError, match="too short"):
        from_env({"IDP_ENV": "production", "IDP_ISSUER": "https://idp.example", "IDP_SECRET_KEY": "short"})


def test_production_refuses_http_issuer_outside_loopback():
    with pytest.raises(SettingsError, match="https"):
        from_env({"IDP_ENV": "production", "IDP_ISSUER": "http://idp.example", "IDP_SECRET_KEY": "x" * 40})


def test_issuer_must_be_a_plain_url():
    with pytest.raises(SettingsError):
        from_env({"IDP_ISSUER": "https://idp.example/?x=1", "IDP_SECRET_KEY": "x" * 40})


def test_unknown_env_is_refused():
    with pytest.raises(SettingsError, match="IDP_ENV"):
        from_env({"IDP_ENV": "staging", "IDP_SECRET_KEY": "x" * 40})


def test_cookie_security_follows_issuer():
    assert from_env({"IDP_ISSUER": "https://idp.example", "IDP_SECRET_KEY": "x" * 40}).secure_cookies
    assert not from_env({"IDP_ISSUER": "http://localhost:5000", "IDP_SECRET_KEY": "x" * 40}).secure_cookies
    assert from_env({"IDP_ISSUER": "http://localhost:5000", "IDP_SECRET_KEY": "x" * 40,
                     "IDP_COOKIE_SECURE": "true"}).secure_cookies


@pytest.mark.parametrize("url,expected", [
    ("http://localhost:5000", True), ("http://127.0.0.1", True), ("http://[::1]:80", True),
    ("https://localhost", False), ("http://example.com", False), ("http://10.0.0.1", False),
])
def test_is_loopback_http(url, expected):
    assert is_loopback_http(url) is expected
