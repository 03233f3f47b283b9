"""Live sample apps for tests: product RPs, the time API, and a person with many agreements.

Each app runs on its own free port (werkzeug in a thread, ``tests.e2e.conftest.LiveServer``);
RPs on http://localhost:<port> so their cookies never mix with the IdP's on 127.0.0.1.
Clients are registered the way an operator would register the demo RPs: product, exact
redirect URI, post-logout redirect URI and a back-channel logout URI at the live RP.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import insert

from idp.agreements.models import Agreement, Membership, Product
from idp.clients import service as clients
from idp.identities import service as identities
from tests.e2e.conftest import LiveServer
from tests.helpers.factories import PASSWORD

PRODUCT_SCOPE = "openid profile email offline_access agreement"


@dataclass
class ProductRP:
    name: str
    product: str
    base_url: str
    client_id: str
    client_secret: str
    app: object
    server: LiveServer

    @property
    def redirect_uri(self) -> str:
        return self.base_url + "/callback"

    def stop(self) -> None:
        self.server.stop()


def register(live_idp, **kwargs):
    with live_idp.app_context():
        session = live_idp.extensions["idp"].db.session
        try:
            return clients.create_client(session, **kwargs)
        finally:
            session.remove()


def start_product_rp(live_idp, name: str, product: str, *, first_party: bool, label: str | None = None) -> ProductRP:
    """A sample product RP (clients/web_rp) registered for ``product`` (shown as ``label``), served live."""
    from clients.web_rp import create_app

    server = LiveServer("127.0.0.1")
    base_url = f"http://localhost:{server.port}"
    client_id = f"{product}-web-{uuid.uuid4().hex[:8]}"
    secret = "rp-secret-" + uuid.uuid4().hex
    register(live_idp, client_name=name, product_id=product, redirect_uris=[base_url + "/callback"],
             post_logout_redirect_uris=[base_url + "/"], client_id=client_id, client_secret=secret,
             first_party=first_party,
             metadata={"backchannel_logout_uri": base_url + "/backchannel-logout",
                       "backchannel_logout_session_required": True})
    app = create_app({"RP_ISSUER": live_idp.extensions["idp"].settings.issuer, "RP_CLIENT_ID": client_id,
                      "RP_CLIENT_SECRET": secret, "RP_BASE_URL": base_url, "RP_NAME": name,
                      "RP_PRODUCT": label or product, "RP_SCOPE": PRODUCT_SCOPE})
    server.start(app)
    return ProductRP(name, product, base_url, client_id, secret, app, server)


def start_time_api(live_idp) -> tuple[LiveServer, str]:
    """clients/time_api, its own audience = its base URL."""
    from clients.time_api import create_app

    server = LiveServer("127.0.0.1")
    base_url = f"http://127.0.0.1:{server.port}"
    server.start(create_app({"TIME_API_ISSUER": live_idp.extensions["idp"].settings.issuer,
                             "TIME_API_BASE_URL": base_url}))
    return server, base_url


def new_product(session, name: str) -> str:
    product = Product(id=f"{name.lower()}-{uuid.uuid4().hex[:8]}", name=name)
    session.add(product)
    session.commit()
    return product.id


def person_with_agreements(app, per_product: dict[str, list[tuple[str, str]]]) -> dict:
    """An identity with agreements bulk-inserted (one INSERT per table): {product: [(name, role)]}.

    Returns e-mail, id and, per product, the agreement numbers in the given order.
    """
    session = app.extensions["idp"].db.session_factory()
    try:
        identity = identities.create_identity(
            session, app.extensions["idp"].passwords, email=f"bookkeeper-{uuid.uuid4().hex[:10]}@example.com",
            password=PASSWORD, given_name="Birte", family_name="Bogholder", email_verified=True)
        numbers: dict[str, list[str]] = {}
        rows, memberships = [], []
        for product, agreements in per_product.items():
            prefix = "".join(secrets.choice("0123456789") for _ in range(7))
            numbers[product] = []
            for i, (name, role) in enumerate(agreements):
                row = {"id": str(uuid.uuid4()), "number": f"{prefix}{i:04d}", "name": name, "product_id": product}
                rows.append(row)
                memberships.append({"identity_id": identity.id, "agreement_id": row["id"], "role": role})
                numbers[product].append(row["number"])
        session.execute(insert(Agreement.__table__), rows)
        session.execute(insert(Membership.__table__), memberships)
        session.commit()
        return {"email": identity.email, "id": identity.id, "numbers": numbers}
    finally:
        session.close()
