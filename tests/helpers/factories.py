"""Fresh, unique domain objects for each test."""

from __future__ import annotations

import uuid

from idp.agreements.models import Agreement, Membership, Product
from idp.clients import service as clients
from idp.identities import service as identities

PASSWORD = "Velvet-Harbour-Compass-77"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Factory:
    def __init__(self, app, session):
        self.app = app
        self.session = session

    @property
    def passwords(self):
        return self.app.extensions["idp"].passwords

    def identity(self, email: str | None = None, password: str = PASSWORD, **fields):
        return identities.create_identity(self.session, self.passwords, email=email or f"{unique('user')}@example.com",
                                          password=password, given_name="Test", family_name="Person",
                                          email_verified=True, **fields)

    def client(self, *, redirect_uris=("https://rp.example/cb",), public=False, native=False, first_party=False,
               product=None, scope="openid profile email offline_access", client_id=None):
        client, secret = clients.create_client(
            self.session, client_name=unique("Client"), redirect_uris=list(redirect_uris), public=public,
            native=native, first_party=first_party, product_id=product, scope=scope,
            client_id=client_id or unique("client"))
        return client, secret

    def product(self):
        product = Product(id=unique("product"), name="Test product")
        self.session.add(product)
        self.session.commit()
        return product

    def agreement(self, product, identity=None, role="user"):
        agreement = Agreement(number=str(uuid.uuid4().int)[:12], name=unique("Agreement"), product_id=product.id)
        self.session.add(agreement)
        self.session.flush()
        if identity is not None:
            self.session.add(Membership(identity_id=identity.id, agreement_id=agreement.id, role=role))
        self.session.commit()
        return agreement
