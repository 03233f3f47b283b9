"""The time-registration API of the native sample app.

GET /entries with a bearer access token for one agreement: the person's time
entries in that agreement (fake, the same every time for one agreement number).
Tokens are validated locally against the IdP's JWKS by ``clients/resource_server.py``;
the API accepts only tokens whose ``aud`` names it (the client asks for it with the
``resource`` parameter, RFC 8707, and must be registered for it at the IdP).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from urllib.parse import urlsplit

from flask import Flask, g, jsonify

from ..resource_server import ResourceServer

PROJECTS = ("Årsregnskab", "Momsafregning", "Lønkørsel", "Bogføring", "Kundemøde", "Rådgivning")


def load_config(environ: dict[str, str] | None = None) -> dict:
    env = os.environ if environ is None else environ
    base_url = env.get("TIME_API_BASE_URL", "http://127.0.0.1:5003").rstrip("/")
    return {
        "TIME_API_ISSUER": env.get("TIME_API_ISSUER", "http://localhost:5000").rstrip("/"),
        "TIME_API_BASE_URL": base_url,
        # The resource indicator clients use for this API; tokens must carry it in aud.
        "TIME_API_AUDIENCE": env.get("TIME_API_AUDIENCE", ""),
        # Optionally serve one product's agreements only (e.g. e-conomic).
        "TIME_API_PRODUCT": env.get("TIME_API_PRODUCT", ""),
        "TIME_API_BIND_HOST": env.get("TIME_API_BIND_HOST", "127.0.0.1"),
    }


def entries_for(agreement_id: str, sub: str, today: dt.date | None = None) -> list[dict]:
    """Five entries over the last working days; deterministic per agreement and person."""
    seed = hashlib.sha256(f"{agreement_id}:{sub}".encode()).digest()
    day = today or dt.date.today()
    entries = []
    for i in range(5):
        day -= dt.timedelta(days=1)
        while day.weekday() >= 5:
            day -= dt.timedelta(days=1)
        entries.append({"id": f"{agreement_id}-{i + 1}", "date": day.isoformat(),
                        "hours": (seed[i] % 14 + 2) / 2, "project": PROJECTS[seed[i + 5] % len(PROJECTS)]})
    return entries


def create_app(config: dict | None = None) -> Flask:
    cfg = load_config()
    cfg.update(config or {})
    audience = cfg["TIME_API_AUDIENCE"] or cfg["TIME_API_BASE_URL"]
    rs = ResourceServer(cfg["TIME_API_ISSUER"], audience, realm="time")
    app = Flask(__name__)
    app.config.update(cfg)

    @app.get("/entries")
    @rs.require(agreement=True, product=cfg["TIME_API_PRODUCT"] or None)
    def entries():
        claims = g.access_token
        response = jsonify(agreement_id=claims["agreement_id"], agreement_name=claims["agreement_name"],
                           entries=entries_for(claims["agreement_id"], claims["sub"]))
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/healthz")
    def healthz():
        return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}

    return app


def main() -> None:
    app = create_app()
    port = urlsplit(app.config["TIME_API_BASE_URL"]).port or 80
    app.run(host=app.config["TIME_API_BIND_HOST"], port=port, threaded=True)
