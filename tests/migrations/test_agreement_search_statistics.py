"""Migration 0012: PostgreSQL's estimate for a name fragment that one agreement in twenty carries is of that
order, not its floor, so the chooser and the agreements API hash a bookkeeper's memberships against the
matches instead of probing them one by one (bench/README.md). Names in a regular pattern, as the benchmark's
seed makes them, are what the default histogram misses: sorted, they put a trade word at the same offset in
every group, and 99 evenly spaced bounds step over it."""

from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import create_engine, insert, text

from idp.agreements.models import Agreement, Product
from idp.storage import migrations
from tests.conftest import _postgres_database

PLACES = ["Nordic", "Baltic", "Copenhagen", "Aarhus", "Odense", "Jutland", "Fyn", "Harbour", "Green", "Blue",
          "North", "South", "Royal", "Viking", "Amber", "Granite", "Oak", "Birch", "Coastal", "Urban"]
TRADES = ["Accounting", "Architects", "Bakery", "Books", "Carpentry", "Catering", "Cleaning", "Coffee",
          "Consulting", "Dental", "Design", "Electric", "Fitness", "Garden", "Logistics", "Marine", "Plumbing",
          "Software", "Trading", "Transport"]
PER_TRADE = 10


@pytest.fixture
def empty_pg(database_url):
    """A PostgreSQL database of this test's own: thousands of agreements must not reach the other tests."""
    if database_url.startswith("postgresql"):
        base = database_url
    elif os.environ.get("CI") == "true":
        # CI's SQLite pass too: PostgreSQL is there, and a missing one fails this test instead of skipping it.
        base = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    else:
        pytest.skip("no PostgreSQL configured: set IDP_TEST_DATABASE_URL (CI runs this in both passes)")
    yield from _postgres_database(base)


def test_a_name_fragment_of_one_agreement_in_twenty_is_estimated_as_such(empty_pg):
    migrations.upgrade(empty_pg)
    engine = create_engine(empty_pg)
    try:
        with engine.begin() as connection:
            connection.execute(insert(Product.__table__), [{"id": "p", "name": "Product"}])
            connection.execute(insert(Agreement.__table__), [
                {"number": str(1_000_000 + i), "product_id": "p",
                 "name": f"{PLACES[i // (PER_TRADE * len(TRADES))]} {TRADES[i // PER_TRADE % len(TRADES)]} ApS {i}"}
                for i in range(PER_TRADE * len(TRADES) * len(PLACES))])
            connection.execute(text("ANALYZE agreements"))
        with engine.connect() as connection:
            matching = connection.execute(
                text("SELECT count(*) FROM agreements WHERE lower(name) LIKE '%bakery%'")).scalar_one()
            plan = connection.execute(
                text("EXPLAIN (FORMAT JSON) SELECT id FROM agreements WHERE lower(name) LIKE '%bakery%'")).scalar_one()
    finally:
        engine.dispose()
    estimate = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]["Plan Rows"]
    assert matching == PER_TRADE * len(PLACES)
    assert matching / 2 <= estimate <= matching * 2, (estimate, matching)
