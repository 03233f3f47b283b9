"""Seed a PostgreSQL database with agreement data at issue 3's scale.

    python bench/seed_agreements.py [DATABASE_URL] [--quick] [--reset]

Full data (default): 50,000 identities, 100,000 agreements over e-conomic /
dinero / visma-net; ``bookkeeper@bench.example`` is a member of 10,000 of
them (mixed products and roles, 500 with ``last_used_at``); every agreement
has an owner among the other identities, and about a third of those
identities get a few more memberships.

``--quick``: the bookkeeper alone, with 500 agreements (CI smoke).

The database named in the URL is created when missing (connecting to the
server's ``postgres`` database). Seeding is idempotent: a database that already
holds the bench data is left alone; ``--reset`` drops and recreates it.
Everything is inserted with SQLAlchemy Core executemany in batches, and the
password is hashed once with the app's PasswordHasher.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import Engine, make_url

from idp import security
from idp.agreements.models import Agreement, Membership, Product
from idp.clients import service as clients
from idp.clients.models import Client
from idp.identities.models import Identity
from idp.identities.passwords import PasswordHasher
from idp.settings import Settings
from idp.storage import migrations
from idp.storage.db import Database

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/idp_bench"
QUICK_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/idp_bench_quick"

BOOKKEEPER = "bookkeeper@bench.example"
PASSWORD = "Bench-Ledger-Harbour-2024"
#: The app must run with this IDP_SECRET_KEY: client secrets are stored as HMACs under it.
#: (Random-looking: the app refuses keys that look like placeholders. Loopback-only bench data.)
SECRET_KEY = "qG7vT2nXw9LpK4sRb8YhJ3mZc6FdA1uE5tWkN0xQ"
REDIRECT_URI = "http://127.0.0.1:9/bench/callback"
CLIENT_SCOPE = "openid profile email offline_access agreement"
NEUTRAL_CLIENT = ("bench-neutral", "bench-neutral-secret-0123456789abcdef")
ECONOMIC_CLIENT = ("bench-economic", "bench-economic-secret-0123456789abcdef")
PRODUCTS = {"e-conomic": "e-conomic", "dinero": "Dinero", "visma-net": "Visma Net"}
#: Agreement numbers are NUMBER_BASE + i: 7 digits, so prefix search has real work to do.
NUMBER_BASE = 1_000_000
BATCH = 5_000

WORDS_A = ["Nordic", "Baltic", "Copenhagen", "Aarhus", "Odense", "Jutland", "Fyn", "Harbour", "Green", "Blue",
           "North", "South", "Royal", "Viking", "Amber", "Granite", "Oak", "Birch", "Coastal", "Urban"]
WORDS_B = ["Bakery", "Consulting", "Logistics", "Carpentry", "Dental", "Fitness", "Design", "Electric",
           "Plumbing", "Trading", "Coffee", "Books", "Garden", "Marine", "Software", "Transport", "Cleaning",
           "Catering", "Architects", "Accounting"]
WORDS_C = ["ApS", "A/S", "I/S", "IVS", "Holding", "Group"]


@dataclass(frozen=True)
class Shape:
    identities: int
    agreements: int
    bookkeeper_agreements: int
    bookkeeper_recent: int
    #: Other identities that get a few extra memberships (beyond owning agreements).
    extra_member_share: float


FULL = Shape(identities=50_000, agreements=100_000, bookkeeper_agreements=10_000, bookkeeper_recent=500,
             extra_member_share=1 / 3)
QUICK = Shape(identities=1, agreements=500, bookkeeper_agreements=500, bookkeeper_recent=25, extra_member_share=0)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _letters(i: int) -> str:
    """A unique suffix without digits, so a number search never matches a name."""
    out = ""
    while True:
        i, rest = divmod(i, 26)
        out = "abcdefghijklmnopqrstuvwxyz"[rest] + out
        if not i:
            return out.capitalize()


def ensure_database(url: str, reset: bool = False) -> None:
    """Create the database named in ``url`` (drop it first with ``reset``)."""
    target = make_url(url)
    if not target.drivername.startswith("postgresql"):
        raise SystemExit("the benchmark seeds PostgreSQL only")
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                        {"n": target.database}).scalar()
            if exists and reset:
                connection.execute(text(f'DROP DATABASE "{target.database}" WITH (FORCE)'))
                exists = False
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def _seeded(engine: Engine, shape: Shape) -> bool:
    with engine.connect() as connection:
        bookkeeper = connection.execute(select(Identity.id).where(Identity.email_normalized == BOOKKEEPER)).scalar()
        if bookkeeper is None:
            total = connection.execute(select(func.count()).select_from(Agreement)).scalar()
            if total:
                raise SystemExit("the database holds agreements but no bench data: use --reset or another database")
            return False
        counts = (connection.execute(select(func.count()).select_from(Identity)).scalar(),
                  connection.execute(select(func.count()).select_from(Agreement)).scalar(),
                  connection.execute(select(func.count()).select_from(Membership)
                                     .where(Membership.identity_id == bookkeeper)).scalar())
    if counts != (shape.identities, shape.agreements, shape.bookkeeper_agreements):
        raise SystemExit(f"the database holds other bench data (identities, agreements, bookkeeper memberships = "
                         f"{counts}): use --reset")
    return True


def _insert(connection, table, rows: list[dict]) -> None:
    for start in range(0, len(rows), BATCH):
        connection.execute(insert(table), rows[start:start + BATCH])


def _seed_rows(engine: Engine, shape: Shape, password_hash: str) -> dict[str, int]:
    rng = random.Random(3)  # deterministic data: the same numbers and names on every machine
    now = dt.datetime.now(dt.UTC)
    product_ids = list(PRODUCTS)

    identities = [{"id": _uuid(rng), "email": BOOKKEEPER, "email_normalized": BOOKKEEPER, "email_verified": True,
                   "name": "Bench Bookkeeper", "given_name": "Bench", "family_name": "Bookkeeper", "locale": None,
                   "password_hash": password_hash, "disabled": False, "created_at": now, "updated_at": now}]
    for i in range(1, shape.identities):
        email = f"user{i:05d}@bench.example"
        identities.append({"id": _uuid(rng), "email": email, "email_normalized": email, "email_verified": True,
                           "name": f"User {i}", "given_name": "User", "family_name": str(i), "locale": None,
                           "password_hash": password_hash, "disabled": False, "created_at": now, "updated_at": now})

    agreements = []
    for i in range(shape.agreements):
        agreements.append({
            "id": _uuid(rng), "number": str(NUMBER_BASE + i),
            "name": f"{rng.choice(WORDS_A)} {rng.choice(WORDS_B)} {rng.choice(WORDS_C)} {_letters(i)}",
            "product_id": product_ids[i % 3],
            "require_second_factor": False,
            "time_registrants_mobile_only": rng.random() < 0.05,
            "closed": rng.random() < 0.01,
            "created_at": now,
        })

    bookkeeper_id = identities[0]["id"]
    others = [row["id"] for row in identities[1:]]
    memberships = []
    # The bookkeeper: a random sample spread over the whole number range, so
    # paging by number interleaves with other people's agreements.
    chosen = rng.sample(range(shape.agreements), shape.bookkeeper_agreements)
    recent = set(rng.sample(chosen, shape.bookkeeper_recent))
    for index in chosen:
        role = rng.choices(["user", "superuser", "time_registrant"], weights=[80, 15, 5])[0]
        used = now - dt.timedelta(minutes=rng.randrange(1, 60 * 24 * 90)) if index in recent else None
        memberships.append({"identity_id": bookkeeper_id, "agreement_id": agreements[index]["id"], "role": role,
                            "last_used_at": used, "created_at": now})
    if others:
        taken = set()
        # An owner for every agreement (about two per other identity) ...
        for index, agreement in enumerate(agreements):
            owner = others[index % len(others)]
            taken.add((owner, index))
            memberships.append({"identity_id": owner, "agreement_id": agreement["id"], "role": "superuser",
                                "last_used_at": now - dt.timedelta(days=rng.randrange(0, 30)), "created_at": now})
        # ... and a third of them in a few more (employees, accountants).
        for owner in rng.sample(others, int(len(others) * shape.extra_member_share)):
            for index in rng.sample(range(shape.agreements), rng.randint(1, 5)):
                if (owner, index) in taken:
                    continue
                taken.add((owner, index))
                memberships.append({"identity_id": owner, "agreement_id": agreements[index]["id"],
                                    "role": rng.choice(["user", "time_registrant"]), "last_used_at": None,
                                    "created_at": now})

    with engine.begin() as connection:
        existing = set(connection.execute(select(Product.id)).scalars())
        _insert(connection, Product.__table__,
                [{"id": k, "name": v} for k, v in PRODUCTS.items() if k not in existing])
        _insert(connection, Identity.__table__, identities)
        _insert(connection, Agreement.__table__, agreements)
        _insert(connection, Membership.__table__, memberships)
    return {"identities": len(identities), "agreements": len(agreements), "memberships": len(memberships)}


def register_clients(url: str) -> None:
    """The bench RPs: product-neutral and e-conomic, confidential, not first-party (so consent is asked)."""
    security.configure(SECRET_KEY)
    database = Database(url)
    try:
        session = database.session_factory()
        for (client_id, secret), product in ((NEUTRAL_CLIENT, None), (ECONOMIC_CLIENT, "e-conomic")):
            existing = session.get(Client, client_id)
            if existing is None:
                clients.create_client(session, client_name=f"Bench {product or 'neutral'}", client_id=client_id,
                                      client_secret=secret, redirect_uris=[REDIRECT_URI], product_id=product,
                                      scope=CLIENT_SCOPE)
            else:
                # Data seeded under an earlier SECRET_KEY: the secret's HMAC is made again under this one.
                existing.client_secret_hash = security.hasher().hash(secret)
                session.commit()
        session.close()
    finally:
        database.dispose()


def seed(url: str, shape: Shape = FULL, reset: bool = False, log=print) -> bool:
    """Seed ``url`` unless it already holds this shape; returns True when rows were inserted."""
    started = time.perf_counter()
    ensure_database(url, reset)
    migrations.upgrade(url)
    engine = create_engine(url)
    try:
        if _seeded(engine, shape):
            register_clients(url)
            log(f"seed: {make_url(url).database} already seeded")
            return False
        defaults = Settings()
        hasher = PasswordHasher(defaults.argon2_memory_kib, defaults.argon2_time_cost, defaults.argon2_parallelism)
        counts = _seed_rows(engine, shape, hasher.hash(PASSWORD))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()
    register_clients(url)
    log(f"seed: {make_url(url).database}: {counts['identities']:,} identities, {counts['agreements']:,} agreements, "
        f"{counts['memberships']:,} memberships in {time.perf_counter() - started:.1f} s")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("database_url", nargs="?", help="default: IDP_DATABASE_URL, else " + DEFAULT_URL)
    parser.add_argument("--quick", action="store_true", help="1 identity x 500 agreements (default db idp_bench_quick)")
    parser.add_argument("--reset", action="store_true", help="drop and recreate the database first")
    args = parser.parse_args(argv)
    url = args.database_url or os.environ.get("IDP_DATABASE_URL") or (QUICK_URL if args.quick else DEFAULT_URL)
    seed(url, QUICK if args.quick else FULL, args.reset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
