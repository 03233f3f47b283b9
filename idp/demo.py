"""Demo data for a laptop: products, people with known passwords, agreements, and the sample RPs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .agreements.models import Agreement, Membership, Product, Role
from .clients import service as clients
from .clients.models import DEFAULT_GRANT_TYPES, DEFAULT_SCOPE, Client
from .identities import service as identities
from .identities.passwords import PasswordHasher

DEMO_PASSWORD = "Rolling-Meadow-Lantern-42"
PRODUCTS = {"e-conomic": "e-conomic", "dinero": "Dinero", "visma-net": "Visma.net"}
PEOPLE = [
    # (e-mail, given name, family name, agreements per product)
    ("anna@example.com", "Anna", "Bogholder", {"e-conomic": 30, "dinero": 12, "visma-net": 3}),
    ("bo@example.com", "Bo", "Hansen", {"e-conomic": 1}),
    ("carl@example.com", "Carl", "Timer", {"e-conomic": 1}),
    ("dora@example.com", "Dora", "Registrant", {}),
]
CLIENTS = [
    dict(client_id="accounting-web", client_name="Accounting (sample RP)", product_id="e-conomic",
         redirect_uris=["http://127.0.0.1:5001/callback"], post_logout_redirect_uris=["http://127.0.0.1:5001/"],
         client_secret="accounting-demo-secret",
         metadata={"backchannel_logout_uri": "http://127.0.0.1:5001/backchannel-logout",
                   "backchannel_logout_session_required": True}),
    dict(client_id="invoicing-web", client_name="Invoicing (sample RP)", product_id="dinero",
         redirect_uris=["http://127.0.0.1:5002/callback"], post_logout_redirect_uris=["http://127.0.0.1:5002/"],
         client_secret="invoicing-demo-secret", first_party=True,
         metadata={"backchannel_logout_uri": "http://127.0.0.1:5002/backchannel-logout",
                   "backchannel_logout_session_required": True}),
    dict(client_id="mobile-app", client_name="Time registration (sample mobile app)", product_id="e-conomic",
         redirect_uris=["http://127.0.0.1/callback"], public=True, native=True, mobile_app=True,
         metadata={"resources": ["http://127.0.0.1:5003"]}),
]
#: Dora registers time on Carl's agreement, which allows that only in mobile apps.
TIME_REGISTRANT = ("dora@example.com", "carl@example.com")
NUMBER_BASE = {"e-conomic": 100000, "dinero": 200000, "visma-net": 300000}


def seed(session: Session, passwords: PasswordHasher) -> dict[str, int]:
    """Create whatever of the demo data is missing; safe to run again."""
    created = {"products": 0, "identities": 0, "agreements": 0, "clients": 0}
    for slug, name in PRODUCTS.items():
        if session.get(Product, slug) is None:
            session.add(Product(id=slug, name=name))
            created["products"] += 1
    session.commit()

    counters = dict(NUMBER_BASE)
    for email, given, family, per_product in PEOPLE:
        identity = identities.find_by_email(session, email)
        if identity is None:
            identity = identities.create_identity(session, passwords, email=email, password=DEMO_PASSWORD,
                                                  given_name=given, family_name=family, email_verified=True)
            created["identities"] += 1
        for product, count in per_product.items():
            for _ in range(count):
                counters[product] += 1
                number = str(counters[product])
                agreement = session.execute(select(Agreement).where(Agreement.number == number)).scalar_one_or_none()
                if agreement is None:
                    agreement = Agreement(number=number, name=f"{given}'s customer {number}", product_id=product)
                    session.add(agreement)
                    session.flush()
                    session.add(Membership(identity_id=identity.id, agreement_id=agreement.id,
                                           role=Role.superuser.value))
                    created["agreements"] += 1
    session.commit()

    registrant, owner = (identities.find_by_email(session, e) for e in TIME_REGISTRANT)
    owners_agreement = session.execute(select(Membership).where(Membership.identity_id == owner.id)).scalars().first()
    owners_agreement.agreement.time_registrants_mobile_only = True
    if session.execute(select(Membership).where(Membership.identity_id == registrant.id)).first() is None:
        session.add(Membership(identity_id=registrant.id, agreement_id=owners_agreement.agreement_id,
                               role=Role.time_registrant.value))
    session.commit()

    for spec in CLIENTS:
        client = session.get(Client, spec["client_id"])
        if client is None:
            clients.create_client(session, **spec)
            created["clients"] += 1
        else:
            # Keep demo clients in step with what this version offers them.
            client.scope, client.grant_types = DEFAULT_SCOPE, list(DEFAULT_GRANT_TYPES)
            client.mobile_app = spec.get("mobile_app", False)
            client.post_logout_redirect_uris = spec.get("post_logout_redirect_uris", [])
            client.extra_metadata = {**(client.extra_metadata or {}), **spec.get("metadata", {})}
            session.commit()
    return created
