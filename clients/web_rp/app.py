"""A sample relying party: one product (e-conomic, Dinero, ...) signing people in through the IdP.

OIDC code flow with PKCE through Authlib's client, and what a product built on the
Connect IdP needs on top:
- the current agreement (from the ID token) in the header, and a switcher menu fed
  by the IdP's agreements API; switching is a silent ``prompt=none&agreement_hint=``
  authorization, falling back to an interactive one when the IdP needs the person;
- a sensitive action (approving a payment) whose API (``payments_api.py``) answers
  with an RFC 9470 step-up challenge, which the RP follows with ``acr_values``;
- RP-initiated logout, and a back-channel logout receiver that ends local sessions.

Sessions are kept server-side (``store.py``): the cookie holds only a random id.
Everything is configured by environment variables (``load_config``).
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import time
from urllib.parse import quote, urlsplit

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.common.urls import add_params_to_uri
from authlib.integrations.flask_client import OAuth
from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for
from joserfc.errors import JoseError

from .. import stepup
from ..resource_server import JWKSCache, KeysUnavailable, ResourceServer
from . import payments_api
from .backchannel import InvalidLogoutToken, validate_logout_token
from .store import ReplayCache, SessionStore, TTLCache

# Anything that can go wrong talking to the IdP. We show these to the person instead of
# a 500, because a sample RP is exactly where people poke at failure cases.
IDP_ERRORS = (AuthlibBaseError, JoseError, requests.RequestException, RuntimeError, ValueError)
#: prompt=none answers that mean "the IdP needs to see the person": ask again, interactively.
NEEDS_INTERACTION = {"login_required", "interaction_required", "consent_required", "account_selection_required"}
ROLES = {"superuser": "Superuser", "user": "User", "time_registrant": "Time registrant"}
AGREEMENT_NUMBER = re.compile(r"[0-9A-Za-z-]{1,32}")
MAX_PENDING = 5


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
        # The product RPs set "openid profile email offline_access agreement" (./dev run,
        # docker-compose.yml); without "agreement" there is no agreement header or switcher.
        "RP_SCOPE": env.get("RP_SCOPE", "openid profile email"),
        # The payments API: inside this app by default (RP_BASE_URL/api). Without a resource
        # indicator the IdP's access tokens are for the issuer; the API then also insists
        # that the token was issued to this RP (see create_app).
        "RP_API_URL": env.get("RP_API_URL", "").rstrip("/"),
        "RP_API_AUDIENCE": env.get("RP_API_AUDIENCE", ""),
        # A fresh key per start just logs everyone out of the sample on restart.
        "RP_SECRET_KEY": env.get("RP_SECRET_KEY") or secrets.token_urlsafe(32),
        "RP_COOKIE_NAME": env.get("RP_COOKIE_NAME", ""),
        # Separate from RP_BASE_URL: in a container the browser-facing URL is 127.0.0.1,
        # but the server must listen on all interfaces.
        "RP_BIND_HOST": env.get("RP_BIND_HOST", "127.0.0.1"),
    }


class SignInAgain(Exception):
    """The local session cannot go on (its refresh token was refused): sign in again."""


def create_app(config: dict | None = None) -> Flask:
    cfg = load_config()
    cfg.update(config or {})
    # Browsers scope cookies by host, not port: two RPs on 127.0.0.1 would clobber
    # each other's session unless each has its own cookie name.
    cfg["RP_COOKIE_NAME"] = cfg["RP_COOKIE_NAME"] or (
        "rp_" + re.sub(r"[^A-Za-z0-9_]", "_", cfg["RP_CLIENT_ID"]) + "_session"
    )
    issuer, base_url, client_id = cfg["RP_ISSUER"], cfg["RP_BASE_URL"], cfg["RP_CLIENT_ID"]
    api_url = cfg["RP_API_URL"] or base_url + "/api"
    app = Flask(__name__)
    app.config.update(cfg)
    app.config.update(
        SECRET_KEY=cfg["RP_SECRET_KEY"],
        SESSION_COOKIE_NAME=cfg["RP_COOKIE_NAME"],
        # Lax still sends the cookie on the IdP's top-level redirect back to /callback
        # (where Authlib keeps state, nonce and PKCE verifier), and blocks cross-site POSTs.
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=base_url.startswith("https://"),
    )

    oauth = OAuth(app, cache=TTLCache())
    idp = oauth.register(
        name="idp",
        client_id=client_id,
        client_secret=cfg["RP_CLIENT_SECRET"],
        # Fetched lazily on first use, so the RP starts even while the IdP is down.
        server_metadata_url=issuer + "/.well-known/openid-configuration",
        client_kwargs={"scope": cfg["RP_SCOPE"], "code_challenge_method": "S256"},
    )
    sessions = SessionStore()
    seen_logout_tokens = ReplayCache()
    keys = JWKSCache(issuer)
    api_audience = cfg["RP_API_AUDIENCE"] or issuer
    payments_rs = ResourceServer(issuer, api_audience, keys=keys, realm=cfg["RP_NAME"] + " payments",
                                 clients=[client_id] if api_audience == issuer else None)
    app.register_blueprint(payments_api.create_blueprint(payments_rs))
    app.extensions["rp"] = {"sessions": sessions, "keys": keys}

    # ------------------------------------------------------------------ helpers

    def error_page(error: str, description: str | None, status: int):
        app.logger.warning("%s: %s", error, description)
        return render_template("page.html", error=error, error_description=description), status

    def start_authorization(purpose: str, return_to: str = "/", action: dict | None = None, **params):
        """Redirect to /authorize, remembering why (keyed by ``state``) for the callback."""
        state = secrets.token_urlsafe(24)
        pending = dict(session.get("pending", {}))
        while len(pending) >= MAX_PENDING:  # abandoned attempts (closed tabs) do not pile up
            pending.pop(next(iter(pending)))
        # What the callback needs to go on; the id_token_hint is not kept (size; it is re-sent if needed).
        pending[state] = {"purpose": purpose, "return_to": return_to, "action": action,
                          "params": {k: v for k, v in params.items() if k != "id_token_hint"},
                          "sub": g.user.sub if g.user else None}
        session["pending"] = pending
        try:
            return idp.authorize_redirect(base_url + "/callback", state=state, **params)
        except IDP_ERRORS as exc:
            return error_page("idp_unavailable", f"Could not reach the sign-in service: {exc}", 502)

    def end_local_session():
        sessions.delete(session.pop("local", None))
        g.user = None

    def refresh(local):
        """New tokens from the refresh token; ends the local session when the IdP refuses."""
        try:
            if not local.refresh_token:
                raise SignInAgain("no refresh token")
            token = idp.fetch_access_token(grant_type="refresh_token", refresh_token=local.refresh_token)
        except (AuthlibBaseError, SignInAgain) as exc:  # invalid_grant: revoked, expired, membership gone, ...
            end_local_session()
            raise SignInAgain(str(exc)) from exc
        return sessions.update(local.id, access_token=token["access_token"],
                               refresh_token=token.get("refresh_token", local.refresh_token),
                               expires_at=token.get("expires_at") or time.time() + 300)

    def call(method: str, url: str, local, **kwargs):
        """An API call with the session's access token: refreshed when expired or refused, once."""
        if local.expires_at - 30 < time.time():
            local = refresh(local)
        response = None
        for attempt in (1, 2):
            response = requests.request(method, url, timeout=10, **kwargs,
                                        headers={"Authorization": f"Bearer {local.access_token}"})
            challenge = response.headers.get("WWW-Authenticate", "")
            if response.status_code != 401 or 'error="invalid_token"' not in challenge or attempt == 2:
                break
            local = refresh(local)
        return response

    def challenge_of(response) -> dict | None:
        """The parsed RFC 9470 step-up challenge of an API response, if that is what it is."""
        if response.status_code != 401:
            return None
        try:
            info = stepup.parse_challenge(response.headers.get("WWW-Authenticate", ""))
        except ValueError:
            return None
        return info if info.get("error") == stepup.ERROR else None

    def approve(payment_id: str, local):
        return call("POST", f"{api_url}/payments/{quote(payment_id, safe='')}/approve", local)

    def api_error_page(response):
        try:
            body = response.json()
        except ValueError:
            body = {}
        return error_page(body.get("error", "api_error"), body.get("error_description"), 502)

    def after_approval(payment_id, response, retried=False):
        if response.status_code == 200:
            flash(f"Payment {payment_id} approved.", "success")
            return redirect(url_for("payments"))
        if retried and challenge_of(response):
            # Do not loop: the new sign-in did not reach the level the API wants.
            return error_page("insufficient_user_authentication",
                              "The payment API still asks for a stronger sign-in.", 403)
        return api_error_page(response)

    def csrf_token() -> str:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        return session["csrf"]

    # ------------------------------------------------------------------ request hooks

    @app.before_request
    def load_user():
        g.user = sessions.get(session.get("local"))
        if g.user is None and session.pop("local", None):
            # The session ended elsewhere: back-channel logout, or this RP restarted.
            flash("You were signed out.", "notice")
        # Forms carry a CSRF token; the back channel and the bearer-token API use no cookies.
        if request.method == "POST" and request.endpoint != "backchannel_logout" \
                and request.blueprint != "payments_api":
            sent = request.form.get("csrf_token", "")
            if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
                abort(400, "This form has expired; go back, reload the page and try again.")

    @app.after_request
    def security_headers(response):
        if response.mimetype == "text/html":
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(issuer))
            # No script at all; forms post here and lead (by redirect) to the IdP.
            response.headers["Content-Security-Policy"] = (
                f"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' {origin}; "
                "frame-ancestors 'none'; base-uri 'none'")
            response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.context_processor
    def template_globals():
        claims = g.user.claims if getattr(g, "user", None) else {}
        agreement = ({"id": claims["agreement_id"], "name": claims.get("agreement_name", ""),
                      "role": ROLES.get(claims.get("agreement_role"), claims.get("agreement_role", ""))}
                     if claims.get("agreement_id") else None)
        return {"rp_name": cfg["RP_NAME"], "rp_product": cfg["RP_PRODUCT"], "csrf_token": csrf_token,
                "signed_in": bool(claims),
                "agreement": agreement, "role_label": lambda role: ROLES.get(role, role)}

    # ------------------------------------------------------------------ pages

    @app.get("/")
    def index():
        user = g.user
        switcher = None
        if user and "agreement" in user.scope.split():
            switcher = {"q": request.args.get("q", "").strip()[:100], "items": [], "next": None, "error": None}
            params = {"limit": 10, "q": switcher["q"], "cursor": request.args.get("cursor", "")}
            try:
                response = call("GET", issuer + "/api/v1/me/agreements", user,
                                params={k: v for k, v in params.items() if v})
                response.raise_for_status()
                body = response.json()
                switcher["items"], switcher["next"] = body["items"], body.get("next_cursor")
            except SignInAgain:
                flash("Your sign-in has ended. Sign in again.", "notice")
                return redirect(url_for("index"))
            except (requests.RequestException, ValueError, KeyError):
                switcher["error"] = "Could not load your agreements right now."
            user = sessions.get(user.id)  # tokens may have been refreshed
        return render_template("page.html", user=user.claims if user else None, switcher=switcher)

    @app.get("/rp.css")
    def stylesheet():
        return render_template("rp.css"), 200, {"Content-Type": "text/css; charset=utf-8",
                                                "Cache-Control": "max-age=3600"}

    @app.get("/login")
    def login():
        return start_authorization("login")

    @app.post("/switch")
    def switch():
        number = request.form.get("agreement", "")
        if g.user is None:
            return redirect(url_for("login"))
        if not AGREEMENT_NUMBER.fullmatch(number):
            return error_page("invalid_request", "That is not an agreement number.", 400)
        # Silent first: with a live IdP session and a membership there is no page at all.
        return start_authorization("switch", prompt="none", agreement_hint=number, id_token_hint=g.user.id_token)

    @app.get("/callback")
    def callback():
        state = request.args.get("state", "")
        pending = dict(session.get("pending", {}))
        attempt = pending.pop(state, None)
        session["pending"] = pending
        if attempt is None:
            return error_page("invalid_state", "This answer from the sign-in service belongs to no sign-in "
                                               "started here. Start again.", 400)
        # RFC 9207: the answer must come from our IdP (mix-up defence); required when advertised.
        iss = request.args.get("iss")
        try:
            iss_required = idp.load_server_metadata().get("authorization_response_iss_parameter_supported")
        except IDP_ERRORS as exc:
            return error_page("idp_unavailable", str(exc), 502)
        if iss != issuer and (iss is not None or iss_required):
            return error_page("invalid_issuer", "The answer came from another sign-in service.", 400)
        error = request.args.get("error")
        if error:
            idp.framework.clear_state_data(session, state)
            params = attempt["params"]
            if params.get("prompt") == "none" and error in NEEDS_INTERACTION:
                # The IdP needs to see the person (signed out there, consent, ...): ask again, visibly.
                retry = {k: v for k, v in params.items() if k != "prompt"}
                return start_authorization(attempt["purpose"], attempt["return_to"], attempt["action"], **retry)
            if attempt["purpose"] == "switch" and error == "access_denied" and g.user:
                flash(f"You have no access to agreement {params.get('agreement_hint')}.", "error")
                return redirect(url_for("index"))
            return error_page(error, request.args.get("error_description"), 400)
        try:
            # Raises on a state mismatch, a failed token exchange, or an ID token that
            # fails signature, iss, aud, exp or nonce checks.
            token = idp.authorize_access_token()
        except AuthlibBaseError as exc:
            return error_page(exc.error, exc.description, 400)
        except JoseError as exc:
            return error_page("invalid_id_token", str(exc), 502)
        except IDP_ERRORS as exc:
            return error_page("idp_unavailable", str(exc), 502)
        # Authlib puts the validated ID token claims here; it is absent without an ID token.
        claims = token.get("userinfo")
        if not claims:
            return error_page("invalid_response", "The IdP returned no ID token.", 502)
        # Every successful answer starts a new local session (new id, new tokens, new CSRF token).
        end_local_session()
        session.pop("csrf", None)
        g.user = sessions.create(
            iss=issuer, sub=claims["sub"], sid=claims.get("sid"), claims=dict(claims), id_token=token["id_token"],
            access_token=token["access_token"], refresh_token=token.get("refresh_token"),
            expires_at=token.get("expires_at") or time.time() + 300, scope=token.get("scope", cfg["RP_SCOPE"]))
        session["local"] = g.user.id
        action = attempt.get("action") or {}
        if attempt["purpose"] == "stepup" and action.get("approve"):
            # Retry the action the API refused, once, and only for the person who asked.
            if attempt["sub"] != g.user.sub:
                flash("Signed in as someone else: the payment was not approved.", "error")
            else:
                try:
                    return after_approval(action["approve"], approve(action["approve"], g.user), retried=True)
                except requests.RequestException as exc:
                    return error_page("api_unavailable", str(exc), 502)
        return redirect(attempt["return_to"])

    @app.get("/payments")
    def payments():
        if g.user is None:
            return redirect(url_for("login"))
        try:
            response = call("GET", api_url + "/payments", g.user)
        except SignInAgain:
            return redirect(url_for("login"))
        except requests.RequestException as exc:
            return error_page("api_unavailable", str(exc), 502)
        if response.status_code != 200:
            return api_error_page(response)
        return render_template("payments.html", payments=response.json()["payments"])

    @app.post("/payments/<payment_id>/approve")
    def approve_payment(payment_id):
        if g.user is None:
            return redirect(url_for("login"))
        try:
            response = approve(payment_id, g.user)
        except SignInAgain:
            return redirect(url_for("login"))
        except requests.RequestException as exc:
            return error_page("api_unavailable", str(exc), 502)
        step_up = challenge_of(response)
        if step_up:
            # RFC 9470: authenticate as the API asks, in the same agreement, then retry.
            extra = stepup.authorization_params(step_up)
            hint = g.user.claims.get("agreement_id")
            return start_authorization("stepup", url_for("payments"), {"approve": payment_id},
                                       **extra, **({"agreement_hint": hint} if hint else {}))
        return after_approval(payment_id, response)

    @app.post("/logout")
    def logout():
        # POST with a CSRF token: another site cannot sign people out behind their back.
        local = g.user
        end_local_session()
        session.pop("pending", None)
        try:
            metadata = idp.load_server_metadata()
        except IDP_ERRORS:
            metadata = {}
        if local and local.refresh_token and metadata.get("revocation_endpoint"):
            # RFC 7009: a refresh token we no longer need should not outlive the sign-in.
            try:
                requests.post(metadata["revocation_endpoint"], timeout=5, auth=(client_id, cfg["RP_CLIENT_SECRET"]),
                              data={"token": local.refresh_token, "token_type_hint": "refresh_token"})
            except requests.RequestException:
                pass
        end_session = metadata.get("end_session_endpoint")
        if not end_session:
            return redirect(url_for("index"))
        params = {"post_logout_redirect_uri": base_url + "/", "client_id": client_id}
        if local:
            params["id_token_hint"] = local.id_token
        return redirect(add_params_to_uri(end_session, params))

    @app.post("/backchannel-logout")
    def backchannel_logout():
        """Back-Channel Logout 1.0: the IdP POSTs a logout token; end the sessions it names."""
        headers = {"Cache-Control": "no-store"}
        try:
            claims = validate_logout_token(request.form.get("logout_token", ""), keys=keys, issuer=issuer,
                                           client_id=client_id, seen=seen_logout_tokens)
        except InvalidLogoutToken as exc:
            app.logger.warning("logout token refused: %s", exc)
            return {"error": "invalid_request", "error_description": str(exc)}, 400, headers
        except KeysUnavailable:
            return {"error": "temporarily_unavailable"}, 503, headers
        ended = sessions.end(issuer, sid=claims.get("sid"), sub=claims.get("sub"))
        app.logger.info("back-channel logout: ended %d session(s)", ended)
        return "", 200, headers

    @app.get("/healthz")
    def healthz():
        return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}

    return app


def main() -> None:
    app = create_app()
    parts = urlsplit(app.config["RP_BASE_URL"])
    port = parts.port or (443 if parts.scheme == "https" else 80)
    app.run(host=app.config["RP_BIND_HOST"], port=port, threaded=True)
