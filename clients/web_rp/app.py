"""A sample relying party: signs a person in through the IdP with OIDC code flow + PKCE.

It stands in for a real product (e-conomic, Dinero, ...) in demos and browser tests,
so it stays deliberately plain: one template, the session cookie as the only store.
"""

from __future__ import annotations

import os
import re
import secrets
from urllib.parse import urlsplit

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.common.urls import add_params_to_uri
from authlib.integrations.flask_client import OAuth
from flask import Flask, redirect, render_template, session, url_for
from joserfc.errors import JoseError

# Anything that can go wrong talking to the IdP. We show these to the person instead of
# a 500, because a sample RP is exactly where people poke at failure cases.
IDP_ERRORS = (AuthlibBaseError, JoseError, requests.RequestException, RuntimeError, ValueError)


def load_config(environ: dict[str, str] | None = None) -> dict:
    """The only place that reads the environment."""
    env = os.environ if environ is None else environ
    return {
        "RP_NAME": env.get("RP_NAME", "Accounting"),
        "RP_PRODUCT": env.get("RP_PRODUCT", "e-conomic"),
        "RP_ISSUER": env.get("RP_ISSUER", "http://localhost:5000").rstrip("/"),
        "RP_CLIENT_ID": env.get("RP_CLIENT_ID", "accounting-web"),
        "RP_CLIENT_SECRET": env.get("RP_CLIENT_SECRET", "accounting-demo-secret"),
        "RP_BASE_URL": env.get("RP_BASE_URL", "http://127.0.0.1:5001").rstrip("/"),
        # A fresh key per start just logs everyone out of the sample on restart.
        "RP_SECRET_KEY": env.get("RP_SECRET_KEY") or secrets.token_urlsafe(32),
        "RP_COOKIE_NAME": env.get("RP_COOKIE_NAME", ""),
        # Separate from RP_BASE_URL: in a container the browser-facing URL is 127.0.0.1,
        # but the server must listen on all interfaces.
        "RP_BIND_HOST": env.get("RP_BIND_HOST", "127.0.0.1"),
    }


def create_app(config: dict | None = None) -> Flask:
    cfg = load_config()
    cfg.update(config or {})
    # Browsers scope cookies by host, not port: two RPs on 127.0.0.1 would clobber
    # each other's session unless each has its own cookie name.
    cfg["RP_COOKIE_NAME"] = cfg["RP_COOKIE_NAME"] or (
        "rp_" + re.sub(r"[^A-Za-z0-9_]", "_", cfg["RP_CLIENT_ID"]) + "_session"
    )
    app = Flask(__name__)
    app.config.update(cfg)
    app.config.update(
        SECRET_KEY=cfg["RP_SECRET_KEY"],
        SESSION_COOKIE_NAME=cfg["RP_COOKIE_NAME"],
        # Lax still sends the cookie on the IdP's top-level redirect back to /callback
        # (where Authlib keeps state, nonce and PKCE verifier), and blocks cross-site POSTs.
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=cfg["RP_BASE_URL"].startswith("https://"),
    )

    oauth = OAuth(app)
    idp = oauth.register(
        name="idp",
        client_id=cfg["RP_CLIENT_ID"],
        client_secret=cfg["RP_CLIENT_SECRET"],
        # Fetched lazily on first use, so the RP starts even while the IdP is down.
        server_metadata_url=cfg["RP_ISSUER"] + "/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256"},
    )
    base_url = cfg["RP_BASE_URL"]

    def error_page(error: str, description: str | None, status: int):
        app.logger.warning("sign-in failed: %s: %s", error, description)
        return render_template("page.html", error=error, error_description=description), status

    @app.get("/")
    def index():
        return render_template("page.html", user=session.get("userinfo"))

    @app.get("/login")
    def login():
        try:
            return idp.authorize_redirect(base_url + "/callback")
        except IDP_ERRORS as exc:
            return error_page("idp_unavailable", f"Could not reach the sign-in service: {exc}", 502)

    @app.get("/callback")
    def callback():
        try:
            # Raises on ?error=..., a state mismatch, a failed token exchange, or an
            # ID token that fails signature, iss, aud, exp or nonce checks.
            token = idp.authorize_access_token()
        except AuthlibBaseError as exc:
            return error_page(exc.error, exc.description, 400)
        except JoseError as exc:
            return error_page("invalid_id_token", str(exc), 502)
        except IDP_ERRORS as exc:
            return error_page("idp_unavailable", str(exc), 502)
        # Authlib puts the validated ID token claims here; it is absent without an ID token.
        userinfo = token.get("userinfo")
        if not userinfo:
            return error_page("invalid_response", "The IdP returned no ID token.", 502)
        session.clear()
        session["userinfo"] = dict(userinfo)
        session["id_token"] = token["id_token"]
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout():
        # POST plus SameSite=Lax: another site cannot sign people out behind their back.
        id_token = session.get("id_token")
        session.clear()
        try:
            end_session = idp.load_server_metadata().get("end_session_endpoint")
        except IDP_ERRORS:
            end_session = None
        if not end_session:
            return redirect(url_for("index"))
        params = {"post_logout_redirect_uri": base_url + "/", "client_id": cfg["RP_CLIENT_ID"]}
        if id_token:
            params["id_token_hint"] = id_token
        return redirect(add_params_to_uri(end_session, params))

    @app.get("/healthz")
    def healthz():
        return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}

    @app.context_processor
    def rp_identity():
        return {"rp_name": cfg["RP_NAME"], "rp_product": cfg["RP_PRODUCT"]}

    return app


def main() -> None:
    app = create_app()
    parts = urlsplit(app.config["RP_BASE_URL"])
    port = parts.port or (443 if parts.scheme == "https" else 80)
    app.run(host=app.config["RP_BIND_HOST"], port=port, threaded=True)
